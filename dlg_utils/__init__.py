"""dlg_utils: measure how much private data leaks from shared gradients (DLG, iDLG, Inverting
Gradients, a defense-aware attacker) and how well gradient defenses (quantization above all)
stop it, at what cost in accuracy.

Submodules and the names below load on first use, so ``python -m dlg_utils.<module>`` runs a
module that the package has not imported yet.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("attack", "data", "defenses", "metrics", "models", "quantization", "engine", "experiments",
               "frontier", "training", "training_study", "success", "stats", "objectives", "plotting")
_EXPORTS = {"AttackResult": "attack", "dlg": "attack", "dlg_batch": "attack", "idlg_label": "attack",
            "target_gradients": "attack", "shared_gradient": "attack", "load_dataset": "data",
            "defense_from_spec": "defenses", "LeNet": "models", "init_uniform_": "models", "resnet18": "models"}

__all__ = [*_SUBMODULES, *_EXPORTS]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
