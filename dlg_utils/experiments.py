"""Sweeps over (image, seed, defense, ...) trials that store each finished trial on disk as one
JSON line, so an interrupted sweep resumes without redoing or losing a finished trial."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .attack import AttackResult, dlg, dlg_batch, idlg_label, target_gradients
from .config import progress_enabled
from .defenses import defense_from_spec


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
          progress: bool | None = None, desc: str = "trials") -> pd.DataFrame:
    """Run ``run(trial)`` for every trial not yet stored at ``path``; return one row per trial
    (the trial's parameters and what ``run`` returned), in the order of ``trials``."""
    trials = list(trials)
    store = RowStore(path)
    show = progress_enabled() if progress is None else progress
    for key, trial in tqdm(store.pending(trials), desc=desc, disable=not show):
        store.add(key, {**trial, **run(trial)})
    return store.frame(trials)


def expand_histories(rows: pd.DataFrame, keep: Iterable[str] = ("image", "seed", "defense", "model"),
                     column: str = "history") -> pd.DataFrame:
    """A tidy table from a sweep whose rows carry a list of records in ``column`` (an attack's
    per-iteration ``history``, a training run's per-epoch ``curve``), with the ``keep`` columns."""
    keep = [c for c in keep if c in rows.columns]
    parts = [pd.DataFrame(r[column]).assign(**{c: r[c] for c in keep}) for _, r in rows.iterrows()]
    return pd.concat(parts, ignore_index=True)


def trial_row(result: AttackResult, true_label: int, keep_history: bool = True) -> dict:
    """One sweep row from an attack's result: final metrics, label, convergence, time."""
    final = result.final if len(result.history) else pd.Series(dtype=float)
    row = {"true_label": int(true_label), "label": int(result.label[0]),
           "label_correct": bool(int(result.label[0]) == int(true_label)),
           **{k: float(final.get(k, float("nan"))) for k in ("grad_distance", "mse", "l1", "psnr", "ssim")},
           "converged": result.converged, "converged_at": result.converged_at,
           "diverged": result.diverged, "iterations_run": int(final.get("iteration", -1)),
           "seconds": result.seconds}
    if keep_history:
        row["history"] = result.history.to_dict("records")
    return row


def attack_sweep(trials: Iterable[dict], models: nn.Module | dict[str, nn.Module], dataset: Dataset,
                 path: str | Path | None = None, iterations: int = 300, keep_history: bool = True,
                 chunk_size: int = 64, progress: bool | None = None, **dlg_kwargs) -> pd.DataFrame:
    """Attack every trial ``{"image", "seed", "defense"[, "label_mode"][, "model"]}`` through the
    batched engine, ``chunk_size`` trials at a time, writing each trial's row to ``path`` the
    moment it finishes; trials already stored there are not run again.

    The target gradient of a trial is the gradient of image ``image`` of ``dataset`` through
    ``defense`` (its randomness drawn from ``seed``, which also draws the dummy). label_mode
    "dlg" (default) learns the label, "idlg" extracts it. ``models`` is one model or a dict
    name -> model selected by the trial's ``model`` key.
    """
    trials = list(trials)
    store = RowStore(path)
    by_model: dict = {}
    for k, t in store.pending(trials):
        by_model.setdefault(t.get("model"), []).append((k, t))
    for name, group in by_model.items():
        model = models[name] if isinstance(models, dict) else models
        device = next(model.parameters()).device
        xs, ys, targets, labels = [], [], [], []
        for _, t in group:
            x, y = dataset[t["image"]]
            x, y = x[None].to(device), torch.tensor([int(y)], device=device)
            grads = target_gradients(model, x, y, defense_from_spec(t.get("defense", "none")),
                                     torch.Generator(device).manual_seed(t["seed"]))
            xs.append(x), ys.append(int(y)), targets.append(grads)
            labels.append(None if t.get("label_mode", "dlg") == "dlg" else idlg_label(grads))

        def save(i: int, result: AttackResult) -> None:
            key, trial = group[i]
            store.add(key, {**trial, **trial_row(result, ys[i], keep_history)})

        dlg_batch(model, targets, image_shape=xs[0].shape, num_classes=targets[0][-1].shape[0],
                  iterations=iterations, labels=labels, seeds=[t["seed"] for _, t in group],
                  ground_truths=xs, chunk_size=chunk_size, progress=progress, on_result=save, **dlg_kwargs)
    return store.frame(trials)


def attack_trial(model: nn.Module, dataset: Dataset, image: int, seed: int, defense: str = "none",
                 iterations: int = 300, label_mode: str = "dlg", keep_history: bool = True,
                 **dlg_kwargs) -> tuple[dict, AttackResult]:
    """Attack image ``image`` of ``dataset`` through ``defense`` with dummy seed ``seed`` (which
    also draws the defense's randomness); returns (summary row, AttackResult)."""
    x, y = dataset[image]
    device = next(model.parameters()).device
    x, y = x[None].to(device), torch.tensor([int(y)], device=device)
    grads = target_gradients(model, x, y, defense_from_spec(defense), torch.Generator(device).manual_seed(seed))
    label = None if label_mode == "dlg" else idlg_label(grads)
    result = dlg(model, grads, image_shape=x.shape, num_classes=grads[-1].shape[0], iterations=iterations,
                 label=label, seed=seed, ground_truth=x, **dlg_kwargs)
    return trial_row(result, int(y), keep_history), result
