"""The audit of a Flower run (dlg_utils.audit): the server attacks the messages its clients send.

Message-level tests drive the strategy and the real ClientApp (with its Mods and local training)
by hand, one round at a time; the slow ones run Flower's simulation engine."""
import pickle
import tomllib
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from dlg_utils import audit as audit_module
from dlg_utils.attacks import AttackConfig
from dlg_utils.audit import (AuditConfig, AuditedStrategy, audit_from_run, audit_report, best_images, fl_case,
                             image_rows, load_audit, round_images, round_table)
from dlg_utils.cases import ServerView, client_update
from dlg_utils.codec import to_numpy
from dlg_utils.federated import (FROM_RUN_CONFIG, TRUTH, FLConfig, QuantizedFedAvg, TrainedSamplesMod, client_app,
                                 client_data, dataset_options, dp_noise_multiplier)
from dlg_utils.models import get_model
from dlg_utils.stats import clopper_pearson
from dlg_utils.storage import canonical

ROOT = Path(__file__).resolve().parents[1]
CHEAP = dict(attacks=("idlg",), iterations=2)  # the cheapest ensemble: for tests of the plumbing


class FakeGrid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes


@pytest.fixture
def every_node(monkeypatch):
    monkeypatch.setattr("flwr.serverapp.strategy.fedavg.sample_nodes",
                        lambda grid, min_available, size: (list(grid.get_node_ids()), list(grid.get_node_ids())))


class Federation:
    """Two clients (nodes 11 and 12, partitions 0 and 1) running the real ClientApp, one
    round at a time, against ``strategy``."""

    def __init__(self, strategy, cfg: FLConfig, policy=None, truth=True):
        self.strategy, self.cfg = strategy, cfg
        self.app = client_app(policy, truth=truth)
        self.contexts = {11 + p: Context(run_id=1, node_id=11 + p, node_config={"partition-id": p},
                                         state=RecordDict(), run_config={}) for p in range(2)}
        torch.manual_seed(cfg.seed)
        self.arrays = ArrayRecord(get_model("lenet5", **dataset_options(cfg)).state_dict())
        self.received = []  # what the wrapped strategy's aggregate_train got

    def round(self, server_round: int):
        sent = list(self.strategy.configure_train(server_round, self.arrays, ConfigRecord(canonical(self.cfg)),
                                                  FakeGrid(sorted(self.contexts))))
        replies = [self.app(m, self.contexts[m.metadata.dst_node_id]) for m in sent]
        arrays, _ = self.strategy.aggregate_train(server_round, replies)
        self.received.append(replies)
        self.arrays = arrays
        return sent, replies


# --- configuration --------------------------------------------------------------------------------

def test_run_config_parses_into_an_audit_config_and_the_app_is_off_by_default():
    config = audit_from_run({"audit": True, "audit_attacks": "idlg, adaptive", "audit_rounds": "1,3",
                             "audit_iterations": 50, "audit_ig_iterations": "400", "audit_truth": "false",
                             "audit_path": "audit.jsonl", "audit_clients": 3, "num_clients": 5})
    assert config == AuditConfig(path="audit.jsonl", attacks=("idlg", "adaptive"), rounds=(1, 3), iterations=50,
                                 ig_iterations=400, truth=False, clients=3)
    assert audit_from_run({}) == AuditConfig()
    with pytest.raises(ValueError, match="unknown audit settings"):
        audit_from_run({"audit_itrations": 5})
    with pytest.raises(ValueError, match="unknown attack"):
        AuditConfig(attacks=("nope",))
    with pytest.MonkeyPatch.context() as mp:  # LPIPS without its weights: refused before any round runs
        mp.setenv("TORCH_HOME", str(ROOT / "no-such-folder"))
        with pytest.raises(FileNotFoundError, match="LPIPS needs"):
            AuditConfig(criterion="lpips")
    app = tomllib.loads((ROOT / "deploy/flower/pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert app["audit"] is False  # the deployment's switch, off unless the run config turns it on
    assert isinstance(audit_from_run(app), AuditConfig)
    mod = TrainedSamplesMod(FROM_RUN_CONFIG)
    context = lambda run: Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=run)
    assert not mod.active(context(app)) and mod.active(context({**app, "audit": True}))
    assert not mod.active(context({**app, "audit": True, "audit_truth": False}))
    assert len(client_app(None, truth=FROM_RUN_CONFIG)._mods) == 1
    # the deployment's ServerApp wraps its strategy in the auditor when the run config says so
    import importlib.util
    spec = importlib.util.spec_from_file_location("dlg_fl_app", ROOT / "deploy/flower/dlg_fl_app.py")
    deployed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deployed)
    inner = QuantizedFedAvg("mixed")
    assert deployed.audited(inner, "mixed", app) is inner
    wrapped = deployed.audited(inner, "mixed", {**app, "audit": True, "audit_rounds": "2"})
    assert isinstance(wrapped, AuditedStrategy) and wrapped.label == "mixed" and wrapped.config.rounds == (2,)
    assert wrapped.codec is inner.policy and wrapped.traffic is inner.traffic  # the codec's policy; delegation


def test_the_case_is_built_from_the_run_config_and_the_reported_examples():
    cfg = asdict(FLConfig(batch_size=4, local_epochs=2, lr=0.05, momentum=0.9))
    case = fl_case(cfg, 8)
    assert (case.batch_size, case.local_steps, case.local_batch, case.local_lr, case.local_momentum) == (8, 4, 4, 0.05, 0.9)
    assert case.dp is None and fl_case(cfg, 3).local_batch == 0  # a batch larger than the share: all images each step
    dp = FLConfig(batch_size=128, dp_epsilon=1.0, rounds=3)
    case = fl_case(asdict(dp), 5)
    assert case.dp.noise == pytest.approx(dp_noise_multiplier(dp, 5)) and case.dp.clip == dp.dp_clip


# --- the view the attack gets ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["base", "mixed"])
def test_the_view_is_the_clients_true_update(task_identity, every_node, monkeypatch, method):
    """4 images in one batch of 4, 2 local epochs (momentum 0.9): the update the auditor builds
    from the message is the one the case's client computes from the true images, exactly for
    float32 weights and within the codec's box for the quantized update."""
    cfg = FLConfig(num_clients=2, client_examples=4, batch_size=4, local_epochs=2, test_examples=16)
    views = []

    def capture(view, attack, **kwargs):
        views.append(view)
        raise RuntimeError("not attacked in this test")

    monkeypatch.setattr(audit_module, "attack_view", capture)
    strategy = AuditedStrategy(QuantizedFedAvg(None if method == "base" else "mixed"),
                               AuditConfig(**CHEAP, clients=1))
    fed = Federation(strategy, cfg, None if method == "base" else "mixed")
    fed.round(1)
    (view,) = views
    data = client_data(cfg, 0)
    x, y = torch.stack([data[i][0] for i in range(4)]), torch.tensor([data[i][1] for i in range(4)])
    torch.manual_seed(cfg.seed)
    model = get_model("lenet5", **dataset_options(cfg))
    truth, _ = client_update(fl_case(asdict(cfg), 4), model, x, y)
    for got, want, box in zip(view.update.grads, truth.update.grads, view.update.bounds):
        if method == "base":
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
        else:
            assert view.update.defense.name == "mixed"
            assert (want >= box[0] - 1e-6).all() and (want <= box[1] + 1e-6).all()


def test_the_attack_sees_only_the_server_view_and_the_strategy_never_the_truth(task_identity, every_node, monkeypatch):
    cfg = FLConfig(num_clients=2, client_examples=2, batch_size=2, test_examples=16)
    calls = []
    real = audit_module.attack_view

    def spy(view, attack, **kwargs):
        calls.append((view, attack, kwargs))
        return real(view, attack, **kwargs)

    monkeypatch.setattr(audit_module, "attack_view", spy)
    strategy = AuditedStrategy(QuantizedFedAvg(None), AuditConfig(**CHEAP))
    fed = Federation(strategy, cfg)
    _, replies = fed.round(1)
    assert len(calls) == 2
    data = client_data(cfg, 0)
    secret = torch.stack([data[i][0] for i in range(2)]).numpy().tobytes()
    for view, attack, kwargs in calls:
        assert type(view) is ServerView and isinstance(attack, AttackConfig)
        assert set(kwargs) <= {"seed", "progress"}  # no labels, no images: only the view goes in
        assert secret[:784 * 4] not in pickle.dumps(view)
    assert all(TRUTH not in r.content for r in replies)  # taken out before the strategy aggregated
    rows = strategy.rows
    assert [r["client"] for r in rows] == [0, 1] and all(r["status"] == "attacked" for r in rows)
    assert rows[0]["indices"] == client_data(cfg, 0).indices and len(rows[0]["per_image"]) == 2


def test_with_round_examples_each_round_trains_on_and_is_scored_against_the_next_images(task_identity, every_node,
                                                                                        monkeypatch):
    """``round_examples=2``: round 2's update is the one-step update on the client's next 2 images
    at round 2's global model, and the truth the audit scores against names those images."""
    cfg = FLConfig(num_clients=2, client_examples=5, round_examples=2, batch_size=2, test_examples=16)
    views, real = [], audit_module.attack_view
    monkeypatch.setattr(audit_module, "attack_view", lambda view, attack, **kw: views.append(view) or real(view, attack, **kw))
    strategy = AuditedStrategy(QuantizedFedAvg(None), AuditConfig(**CHEAP, clients=1))
    fed = Federation(strategy, cfg)
    fed.round(1)
    global_round2 = {k: torch.from_numpy(v) for k, v in to_numpy(fed.arrays).items()}
    fed.round(2)
    first, second = (client_data(cfg, 0, r).indices for r in (1, 2))
    assert [r["indices"] for r in strategy.rows] == [first, second] and not set(first) & set(second)
    share = client_data(replace(cfg, round_examples=0), 0).indices
    assert first + second == share[:4] and client_data(cfg, 0, 3).indices == [share[4], share[0]]  # it wraps around
    with pytest.raises(ValueError, match="server_round"):
        client_data(cfg, 0, 0)
    data = client_data(cfg, 0, 2)
    x, y = torch.stack([data[i][0] for i in range(2)]), torch.tensor([data[i][1] for i in range(2)])
    model = get_model("lenet5", **dataset_options(cfg))
    model.load_state_dict(global_round2)
    truth, _ = client_update(fl_case(canonical(cfg), 2), model, x, y)
    for got, want in zip(views[-1].update.grads, truth.update.grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


# --- training does not change ---------------------------------------------------------------------

def test_auditing_changes_nothing_the_strategy_receives_or_sends(task_identity, every_node):
    """Two rounds of mixed precision (the second one sends the quantized global update), with
    the audit and the clients' truth Mod on and off: the same global models and the same bytes."""
    cfg = FLConfig(num_clients=2, client_examples=2, batch_size=1, test_examples=16)
    runs = {}
    for on in (True, False):
        inner = QuantizedFedAvg("mixed")
        strategy = AuditedStrategy(inner, AuditConfig(**CHEAP)) if on else inner
        fed = Federation(strategy, cfg, "mixed", truth=on)
        for r in (1, 2):
            fed.round(r)
        runs[on] = to_numpy(fed.arrays), inner.traffic, len(getattr(strategy, "rows", []))
    (w_on, t_on, n_rows), (w_off, t_off, _) = runs[True], runs[False]
    assert n_rows == 4
    assert all(np.array_equal(w_on[k], w_off[k]) for k in w_off)
    assert [t["bytes"] for t in t_on] == [t["bytes"] for t in t_off] and len(t_on) == 8


# --- faults -----------------------------------------------------------------------------------------

def test_a_message_the_auditor_cannot_attack_is_logged_and_training_goes_on(task_identity, every_node):
    cfg = FLConfig(num_clients=2, client_examples=2, batch_size=2, test_examples=16)
    cases = {"architecture": dict(model_fn=lambda config: get_model("lenet", in_channels=1, num_classes=10,
                                                                     image_size=28)),
             "codec": dict(policy=None),  # a quantized update, no codec policy known to the auditor
             "model name": dict(config=AuditConfig(**CHEAP, model="no-such-model")),
             "too many images": dict(config=AuditConfig(**CHEAP, max_images=1))}
    reasons = {}
    for name, options in cases.items():
        config = options.pop("config", AuditConfig(**CHEAP))
        inner = QuantizedFedAvg("mixed")
        fed = Federation(AuditedStrategy(inner, config, **options), cfg, "mixed")
        fed.round(1)
        plain = QuantizedFedAvg("mixed")
        Federation(plain, cfg, "mixed", truth=False).round(1)
        assert all(np.array_equal(inner.global_weights[k], plain.global_weights[k]) for k in plain.global_weights)
        rows = fed.strategy.rows
        assert len(rows) == 2 and all(r["status"].startswith("skipped: ") for r in rows)
        reasons[name] = rows[0]["status"]
    assert "the model sent is not a LeNet" in reasons["architecture"]
    assert "no codec" in reasons["codec"] and "no-such-model" in reasons["model name"]
    assert "max_images=1" in reasons["too many images"]
    report = audit_report(fed.strategy.rows)
    assert "2 updates not attacked" in report and "max_images" in report


def test_a_killed_audit_resumes_from_its_file(task_identity, every_node, monkeypatch, tmp_path):
    cfg = FLConfig(num_clients=2, client_examples=1, batch_size=1, test_examples=16)
    path = tmp_path / "audit.jsonl"
    first = AuditedStrategy(QuantizedFedAvg(None), AuditConfig(**CHEAP, path=str(path), clients=1))
    Federation(first, cfg).round(1)
    with open(path, "a") as f:
        f.write('{"key": "torn line of a killed run')  # the row being written when it died
    assert len(load_audit(path)) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("a stored row was attacked again")

    monkeypatch.setattr(audit_module, "attack_view", refuse)
    again = AuditedStrategy(QuantizedFedAvg(None), AuditConfig(**CHEAP, path=str(path), clients=1))
    fed = Federation(again, cfg)
    fed.round(1)
    assert again.rows == first.rows and again.rows[0]["status"] == "attacked"
    monkeypatch.setattr(audit_module, "attack_view", _real_attack_view)
    fed.round(2)  # a round not in the file is attacked and appended
    assert [r["round"] for r in load_audit(path).to_dict("records")] == [1, 2]


_real_attack_view = audit_module.attack_view


# --- outputs ----------------------------------------------------------------------------------------

def test_report_figure_and_gallery_read_the_rows(task_identity, every_node):
    import matplotlib
    matplotlib.use("Agg")
    from dlg_utils.plotting import audit_plot, audit_training_plot, best_reconstructions
    cfg = FLConfig(num_clients=2, client_examples=1, batch_size=1, test_examples=16)
    strategy = AuditedStrategy(QuantizedFedAvg(None), AuditConfig(**CHEAP), label="base")
    fed = Federation(strategy, cfg)
    fed.round(1), fed.round(2)
    rows = load_audit_rows(strategy)
    report = audit_report(rows)
    assert report.startswith("The server attacked 4 client updates (2 clients, rounds 1-2)")
    assert "**base** (none; B=1, FedSGD)" in report and "by SSIM >= 0.5" in report
    assert "of 4 images recovered (PSNR >= 25; " in report
    images = image_rows(rows)
    assert len(images) == 4
    table = round_table(rows)  # per round, counted over images, with exact intervals
    assert table["round"].tolist() == [1, 2] and table["images"].tolist() == [2, 2]
    for _, r in table.iterrows():
        part = images[images["round"] == r["round"]]
        assert r["psnr"] == (part["psnr"] >= 25).sum() and r["ssim"] == (part["ssim"] >= 0.5).sum()
        assert (r["mse_low"], r["mse_high"]) == clopper_pearson(r["mse"], 2)
    curve = pd.DataFrame({"round": [0, 1, 2], "test_accuracy": [0.1, 0.2, 0.3], "train-loss": [None, 2.3, 2.2]})
    audit_training_plot(curve, images, "test")
    with pytest.raises(ValueError, match="no scored images"):
        round_table(rows.assign(per_image=None))
    truths, recons, captions = best_images(rows, count=3)
    assert len(truths) == len(recons) == 3 and recons[0].shape == truths[0].shape == (1, 28, 28)
    assert captions[0].startswith("base r")
    audit_plot(rows, "test")
    best_reconstructions({"best": recons}, truths, {"best": captions})
    truths, recons, captions = round_images(rows, 2)
    assert len(truths) == 2 and list(recons) == ["base"] and len(recons["base"]) == len(captions["base"]) == 2
    assert torch.equal(truths[0], client_data(cfg, 0)[0][0])  # client 0's image first
    blind = AuditedStrategy(QuantizedFedAvg(None), AuditConfig(**CHEAP, truth=False), label="blind")
    Federation(blind, cfg, truth=False).round(1)
    assert "no ground truth" in audit_report(blind.rows)
    assert blind.rows[0]["attacks"][0]["reconstruction"]["shape"] == [1, 1, 28, 28]


def load_audit_rows(strategy):
    import pandas as pd
    return pd.DataFrame(strategy.rows)


# --- the real thing: Flower's simulation engine -------------------------------------------------------

SMALL = FLConfig(num_clients=2, rounds=2, client_examples=1, batch_size=1, local_epochs=1, test_examples=64)
STRONG = dict(attacks=("idlg", "ig", "adaptive"), iterations=100, ig_iterations=2000, rounds=(1,))


@pytest.mark.slow
def test_an_undefended_run_leaks_its_images_in_round_one_and_auditing_changes_no_training():
    """2 clients, 2 rounds, one image and one local step each, no defense: the audit recovers
    both clients' images in round 1 (PSNR >= 25 dB); the run is the same with the audit off."""
    from dlg_utils.federated import run_federated
    # iDLG and a short IG: a weaker attacker than the DP test's must already recover them
    audit = AuditConfig(attacks=("idlg", "ig"), iterations=100, ig_iterations=500, rounds=(1,))
    history, traffic = run_federated("base", SMALL, num_cpus=2, progress=False, audit=audit)
    rows = history.attrs["audit"]
    assert list(rows["round"]) == [1, 1] and list(rows["client"]) == [0, 1]
    assert all(min(s["psnr"] for s in r) >= 25 for r in rows["per_image"]), rows["per_image"].tolist()
    plain, plain_traffic = run_federated("base", SMALL, num_cpus=2, progress=False)
    same = ["round", "test_loss", "test_accuracy", "up_bytes", "down_bytes", "train-loss"]
    assert history[same].equals(plain[same])
    key = ["round", "direction", "kind"]
    assert traffic.groupby(key)["bytes"].apply(sorted).equals(plain_traffic.groupby(key)["bytes"].apply(sorted))


@pytest.mark.slow
def test_large_dp_noise_stops_the_audits_attacks():
    from dlg_utils.federated import run_federated
    history, _ = run_federated("dp", SMALL, num_cpus=2, progress=False,
                               audit=AuditConfig(**{**STRONG, "attacks": ("ig", "adaptive")}, clients=1))
    (row,) = history.attrs["audit"].to_dict("records")
    assert row["status"] == "attacked" and row["defense"] == "dp" and row["dp_noise"] > 1
    assert [a["attack"] for a in row["attacks"]] == ["ig", "adaptive"]  # the defense-aware attacker ran
    assert row["recovered"] == 0 and row["best_psnr"] < 20, row["per_image"]
