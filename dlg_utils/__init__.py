"""dlg_utils: measure how much private data leaks from shared gradients (DLG / iDLG) and how
well gradient defenses (quantization above all) stop it."""
from . import attack, data, defenses, metrics, models, quantization
from .attack import AttackResult, dlg, idlg_label, target_gradients
from .data import load_dataset
from .defenses import defense_from_spec
from .models import LeNet, init_uniform_, resnet18

__all__ = ["attack", "data", "defenses", "metrics", "models", "quantization", "AttackResult",
           "dlg", "idlg_label", "target_gradients", "load_dataset", "defense_from_spec",
           "LeNet", "init_uniform_", "resnet18"]
