"""Seed 001 on Flower: the update codec, the client Mod, the strategy, the leakage study's views, and a
real simulation."""
import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from hypothesis import given, settings, strategies as st

from dlg_utils.defenses import LayerPrecision, MixedPrecision
from dlg_utils.codec import ARRAYS, RANGES, UPDATE, as_policy, decode_update, encode_update, upload_bytes
from dlg_utils.federated import (CONFIG, FROM_RUN_CONFIG, METRICS, FLConfig, QuantizedFedAvg, QuantizedUpdateMod,
                                 client_app, method_setup)
from dlg_utils.fl_leakage import attacker_views, one_step_update
from dlg_utils.models import LeNet5
from dlg_utils.quantization import DTYPES


def lenet5_update(scale: float = 1e-2, seed: int = 0) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(p.shape, generator=g) * scale).numpy() for n, p in LeNet5().named_parameters()}


def step_bound(update: dict, ranges: ConfigRecord, policy: MixedPrecision) -> dict[str, float]:
    """One quantization step of each tensor: the most a round trip may be off by."""
    out = {}
    for (name, _), p in zip(update.items(), policy.layers(len(update))):
        lo, hi = ranges[name]
        _, lowest, highest, _ = DTYPES[p.dtype]
        out[name] = (hi - lo) / (highest - lowest) * 1.001
    return out


@settings(max_examples=25, deadline=None)
@given(policy=st.sampled_from(["mixed", "int8", "int16", "mixed:random:1", "mixed:random:7"]),
       scale=st.floats(1e-4, 10.0), seed=st.integers(0, 1000))
def test_codec_round_trip_is_within_one_quantization_step(policy, scale, seed):
    policy = as_policy(policy)
    update = lenet5_update(scale, seed)
    q, ranges = encode_update(update, policy)
    for (name, a), p in zip(q.items(), policy.layers(len(update))):
        assert a.numpy().dtype.kind == "i" and a.numpy().dtype.itemsize * 8 == DTYPES[p.dtype][3]
    back = decode_update(q, ranges, policy)
    bound = step_bound(update, ranges, policy)
    for name in update:
        assert back[name].shape == update[name].shape
        assert np.abs(back[name] - update[name]).max() <= bound[name]


def test_decode_with_another_policy_or_bad_update_is_a_clear_error():
    update = lenet5_update()
    q, ranges = encode_update(update, as_policy("int8"))
    with pytest.raises(ValueError, match="same precision policy"):
        decode_update(q, ranges, as_policy("int16"))
    bad = dict(update)
    bad["fc_nan"] = np.array([np.nan, 1.0], dtype=np.float32)
    with pytest.raises(ValueError, match="NaN"):
        encode_update(bad, MixedPrecision([LayerPrecision()] * len(bad)))
    with pytest.raises(ValueError, match="policy"):
        as_policy("int4")


def test_wrong_modes_change_the_update_and_min_combined_decodes_every_mode():
    """The claim the notebook checks: only SCALED vs the others matters, and decoding every
    tensor with MIN_COMBINED recovers the update whatever mode quantized it."""
    update = lenet5_update(3e-3)
    policy = as_policy("mixed")
    q, ranges = encode_update(update, policy)
    bound = step_bound(update, ranges, policy)
    guess = decode_update(q, ranges, policy, modes=["MIN_COMBINED"] * len(update))
    assert all(np.abs(guess[k] - update[k]).max() <= bound[k] for k in update)
    views = attacker_views(update, policy, lr=0.1)
    rel = {v: float(sum(((a - b) ** 2).sum() for a, b in zip(views[v], views["plain"])) ** 0.5
                    / sum((b ** 2).sum() for b in views["plain"]) ** 0.5) for v in views}
    assert rel["server"] < 0.02 and rel["guess"] < 0.02
    assert rel["wrong-mode"] > 0.1 and rel["sent"] > 100


def test_quantized_upload_is_about_a_quarter_of_float32():
    update = {n: p.detach().numpy() for n, p in LeNet5().named_parameters()}
    float32, int8, mixed = (upload_bytes(update, p) for p in (None, "int8", "mixed"))
    assert float32 > 44_426 * 4  # the parameters' bytes, plus framing
    assert 3.5 < float32 / int8 < 4.0
    assert int8 < mixed < upload_bytes(update, "int16") < float32


def test_one_step_update_is_minus_lr_times_the_gradient():
    torch.manual_seed(0)
    model = LeNet5()
    x, y = torch.rand(1, 1, 28, 28), torch.tensor([3])
    upd = one_step_update(model, x, y, lr=0.5)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for n, p in model.named_parameters():
        np.testing.assert_allclose(upd[n], -0.5 * p.grad.numpy(), rtol=1e-5, atol=1e-8)


# --- the Mod and the strategy on real Flower messages ---------------------------------------

def weights(seed: int) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    return {n: p.detach().numpy().copy() for n, p in LeNet5().state_dict().items()}


def train_message(content: RecordDict, node: int = 5) -> Message:
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN)


def test_mod_sends_the_quantized_update_and_rebuilds_the_global_model(task_identity):
    policy = as_policy("mixed")
    mod = QuantizedUpdateMod(policy)
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    w0, delta = weights(0), lenet5_update(1e-2, seed=1)
    seen = {}

    def client(msg, ctx):  # trains: adds delta to what it received
        got = {k: v.numpy() for k, v in msg.content[ARRAYS].items()}
        seen["global"] = got
        out = RecordDict({ARRAYS: ArrayRecord({k: Array(got[k] + delta[k]) for k in got}),
                          METRICS: MetricRecord({"num-examples": 10})})
        return Message(out, reply_to=msg)

    # round 1: the float32 model comes in, the quantized update goes out
    msg = train_message(RecordDict({ARRAYS: ArrayRecord({k: Array(v) for k, v in w0.items()}),
                                    CONFIG: ConfigRecord({"version": 0, "server-round": 1})}))
    reply = mod(msg, ctx, client)
    assert ARRAYS not in reply.content and UPDATE in reply.content and RANGES in reply.content
    assert {a.numpy().dtype.kind for a in reply.content[UPDATE].values()} == {"i"}
    sent = decode_update(reply.content[UPDATE], reply.content[RANGES], policy)
    for k in delta:
        assert np.abs(sent[k] - delta[k]).max() <= np.ptp(delta[k]) / 255 * 1.01 + 1e-4

    # round 2: a quantized global update comes in; the client trains from its copy + the update
    g_update = lenet5_update(1e-2, seed=2)
    q, ranges = encode_update(g_update, policy)
    msg = train_message(RecordDict({UPDATE: q, RANGES: ranges,
                                    CONFIG: ConfigRecord({"version": 1, "base-version": 0, "server-round": 2})}))
    mod(msg, ctx, client)
    applied = decode_update(q, ranges, policy)
    for k in w0:
        np.testing.assert_allclose(seen["global"][k], w0[k] + applied[k], rtol=0, atol=1e-6)

    # an update against a version the client does not hold is refused
    msg = train_message(RecordDict({UPDATE: q, RANGES: ranges,
                                    CONFIG: ConfigRecord({"version": 5, "base-version": 4, "server-round": 6})}))
    with pytest.raises(RuntimeError, match="version"):
        mod(msg, ctx, client)


def test_policy_none_is_plain_fedavg_and_the_run_config_policy_is_explicit(task_identity):
    """policy=None means no quantization everywhere; reading the run config is FROM_RUN_CONFIG."""
    w0 = weights(0)

    def client(msg, ctx):  # replies the weights it received
        return Message(RecordDict({ARRAYS: msg.content[ARRAYS], METRICS: MetricRecord({"num-examples": 1})}),
                       reply_to=msg)

    def round_one(mod, run_config):
        ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config=run_config)
        msg = train_message(RecordDict({ARRAYS: ArrayRecord({k: Array(v) for k, v in w0.items()}),
                                        CONFIG: ConfigRecord({"version": 0, "server-round": 1})}))
        return mod(msg, ctx, client).content

    assert ARRAYS in round_one(QuantizedUpdateMod(None), {"method": "mixed"})  # None: never quantizes
    assert UPDATE in round_one(QuantizedUpdateMod(FROM_RUN_CONFIG), {"method": "mixed"})
    assert ARRAYS in round_one(QuantizedUpdateMod(FROM_RUN_CONFIG), {"method": "base"})
    assert UPDATE in round_one(QuantizedUpdateMod(FROM_RUN_CONFIG), {})  # the server's default method: mixed
    assert QuantizedFedAvg(None).policy is None
    assert client_app(None)._mods == [] and len(client_app(FROM_RUN_CONFIG)._mods) == 1
    with pytest.raises(ValueError, match="policy"):
        QuantizedFedAvg(FROM_RUN_CONFIG)  # the server's policy comes from server_app, not from here


def test_the_flower_system_does_not_import_the_attacks():
    import subprocess
    import sys
    code = ("import sys, dlg_utils.federated; "
            "print(sorted(m for m in sys.modules if m in ('dlg_utils.attack', 'dlg_utils.experiments')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class FakeGrid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes


def test_strategy_averages_dequantized_updates_and_sends_the_global_update_quantized(task_identity, monkeypatch):
    policy = as_policy("mixed")
    strategy = QuantizedFedAvg(policy, min_train_nodes=2, min_available_nodes=2)
    monkeypatch.setattr("flwr.serverapp.strategy.fedavg.sample_nodes",
                        lambda grid, min_available, size: (list(grid.get_node_ids()), list(grid.get_node_ids())))
    w0 = weights(0)
    grid = FakeGrid([11, 12])
    sent = strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in w0.items()}), ConfigRecord(), grid)
    assert [ARRAYS in m.content for m in sent] == [True, True]  # first round: the float32 model
    deltas = [lenet5_update(1e-2, seed=s) for s in (3, 4)]
    counts = [100, 300]
    replies = []
    for m, d, n in zip(sent, deltas, counts):
        q, ranges = encode_update(d, policy)
        replies.append(Message(RecordDict({UPDATE: q, RANGES: ranges, METRICS: MetricRecord({"num-examples": n})}),
                               reply_to=m))
    new, metrics = strategy.aggregate_train(1, replies)
    decoded = [decode_update(r.content[UPDATE], r.content[RANGES], policy) for r in replies]
    mean = {k: (100 * decoded[0][k] + 300 * decoded[1][k]) / 400 for k in w0}
    q, ranges = strategy.global_update
    applied = decode_update(q, ranges, policy)
    bound = step_bound(mean, ranges, policy)
    for k in w0:
        assert np.abs(applied[k] - mean[k]).max() <= bound[k]
        np.testing.assert_allclose(new[k].numpy(), w0[k] + applied[k], atol=1e-6)
    assert metrics["num-examples"] == 400
    # second round: both nodes are in sync, so they get the quantized global update
    sent = strategy.configure_train(2, new, ConfigRecord(), grid)
    assert all(UPDATE in m.content and m.content[CONFIG]["base-version"] == 0 for m in sent)
    up = [t for t in strategy.traffic if t["direction"] == "up"]
    down = [t for t in strategy.traffic if t["round"] == 2]
    assert len(up) == 2 and len(down) == 2
    assert all(t["bytes"] < 0.3 * strategy.traffic[0]["bytes"] for t in up + down)


def test_methods_and_config_are_checked():
    with pytest.raises(ValueError, match="method"):
        method_setup("fedprox", FLConfig())
    with pytest.raises(ValueError):
        FLConfig(num_clients=0)
    with pytest.raises(ValueError):
        FLConfig(dp_delta=0)
    cfg, client, server = method_setup("mixed-wrong-mode", FLConfig())
    assert [p.mode for p in client.layers(10)] == [p.mode for p in server.layers(10)]
    assert all(s.dequantize_mode != c.mode for c, s in zip(client.layers(10), server.layers(10)))
    assert method_setup("dp", FLConfig())[0].dp_epsilon == 1.0


# --- the real thing: Flower's simulation engine ---------------------------------------------

@pytest.mark.slow
def test_two_client_simulation_round_trips_through_flower():
    """2 clients, 2 rounds on Fashion-MNIST subsets: round 2 must travel as quantized updates
    both ways, at about a quarter of base FL's bytes, and training must move the model."""
    from dlg_utils.federated import run_federated
    cfg = FLConfig(num_clients=2, rounds=2, client_examples=128, test_examples=256)
    history, traffic = run_federated("mixed", cfg, progress=False)
    assert list(history["round"]) == [0, 1, 2]
    assert history["test_loss"].notna().all() and history["test_loss"].iloc[-1] < history["test_loss"].iloc[0]
    last = traffic[traffic["round"] == 2]
    assert set(last["kind"]) == {"quantized update"} and len(last) == 4
    first_down = traffic[(traffic["round"] == 1) & (traffic["direction"] == "down")]
    assert set(first_down["kind"]) == {"float32 model"}
    assert (last["bytes"] < 0.3 * first_down["bytes"].max()).all()


def test_the_global_model_is_built_by_name_with_the_weights_of_lenet5():
    from dlg_utils.federated import dataset_options
    from dlg_utils.models import get_model
    cfg = FLConfig()
    assert dataset_options(cfg) == {"in_channels": 1, "num_classes": 10, "image_size": 28}
    torch.manual_seed(cfg.seed)
    built = get_model("lenet5", **dataset_options(cfg)).state_dict()
    torch.manual_seed(cfg.seed)
    old = LeNet5(1, 10, 28).state_dict()
    assert all(torch.equal(built[k], old[k]) for k in old)


def test_decoding_errors_per_tensor_and_mode():
    """Every tensor decodes within about a step with its own mode; a MIN_* tensor whose range
    is one-sided (here every update entry is positive) decodes badly as SCALED."""
    from dlg_utils.codec import decoding_errors
    update = {k: np.abs(v) + 1e-3 for k, v in lenet5_update(3e-3).items()}
    policy = as_policy("mixed")
    table = decoding_errors(update, policy)
    assert table["tensor"].tolist() == list(update) and len(table) == len(update)
    assert table["mode"].tolist() == [p.mode for p in policy.layers(len(update))]
    own = np.array([r[f"error decoded as {r['mode']}"] for _, r in table.iterrows()])
    assert (own < 0.02).all()
    min_modes = table[table["mode"] != "SCALED"]
    assert len(min_modes) and (min_modes["error decoded as SCALED"] > 0.1).all()
    assert (min_modes["range min / max"] >= 0).all()  # a one-sided update: a MIN_* range stays one-sided
    assert table[table["mode"] == "SCALED"]["range min / max"].between(-1.01, -0.99).all()  # symmetric (within a step)
    with pytest.raises(ValueError, match="precision policy"):
        decoding_errors(update, None)


def test_min_combined_worst_case_is_within_an_int8_step():
    from dlg_utils.codec import min_combined_worst_case
    update = lenet5_update(3e-3)
    worst = min_combined_worst_case(update, seeds=range(5))
    assert 0 <= worst <= 1 / 255
    assert min_combined_worst_case(update, seeds=[]) == 0.0
    assert min_combined_worst_case(update, seeds=range(3)) <= worst  # a maximum over more policies


def test_raw_bytes_count_each_tensors_integer_width():
    from dlg_utils.codec import raw_bytes
    update = lenet5_update()
    params = sum(v.size for v in update.values())
    assert raw_bytes(update, None) == 4 * params and raw_bytes(update, "int16") == 2 * params
    assert raw_bytes(update, "int8") == params
    layers = as_policy("mixed").layers(len(update))
    wide = sum(v.size for v, p in zip(update.values(), layers) if p.dtype == "qint16")
    assert 0 < wide < params and raw_bytes(update, "mixed") == params + wide


def test_table1_run_stores_the_history_without_the_method(monkeypatch):
    import pandas as pd
    from dlg_utils import federated
    seen = {}

    def fake(method, cfg):
        seen.update(method=method, dataset=cfg.dataset, rounds=cfg.rounds)
        return pd.DataFrame({"round": [0, 1], "test_accuracy": [0.1, 0.5], "method": method}), pd.DataFrame()

    monkeypatch.setattr(federated, "run_federated", fake)
    row = federated.table1_run({"dataset": "mnist", "method": "int8"}, FLConfig(rounds=1))
    assert seen == {"method": "int8", "dataset": "mnist", "rounds": 1}
    assert row["history"] == [{"round": 0, "test_accuracy": 0.1}, {"round": 1, "test_accuracy": 0.5}]
    assert row["wall_seconds"] >= 0
