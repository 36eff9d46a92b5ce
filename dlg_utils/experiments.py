"""Sweeps over (image, seed, defense, ...) trials that store each finished trial on disk as one
JSON line, so an interrupted sweep resumes without redoing or losing a finished trial."""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .attack import AttackResult, dlg_batch, shared_gradient
from .config import progress_enabled
from .defenses import SharedGradient
from .engine import AttackConfig


def trial_key(trial: dict) -> str:
    """A stable identity for a trial: its parameters as sorted JSON."""
    return json.dumps(trial, sort_keys=True, default=str)


def load_rows(path: str | Path) -> list[dict]:
    """The finished rows stored at ``path`` (a torn last line from a crash is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RowStore:
    """Finished trials' rows, kept in a JSON-lines file at ``path`` (or in memory if None)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.rows = {row["trial"]: row for row in load_rows(self.path)} if self.path else {}
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def pending(self, trials: list[dict]) -> list[tuple[str, dict]]:
        """(key, trial) for the trials not stored yet; duplicates are an error."""
        keys = [trial_key(t) for t in trials]
        if len(set(keys)) != len(keys):
            raise ValueError("trials contain duplicates")
        return [(k, t) for k, t in zip(keys, trials) if k not in self.rows]

    def add(self, key: str, row: dict) -> None:
        """Store one finished row, on disk at once (flushed and synced)."""
        self.rows[key] = row = {**row, "trial": key}
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def frame(self, trials: list[dict]) -> pd.DataFrame:
        return pd.DataFrame([self.rows[trial_key(t)] for t in trials])


def sweep(trials: Iterable[dict], run: Callable[[dict], dict], path: str | Path | None = None,
          progress: bool | None = None, desc: str = "trials", executor: str = "local",
          resources: dict | None = None) -> pd.DataFrame:
    """Run ``run(trial)`` for every trial not yet stored at ``path``; return one row per trial
    (the trial's parameters and what ``run`` returned), in the order of ``trials``.
    ``executor="ray"``: each trial is one Ray task (``resources`` per task, e.g.
    ``{"num_gpus": 1}``), its row stored here as it finishes."""
    from .executors import check_executor, ray_map
    check_executor(executor)
    trials = list(trials)
    store = RowStore(path)
    show = progress_enabled() if progress is None else progress
    pending = store.pending(trials)
    if executor == "local":
        finished = ((i, run(trial)) for i, (_, trial) in enumerate(pending))
    else:
        finished = ray_map(run, [trial for _, trial in pending], resources)
    for i, result in tqdm(finished, total=len(pending), desc=desc, disable=not show):
        key, trial = pending[i]
        store.add(key, {**trial, **result})
    return store.frame(trials)


def expand_histories(rows: pd.DataFrame, keep: Iterable[str] = ("image", "seed", "defense", "model"),
                     column: str = "history") -> pd.DataFrame:
    """A tidy table from a sweep whose rows carry a list of records in ``column`` (an attack's
    per-iteration ``history``, a training run's per-epoch ``curve``), with the ``keep`` columns."""
    keep = [c for c in keep if c in rows.columns]
    parts = [pd.DataFrame(r[column]).assign(**{c: r[c] for c in keep}) for _, r in rows.iterrows()]
    return pd.concat(parts, ignore_index=True)


def trial_row(result: AttackResult, true_label: int, keep_history: bool | Collection[int] = True,
              keep_image: bool = False) -> dict:
    """One sweep row from an attack's result: attack, final metrics, label, convergence, time;
    ``keep_history``: the per-iteration history (True), none (False), or its rows at these
    iterations and the last (a collection); with ``keep_image`` the final image (clamped, 8
    bits: :func:`row_image` reads it back)."""
    final = result.final if len(result.history) else pd.Series(dtype=float)
    row = {"attack": result.attack, "true_label": int(true_label), "label": int(result.label[0]),
           "label_correct": bool(int(result.label[0]) == int(true_label)),
           **{k: float(final.get(k, float("nan"))) for k in ("grad_distance", "mse", "l1", "psnr", "ssim")},
           "converged": result.converged, "converged_at": result.converged_at,
           "diverged": result.diverged, "iterations_run": int(final.get("iteration", -1)),
           "seconds": result.seconds}
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
    return row


def row_image(row) -> torch.Tensor:
    """The final image a row stored with ``keep_image`` (floats in [0, 1], 8-bit precision)."""
    raw = np.frombuffer(base64.b64decode(row["image_u8"]), dtype=np.uint8).copy()
    return torch.from_numpy(raw).view(*row["image_shape"]).float() / 255


def trial_attack(trial: dict) -> str:
    """The attack a trial names (``"attack"``); older trials say ``"label_mode": "idlg"``."""
    return trial.get("attack") or ("idlg" if trial.get("label_mode", "dlg") == "idlg" else "dlg")


@dataclass
class Prepared:
    """A trial made ready for the engine: what the attacker gets and what it should find."""

    target: SharedGradient
    truth: torch.Tensor
    true_label: int


def dataset_target(model: nn.Module, dataset: Dataset, trial: dict, keep_source: bool = False) -> Prepared:
    """The shared gradient of image ``trial["image"]`` of ``dataset`` through the trial's
    ``defense`` (its randomness drawn from the trial's ``seed``, which also draws the dummy);
    ``keep_source`` keeps the true gradient (for ``redraw_defense``)."""
    x, y = dataset[trial["image"]]
    device = next(model.parameters()).device
    x, y = x[None].to(device), int(y)
    shared = shared_gradient(model, x, torch.tensor([y], device=device), trial.get("defense", "none"),
                             torch.Generator(device).manual_seed(trial["seed"]), keep_source)
    return Prepared(shared, x, y)


@dataclass
class _Attacks:
    """What every batch of a :func:`run_attacks` call shares: the models, how a trial becomes a
    target, how a result becomes a row and the engine's settings (sent to Ray once)."""

    models: object  # a model, or a dict name -> model
    prepare: Callable
    per_trial_models: bool
    row_settings: dict
    attack_settings: dict

    def model(self, name):
        return self.models[name] if isinstance(self.models, dict) else self.models

    def run(self, part: list[tuple[str, dict]], emit: Callable[[str, dict, dict, AttackResult], None]) -> None:
        """Attack every trial of ``part`` (pending (key, trial) pairs of one model, or of any
        models with ``per_trial_models``) in one engine call; ``emit(key, trial, row,
        result)`` as each finishes."""
        models = [self.model(t.get("model")) for _, t in part]
        ready = [self.prepare(m, trial) for m, (_, trial) in zip(models, part)]
        keep_history, keep_image, extra, configs = (self.row_settings[k] for k in
                                                    ("keep_history", "keep_image", "extra", "configs"))

        def save(i: int, result: AttackResult) -> None:
            key, trial = part[i]
            row = trial_row(result, ready[i].true_label, keep_history, keep_image)
            emit(key, trial, {**trial, **row, **(extra(result) if extra else {})}, result)

        dlg_batch(models if self.per_trial_models else models[0], [p.target for p in ready],
                  image_shape=ready[0].truth.shape, num_classes=ready[0].target.grads[-1].shape[0],
                  seeds=[t["seed"] for _, t in part], ground_truths=[p.truth for p in ready],
                  attack=[(configs or {}).get(trial_attack(t), trial_attack(t)) for _, t in part],
                  on_result=save, **self.attack_settings)

    def rows(self, part: list[tuple[str, dict]]) -> list[tuple[str, dict, dict, AttackResult]]:
        """Every trial's (key, trial, row, result): what a Ray task sends back."""
        out = []
        self.run(part, lambda *finished: out.append(finished))
        return out


def run_attacks(trials: Iterable[dict], models: nn.Module | dict[str, nn.Module],
                prepare: Callable[[nn.Module, dict], Prepared], path: str | Path | None = None, *,
                keep_history: bool | Collection[int] = True, keep_image: bool = False, extra: Callable[[AttackResult], dict] | None = None,
                chunk_size: int = 64, slice_size: int = 512, progress: bool | None = None,
                on_result: Callable[[dict, AttackResult], None] | None = None,
                configs: dict[str, AttackConfig] | None = None, per_trial_models: bool = False,
                executor: str = "local", resources: dict | None = None, **settings) -> pd.DataFrame:
    """The one pipeline of every attack study: trial -> shared gradient (``prepare(model,
    trial)``) -> engine -> row, each row stored at ``path`` the moment its trial finishes;
    trials already stored there are not run again. A trial names its ``attack`` (``"dlg"``,
    ``"idlg"``, ``"ig"``, ``"adaptive"``; default DLG) and its ``model`` (a key of ``models``
    when that is a dict) and carries its ``seed``. ``settings`` override every attack's
    (``iterations``...); ``extra(result)`` adds columns to a row; ``on_result(trial, result)``
    sees each result. ``configs`` names attacks of your own (name -> :class:`AttackConfig`) that
    trials may name too. Targets are prepared ``slice_size`` trials at a time, to bound memory.
    ``per_trial_models``: the models of ``models`` share one architecture, and trials of
    different models run in one batch (per-trial weights) instead of one batch per model.

    ``executor="ray"`` runs every ``chunk_size`` trials as one Ray task (``resources`` per
    task, default one CPU; see :func:`~dlg_utils.executors.ray_map`) and stores each task's rows
    in this process as it finishes: an interrupted sweep loses only the tasks in flight."""
    from .executors import check_executor, ray_map
    check_executor(executor)
    trials = list(trials)
    store = RowStore(path)
    by_model: dict = {}
    for key, trial in store.pending(trials):
        by_model.setdefault(None if per_trial_models else trial.get("model"), []).append((key, trial))
    size = chunk_size if executor == "ray" else slice_size
    attacks = _Attacks(models, prepare, per_trial_models,
                       dict(keep_history=keep_history, keep_image=keep_image, extra=extra, configs=configs),
                       dict(chunk_size=chunk_size, progress=progress if executor == "local" else False, **settings))
    parts = [group[lo:lo + size] for group in by_model.values() for lo in range(0, len(group), size)]

    def emit(key: str, trial: dict, row: dict, result: AttackResult) -> None:
        store.add(key, row)
        if on_result is not None:
            on_result(trial, result)

    if executor == "local":
        for part in parts:
            attacks.run(part, emit)
    else:
        show = progress_enabled() if progress is None else progress
        with tqdm(total=len(parts), desc="Ray tasks", disable=not show) as bar:
            for _, finished in ray_map(_Attacks.rows, parts, resources, shared=attacks):
                for item in finished:
                    emit(*item)
                bar.update(1)
    return store.frame(trials)


def attack_sweep(trials: Iterable[dict], models: nn.Module | dict[str, nn.Module], dataset: Dataset,
                 path: str | Path | None = None, iterations: int | None = None,
                 keep_history: bool | Collection[int] = True,
                 chunk_size: int = 64, progress: bool | None = None, **settings) -> pd.DataFrame:
    """Attack every trial ``{"image", "seed", "defense"[, "attack"][, "model"]}`` through the
    batched engine (:func:`run_attacks` with :func:`dataset_target`), writing each trial's row
    to ``path`` the moment it finishes; trials already stored there are not run again.

    The target gradient of a trial is the gradient of image ``image`` of ``dataset`` through
    ``defense`` (its randomness drawn from ``seed``, which also draws the dummy). ``attack``:
    ``"dlg"`` (default), ``"idlg"``, ``"ig"`` or ``"adaptive"`` (older trials: ``"label_mode":
    "idlg"``). ``models`` is one model or a dict name -> model selected by the trial's
    ``model`` key. ``iterations`` and ``settings`` override the attacks' own
    (``redraw_defense=True`` replays seed 000's closure, which redraws the defense per call).
    """
    if iterations is not None:
        settings["iterations"] = iterations
    keep = bool(settings.get("redraw_defense", False))
    return run_attacks(trials, models, lambda model, trial: dataset_target(model, dataset, trial, keep), path,
                       keep_history=keep_history, chunk_size=chunk_size, progress=progress, **settings)


def attack_trial(model: nn.Module, dataset: Dataset, image: int, seed: int, defense: str = "none",
                 iterations: int | None = None, label_mode: str = "dlg", keep_history: bool = True,
                 attack: str | None = None, **settings) -> tuple[dict, AttackResult]:
    """Attack image ``image`` of ``dataset`` through ``defense`` with dummy seed ``seed`` (which
    also draws the defense's randomness); returns (summary row, AttackResult)."""
    trial = {"image": image, "seed": seed, "defense": defense, "attack": attack or ("idlg" if label_mode == "idlg" else "dlg")}
    results = []
    attack_sweep([trial], model, dataset, iterations=iterations, progress=False,
                 on_result=lambda _, r: results.append(r), **settings)
    return trial_row(results[0], int(dataset[image][1]), keep_history), results[0]
