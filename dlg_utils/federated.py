"""Seed 001 on Flower: FedAvg whose model updates travel quantized, layer by layer.

Clients wrap their ClientApp in :class:`QuantizedUpdateMod` and the server runs
:class:`QuantizedFedAvg`, both with the same precision policy (int8 or int16 and a TF mode per
tensor, :class:`~dlg_utils.defenses.MixedPrecision`; the codec is :mod:`~dlg_utils.codec`).
Algorithm 1 of seed 001, step by step:

- 11, client: the update dW = (local weights - received global weights) goes out quantized,
  each tensor over its own [min, max]; the message carries the integers and, per tensor, the
  output range (min, max) that dequantizing needs. The modes are not in the message: they are
  the policy both ends were configured with (the secret seed 001's m^L argument is about).
- 13-14, server: dequantize every client's update, average weighted by examples.
- 23, server: quantize the averaged update dW_G; it is what the clients receive.
- 25, client: dequantize dW_G and add it to its copy of the last global model (kept in the
  Flower ``Context.state``), which gives the new global model it trains from.

The server adds the same dequantized dW_G to its own copy, so both ends hold the same global
model. A node that missed the previous round (or whose copy does not match) gets the full
float32 model instead. Every message's payload size is measured (``QuantizedFedAvg.traffic``).

``policy`` means the same everywhere (:class:`QuantizedUpdateMod`, :class:`QuantizedFedAvg`,
:func:`client_app`): ``None`` is plain FedAvg (float32 weights both ways, no quantization); a
policy or its name (:func:`~dlg_utils.codec.as_policy`) quantizes with it. The client side
alone also takes :data:`FROM_RUN_CONFIG`: the policy of the run config's ``method`` (a
multi-process deployment, where the run config is known only when a message arrives).

This module is the Flower system only: training, DP-SGD, apps and the simulation runner. It
imports the codec, data, models and training, never the attacks (the leakage study is
:mod:`~dlg_utils.fl_leakage`; the audit of a run, :mod:`~dlg_utils.audit`, wraps the strategy
it is given). :class:`TrainedSamplesMod` is the audit's client side: in audit mode only, each
train reply names the samples the client trained on, for the operator to score the attacks.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .codec import (ARRAYS, RANGES, UPDATE, Policy, as_policy, decode_update, encode_update, payload_bytes,
                    to_numpy, to_record, wrong_modes)
from .cases import RDP_ORDERS, noise_multiplier
from .config import progress_enabled
from .data import load_dataset, num_classes as count_classes
from .defenses import MixedPrecision
from .models import get_model
from .storage import ADDED, canonical
from .training import evaluate

CONFIG, METRICS = "config", "metrics"  # message keys (ARRAYS, UPDATE, RANGES: the codec's)
TRUTH = "audit-truth"  # audit mode only: which samples a client trained on (TrainedSamplesMod)
GLOBAL_STATE, VERSION_STATE = "dlg-global-model", "dlg-global-version"
FROM_RUN_CONFIG = "from-run-config"  # client side: the policy of the run config's ``method``
LOG = logging.getLogger("flwr")


# --- the client Mod --------------------------------------------------------------------------

class QuantizedUpdateMod:
    """Flower client Mod for seed 001 (steps 25 and 11): turns an incoming quantized global
    update into the global model the ClientApp trains, and the ClientApp's trained weights into
    a quantized update. Other message types pass through untouched, and so does everything
    with ``policy=None`` (plain FedAvg). ``policy=FROM_RUN_CONFIG`` takes the client policy of
    the run config's ``method`` (:func:`config_from_run`, :func:`method_setup`) at every
    message, as a multi-process deployment needs; methods without quantization pass through."""

    def __init__(self, policy: Policy = "mixed"):
        self.from_run_config = isinstance(policy, str) and policy == FROM_RUN_CONFIG
        self.policy = None if self.from_run_config else as_policy(policy)

    def __call__(self, msg: Message, ctx: Context, call_next) -> Message:
        policy = self.policy
        if self.from_run_config:
            method, cfg = config_from_run(ctx.run_config)
            policy = method_setup(method, cfg)[1]
        if policy is None or msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, ctx)
        return self._train(policy, msg, ctx, call_next)

    def _train(self, policy: MixedPrecision, msg: Message, ctx: Context, call_next) -> Message:
        content, config = msg.content, msg.content[CONFIG]
        if UPDATE in content:  # step 25: the global model = our copy + dequantized dW_G
            base_version = int(config["base-version"])
            have = int(ctx.state[VERSION_STATE]["version"]) if VERSION_STATE in ctx.state else None
            if have != base_version:
                raise RuntimeError(f"client holds global model version {have}, the update is "
                                   f"against version {base_version}")
            base = to_numpy(ctx.state[GLOBAL_STATE])
            delta = decode_update(content[UPDATE], content[RANGES], policy)
            current = {k: base[k] + delta[k] for k in base}
            del content[UPDATE], content[RANGES]
            content[ARRAYS] = to_record(current)
        else:
            current = to_numpy(content[ARRAYS])
        ctx.state[GLOBAL_STATE] = to_record(current)
        ctx.state[VERSION_STATE] = ConfigRecord({"version": int(config["version"])})

        reply = call_next(msg, ctx)
        if reply.has_error():
            return reply
        local = to_numpy(reply.content[ARRAYS])  # step 11: send dW = local - global, quantized
        update, ranges = encode_update({k: local[k] - current[k] for k in current}, policy)
        del reply.content[ARRAYS]
        reply.content[UPDATE], reply.content[RANGES] = update, ranges
        return reply


class TrainedSamplesMod:
    """Audit mode only (:mod:`~dlg_utils.audit`): a client Mod that adds to every train reply a
    ConfigRecord ``TRUTH`` naming the client's partition, its data set and the indices of the
    samples it trained on, so that an operator who owns the clients' data can score the
    server's reconstructions. The auditor takes the record out before the strategy sees the
    reply (the strategy and the attack never read it). ``enabled=FROM_RUN_CONFIG`` adds it only
    when the run config says ``audit=true`` and not ``audit_truth=false`` (a deployment);
    ``samples(msg, ctx)`` lists the indices (default: :func:`client_data`'s share under the
    message's :class:`FLConfig`)."""

    def __init__(self, enabled: bool | str = True, samples: Callable[[Message, Context], list[int]] | None = None):
        if not (isinstance(enabled, bool) or enabled == FROM_RUN_CONFIG):
            raise ValueError(f"enabled must be True, False or FROM_RUN_CONFIG, got {enabled!r}")
        self.enabled, self.samples = enabled, samples or _trained_samples

    def active(self, ctx: Context) -> bool:
        if self.enabled == FROM_RUN_CONFIG:
            run = ctx.run_config
            return _flag(run.get("audit", False)) and _flag(run.get("audit_truth", True))
        return bool(self.enabled)

    def __call__(self, msg: Message, ctx: Context, call_next) -> Message:
        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN or not self.active(ctx):
            return call_next(msg, ctx)
        config = dict(msg.content[CONFIG])  # read before the other Mods change the message
        indices = [int(i) for i in self.samples(msg, ctx)]
        reply = call_next(msg, ctx)
        if not reply.has_error():
            reply.content[TRUTH] = ConfigRecord({"partition": int(ctx.node_config["partition-id"]), "indices": indices,
                                                 "dataset": str(config.get("dataset", "")),
                                                 "data_root": str(config.get("data_root", ""))})
        return reply


def _flag(value) -> bool:
    """A run config's boolean: a bool, or a string such as "true" / "false"."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def _trained_samples(msg: Message, ctx: Context) -> list[int]:
    config = msg.content[CONFIG]
    return client_data(message_config(config), int(ctx.node_config["partition-id"]),
                       int(config.get("server-round", 1))).indices


# --- the strategy ----------------------------------------------------------------------------

class QuantizedFedAvg(FedAvg):
    """FedAvg with seed 001's quantized updates both ways (steps 13, 14, 23), or plain FedAvg
    with ``policy=None``; either way it records every message's payload bytes in ``traffic``.

    ``policy`` must be the clients' policy; give it other ``dequantize_mode`` s to see what a
    server that dequantizes with the wrong modes does (seed 001 Fig. 4). (No
    :data:`FROM_RUN_CONFIG` here: :func:`server_app` builds the strategy from the run config.)
    Other keyword arguments go to Flower's ``FedAvg``.
    """

    def __init__(self, policy: Policy = "mixed", **kwargs):
        kwargs.setdefault("fraction_evaluate", 0.0)  # the server evaluates centrally
        kwargs.setdefault("train_metrics_aggr_fn", _aggregate_metrics)
        super().__init__(**kwargs)
        self.policy = as_policy(policy)
        self.version = 0  # how many global updates have been applied
        self.global_weights: dict[str, np.ndarray] | None = None
        self.global_update: tuple[ArrayRecord, ConfigRecord] | None = None
        self.synced: set[int] = set()
        self.traffic: list[dict] = []  # round, direction, node, kind, bytes
        self.train_metrics: dict[int, dict] = {}  # round: the clients' aggregated metrics

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        config = ConfigRecord({**config, "version": self.version})
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.policy is not None and self.global_weights is None:
            self.global_weights = to_numpy(arrays)
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if self.policy is not None and self.global_update is not None and node in self.synced:
                q, ranges = self.global_update
                cfg = ConfigRecord({**msg.content[CONFIG], "base-version": self.version - 1})
                msg = Message(RecordDict({UPDATE: q, RANGES: ranges, CONFIG: cfg}),
                              dst_node_id=node, message_type=MessageType.TRAIN)
            kind = "quantized update" if UPDATE in msg.content else "float32 model"
            self.traffic.append(dict(round=server_round, direction="down", node=node, kind=kind,
                                     bytes=payload_bytes(msg.content)))
            out.append(msg)
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for msg in replies:
            if not msg.has_error():
                self.traffic.append(dict(round=server_round, direction="up", node=msg.metadata.src_node_id,
                                         kind="quantized update" if UPDATE in msg.content else "float32 model",
                                         bytes=payload_bytes(msg.content)))
        arrays, metrics = (super().aggregate_train(server_round, replies) if self.policy is None
                           else self._aggregate_quantized(replies))
        if metrics is not None:
            self.train_metrics[server_round] = dict(metrics)
        this_round = [t for t in self.traffic if t["round"] == server_round]
        LOG.info("round %d traffic: %d bytes down, %d bytes up (%s)", server_round,
                 sum(t["bytes"] for t in this_round if t["direction"] == "down"),
                 sum(t["bytes"] for t in this_round if t["direction"] == "up"),
                 ", ".join(sorted({t["kind"] for t in this_round})))
        return arrays, metrics

    def _aggregate_quantized(self, replies: list[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        weights = np.array([float(next(iter(c.metric_records.values()))[self.weighted_by_key])
                            for c in contents])
        deltas = [decode_update(c[UPDATE], c[RANGES], self.policy) for c in contents]  # step 13
        mean = {k: sum(w * d[k] for w, d in zip(weights, deltas)) / weights.sum()  # step 14
                for k in deltas[0]}
        self.global_update = encode_update(mean, self.policy)  # step 23
        applied = decode_update(*self.global_update, self.policy)  # what the clients will add
        self.global_weights = {k: self.global_weights[k] + applied[k] for k in self.global_weights}
        self.version += 1
        self.synced = {m.metadata.src_node_id for m in valid}
        return to_record(self.global_weights), self.train_metrics_aggr_fn(contents, self.weighted_by_key)


# --- client training -------------------------------------------------------------------------

@dataclass
class FLConfig:
    """One federated run (seed 001: 15 clients, LeNet-5). ``dp_epsilon > 0`` trains every client
    with DP-SGD (Opacus, Poisson sampling, RDP accountant) calibrated so that the whole run
    spends ``dp_epsilon`` at ``dp_delta`` per client data set (sample-level DP)."""

    dataset: str = "fashion-mnist"
    num_clients: int = 15
    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    client_examples: int = 0  # 0: every client gets len(train) / num_clients images
    test_examples: int = 0  # 0: the whole test set
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    dp_batch_size: int = 128  # DP-SGD's batch and step size (the "dp" method uses them)
    dp_lr: float = 0.1
    data_root: str = ""
    # > 0: each round the client trains on the next ``round_examples`` images of its share (fresh
    # images every round, cycling), as a device sees new data; 0: its whole share every round
    round_examples: int = field(default=0, metadata=ADDED)

    def __post_init__(self):
        if self.num_clients < 1 or self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1:
            raise ValueError("num_clients, rounds, local_epochs and batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.dp_epsilon < 0 or not 0 < self.dp_delta < 1:
            raise ValueError("dp_epsilon must be >= 0 and dp_delta in (0, 1)")
        if self.round_examples < 0 or self.client_examples < 0:
            raise ValueError("client_examples and round_examples must be >= 0")


@functools.lru_cache(maxsize=4)
def _dataset(name: str, train: bool, root: str) -> Dataset:
    return load_dataset(name, train=train, root=root or None)


def client_data(cfg: FLConfig, partition: int, server_round: int = 1) -> Subset:
    """What client ``partition`` trains on in round ``server_round``: its share of an IID split
    of the training set (fixed by ``cfg.seed``), or with ``cfg.round_examples`` the round's
    slice of that share (round 1 its first images, round 2 the next, cycling)."""
    if not 0 <= partition < cfg.num_clients:
        raise ValueError(f"partition {partition} outside 0..{cfg.num_clients - 1}")
    data = _dataset(cfg.dataset, True, cfg.data_root)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))
    share = np.array_split(order.numpy(), cfg.num_clients)[partition]
    if cfg.client_examples:
        share = share[:cfg.client_examples]
    if cfg.round_examples:
        if server_round < 1:
            raise ValueError(f"server_round must be >= 1, got {server_round}")
        start = (server_round - 1) * cfg.round_examples
        share = np.take(share, np.arange(start, start + cfg.round_examples), mode="wrap")
    return Subset(data, share.tolist())


def evaluation_data(cfg: FLConfig) -> Dataset:
    """The test set the server evaluates the global model on (its first ``cfg.test_examples``)."""
    data = _dataset(cfg.dataset, False, cfg.data_root)
    return Subset(data, range(min(cfg.test_examples, len(data)))) if cfg.test_examples else data


def dataset_options(cfg: FLConfig) -> dict[str, int]:
    """The options that build a model for ``cfg.dataset``'s images and classes: seed 001's
    LeNet-5 is ``get_model("lenet5", **dataset_options(cfg))``."""
    data = _dataset(cfg.dataset, False, cfg.data_root)
    channels, size, _ = data[0][0].shape
    return {"in_channels": channels, "num_classes": count_classes(data), "image_size": size}


def dp_noise_multiplier(cfg: FLConfig, examples: int) -> float:
    """The DP-SGD noise multiplier that spends ``cfg.dp_epsilon`` over all rounds (RDP;
    :func:`~dlg_utils.cases.noise_multiplier`, the project's one calibration)."""
    sample_rate = min(1.0, cfg.batch_size / examples)
    steps = cfg.rounds * cfg.local_epochs * math.ceil(1 / sample_rate)
    return noise_multiplier(cfg.dp_epsilon, cfg.dp_delta, sample_rate, steps)


def local_train(model: torch.nn.Module, data: Dataset, cfg: FLConfig, seed: int,
                ctx_state: RecordDict | None = None) -> dict[str, float]:
    """Algorithm 1, lines 5-10: ``cfg.local_epochs`` of minibatch SGD on the client's data, with
    DP-SGD when ``cfg.dp_epsilon > 0`` (its accountant history kept in ``ctx_state`` across
    rounds). Returns the mean training loss and, with DP, the epsilon spent so far."""
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    engine = None
    if cfg.dp_epsilon > 0:
        from opacus import PrivacyEngine  # only for DP (see dp_noise_multiplier)
        engine = PrivacyEngine(accountant="rdp")
        if ctx_state is not None and "dp-history" in ctx_state:
            h = ctx_state["dp-history"]
            engine.accountant.history = list(zip(h["sigma"], h["rate"], h["steps"]))
        sigma = dp_noise_multiplier(cfg, len(data))
        train_model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=cfg.dp_clip, poisson_sampling=True, noise_generator=torch.Generator().manual_seed(seed))
    else:
        train_model = model
    train_model.train()
    total, count = 0.0, 0
    for _ in range(cfg.local_epochs):
        for x, y in loader:
            if len(y) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad()
            loss = F.cross_entropy(train_model(x), y)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(y), count + len(y)
    out = {"train-loss": total / max(count, 1)}
    if engine is not None:
        history = engine.accountant.history
        if ctx_state is not None:
            ctx_state["dp-history"] = ConfigRecord({"sigma": [float(h[0]) for h in history],
                                                    "rate": [float(h[1]) for h in history],
                                                    "steps": [int(h[2]) for h in history]})
        out["epsilon"] = float(engine.accountant.get_epsilon(cfg.dp_delta, alphas=RDP_ORDERS))
        train_model.remove_hooks()
    return out


def message_config(config: ConfigRecord | dict) -> FLConfig:
    """The :class:`FLConfig` a train message's config carries (the server sends every field)."""
    return FLConfig(**{k: config[k] for k in asdict(FLConfig()) if k in config})


def train_message(msg: Message, ctx: Context) -> Message:
    """The ClientApp's train function: load the global model, train locally, reply weights."""
    config = msg.content[CONFIG]
    cfg = message_config(config)
    torch.set_num_threads(1)
    model = get_model("lenet5", **dataset_options(cfg))
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    partition, server_round = int(ctx.node_config["partition-id"]), int(config["server-round"])
    data = client_data(cfg, partition, server_round)
    seed = cfg.seed * 1_000_003 + server_round * 1000 + partition
    metrics = local_train(model, data, cfg, seed, ctx.state)
    metrics["num-examples"] = len(data)
    content = RecordDict({ARRAYS: ArrayRecord(model.state_dict()), METRICS: MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def client_app(policy: Policy = None, truth: bool | str = False) -> ClientApp:
    """A ClientApp that trains seed 001's LeNet-5 on its partition: plain FedAvg with
    ``policy=None``; otherwise wrapped in :class:`QuantizedUpdateMod` with ``policy`` (a policy,
    its name, or :data:`FROM_RUN_CONFIG`). ``truth`` (True, or :data:`FROM_RUN_CONFIG`) adds
    :class:`TrainedSamplesMod` outside it: the audit's ground truth."""
    mods = ([] if not truth else [TrainedSamplesMod(truth)]) + ([] if policy is None else [QuantizedUpdateMod(policy)])
    app = ClientApp(mods=mods)
    app.train()(train_message)
    return app


def _aggregate_metrics(contents: list[RecordDict], key: str) -> MetricRecord:
    """Weighted mean of the clients' metrics, plus the largest epsilon any client spent."""
    records = [next(iter(c.metric_records.values())) for c in contents]
    weights = np.array([float(r[key]) for r in records])
    out = {k: float(sum(w * float(r[k]) for w, r in zip(weights, records)) / weights.sum())
           for k in records[0] if k != key}
    if "epsilon" in records[0]:
        out["epsilon-max"] = max(float(r["epsilon"]) for r in records)
    out[key] = int(weights.sum())
    return MetricRecord(out)


def config_from_run(run_config: dict) -> tuple[str, FLConfig]:
    """(method, FLConfig) from a Flower run config (``flwr run ... --run-config``): the
    ``method`` entry and any :class:`FLConfig` field by name."""
    fields = asdict(FLConfig())
    cfg = FLConfig(**{k: type(fields[k])(v) for k, v in run_config.items() if k in fields})
    return str(run_config.get("method", "mixed")), cfg


def make_strategy(method: str, cfg: FLConfig) -> tuple[FLConfig, QuantizedFedAvg, MixedPrecision | None]:
    """(the method's config, its server strategy, the clients' policy) for ``method``."""
    cfg, client_policy, server_policy = method_setup(method, cfg)
    return cfg, QuantizedFedAvg(server_policy, min_train_nodes=cfg.num_clients,
                                min_available_nodes=cfg.num_clients), client_policy


def server_app(method: str | None = None, cfg: FLConfig | None = None, strategy: QuantizedFedAvg | None = None,
               on_round: Callable[[dict], None] | None = None,
               wrap: Callable[[QuantizedFedAvg, str, dict], object] | None = None) -> ServerApp:
    """A ServerApp that runs a method for ``cfg.rounds`` rounds from a LeNet-5 initialized with
    ``cfg.seed``, evaluating the global model on the test set after every round and passing
    each round's row to ``on_round``. Without ``method`` / ``cfg`` it reads them from the run
    config (:func:`config_from_run`), as in a multi-process deployment. Without ``strategy``,
    ``wrap(strategy, method, run_config)`` may wrap the method's strategy (the deployment's
    app passes :func:`dlg_utils.audit.audited_from_run`: ``audit=true`` audits the run)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_method, run_cfg = config_from_run(context.run_config)
        run_method, run_cfg = method or run_method, cfg or run_cfg
        run_cfg, run_strategy, _ = make_strategy(run_method, run_cfg)
        if strategy is None and wrap is not None:
            run_strategy = wrap(run_strategy, run_method, dict(context.run_config))
        torch.manual_seed(run_cfg.seed)
        model, test = get_model("lenet5", **dataset_options(run_cfg)), evaluation_data(run_cfg)
        start = time.perf_counter()

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, accuracy = evaluate(model, test)
            row = {"round": server_round, "test_loss": loss, "test_accuracy": accuracy,
                   "seconds": time.perf_counter() - start}
            LOG.info("round %d: test accuracy %.4f", server_round, accuracy)
            if on_round is not None:
                on_round(row)
            return MetricRecord({"test-loss": loss, "test-accuracy": accuracy})

        (strategy or run_strategy).start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                                         num_rounds=run_cfg.rounds, train_config=ConfigRecord(canonical(run_cfg)),
                                         evaluate_fn=evaluate_fn)

    return app


# --- running it ------------------------------------------------------------------------------

METHODS = ("base", "dp", "mixed", "int8", "int16", "mixed-wrong-mode")


def method_setup(method: str, cfg: FLConfig) -> tuple[FLConfig, MixedPrecision | None, MixedPrecision | None]:
    """(config, client policy, server policy) of a Table 1 method: ``base`` (float FedAvg), ``dp``
    (DP-SGD at epsilon 1, delta 1e-5, with ``dp_batch_size`` and ``dp_lr``), ``mixed`` (seed 001), ``int8`` / ``int16`` (one
    precision everywhere), ``mixed-wrong-mode`` (the server dequantizes with the wrong modes)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "base":
        return cfg, None, None
    if method == "dp":
        return replace(cfg, dp_epsilon=cfg.dp_epsilon or 1.0, batch_size=cfg.dp_batch_size, lr=cfg.dp_lr), None, None
    if method == "mixed-wrong-mode":
        client = as_policy("mixed")
        return cfg, client, wrong_modes(client, len(list(get_model("lenet5", **dataset_options(cfg)).parameters())))
    return cfg, as_policy(method), as_policy(method)


def run_federated(method: str, cfg: FLConfig = FLConfig(), *, num_cpus: int | None = None,
                  progress: bool | None = None, verbose: bool = False, audit=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run one method of seed 001's Table 1 with Flower's simulation engine (Ray, one
    process per concurrent client). Returns (one row per round: test loss and accuracy,
    seconds, uplink / downlink bytes, epsilon; one row per message: its payload bytes).

    ``audit``: an :class:`~dlg_utils.audit.AuditConfig`: the server attacks the updates its
    clients send (``audit.wrap``: :class:`~dlg_utils.audit.AuditedStrategy`; the clients report
    their samples with :class:`TrainedSamplesMod` when ``audit.truth``). Training is the same
    with or without it; the audit's rows are in ``history.attrs["audit"]`` (and in
    ``audit.path``)."""
    from flwr.simulation import run_simulation  # Ray: imported only to simulate

    rows: list[dict] = []
    show = progress_enabled() if progress is None else progress
    bar = tqdm(total=cfg.rounds, desc=f"FL {method}", disable=not show, unit="round")

    def on_round(row: dict) -> None:
        rows.append(row)
        if row["round"] > 0:
            bar.update(1)

    cpus = num_cpus or os.cpu_count() or 1
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    level = LOG.level
    LOG.setLevel(logging.INFO if verbose else logging.ERROR)
    cfg, strategy, client_policy = make_strategy(method, cfg)
    if audit is not None:
        strategy = audit.wrap(strategy, label=audit.run or method)
    try:
        run_simulation(server_app(method, cfg, strategy, on_round),
                       client_app(client_policy, truth=audit is not None and audit.truth),
                       num_supernodes=cfg.num_clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": cpus, "log_to_driver": verbose,
                                                     "logging_level": logging.ERROR}},
                       verbose_logging=verbose)
    finally:
        LOG.setLevel(level)
        bar.close()
    if len(rows) != cfg.rounds + 1:
        raise RuntimeError(f"the simulation finished {len(rows) - 1} of {cfg.rounds} rounds "
                           "(rerun with verbose=True to see Flower's log)")
    traffic = pd.DataFrame(strategy.traffic)
    history = pd.DataFrame(rows)
    per_round = traffic.groupby(["round", "direction"])["bytes"].sum().unstack(fill_value=0)
    history["up_bytes"] = history["round"].map(per_round.get("up", {})).fillna(0).astype(int)
    history["down_bytes"] = history["round"].map(per_round.get("down", {})).fillna(0).astype(int)
    metrics = pd.DataFrame.from_dict(strategy.train_metrics, orient="index")
    history = history.join(metrics.drop(columns=["num-examples"], errors="ignore"), on="round")
    history["method"] = method
    if audit is not None:
        history.attrs["audit"] = pd.DataFrame(strategy.rows)
    return history, traffic


def table1_run(trial: dict, cfg: FLConfig) -> dict:
    """One stored run of Table 1 (:func:`~dlg_utils.experiments.sweep`'s ``run``): method
    ``trial["method"]`` on data set ``trial["dataset"]`` with ``cfg`` otherwise, through
    :func:`run_federated`. Returns ``history`` (one record per round, without the method
    column: the trial names it) and ``wall_seconds``."""
    start = time.perf_counter()
    history, _ = run_federated(trial["method"], replace(cfg, dataset=trial["dataset"]))
    return {"history": history.drop(columns="method").to_dict("records"), "wall_seconds": time.perf_counter() - start}
