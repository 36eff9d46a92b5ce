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

from .attack import dlg, idlg_label, target_gradients
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


def sweep(trials: Iterable[dict], run: Callable[[dict], dict], path: str | Path | None = None,
          progress: bool | None = None, desc: str = "trials") -> pd.DataFrame:
    """Run ``run(trial)`` for every trial not yet stored at ``path``; return one row per trial
    (the trial's parameters and what ``run`` returned), in the order of ``trials``."""
    trials = list(trials)
    keys = [trial_key(t) for t in trials]
    if len(set(keys)) != len(keys):
        raise ValueError("trials contain duplicates")
    done = {row["trial"]: row for row in load_rows(path)} if path else {}
    pending = [(k, t) for k, t in zip(keys, trials) if k not in done]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    show = progress_enabled() if progress is None else progress
    for key, trial in tqdm(pending, desc=desc, disable=not show):
        row = {**trial, **run(trial), "trial": key}
        done[key] = row
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")
                f.flush()
                os.fsync(f.fileno())
    return pd.DataFrame([done[k] for k in keys])


def expand_histories(rows: pd.DataFrame, keep: Iterable[str] = ("image", "seed", "defense")) -> pd.DataFrame:
    """A tidy per-iteration table from a sweep whose rows carry a ``history`` list."""
    keep = [c for c in keep if c in rows.columns]
    parts = [pd.DataFrame(r["history"]).assign(**{c: r[c] for c in keep}) for _, r in rows.iterrows()]
    return pd.concat(parts, ignore_index=True)


def attack_trial(model: nn.Module, dataset: Dataset, image: int, seed: int, defense: str = "none",
                 iterations: int = 300, label_mode: str = "dlg", keep_history: bool = True,
                 **dlg_kwargs) -> tuple[dict, object]:
    """Attack image ``image`` of ``dataset`` through ``defense`` with dummy seed ``seed``.

    The defense's randomness is drawn from ``seed`` too. ``label_mode``: "dlg" learns the
    label, "idlg" extracts it from the gradient. Returns (summary row, AttackResult).
    """
    x, y = dataset[image]
    x, y = x[None], torch.tensor([int(y)])
    grads = target_gradients(model, x, y, defense_from_spec(defense), torch.Generator().manual_seed(seed))
    num_classes = grads[-1].shape[0]
    label = None if label_mode == "dlg" else idlg_label(grads)
    result = dlg(model, grads, image_shape=x.shape, num_classes=num_classes, iterations=iterations,
                 label=label, seed=seed, ground_truth=x, **dlg_kwargs)
    final = result.final
    row = {"true_label": int(y), "label": int(result.label[0]),
           "label_correct": bool(result.label[0] == y[0]),
           "grad_distance": float(final["grad_distance"]), "mse": float(final["mse"]),
           "l1": float(final["l1"]), "psnr": float(final["psnr"]), "ssim": float(final["ssim"]),
           "converged": result.converged, "converged_at": result.converged_at,
           "diverged": result.diverged, "iterations_run": int(final["iteration"]),
           "seconds": result.seconds}
    if keep_history:
        row["history"] = result.history.to_dict("records")
    return row, result
