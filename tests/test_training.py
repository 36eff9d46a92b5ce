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


def test_evaluate_with_batch_statistics_leaves_running_statistics_alone(fashion):
    from dlg_utils.data import to_tensors
    test = to_tensors(Subset(fashion[1], range(256)))
    torch.manual_seed(0)
    model = resnet18(num_classes=10, in_channels=1)
    with torch.no_grad():  # running statistics far from the data's: the two modes must disagree
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    running = evaluate(model, test, batchnorm="running")
    batch = evaluate(model, test, batchnorm="batch")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert running != batch and model.training  # the mode it was in comes back
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        evaluate(model, test, batchnorm="train")


def test_trace_records_every_step_and_the_epoch_ends(fashion):
    from dlg_utils.data import to_tensors
    from dlg_utils.training import trace
    train_t, test_t = to_tensors(Subset(fashion[0], range(300))), to_tensors(Subset(fashion[1], range(64)))
    torch.manual_seed(0)
    df = trace(LeNet(1, 10, 28), train_t, test_t, epochs=2, every=2, batch_size=128, lr=0.01)
    assert df["step"].tolist() == list(range(1, 7))  # 3 batches per epoch (128, 128, 44)
    assert df.loc[df["epoch_end"], "step"].tolist() == [3, 6] and (df.loc[df["epoch_end"], "last_batch"] == 44).all()
    evaluated = df.dropna(subset=["weight_norm"])["step"].tolist()
    assert evaluated == [2, 3, 4, 6] and df["accuracy_batch_bn"].dropna().between(0, 1).all()


def test_defense_training_stores_each_run_and_knows_when_complete(fashion, tmp_path):
    from dlg_utils.data import to_tensors
    from dlg_utils.experiments import load_rows
    from dlg_utils.training import TrainingSetting, complete_runs, defense_training
    setting = TrainingSetting(train_size=128, test_size=64, epochs=1)
    data = (to_tensors(Subset(fashion[0], range(128))), to_tensors(Subset(fashion[1], range(64))))
    path = tmp_path / "fig4.jsonl"
    rows = defense_training(setting, ["none", "uniform:16"], [0], path, data=data, progress=False)
    label = setting.describe(128, 64)
    assert rows["setting"].eq(label).all() and len(load_rows(path)) == 2
    assert complete_runs(path, label, ["none", "uniform:16"], [0]) is not None
    assert complete_runs(path, label, ["none", "uniform:16"], [0, 1]) is None  # seed 1 is missing
    defense_training(setting, ["none", "uniform:16"], [0], path, data=data, progress=False)
    assert len(load_rows(path)) == 2  # nothing trained twice
