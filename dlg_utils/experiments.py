"""Typed trials and the sweeps that run them, each finished trial stored at once under a key
that covers every setting (:mod:`~dlg_utils.storage`), so an interrupted sweep resumes without
redoing or losing a finished trial and a changed setting never returns a stale row.

A stored row carries ``key``, the SHA-256 of its full configuration, and ``config``, that
configuration. For an attack trial (:class:`AttackTrial`) it covers the trial (image, dummy
seed, defense, attack, model name, tags), the attack's every setting after its catalogue entry
and overrides (:class:`~dlg_utils.attacks.AttackConfig`: iterations, label source, distance,
optimizer...), the attacked model's architecture, mode and weights (a digest of its state),
the data (a digest of the image, its label and how the target is made) and what the row keeps.
For a plain :func:`sweep` it covers the trial and the sweep's ``context``. Rows of different
settings live side by side in one file. Files written before keys covered every setting (rows
with only a ``trial`` field) are refused with a message; ``scripts/migrate_results.py``
rewrites the project's committed files.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .attack import dlg_batch
from .attacks import AttackConfig, attack_config
from .cases import CLIENT_STREAM, Case, Secret, client_update, derived_seed, shared_gradient
from .config import progress_enabled
from .defenses import SharedGradient, defense_from_spec
from .engine import AttackResult
from .metrics import label_count_accuracy, score_batch
from .storage import ADDED, RowStore, canonical, config_key, model_fingerprint, tensor_digest

def _unique(keys: list[str]) -> None:
    if len(set(keys)) != len(keys):
        raise ValueError("trials contain duplicates (two trials with the same full configuration)")


def sweep(trials: Iterable, run: Callable, path: str | Path | None = None, *, context=None,
          progress: bool | None = None, desc: str = "trials", executor: str = "local",
          resources: dict | None = None) -> pd.DataFrame:
    """Run ``run(trial)`` for every trial not yet stored at ``path``; return one row per trial
    (the trial's fields and what ``run`` returned), in the order of ``trials``. A trial is a
    dict or a dataclass; its key covers the trial and ``context`` (settings every trial shares):
    put every setting ``run`` reads into one or the other. ``executor="ray"``: each trial is
    one Ray task (``resources`` per task, e.g. ``{"num_gpus": 1}``), its row stored here as it
    finishes."""
    from .executors import check_executor, ray_map
    check_executor(executor)
    trials = list(trials)
    configs = [{"trial": canonical(t), "context": canonical(context)} for t in trials]
    keys = [config_key(c) for c in configs]
    _unique(keys)
    store = RowStore(path)
    pending = [i for i, k in enumerate(keys) if k not in store]
    show = progress_enabled() if progress is None else progress
    if executor == "local":
        finished = ((j, run(trials[i])) for j, i in enumerate(pending))
    else:
        finished = ray_map(run, [trials[i] for i in pending], resources)
    for j, result in tqdm(finished, total=len(pending), desc=desc, disable=not show):
        i = pending[j]
        store.add(keys[i], configs[i], {**configs[i]["trial"], **result})
    return store.frame(keys)


def per_image(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per attacked image from rows of case trials (their ``per_image`` records, scored
    after matching): the trial's columns, ``image`` the data's index of that true image, and
    its mse / l1 / psnr / ssim / label / true_label. Rows without ``per_image`` pass as they are."""
    out = []
    for _, r in rows.iterrows():
        records = r.get("per_image")
        if not isinstance(records, list):
            out.append(r.to_dict())
            continue
        images = r["image"] if isinstance(r["image"], list) else [r["image"]]
        base = r.drop(labels=[c for c in ("per_image", "history", "image_u8", "snapshots") if c in r.index]).to_dict()
        for rec in records:
            out.append({**base, **rec, "image": int(images[rec["slot"]]), "batch_images": images})
    return pd.DataFrame(out)


def trial_cost(rows: pd.DataFrame) -> pd.Series:
    """Each attack trial's compute in seconds: its share of its batch (``cost_seconds``); rows
    stored before that column give their batch's wall time, an upper bound."""
    seconds = rows["seconds"].astype(float)
    return rows["cost_seconds"].astype(float).fillna(seconds) if "cost_seconds" in rows else seconds


def expand_histories(rows: pd.DataFrame, keep: Iterable[str] = ("image", "seed", "defense", "model"),
                     column: str = "history") -> pd.DataFrame:
    """A tidy table from a sweep whose rows carry a list of records in ``column`` (an attack's
    per-iteration ``history``, a training run's per-epoch ``curve``), with the ``keep`` columns."""
    keep = [c for c in keep if c in rows.columns]
    parts = [pd.DataFrame(r[column]).assign(**{c: r[c] for c in keep}) for _, r in rows.iterrows()]
    return pd.concat(parts, ignore_index=True)


# --- attack trials ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttackTrial:
    """One attack trial: image ``image`` of the data (or a tuple of B images, for a ``case`` of
    batch size B), dummy seed ``seed`` (which also draws the client's randomness: the defense,
    DP-SGD's noise), ``defense`` (a spec), ``attack`` (a name of the catalogue, ``"adaptive"``
    or a key of ``configs``), the ``model`` it attacks (a key of the models given),
    ``settings`` (:class:`~dlg_utils.attacks.AttackConfig` fields that override the attack's:
    iterations, label_source...), ``tags`` (columns that name the trial in tables, e.g. a
    design) and ``case`` (:class:`~dlg_utils.cases.Case`, what the client computes: None is one
    gradient of one image through ``defense``; a case carries its own defense, and ``defense``
    must then be "none"). Every field is part of the key."""

    image: int | tuple[int, ...]
    seed: int = 0
    defense: str = "none"
    attack: str = "dlg"
    model: str = "model"
    settings: Mapping = field(default_factory=dict)
    tags: Mapping = field(default_factory=dict)
    case: Case | None = field(default=None, metadata=ADDED)

    def __post_init__(self):
        images = self.images
        if not images or not all(isinstance(i, (int, np.integer)) and i >= 0 for i in images) or \
                not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"a trial's images and seed are integers >= 0, got image={self.image!r}, "
                             f"seed={self.seed!r}")
        defense_from_spec(self.defense)  # a bad spec fails here, with the valid forms
        if self.case is not None:
            if not isinstance(self.case, Case):
                raise ValueError(f"a trial's case is a cases.Case or None, got {self.case!r}")
            if len(images) != self.case.batch_size:
                raise ValueError(f"the case's batch size is {self.case.batch_size} but the trial names "
                                 f"{len(images)} images")
            if defense_from_spec(self.defense).kind != "none":
                raise ValueError("a trial with a case takes its defense from the case (Case.defense); "
                                 f"leave the trial's defense 'none', got {self.defense!r}")
        elif len(images) != 1:
            raise ValueError(f"a trial of {len(images)} images needs a case of that batch size")
        if isinstance(self.image, (tuple, list)):
            object.__setattr__(self, "image", tuple(int(i) for i in self.image))

    @property
    def images(self) -> tuple[int, ...]:
        """The data's indices of the trial's images."""
        return tuple(self.image) if isinstance(self.image, (tuple, list)) else (self.image,)

    @property
    def shared_defense(self) -> str:
        """The defense on what the client sends: the case's, or the trial's."""
        return self.case.defense if self.case is not None else self.defense

    def config(self, configs: Mapping[str, AttackConfig] | None = None) -> AttackConfig:
        """The attack this trial runs: its catalogue entry (or ``configs[attack]``) against its
        defense, with its ``settings``."""
        base = (configs or {}).get(self.attack, self.attack)
        dp = self.case is not None and self.case.dp is not None
        return attack_config(base, self.shared_defense, dp, **dict(self.settings))

    def columns(self) -> dict:
        """The trial's fields as a row's columns (tags flattened; a case as its fields and
        ``case``, its description; a batch's images as a list)."""
        image = int(self.image) if len(self.images) == 1 and not isinstance(self.image, tuple) else list(self.images)
        out = {"image": image, "seed": int(self.seed), "defense": self.shared_defense, "attack": self.attack,
               "model": self.model, **dict(self.tags)}
        if self.case is not None:
            c = self.case
            out.update(case=c.describe(), batch_size=c.batch_size, local_steps=c.local_steps,
                       dp_epsilon=c.dp.epsilon if c.dp else None, dp_noise=c.dp.noise if c.dp else 0.0)
        return out


@dataclass
class Prepared:
    """A trial made ready for the engine: what the attacker gets and what it should find. For
    a trial with a case, ``truth`` is None (the engine never sees the data) and ``secret``
    holds the client's batch, used only to score the result."""

    target: SharedGradient
    truth: torch.Tensor | None
    true_label: int | list[int]
    case: Case | None = None
    secret: Secret | None = None


class DatasetTargets:
    """Targets from a data set: the gradient of image ``trial.image`` of ``dataset`` through the
    trial's defense, its randomness drawn from the trial's seed (the true gradient kept too when
    the attack re-draws the defense, seed 000's loop)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def item(self, trial: AttackTrial) -> tuple[torch.Tensor, int]:
        n = len(self.dataset)
        if not 0 <= int(trial.image) < n:
            raise ValueError(f"trial {trial.columns()}: image {trial.image} is out of range; the data set has {n} "
                             f"images (0..{n - 1})")
        x, y = self.dataset[int(trial.image)]
        return x, int(y)

    def describe(self, trial: AttackTrial) -> dict:
        """What of the data the trial's result depends on (cheap: no gradient)."""
        if trial.case is not None:
            items = [self.item(replace(trial, image=i, case=None)) for i in trial.images]
            return {"source": "case", "images": [tensor_digest(x) for x, _ in items], "labels": [y for _, y in items]}
        x, y = self.item(trial)
        return {"source": "dataset", "image": tensor_digest(x), "label": y}

    def prepare(self, model: nn.Module, trial: AttackTrial, config: AttackConfig) -> Prepared:
        device = next(model.parameters()).device
        if trial.case is not None:  # the client of the case; the attack gets only its view
            items = [self.item(replace(trial, image=i, case=None)) for i in trial.images]
            x = torch.stack([x for x, _ in items]).to(device)
            client = torch.Generator(device).manual_seed(derived_seed(trial.seed, CLIENT_STREAM))  # not the dummy's
            view, secret = client_update(trial.case, model, x, torch.tensor([y for _, y in items], device=device), client)
            return Prepared(view.update, None, secret.labels.tolist(), trial.case, secret)
        x, y = self.item(trial)
        x = x[None].to(device)
        shared = shared_gradient(model, x, torch.tensor([y], device=device), trial.defense,
                                 torch.Generator(device).manual_seed(int(trial.seed)), config.redraw_defense)
        return Prepared(shared, x, y)


@dataclass(frozen=True)
class RowOptions:
    """What a stored row keeps beyond the final metrics: the history (all iterations, none, or
    these iterations and the last), the final image (8 bits; of every trial, none, or of
    trials with these dummy seeds) and snapshots at these iterations (clamped, 4 decimals)."""

    keep_history: bool | tuple[int, ...] = True
    keep_image: bool | tuple[int, ...] = False
    keep_snapshots: tuple[int, ...] = ()


@dataclass(frozen=True)
class Execution:
    """How trials run; none of it changes a result beyond round-off, so none of it is in a key.
    ``chunk_size`` trials per engine batch, targets prepared ``slice_size`` at a time,
    ``compile`` (see :func:`~dlg_utils.attack.dlg_batch`), ``per_trial_models`` (trials of
    different models of one architecture in one batch), ``executor`` ("local" or "ray", with
    ``resources`` per Ray task)."""

    chunk_size: int = 64
    slice_size: int = 512
    progress: bool | None = None
    executor: str = "local"
    resources: dict | None = None
    compile: bool = False
    per_trial_models: bool = False

    def __post_init__(self):
        from .executors import check_executor
        check_executor(self.executor)
        if self.chunk_size < 1 or self.slice_size < 1:
            raise ValueError(f"chunk_size and slice_size must be >= 1, got {self.chunk_size}, {self.slice_size}")


def trial_row(result: AttackResult, true_label: int | list[int], options: RowOptions = RowOptions(),
              secret: Secret | None = None) -> dict:
    """One sweep row from an attack's result: final metrics, label, convergence, time (``seconds``:
    wall time from its batch's start to its end; ``cost_seconds``: its share of the batch's
    computation, each step's time split among the trials it advanced, restarts summed), and what
    ``options`` keeps (:class:`RowOptions`; :func:`row_image` reads a kept image back). Given
    the ``secret`` of a case, the metrics come from scoring the reconstructions against it
    after matching (:func:`~dlg_utils.metrics.score_batch`): ``per_image`` holds one record per
    true image, the metric columns their mean, ``label_accuracy`` the share of labels found."""
    keep_history, keep_image = options.keep_history, options.keep_image
    if not isinstance(keep_image, bool):
        keep_image = result.seed in keep_image
    final = result.final if len(result.history) else pd.Series(dtype=float)
    if secret is not None:
        scored = score_batch(result.image.view_as(secret.images), secret.images, result.label, secret.labels)
        final = pd.Series({**final.to_dict(), **pd.DataFrame(scored)[["mse", "l1", "psnr", "ssim"]].mean().to_dict()})
    if isinstance(true_label, list) and len(true_label) > 1:
        label = {"true_label": list(true_label), "label": result.label.tolist(),
                 "label_correct": bool(sorted(result.label.tolist()) == sorted(true_label)),
                 "label_accuracy": label_count_accuracy(result.label, true_label)}
    else:
        true = int(true_label[0] if isinstance(true_label, list) else true_label)
        label = {"true_label": true, "label": int(result.label[0]), "label_correct": int(result.label[0]) == true}
    row = {**label,
           **{k: float(final.get(k, float("nan"))) for k in ("grad_distance", "mse", "l1", "psnr", "ssim")},
           "converged": result.converged, "converged_at": result.converged_at,
           "diverged": result.diverged, "iterations_run": int(final.get("iteration", -1)),
           "seconds": result.seconds, "cost_seconds": result.cost_seconds}
    if keep_history is True:
        row["history"] = result.history.to_dict("records")
    elif keep_history:
        its = result.history["iteration"]
        kept = result.history[its.isin(set(keep_history)) | (its == its.max())]
        row["history"] = kept.to_dict("records")
    if keep_image:
        pixels = (result.image.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        row["image_shape"] = list(pixels.shape)
        row["image_u8"] = base64.b64encode(pixels.numpy().tobytes()).decode("ascii")
    if secret is not None:
        row["per_image"] = scored
    if options.keep_snapshots:
        row["snapshots"] = {int(k): v[0].numpy().round(4).tolist() for k, v in result.snapshots.items()
                            if k in options.keep_snapshots}
    return row


def row_image(row) -> torch.Tensor:
    """The final image a row stored with ``keep_image`` (floats in [0, 1], 8-bit precision)."""
    raw = np.frombuffer(base64.b64decode(row["image_u8"]), dtype=np.uint8).copy()
    return torch.from_numpy(raw).view(*row["image_shape"]).float() / 255




@dataclass
class _Attacks:
    """What every batch of a :func:`run_attacks` call shares: the models, the targets, what a
    row keeps and how to run (sent to Ray once)."""

    models: object  # a model, or a dict name -> model
    targets: object
    rows: RowOptions
    execution: Execution

    def model(self, name: str) -> nn.Module:
        if not isinstance(self.models, dict):
            return self.models
        if name not in self.models:
            raise ValueError(f"a trial names model {name!r}; the models given are {sorted(self.models)}")
        return self.models[name]

    def run(self, part: list[tuple[str, dict, AttackTrial, AttackConfig]], emit: Callable) -> None:
        """Attack every trial of ``part`` (pending (key, config, trial, attack) of one model, or
        of any models with ``per_trial_models``) in one engine call; ``emit(key, config, row,
        trial, result)`` as each finishes."""
        models = [self.model(t.model) for _, _, t, _ in part]
        ready = [self.targets.prepare(m, t, a) for m, (_, _, t, a) in zip(models, part)]
        shapes = {tuple((p.truth if p.secret is None else p.secret.images).shape) for p in ready}
        if len(shapes) > 1:
            raise ValueError(f"the trials of one batch have images of different shapes {sorted(shapes)}")

        def save(i: int, result: AttackResult) -> None:
            key, config, trial, attack = part[i]
            row = {**trial.columns(), "iterations": attack.iterations,
                   **trial_row(result, ready[i].true_label, self.rows, ready[i].secret)}
            emit(key, config, row, trial, result)

        run = self.execution
        num_classes = ready[0].target.grads[-1].shape[0]  # the last layer's bias
        dlg_batch(models if run.per_trial_models else models[0], [p.target for p in ready],
                  image_shape=next(iter(shapes)), num_classes=num_classes,
                  seeds=[int(t.seed) for _, _, t, _ in part], ground_truths=[p.truth for p in ready],
                  attack=[a for _, _, _, a in part], on_result=save, chunk_size=run.chunk_size,
                  progress=run.progress if run.executor == "local" else False, compile=run.compile,
                  cases=[p.case for p in ready])

    def rows_of(self, part: list) -> list[tuple]:
        """Every trial's (key, config, row, trial, result): what a Ray task sends back."""
        out = []
        self.run(part, lambda *finished: out.append(finished))
        return out


def attack_keys(trials: Sequence[AttackTrial], models: nn.Module | dict[str, nn.Module], targets,
                configs: Mapping[str, AttackConfig] | None = None, rows: RowOptions = RowOptions()
                ) -> list[tuple[str, dict, AttackConfig]]:
    """(key, configuration, attack) of every trial: what :func:`run_attacks` stores them under."""
    lookup = _Attacks(models, targets, rows, Execution())
    prints: dict[str, dict] = {}
    out = []
    for trial in trials:
        if not isinstance(trial, AttackTrial):
            raise TypeError(f"trials are AttackTrial objects, got {type(trial).__name__}: {trial!r}")
        attack = trial.config(configs)
        if trial.case is not None and attack.redraw_defense:
            raise ValueError("redraw_defense replays the client's defense on its true update, which a server never "
                             "has: not for a trial with a case")
        if trial.model not in prints:
            prints[trial.model] = model_fingerprint(lookup.model(trial.model))
        config = {"kind": "attack", "trial": canonical(trial), "attack": canonical(attack),
                  "model": prints[trial.model], "data": targets.describe(trial), "rows": canonical(rows)}
        out.append((config_key(config), config, attack))
    return out


def run_attacks(trials: Iterable[AttackTrial], models: nn.Module | dict[str, nn.Module], targets,
                path: str | Path | None = None, *, configs: Mapping[str, AttackConfig] | None = None,
                rows: RowOptions = RowOptions(), execution: Execution = Execution(),
                on_result: Callable[[AttackTrial, AttackResult], None] | None = None) -> pd.DataFrame:
    """The one pipeline of every attack study: trial -> shared gradient (``targets.prepare``,
    e.g. :class:`DatasetTargets`) -> engine -> row, each row stored at ``path`` under its key
    the moment its trial finishes; trials whose key is stored there already are not run again.
    ``models``: one model or a dict name -> model that trials name. ``configs`` names attacks of
    your own (name -> :class:`~dlg_utils.attacks.AttackConfig`) that trials may name too.
    ``on_result(trial, result)`` sees each new result. Returns one row per trial, in order.

    With ``execution.executor="ray"`` every ``chunk_size`` trials are one Ray task and each
    task's rows are stored in this process as it finishes: an interrupted sweep loses only the
    tasks in flight."""
    from .executors import ray_map
    trials = list(trials)
    keyed = attack_keys(trials, models, targets, configs, rows)
    keys = [k for k, _, _ in keyed]
    _unique(keys)
    store = RowStore(path)
    by_model: dict = {}
    for (key, config, attack), trial in zip(keyed, trials):
        if key not in store:
            group = (None if execution.per_trial_models else trial.model, len(trial.images))  # one batch size each
            by_model.setdefault(group, []).append((key, config, trial, attack))
    size = execution.chunk_size if execution.executor == "ray" else execution.slice_size
    attacks = _Attacks(models, targets, rows, execution)
    parts = [group[lo:lo + size] for group in by_model.values() for lo in range(0, len(group), size)]

    def emit(key: str, config: dict, row: dict, trial: AttackTrial, result: AttackResult) -> None:
        store.add(key, config, row)
        if on_result is not None:
            on_result(trial, result)

    if execution.executor == "local":
        for part in parts:
            attacks.run(part, emit)
    else:
        show = progress_enabled() if execution.progress is None else execution.progress
        with tqdm(total=len(parts), desc="Ray tasks", disable=not show) as bar:
            for _, finished in ray_map(_Attacks.rows_of, parts, execution.resources, shared=attacks):
                for item in finished:
                    emit(*item)
                bar.update(1)
    return store.frame(keys)


def attack_sweep(trials: Iterable[AttackTrial], models: nn.Module | dict[str, nn.Module], dataset: Dataset,
                 path: str | Path | None = None, **kwargs) -> pd.DataFrame:
    """:func:`run_attacks` on targets from ``dataset`` (:class:`DatasetTargets`); keywords as there."""
    return run_attacks(trials, models, DatasetTargets(dataset), path, **kwargs)
