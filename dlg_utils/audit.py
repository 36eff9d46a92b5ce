"""Audit a Flower run: the server attacks the updates its clients actually send.

:class:`AuditedStrategy` wraps any Flower strategy (``QuantizedFedAvg`` with or without a
precision policy, Flower's ``FedAvg``). It records the global model each client was sent
(``configure_train``) and, in each audited round, before the strategy aggregates, takes a
sample of the replies as the server received them (after the clients' Mods: the codec, DP-SGD's
noise), builds the case of each (:func:`fl_case`: from the train config the server sent and
the number of examples the client reports, nothing else), attacks it with an ensemble of the
project's attacks (:func:`~dlg_utils.attack.attack_view`, which reads a
:class:`~dlg_utils.cases.ServerView` only) and stores one row per (round, client) in a
resumable JSON-lines file (:class:`~dlg_utils.storage.RowStore`).

Where the operator owns the clients' data (a simulation, the local deployment script), the
clients add :class:`~dlg_utils.federated.TrainedSamplesMod`: each train reply then names the
samples it trained on. The auditor takes that record out of the reply before the strategy or
the attack sees it, and uses it only to score the reconstructions (matched per image,
:func:`~dlg_utils.metrics.score_batch`). Without it the rows keep the reconstructions for a
person to look at.

Auditing never changes training: the strategy gets the replies exactly as without the audit
(the truth record taken out), the attacks run between the replies' arrival and the aggregation
with the random states saved and restored, and any failure to attack a message is stored as a
row whose ``status`` says why (``skipped: ...``), never raised into the run.
"""
from __future__ import annotations

import base64
import functools
import logging
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from .attack import attack_view
from .attacks import attack_config
from .cases import DPSGD, Case, ServerView, view_from_weights
from .codec import ARRAYS, RANGES, UPDATE, as_policy, decode_update, to_numpy
from .data import load_dataset
from .defenses import MixedPrecision, defense_from_spec
from .federated import CONFIG, TRUTH, FLConfig, dataset_options, dp_noise_multiplier, message_config, _flag
from .metrics import label_count_accuracy, score_batch
from .models import get_model
from .quantization import step_size
from .stats import CRITERIA, clopper_pearson, recovered, scored_criteria
from .storage import RowStore, canonical, config_key, load_rows

LOG = logging.getLogger("flwr")
ADAM_ATTACKS = ("ig", "adaptive")  # attacks run for ``ig_iterations`` (the others for ``iterations``)


@dataclass(frozen=True)
class AuditConfig:
    """What an audited run attacks and where it stores the rows.

    ``path``: the JSON-lines file (resumable: a row stored there is not attacked again; ""
    keeps the rows in memory). ``attacks``: the ensemble, names of
    :data:`~dlg_utils.attacks.ATTACKS` or ``"adaptive"`` (the defense-aware attacker for the
    update's defense); attacks that come to the same configuration run once (undefended,
    ``adaptive`` is ``ig``). ``iterations``: L-BFGS attacks' (dlg, idlg); ``ig_iterations``:
    Inverting Gradients' and the adaptive attacker's (signed Adam). ``clients``: how many
    clients per round, the lowest partition ids (node ids without ground truth), or exactly
    ``partitions``; ``rounds``: the audited rounds (empty: all). ``max_images``: a client
    holding more images is skipped (a realistic share of thousands is not attackable; the row
    says so). ``truth``: the clients report their samples (simulation and local deployment
    only) and each reconstruction is scored. ``label_source``: iDLG's rule for one image
    ("bias": right for LeNet-5's tanh). ``criterion``: when an image counts as recovered
    (:data:`~dlg_utils.stats.CRITERIA`: PSNR >= 25 dB by default). ``model``: the architecture
    the server rebuilds (:func:`~dlg_utils.models.get_model` with the data set's options).
    ``threads``: torch threads while attacking. ``run``: a name for the run, part of every
    row's key with the train config and these settings."""

    path: str = ""
    attacks: tuple[str, ...] = ("idlg", "ig", "adaptive")
    iterations: int = 300
    ig_iterations: int = 2000
    clients: int = 2
    partitions: tuple[int, ...] = ()
    rounds: tuple[int, ...] = ()
    max_images: int = 16
    truth: bool = True
    seed: int = 0
    label_source: str = "bias"
    criterion: str = "psnr"
    model: str = "lenet5"
    threads: int = 1
    run: str = ""

    def __post_init__(self):
        for name in ("attacks", "partitions", "rounds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.attacks:
            raise ValueError("AuditConfig.attacks is empty")
        for a in self.attacks:
            attack_config(a)  # an unknown name fails here, not in round 1
        if self.iterations < 0 or self.ig_iterations < 0 or self.clients < 1 or self.max_images < 1 or self.threads < 1:
            raise ValueError("iterations and ig_iterations must be >= 0; clients, max_images and threads >= 1")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {self.criterion!r}")
        if self.criterion not in scored_criteria():  # LPIPS without its weights: fail before round 1
            from .metrics import lpips_weights
            raise FileNotFoundError(f"criterion {self.criterion!r} is not scored on this machine: LPIPS needs "
                                    f"its weights at {lpips_weights()}")

    def wrap(self, strategy: Strategy, label: str = "") -> "AuditedStrategy":
        """``strategy`` audited with these settings (what ``run_federated(audit=...)`` runs)."""
        return AuditedStrategy(strategy, self, label=label)

    def settings(self) -> dict:
        """The settings a row's result depends on (part of its key)."""
        return {k: v for k, v in canonical(self).items() if k in
                ("attacks", "iterations", "ig_iterations", "max_images", "seed", "label_source", "model", "run")}


RUN_KEYS = {f.name: f"audit_{f.name}" for f in fields(AuditConfig)}  # AuditConfig field -> run-config key


def audit_from_run(run_config: dict) -> AuditConfig:
    """The :class:`AuditConfig` of a Flower run config: ``audit_path``, ``audit_attacks`` (a
    comma-separated string), ``audit_rounds`` / ``audit_partitions`` (comma-separated
    integers), ``audit_iterations``, ``audit_ig_iterations``, ``audit_clients``,
    ``audit_max_images``, ``audit_truth``... (every field, prefixed ``audit_``). Others are
    left at their defaults; a key ``audit_`` + something else is an error."""
    unknown = sorted(k for k in run_config if k.startswith("audit_") and k not in RUN_KEYS.values())
    if unknown:
        raise ValueError(f"unknown audit settings {unknown}; valid: {sorted(RUN_KEYS.values())}")
    defaults, out = AuditConfig(), {}
    for name, key in RUN_KEYS.items():
        if key not in run_config:
            continue
        value, default = run_config[key], getattr(defaults, name)
        if isinstance(default, tuple):
            items = [v.strip() for v in str(value).split(",") if v.strip()] if isinstance(value, str) else list(value)
            out[name] = tuple(int(v) for v in items) if name in ("rounds", "partitions") else tuple(items)
        elif isinstance(default, bool):
            out[name] = _flag(value)
        else:
            out[name] = type(default)(value)
    return AuditConfig(**out)


def audited_from_run(strategy: Strategy, method: str, run_config: dict) -> Strategy:
    """``strategy`` wrapped in the auditor when the run config says ``audit=true`` (its
    ``audit_*`` options: :func:`audit_from_run`), else as it is: the deployment's
    ``server_app(wrap=...)``."""
    if not _flag(run_config.get("audit", False)):
        return strategy
    return AuditedStrategy(strategy, audit_from_run(run_config), label=method)


# --- the server's view of one reply --------------------------------------------------------------

def fl_case(train_config: dict, examples: int, defense: str = "none") -> Case:
    """The case of a client of :mod:`~dlg_utils.federated` that trained on ``examples`` images
    under ``train_config`` (the train message's config): ``local_epochs`` epochs of
    ceil(examples / batch_size) SGD steps of ``lr`` with ``momentum``, and DP-SGD with the
    noise :func:`~dlg_utils.federated.dp_noise_multiplier` calibrates when ``dp_epsilon > 0``.
    Differences from the client (docs/audit.md): its DataLoader reshuffles every epoch where
    the case cycles fixed batches (the same for one epoch, up to the order), and DP-SGD's
    Poisson sampling draws batches of random size (the same when the batch holds every image)."""
    cfg = message_config(train_config)
    n, b = int(examples), cfg.batch_size
    if n < 1:
        raise ValueError(f"the client reports {examples} examples")
    dp = None
    if cfg.dp_epsilon > 0:
        dp = DPSGD(cfg.dp_clip, dp_noise_multiplier(cfg, n), cfg.dp_epsilon, cfg.dp_delta)
    return Case(batch_size=n, local_steps=math.ceil(n / b) * cfg.local_epochs, local_lr=cfg.lr,
                local_batch=b if b < n else 0, local_momentum=cfg.momentum, dp=dp, defense=defense)


def policy_name(policy: MixedPrecision | None) -> str:
    """The defense a codec's policy is, as a case names it ("none" without one)."""
    if policy is None:
        return "none"
    try:
        return defense_from_spec(policy.name).name
    except ValueError:  # an explicit per-tensor policy: its kind
        return policy.kind


def quantized_view(case: Case, model: torch.nn.Module, update: ArrayRecord, ranges: ConfigRecord,
                   policy: MixedPrecision, image_shape, num_classes: int) -> ServerView:
    """The view of a server that sent ``model`` and received a quantized update (the codec's
    integers and ranges of local - global): the update dequantized with the server's
    ``policy``, in the case's units ((w_0 - w_E) / local_lr), with the box of true updates
    the ranges allow (half a step each way, 1.5 for MIN_FIRST, as
    :meth:`~dlg_utils.defenses.MixedPrecision.share`): what the defense-aware attacker
    matches. A policy that dequantizes with other modes than the client's leaves no box."""
    delta = decode_update(update, ranges, policy)
    sent = {n: p.detach().numpy() for n, p in model.named_parameters()}
    view = view_from_weights(case, model, {n: sent[n] + delta[n] for n in sent if n in delta},
                             image_shape, num_classes, defense=policy)
    layers = dict(zip(update.keys(), policy.layers(len(update))))
    if any(p.dequantize_mode not in (None, p.mode) for p in layers.values()):
        view.update.bounds = None
        return view
    bounds = []
    for (name, p), g in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), view.update.grads):
        lo, hi = ranges[name]
        step = step_size(lo, hi, layers[name].dtype, layers[name].mode) / case.local_lr
        reach = (1.5 if layers[name].mode == "MIN_FIRST" else 0.5) * step + 0.01 * step
        bounds.append((g - reach, g + reach))
    view.update.bounds = bounds
    return view


# --- the auditor ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _training_set(name: str, root: str):
    return load_dataset(name, train=True, root=root or None)


def truth_batch(truth: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels a client's truth record names (the operator's data set)."""
    data = _training_set(str(truth["dataset"]), str(truth.get("data_root", "")))
    idx = [int(i) for i in truth["indices"]]
    return torch.stack([data[i][0] for i in idx]), torch.tensor([int(data[i][1]) for i in idx])


def _u8(images: torch.Tensor) -> dict:
    pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return {"shape": list(pixels.shape), "u8": base64.b64encode(pixels.numpy().tobytes()).decode("ascii")}


def stored_images(record: dict) -> torch.Tensor:
    """The images a row stored (8 bits) as floats in [0, 1]."""
    raw = np.frombuffer(base64.b64decode(record["u8"]), dtype=np.uint8).copy()
    return torch.from_numpy(raw).view(*record["shape"]).float() / 255


@contextmanager
def _isolated(threads: int):
    """Run with ``threads`` torch threads and every random state (torch, numpy, Python) as it
    was before once done: an attack draws nothing the training would have drawn."""
    old_threads, py_state, np_state = torch.get_num_threads(), random.getstate(), np.random.get_state()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        random.setstate(py_state)
        np.random.set_state(np_state)


class AuditedStrategy(Strategy):
    """``strategy`` with the audit of :class:`AuditConfig` ``config``: everything is delegated
    (attributes too: ``.traffic``, ``.global_weights``...); ``configure_train`` records the model
    each node was sent, ``aggregate_train`` attacks a sample of the replies before delegating.
    ``policy``: the codec's public policy for quantized replies (default: the strategy's
    ``policy``). ``case_fn(train_config, examples, defense)``: the case of a reply
    (:func:`fl_case`); ``model_fn(train_config)``: the architecture to attack through (the
    config's ``model`` built for the data set). ``label``: the run's name in the rows (the
    method). The rows of this run: ``.rows``."""

    def __init__(self, strategy: Strategy, config: AuditConfig = AuditConfig(), *, policy="strategy",
                 case_fn: Callable[[dict, int, str], Case] = fl_case,
                 model_fn: Callable[[dict], torch.nn.Module] | None = None, label: str = ""):
        self.strategy, self.config, self.label = strategy, config, label
        self.codec = as_policy(getattr(strategy, "policy", None) if policy == "strategy" else policy)
        self.case_fn, self.model_fn = case_fn, model_fn or self._model
        self.store = RowStore(config.path or None)
        self.rows: list[dict] = []
        self.sent: dict[int, tuple[dict[str, np.ndarray], dict]] = {}  # node -> (weights, train config)

    def __getattr__(self, name):
        if name in ("strategy", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.strategy, name)

    def _model(self, train_config: dict) -> torch.nn.Module:
        return get_model(self.config.model, **dataset_options(message_config(train_config)))

    # --- Flower's Strategy: delegated, the audit in between -------------------------------------

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self.sent = {}
        if self._audited(server_round):
            try:
                current = to_numpy(arrays)  # what a client that gets the global update rebuilds
                for msg in messages:
                    content = msg.content
                    weights = to_numpy(content[ARRAYS]) if ARRAYS in content else current
                    self.sent[msg.metadata.dst_node_id] = weights, dict(content[CONFIG]) if CONFIG in content else {}
            except Exception as e:  # never into the run
                LOG.warning("audit: cannot record round %d's train messages: %s", server_round, e)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        truths = {}
        for msg in replies:  # the operator's record leaves the reply: the strategy sees what it sees without audit
            if not msg.has_error() and TRUTH in msg.content:
                truths[msg.metadata.src_node_id] = dict(msg.content[TRUTH])
                del msg.content[TRUTH]
        if self._audited(server_round):
            try:
                self._audit(server_round, replies, truths)
            except Exception as e:  # never into the run
                LOG.warning("audit: round %d not audited: %s", server_round, e)
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    # --- the audit ---------------------------------------------------------------------------------

    def _audited(self, server_round: int) -> bool:
        return not self.config.rounds or server_round in self.config.rounds

    def _audit(self, server_round: int, replies: list[Message], truths: dict[int, dict]) -> None:
        ok = [m for m in replies if not m.has_error()]
        client = {m.metadata.src_node_id: int(truths[m.metadata.src_node_id]["partition"])
                  if m.metadata.src_node_id in truths else int(m.metadata.src_node_id) for m in ok}
        if self.config.partitions:
            chosen = [m for m in ok if client[m.metadata.src_node_id] in self.config.partitions]
        else:
            chosen = sorted(ok, key=lambda m: client[m.metadata.src_node_id])[:self.config.clients]
        for msg in sorted(chosen, key=lambda m: client[m.metadata.src_node_id]):
            node = msg.metadata.src_node_id
            sent = self.sent.get(node)
            train_config = {k: v for k, v in (sent[1] if sent else {}).items() if k not in ("version", "base-version", "server-round")}
            run = {"label": self.label, "train_config": train_config, "policy": policy_name(self.codec),
                   "audit": self.config.settings()}
            key_config = {"run": run, "round": server_round, "client": client[node]}
            key = config_key(key_config)
            if key not in self.store:
                row = {"run": self.label, "round": server_round, "client": client[node], "node": int(node),
                       **self._attack(msg, sent, truths.get(node))}
                LOG.info("audit: round %d client %s: %s", server_round, client[node], row["status"])
                self.store.add(key, key_config, row)
            self.rows.append(self.store.rows[key])

    def _attack(self, msg: Message, sent, truth: dict | None) -> dict:
        """One client's row: its case, every attack's result and, with the truth, the scores."""
        start = time.process_time()
        row: dict = {"status": "attacked", "defense": policy_name(self.codec), "truth": truth is not None}
        try:
            if sent is None:
                raise ValueError("no train message to this node was recorded this round")
            weights, train_config = sent
            content = msg.content
            metrics = next(iter(content.metric_records.values()), {})
            examples = int(metrics.get(getattr(self.strategy, "weighted_by_key", "num-examples"), 0))
            row["images"] = examples
            if examples > self.config.max_images:
                raise ValueError(f"the client trained on {examples} images, more than max_images="
                                 f"{self.config.max_images}: not attackable")
            case = self.case_fn(train_config, examples, policy_name(self.codec) if UPDATE in content else "none")
            row.update(case=case.describe(), local_steps=case.local_steps, dp_noise=case.dp.noise if case.dp else 0.0)
            if case.dp is not None:
                row["defense"] = "dp" if row["defense"] == "none" else row["defense"] + "+dp"
            model = self.model_fn(train_config)
            try:
                model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            except RuntimeError as e:
                raise ValueError(f"the model sent is not a {type(model).__name__} ({self.config.model}): "
                                 f"{' '.join(str(e).split())[:200]}") from None
            options = dataset_options(message_config(train_config))
            shape = (options["in_channels"], options["image_size"], options["image_size"])
            if ARRAYS in content:
                view = view_from_weights(case, model, to_numpy(content[ARRAYS]), shape, options["num_classes"])
            elif UPDATE in content and RANGES in content:
                if self.codec is None:
                    raise ValueError("a quantized update, but the auditor knows no codec policy")
                view = quantized_view(case, model, content[UPDATE], content[RANGES], self.codec, shape,
                                      options["num_classes"])
            else:
                raise ValueError(f"a reply of records {sorted(content.keys())}: neither weights nor a quantized update")
            results = self._attacks(view)
        except Exception as e:  # an unknown codec, an architecture it cannot rebuild...: say why, go on
            reason = " ".join(str(e).split())  # one line
            row.update(status=f"skipped: {type(e).__name__}: {reason[:300]}", seconds=time.process_time() - start)
            return row
        row["attacks"] = [{"attack": name, "seconds": r.seconds, "grad_distance": float(r.final.get("grad_distance", np.nan)),
                           "label": r.label.tolist(), "reconstruction": _u8(r.image.view(-1, *shape))}
                          for name, r in results]
        if truth is not None:
            try:
                row.update(self._score(results, truth, shape))
            except Exception as e:
                row["status"] = f"attacked, not scored: {type(e).__name__}: {e}"
        row["seconds"] = time.process_time() - start
        return row

    def _attacks(self, view: ServerView) -> list[tuple[str, object]]:
        """Every distinct attack of the ensemble on ``view`` (which holds nothing of the data)."""
        configs = []
        for name in self.config.attacks:
            its = self.config.ig_iterations if name in ADAM_ATTACKS else self.config.iterations
            config = attack_config(name, view.update.defense, view.case.dp is not None, iterations=its,
                                   label_source=self.config.label_source)
            if config not in [c for _, c in configs]:
                configs.append((name, config))
        with _isolated(self.config.threads):
            return [(name, attack_view(view, config, seed=self.config.seed, progress=False)) for name, config in configs]

    def _score(self, results, truth: dict, shape) -> dict:
        """The operator's scoring: every attack matched to the true batch, the best per image."""
        x, y = truth_batch(truth)
        criterion = self.config.criterion
        best: dict[int, dict] = {}
        for name, r in results:
            images = r.image.view(-1, *shape)
            if len(images) != len(x):
                raise ValueError(f"{len(images)} reconstructions for {len(x)} true images")
            for s in score_batch(images, x, r.label, y):
                s.update(attack=name, index=int(truth["indices"][s["slot"]]))
                if s["slot"] not in best or _better(s, best[s["slot"]]):
                    best[s["slot"]] = s
        per_image = [best[k] for k in sorted(best)]
        for s in per_image:
            s["recovered"] = bool(recovered(s[CRITERIA[criterion].metric], criterion))
        labels = {name: label_count_accuracy(r.label, y) for name, r in results}
        return {"indices": [int(i) for i in truth["indices"]], "dataset": str(truth["dataset"]),
                "data_root": str(truth.get("data_root", "")), "per_image": per_image,
                "psnr": float(np.mean([s["psnr"] for s in per_image])),
                "ssim": float(np.mean([s["ssim"] for s in per_image])),
                "best_psnr": float(max(s["psnr"] for s in per_image)),
                "recovered": int(sum(s["recovered"] for s in per_image)),
                "criterion": CRITERIA[criterion].describe(), "label_accuracy": max(labels.values())}


def _better(a: dict, b: dict) -> bool:
    """Whether score ``a`` beats ``b``: the higher SSIM (the project's choice of best attack)."""
    sa, sb = a["ssim"], b["ssim"]
    return (sa if np.isfinite(sa) else -np.inf) > (sb if np.isfinite(sb) else -np.inf)


# --- what a person reads ---------------------------------------------------------------------------

def load_audit(path) -> pd.DataFrame:
    """The rows of an audit file (one per audited client and round), in the order written."""
    return pd.DataFrame(load_rows(path))


def image_rows(rows) -> pd.DataFrame:
    """One row per scored image: run, round, client, defense, case and the image's best
    attack with its psnr / ssim / mse / recovered (rows without ground truth give none)."""
    rows = pd.DataFrame(rows)
    out = []
    for _, r in rows.iterrows():
        records = r.get("per_image")
        if not isinstance(records, list):
            continue
        base = {k: r.get(k) for k in ("run", "round", "client", "defense", "case", "local_steps", "images")}
        out.extend({**base, **rec} for rec in records)
    return pd.DataFrame(out)


def round_table(rows, criteria: Sequence[str] = ("psnr", "ssim", "mse")) -> pd.DataFrame:
    """Leakage per run and audited round, counted over images (each image's best attack): the
    images scored, median PSNR and SSIM, and for each criterion of
    :data:`~dlg_utils.stats.CRITERIA` the count recovered with its exact (Clopper-Pearson) 95%
    interval (columns ``{criterion}``, ``{criterion}_low``, ``{criterion}_high``)."""
    images = image_rows(rows)
    if images.empty:
        raise ValueError("no scored images in these rows")
    out = []
    for (run, rnd), g in images.groupby(["run", "round"], sort=False):
        row = {"run": run, "round": int(rnd), "images": len(g), "median_psnr": g["psnr"].median(),
               "median_ssim": g["ssim"].median()}
        for name in criteria:
            k = int(recovered(g, name).sum())
            row[name], (row[f"{name}_low"], row[f"{name}_high"]) = k, clopper_pearson(k, len(g))
        out.append(row)
    return pd.DataFrame(out).sort_values(["run", "round"], kind="stable").reset_index(drop=True)


def best_images(rows, count: int = 8, run: str | None = None) -> tuple[list, list, list[str]]:
    """The ``count`` best reconstructions (highest PSNR; of ``run`` only if given) beside their
    true images: (true images, reconstructions, captions "RUN round R client C: P dB"), for
    :func:`~dlg_utils.plotting.best_reconstructions`."""
    rows = pd.DataFrame(rows)
    images = image_rows(rows if run is None else rows[rows["run"] == run])
    if images.empty:
        raise ValueError("no scored reconstruction in these rows (an audit without ground truth stores them unscored)")
    top = images.sort_values("psnr", ascending=False).head(count)
    truths, recons, captions = [], [], []
    for _, img in top.iterrows():
        row = rows[(rows["run"] == img["run"]) & (rows["round"] == img["round"]) & (rows["client"] == img["client"])].iloc[0]
        attack = next(a for a in row["attacks"] if a["attack"] == img["attack"])
        recons.append(stored_images(attack["reconstruction"])[int(img["match"])])
        truths.append(_training_set(row["dataset"], row.get("data_root", "") or "")[int(img["index"])][0])
        captions.append(f"{img['run']} r{img['round']} c{img['client']}\n{img['attack']} {img['psnr']:.1f} dB")
    return truths, recons, captions


def round_images(rows, server_round: int) -> tuple[list, dict[str, list], dict[str, list[str]]]:
    """Every audited client's images in round ``server_round`` and, per run, the best
    reconstruction of each (runs of one setting share the clients' data): (true images,
    run -> reconstructions, run -> captions "ATTACK P dB"), the arguments of
    :func:`~dlg_utils.plotting.best_reconstructions`."""
    rows = pd.DataFrame(rows)
    images = image_rows(rows[rows["round"] == server_round])
    if images.empty:
        raise ValueError(f"no scored reconstruction in round {server_round}")
    order = list(dict.fromkeys(images.sort_values(["client", "slot"])["index"]))
    truths, recons, captions = [], {}, {}
    for run, part in images.groupby("run", sort=False):
        if set(part["index"]) != set(order):
            raise ValueError(f"run {run!r} audited other images in round {server_round}")
        part = part.set_index("index").loc[order]
        recons[run], captions[run] = [], []
        for index, img in part.iterrows():
            row = rows[(rows["run"] == run) & (rows["round"] == server_round) & (rows["client"] == img["client"])].iloc[0]
            attack = next(a for a in row["attacks"] if a["attack"] == img["attack"])
            recons[run].append(stored_images(attack["reconstruction"])[int(img["match"])])
            captions[run].append(f"{img['attack']} {img['psnr']:.1f} dB")
            if len(truths) < len(order):
                truths.append(_training_set(row["dataset"], row.get("data_root", "") or "")[int(index)][0])
    return truths, recons, captions


def _spans(values: Sequence[int]) -> str:
    """1, 2, 3, 5 -> "1-3, 5"."""
    values, out = sorted(set(int(v) for v in values)), []
    for v in values:
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def _rounds(values) -> str:
    """"round 3" or "rounds 1-3, 5"."""
    return f"round{'s' * (len(set(values)) > 1)} {_spans(values)}"


def audit_report(rows) -> str:
    """A paragraph (markdown) that says what leaked, in which rounds, under which defense,
    with the numbers: per run, images recovered of images attacked, the rounds where any was,
    the best reconstruction, the mean PSNR of the first and last audited rounds; the updates not
    attacked and why."""
    rows = pd.DataFrame(rows)
    if rows.empty:
        return "No client update was audited."
    done = rows[rows["status"].str.startswith("attacked")]
    skipped = rows[~rows["status"].str.startswith("attacked")]
    parts = []
    if len(done):
        names = sorted({a["attack"] for atts in done["attacks"] for a in atts})
        seconds = done["seconds"].sum()
        parts.append(f"The server attacked {len(done)} client updates ({done['client'].nunique()} clients, "
                     f"{_rounds(done['round'])}) with {', '.join(names)}, {seconds / len(done):.0f} CPU s per update.")
    for run, g in done.groupby("run", sort=False):
        defense = ", ".join(dict.fromkeys(g["defense"]))
        scored = g[g["per_image"].apply(lambda v: isinstance(v, list))] if "per_image" in g else g.iloc[:0]
        if scored.empty:
            parts.append(f"**{run}** ({defense}): {len(g)} updates attacked; no ground truth, the reconstructions "
                         "are stored for a person to look at.")
            continue
        images = image_rows(scored)
        k, n = int(images["recovered"].sum()), len(images)
        leaking = sorted(scored.loc[scored["recovered"] > 0, "round"].unique())
        best = images.loc[images["psnr"].idxmax()]
        by_round = scored.groupby("round")["psnr"].mean()
        others = [f"{int(recovered(images, c).sum())} by {CRITERIA[c].describe()}" for c in scored_criteria(images)
                  if CRITERIA[c].describe() != scored["criterion"].iloc[0]]
        text = (f"**{run}** ({defense}; {scored['case'].iloc[0]}): {k} of {n} images recovered "
                f"({scored['criterion'].iloc[0]}; {', '.join(others)})")
        text += f", in {_rounds(leaking)}" if leaking else ", in no round"
        text += (f"; best {best['psnr']:.1f} dB (SSIM {best['ssim']:.2f}, client {best['client']}, round "
                 f"{best['round']}, {best['attack']})")
        if len(by_round) > 1:
            text += (f"; mean PSNR {by_round.iloc[0]:.1f} dB in round {by_round.index[0]}, "
                     f"{by_round.iloc[-1]:.1f} dB in round {by_round.index[-1]}")
        parts.append(text + ".")
    if len(skipped):
        reasons = skipped["status"].str.replace(r"^skipped: ", "", regex=True).value_counts()
        parts.append(f"{len(skipped)} updates not attacked: " +
                     "; ".join(f"{c} x {reason}" for reason, c in reasons.items()) + ".")
    return " ".join(parts)


def audited_run(trial: dict, cfg: FLConfig, audit: AuditConfig, num_cpus: int | None = 1) -> dict:
    """One stored audited run (:func:`~dlg_utils.experiments.sweep`'s ``run``, as
    :func:`~dlg_utils.federated.table1_run`): method ``trial["method"]`` with ``cfg`` and
    ``trial["config"]``'s fields over it, audited by ``audit`` (named after the method, or
    ``trial["run"]``). Returns the ``history`` (one record per round) and ``wall_seconds``;
    the audit's rows are in ``audit.path``."""
    from dataclasses import replace

    from .federated import run_federated
    start = time.perf_counter()
    run_cfg = replace(cfg, **trial.get("config", {}))
    history, _ = run_federated(trial["method"], run_cfg, num_cpus=num_cpus, progress=False,
                               audit=replace(audit, run=trial.get("run", trial["method"])))
    return {"history": history.drop(columns="method").to_dict("records"), "wall_seconds": time.perf_counter() - start}
