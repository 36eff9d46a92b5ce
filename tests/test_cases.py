"""Cases: what a client computes under a deployment's training (batch, FedAvg steps, DP-SGD),
what the server sees of it, and the attacks on that view (batch reconstruction, label
counting, FedAvg unrolled, scoring after matching)."""
import inspect
import itertools
import pickle

import pytest
import torch
import torch.nn.functional as F

from dlg_utils.attack import attack_view, count_labels, dlg_batch
from dlg_utils.attacks import AttackConfig
from dlg_utils.cases import DPSGD, Case, ServerView, client_update, shared_gradient, update_function
from dlg_utils.data import load_dataset
from dlg_utils.experiments import AttackTrial, Execution, RowOptions, attack_sweep, per_image
from dlg_utils.metrics import label_count_accuracy, score_batch
from dlg_utils.models import get_model
from dlg_utils.stats import CRITERIA


@pytest.fixture(scope="module")
def gray():
    return load_dataset("samples-gray28")


def lenet(seed=0, channels=1, size=28):
    torch.manual_seed(seed)
    return get_model("lenet", in_channels=channels, num_classes=10, image_size=size)


def batch(data, idx):
    return torch.stack([data[i][0] for i in idx]), torch.tensor([data[i][1] for i in idx])


# --- the client ------------------------------------------------------------------------------------

def test_one_step_is_the_gradient_of_the_batch(gray):
    model, (x, y) = lenet(), batch(gray, [0, 1, 2])
    view, secret = client_update(Case(batch_size=3), model, x, y)
    for mine, ref in zip(view.update.grads, shared_gradient(model, x, y).grads):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-7)
    assert torch.equal(secret.images, x) and torch.equal(secret.labels, y)


def test_fedavg_update_equals_torch_sgd(gray):
    """E local steps of plain SGD on cycling local batches: (w0 - wE) / lr, as torch.optim.SGD."""
    model, (x, y) = lenet(), batch(gray, [0, 1, 2, 3])
    case = Case(batch_size=4, local_steps=3, local_lr=0.05, local_batch=2)
    view, _ = client_update(case, model, x, y)
    ref = lenet()
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    for part in case.step_slices():
        opt.zero_grad()
        F.cross_entropy(ref(x[part]), y[part]).backward()
        opt.step()
    for mine, p0, p in zip(view.update.grads, model.parameters(), ref.parameters()):
        torch.testing.assert_close(mine, (p0.detach() - p.detach()) / 0.05, rtol=1e-4, atol=1e-5)
    assert [(s.start, s.stop) for s in case.step_slices()] == [(0, 2), (2, 4), (0, 2)]


def test_momentum_and_a_servers_view_from_weights(gray):
    """With momentum, the update is torch.optim.SGD's; a server that receives the client's
    weights (as a Flower client replies) builds the same view (view_from_weights)."""
    from dlg_utils.cases import view_from_weights
    model, (x, y) = lenet(), batch(gray, [0, 1, 2, 3])
    case = Case(batch_size=4, local_steps=3, local_lr=0.05, local_batch=2, local_momentum=0.9)
    view, _ = client_update(case, model, x, y)
    ref = lenet()
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    for part in case.step_slices():
        opt.zero_grad()
        F.cross_entropy(ref(x[part]), y[part]).backward()
        opt.step()
    seen = view_from_weights(case, model, ref.state_dict(), (1, 28, 28), 10)
    for mine, theirs in zip(view.update.grads, seen.update.grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="not this model's architecture"):
        view_from_weights(case, model, get_model("lenet5").state_dict(), (1, 28, 28), 10)
    assert "momentum 0.9" in case.describe()


def test_dp_sgd_step_equals_opacus(gray):
    """One DP-SGD step without noise is Opacus's: per-example clipping to ``clip``, the mean."""
    from opacus import GradSampleModule
    model, (x, y) = lenet(), batch(gray, [0, 1, 2, 3])
    view, _ = client_update(Case(batch_size=4, dp=DPSGD(clip=0.05, noise=0.0)), model, x, y)
    ref = GradSampleModule(lenet())
    F.cross_entropy(ref(x), y, reduction="sum").backward()
    per = [p.grad_sample.flatten(1) for p in ref.parameters()]
    norms = torch.cat(per, 1).norm(dim=1)
    assert (norms > 0.05).all()  # the clip binds
    factor = (0.05 / (norms + 1e-6)).clamp(max=1)
    for mine, p, g in zip(view.update.grads, ref.parameters(), per):
        torch.testing.assert_close(mine.flatten(), (factor[:, None] * g).sum(0) / 4, rtol=1e-4, atol=1e-7)


def test_dp_noise_is_drawn_from_the_clients_generator(gray):
    model, (x, y) = lenet(), batch(gray, [0, 1])
    case = Case(batch_size=2, dp=DPSGD(clip=1.0, noise=1.0))
    a, _ = client_update(case, model, x, y, torch.Generator().manual_seed(3))
    b, _ = client_update(case, model, x, y, torch.Generator().manual_seed(3))
    c, _ = client_update(case, model, x, y, torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a.update.grads, b.update.grads))
    assert not torch.equal(a.update.grads[0], c.update.grads[0])
    # the noise's std on the mean: noise * clip / B per entry
    clean, _ = client_update(Case(batch_size=2, dp=DPSGD(clip=1.0, noise=0.0)), model, x, y)
    assert abs(float((a.update.grads[0] - clean.update.grads[0]).std()) - 0.5) < 0.05


def test_dp_calibration_from_epsilon():
    low, high = (DPSGD.at_epsilon(e, examples=4000, batch_size=32, epochs=5) for e in (1.0, 8.0))
    assert low.noise > high.noise > 0 and low.epsilon == 1.0 and low.delta == 1e-5
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        DPSGD.at_epsilon(0.0, examples=4000, batch_size=32)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        DPSGD.at_epsilon(-1.0, examples=4000, batch_size=32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(local_steps=0), "local_steps must be an integer >= 1"),
    (dict(local_steps=1.5), "local_steps must be an integer >= 1"),
    (dict(local_lr=0), "local_lr must be > 0"),
    (dict(batch_size=2, local_batch=3), "exceeds the batch size"),
    (dict(local_momentum=1.0), "local_momentum must be in"),
    (dict(defense="blur"), "unknown defense spec"),
])
def test_bad_cases_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Case(**kwargs)


def test_bad_label_counting_method_is_refused():
    with pytest.raises(ValueError, match="label_count must be one of"):
        AttackConfig(label_count="exhaustive")
    with pytest.raises(ValueError, match="must be one of"):
        count_labels([torch.zeros(10)], 2, "yin")


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    from dlg_utils.training import load_checkpoint, save_checkpoint
    path = save_checkpoint(tmp_path / "lenet5.pt", get_model("lenet5"))
    with pytest.raises(ValueError, match="is for lenet5"):
        load_checkpoint(path, lenet())


def test_batch_larger_than_the_data_writes_nothing(gray, tmp_path):
    path = tmp_path / "rows.jsonl"
    too_many = tuple(range(len(gray) + 1))
    with pytest.raises(ValueError, match="out of range"):
        attack_sweep([AttackTrial(too_many, case=Case(batch_size=len(too_many)))], lenet(), gray, path)
    assert not path.exists() or path.read_text() == ""
    with pytest.raises(ValueError, match="batch size is 4 but the trial names 2"):
        AttackTrial((0, 1), case=Case(batch_size=4))
    with pytest.raises(ValueError, match="needs a case"):
        AttackTrial((0, 1))


# --- the server's view and the secret ----------------------------------------------------------------

def test_the_view_holds_nothing_of_the_secret(gray):
    """Structural: the view pickles without any of the client's images or labels in it, and no
    attack entry point takes ground truth."""
    model, (x, y) = lenet(), batch(gray, [3, 7])
    for case in (Case(batch_size=2), Case(batch_size=2, local_steps=2), Case(batch_size=2, dp=DPSGD(1.0, 0.1))):
        view, secret = client_update(case, model, x, y, torch.Generator().manual_seed(0))
        assert {f for f in ServerView.__dataclass_fields__} == {"case", "model", "image_shape", "num_classes", "update"}
        blob = pickle.dumps(view)
        for image in secret.images:
            assert image.numpy().tobytes()[:256] not in blob
        assert view.update.source is None
    assert set(inspect.signature(attack_view).parameters) == {"view", "attack", "seed", "labels", "progress",
                                                              "settings"}


def test_a_case_trial_never_hands_the_engine_its_data(gray, monkeypatch):
    import dlg_utils.engine as engine
    seen = []
    original = engine.Chunk.__init__

    def spy(self, model, trials, *args, **kwargs):
        seen.extend(t.truth for t in trials)
        original(self, model, trials, *args, **kwargs)

    monkeypatch.setattr(engine.Chunk, "__init__", spy)
    rows = attack_sweep([AttackTrial((0, 2), attack="idlg", case=Case(batch_size=2), settings={"iterations": 2})],
                        lenet(), gray, None, execution=Execution(progress=False))
    assert seen == [None] and len(rows["per_image"][0]) == 2


# --- label counting -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["bias-corrected", "wainakh-simple"])
def test_label_counts_are_right_when_undefended(gray, method):
    """Batches of 4 and 8 with repeated labels, one gradient each: the counted labels are the
    true multiset. After FedAvg's 3 local steps the model moves between steps and the count is
    an estimate: at least 3 of 4 right."""
    for idx in ([0, 1, 2, 3], list(range(8, 16)), [4, 5, 6, 7]):
        x, y = batch(gray, idx)
        assert len(set(y.tolist())) < len(idx)  # each batch repeats a label
        view, _ = client_update(Case(batch_size=len(idx)), lenet(), x, y)
        assert count_labels(view.update.grads, len(idx), method).tolist() == sorted(y.tolist())
    x, y = batch(gray, [4, 5, 6, 7])
    view, _ = client_update(Case(batch_size=4, local_steps=3, local_lr=0.1), lenet(), x, y)
    assert label_count_accuracy(count_labels(view.update.grads, 4, method), y) >= 0.75


# --- scoring ---------------------------------------------------------------------------------------------

def test_matching_finds_the_best_permutation():
    g = torch.Generator().manual_seed(0)
    truths = torch.rand(4, 1, 8, 8, generator=g)
    recon = (truths + 0.3 * torch.rand(4, 1, 8, 8, generator=g))[[2, 0, 3, 1]]
    rows = score_batch(recon, truths, labels=[5, 6, 7, 8], true_labels=[1, 2, 3, 4])
    assert [r["match"] for r in rows] == [1, 3, 0, 2]
    assert [(r["label"], r["true_label"]) for r in rows] == [(6, 1), (8, 2), (5, 3), (7, 4)]
    best = min(itertools.permutations(range(4)),
               key=lambda p: sum(float(((recon[p[i]].clamp(0, 1) - truths[i]) ** 2).mean()) for i in range(4)))
    assert list(best) == [r["match"] for r in rows]
    assert label_count_accuracy([1, 1, 2, 3], [1, 2, 2, 3]) == 0.75


# --- attacks on cases, end to end ---------------------------------------------------------------------------

def recovered(rows):
    return sum(bool(CRITERIA["ssim"](r["ssim"])) for r in rows)


def test_undefended_batch_of_4_is_recovered(gray):
    model, (x, y) = lenet(), batch(gray, [1, 3, 6, 12])
    view, secret = client_update(Case(batch_size=4), model, x, y)
    result = attack_view(view, "idlg", iterations=100, progress=False)
    assert result.label.tolist() == sorted(y.tolist())
    rows = score_batch(result.image, secret.images, result.label, secret.labels)
    assert recovered(rows) >= 3, rows


def test_undefended_fedavg_two_steps_is_recovered(gray):
    model, (x, y) = lenet(), batch(gray, [1, 3])
    view, secret = client_update(Case(batch_size=2, local_steps=2, local_lr=0.1), model, x, y)
    result = attack_view(view, "idlg", iterations=100, progress=False)
    rows = score_batch(result.image, secret.images, result.label, secret.labels)
    assert recovered(rows) >= 1, rows
    # not the gradient's attack: the dummy's two steps are unrolled (one step matches worse)
    one_step = dlg_batch(model, [view.update], image_shape=(2, 1, 28, 28), num_classes=10, attack="idlg",
                         iterations=100, progress=False)[0]
    assert float(one_step.final["grad_distance"]) > 10 * float(result.final["grad_distance"])


def test_large_dp_noise_stops_the_attack(gray):
    model, (x, y) = lenet(), batch(gray, [1])
    for attack in ("idlg", "adaptive"):
        view, secret = client_update(Case(dp=DPSGD(clip=1.0, noise=1.0)), model, x, y, torch.Generator().manual_seed(0))
        result = attack_view(view, attack, iterations=100, progress=False)
        rows = score_batch(result.image, secret.images)
        assert recovered(rows) == 0 and rows[0]["psnr"] < 15, rows


def test_case_sweep_rows_per_image(gray, tmp_path):
    trials = [AttackTrial((1, 3), attack="idlg", case=Case(batch_size=2), settings={"iterations": 60}),
              AttackTrial(1, attack="idlg", case=Case(local_steps=2), settings={"iterations": 60})]
    path = tmp_path / "cases.jsonl"
    rows = attack_sweep(trials, lenet(), gray, path, execution=Execution(progress=False),
                        rows=RowOptions(keep_history=False))
    again = attack_sweep(trials, lenet(), gray, path, execution=Execution(progress=False),
                         rows=RowOptions(keep_history=False))
    assert rows["key"].tolist() == again["key"].tolist()
    images = per_image(rows)
    assert images["image"].tolist() == [1, 3, 1]
    assert rows["label_accuracy"][0] == 1.0 and rows["case"].tolist() == ["B=2, FedSGD", "B=1, FedAvg E=2 lr=0.1"]
    # a case is part of the key: another learning rate is another row
    other = attack_sweep([AttackTrial(1, attack="idlg", case=Case(local_steps=2, local_lr=0.2),
                                      settings={"iterations": 60})], lenet(), gray, path,
                         execution=Execution(progress=False), rows=RowOptions(keep_history=False))
    assert other["key"][0] not in set(rows["key"])


# --- the attackers' own fixes -------------------------------------------------------------------------------

def test_ig_starts_inside_the_normalisation_unclamped(gray):
    """Inverting Gradients' dummy starts as N(0, 1) in the normalised space (pixels mean + std *
    z), not as N(0, 1) pixels clamped to the box (half of them at 0), and stays in [0, 1]."""
    model, (x, y) = lenet(), batch(gray, [1])
    target = shared_gradient(model, x, y)
    start = {}
    for space in ("normalized", "pixel"):
        r = dlg_batch(model, [target], image_shape=(1, 28, 28), num_classes=10, attack="ig", iterations=3,
                      space=space, snapshot_at=(0, 3), progress=False)[0]
        start[space] = r.snapshots[0]
        assert 0 <= float(r.snapshots[3].min()) and float(r.snapshots[3].max()) <= 1
    assert float((start["pixel"] == 0).float().mean()) > 0.4
    assert float((start["normalized"] == 0).float().mean()) < 0.4  # N(0.13, 0.31): a third below 0
    assert abs(float(start["normalized"].clamp(0, 1).mean()) - 0.19) < 0.05


def test_bpda_draws_its_own_coins(monkeypatch):
    """The straight-through defense gets the attacker's generator, whose draws are not the
    client's (the trial seed's)."""
    import dlg_utils.engine as engine
    from dlg_utils.engine import Chunk, Trial
    model = lenet()
    x = torch.rand(1, 1, 28, 28)
    shared = shared_gradient(model, x, torch.tensor([1]), "stochastic:8", torch.Generator().manual_seed(5))
    handed = []
    original = engine.straight_through
    monkeypatch.setattr(engine, "straight_through", lambda d, g, gen: handed.append(gen) or original(d, g, gen))
    chunk = Chunk(model, [Trial(shared, torch.tensor([1]), seed=5)], (1, 1, 28, 28), 10,
                  AttackConfig(straight_through=True, iterations=1))
    chunk.run(type("Bar", (), {"update": lambda self, n: None})(), lambda t, r: None)
    assert handed and all(g is chunk.attacker_generators[0] for g in handed)
    mine = torch.rand(100, generator=torch.Generator().manual_seed(engine.attacker_seed(5)))
    client = torch.rand(100, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(mine, client)


def test_attack_view_takes_no_ground_truth(gray):
    model, (x, y) = lenet(), batch(gray, [1])
    view, secret = client_update(Case(), model, x, y)
    with pytest.raises(TypeError, match="AttackConfig fields"):
        attack_view(view, "idlg", iterations=1, ground_truths=[secret.images])
    with pytest.raises(ValueError, match="not for a trial with a case"):
        attack_sweep([AttackTrial(1, attack="idlg", case=Case(), settings={"redraw_defense": True})], model, gray)


def test_a_case_clients_coins_are_not_the_dummys():
    from dlg_utils.cases import CLIENT_STREAM, derived_seed
    assert len({derived_seed(s, CLIENT_STREAM) for s in range(100)} & set(range(100))) == 0
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        DPSGD(epsilon=-1.0)


def test_local_batches_cycle_as_a_dataloader():
    case = Case(batch_size=5, local_steps=5, local_batch=2)
    assert [(s.start, s.stop) for s in case.step_slices()] == [(0, 2), (2, 4), (4, 5), (0, 2), (2, 4)]


def test_counting_with_nothing_to_count_is_a_defined_guess():
    with pytest.warns(UserWarning, match="no negative entry"):
        found = count_labels([torch.zeros(10)], 3)
    assert found.tolist() == sorted(found.tolist()) and len(found) == 3


def test_a_batchnorm_model_in_train_mode(gray):
    """The client's update of a train-mode BatchNorm model uses the batch's statistics and
    changes no running statistic (as the attacker's dummy does)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 10)).train()
    before = model[1].running_mean.clone()
    x, y = batch(gray, [0, 1])
    view, _ = client_update(Case(batch_size=2, local_steps=2), model, x, y)
    assert torch.equal(model[1].running_mean, before) and all(torch.isfinite(g).all() for g in view.update.grads)
