import pytest
import torch
from torch.utils.data import Subset

from dlg_utils.data import load_dataset
from dlg_utils.defenses import NoDefense
from dlg_utils.models import LeNet, resnet18
from dlg_utils.training import evaluate, load_checkpoint, train


@pytest.fixture(scope="module")
def fashion():
    return load_dataset("fashion-mnist"), load_dataset("fashion-mnist", train=False)


def test_train_improves_test_accuracy_in_one_epoch(fashion):
    train_set, test_set = Subset(fashion[0], range(6000)), Subset(fashion[1], range(1000))
    torch.manual_seed(0)
    model = resnet18(num_classes=10, in_channels=1)
    _, before = evaluate(model, test_set)
    df = train(model, train_set, test_set, epochs=1, defense="uniform:16")
    assert list(df.columns) == ["epoch", "train_loss", "test_loss", "test_accuracy"]
    assert before < 0.2 and df["test_accuracy"].iloc[-1] > before + 0.3


class Counting(NoDefense):
    def __init__(self):
        self.calls = 0

    def __call__(self, grads, generator=None):
        self.calls += 1
        return [torch.zeros_like(g) for g in grads]  # no update at all


def test_defense_replaces_every_gradient_and_checkpoints(fashion, tmp_path):
    train_set, test_set = Subset(fashion[0], range(256)), Subset(fashion[1], range(128))
    torch.manual_seed(0)
    model = LeNet(1, 10, 28)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    d = Counting()
    train(model, train_set, test_set, epochs=2, defense=d, batch_size=64, weight_decay=0.0,
          checkpoint_dir=tmp_path, run_name="lenet_fm", dataset_name="fashion-mnist")
    assert d.calls == 2 * 4
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # zeroed gradients: no step
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["lenet_fm_converged.pt", "lenet_fm_middle.pt", "lenet_fm_start.pt"]
    loaded, meta = load_checkpoint(tmp_path / "lenet_fm_middle.pt")
    assert meta["stage"] == "middle" and meta["epoch"] == 1 and meta["dataset"] == "fashion-mnist"
    assert meta["architecture"]["name"] == "LeNet" and 0 <= meta["test_accuracy"] <= 1
    with pytest.raises(ValueError, match="is for LeNet"):
        load_checkpoint(tmp_path / "lenet_fm_middle.pt", LeNet(3, 10, 32))
    with pytest.raises(ValueError, match="ResNet"):
        load_checkpoint(tmp_path / "lenet_fm_middle.pt", resnet18(10, 1))


def test_bad_training_input(fashion):
    with pytest.raises(ValueError, match="channels"):
        train(LeNet(3, 10, 28), Subset(fashion[0], range(8)), Subset(fashion[1], range(8)), epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        train(LeNet(1, 10, 28), Subset(fashion[0], range(8)), Subset(fashion[1], range(8)), epochs=0)


def test_checkpoint_after_a_given_step(fashion, tmp_path):
    """A step checkpoint holds the weights after exactly that many SGD steps (seed 000 appendix C)."""
    train_set, test_set = Subset(fashion[0], range(320)), Subset(fashion[1], range(64))
    torch.manual_seed(0)
    model = LeNet(1, 10, 28)
    train(model, train_set, test_set, epochs=2, batch_size=64, lr=0.01, checkpoint_dir=tmp_path,
          run_name="a", checkpoint_steps=[3])
    torch.manual_seed(0)
    again = LeNet(1, 10, 28)
    train(again, train_set, test_set, epochs=1, batch_size=64, lr=0.01, max_batches=3)
    step3, meta = load_checkpoint(tmp_path / "a_step3.pt")
    start, _ = load_checkpoint(tmp_path / "a_start.pt")
    assert meta["stage"] == "step3" and meta["step"] == 3 and meta["epoch"] == 1
    assert all(torch.equal(a, b) for a, b in zip(step3.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(step3.fc.weight, start.fc.weight)
    with pytest.raises(ValueError, match="checkpoint_steps"):
        train(LeNet(1, 10, 28), train_set, test_set, epochs=1, checkpoint_steps=[0], checkpoint_dir=tmp_path)
