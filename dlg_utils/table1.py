"""Table I of Menon et al. (quantization vs DLG) in the original code's design and two variants
that each undo one of its differences (notebook 6, section 2).

The original code seeds torch once (``torch.manual_seed(50)``), builds a new DLG LeNet per
dummy seed, applies the defense inside the L-BFGS closure (a fresh draw at every evaluation)
and prints the gradient distance every 10 iterations, the last time at ``iters = 90``.
"one draw" draws the defense once; "one model" attacks one fixed model for every seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from .experiments import AttackTrial, Execution, RowOptions, attack_sweep
from .models import get_model

METHODS = {"stochastic:16": "Stochastic quantization (16 levels)", "uniform:16": "Uniform quantization (16 levels)",
           "sparsity:0.4": "Sparsity = 0.4", "uniform:240": "Uniform quantization (240 levels)",
           "sparsity:0.2": "Sparsity = 0.2", "none": "Nothing"}  # Table I's rows, in its order
# Table I's numbers (the 'MSE' columns are the gradient distance) and its accuracy column
PAPER = pd.DataFrame({"paper mean 'MSE'": [275.683, 235.810, 3.090, 0.466, 0.948, 110.56],
                      "paper median 'MSE'": [252.160, 162.485, 2.957, 0.336, 0.227, 0.0001],
                      "paper accuracy": [0.737, 0.738, 0.735, 0.737, 0.736, 0.735]}, index=list(METHODS))
MODEL_SEED = 0  # the one model of the corrected design (section 1) and of "one model"
ORIGINAL_IMAGES = {2: "photo (cat)", 25: "Fashion-MNIST (shirt)"}  # indices into the embedded set
ORIGINAL_SEED = 50  # torch.manual_seed(50), once, as the original
# design -> (models: a new one per seed or the fixed one, the defense re-drawn at every evaluation)
DESIGNS = {"original": ("new", True), "one draw": ("new", False), "one model": ("fixed", True)}


def original_models(seeds: Sequence[int], fixed: nn.Module) -> dict[str, nn.Module]:
    """A new DLG LeNet per dummy seed, drawn one after the other after ``torch.manual_seed(50)``
    (names ``new{seed}``), and the ``fixed`` model."""
    torch.manual_seed(ORIGINAL_SEED)
    return {f"new{s}": get_model("lenet", in_channels=3, num_classes=100, image_size=32) for s in seeds} | {
        "fixed": fixed}


def printed_iterations(iterations: int) -> list[int]:
    """The iterations the original's loop prints after (steps 1, 11, ..., and the start)."""
    return [0, *range(1, iterations + 1, 10)]


def original_trials(defenses: Sequence[str], images: Sequence[int], seeds: Sequence[int],
                    iterations: int) -> list[AttackTrial]:
    """Every (design, defense, image, seed) as a DLG trial on its design's model."""
    return [AttackTrial(int(i), int(s), d, "dlg", f"new{s}" if models == "new" else "fixed",
                        {"iterations": iterations, "redraw_defense": redraw}, {"design": name})
            for name, (models, redraw) in DESIGNS.items() for d in defenses for i in images for s in seeds]


def run_original(data: Dataset, models: dict[str, nn.Module], defenses: Sequence[str], images: Sequence[int],
                 seeds: Sequence[int], iterations: int, path: str | Path | None,
                 progress: bool | None = None) -> pd.DataFrame:
    """Attack every trial of :func:`original_trials` (models of different seeds batched together,
    per-trial weights), storing the history at the printed iterations; adds ``at_printed``
    (the distance printed at ``iters = 90``, after step ``iterations - 9``) and ``at_last``."""
    trials = original_trials(defenses, images, seeds, iterations)
    rows = attack_sweep(trials, models, data, path, rows=history_rows(iterations),
                        execution=Execution(per_trial_models=True, progress=progress))
    rows["at_printed"] = rows["history"].apply(printed, k=iterations - 9)
    rows["at_last"] = rows["history"].apply(printed, k=iterations)
    return rows


def history_rows(iterations: int) -> RowOptions:
    """Rows keep the history at the iterations the original prints (and the last)."""
    return RowOptions(keep_history=tuple(printed_iterations(iterations)))


def printed(history: list[dict], k: int) -> float:
    """The gradient distance the loop prints after step ``k`` (the last one recorded by then)."""
    return max((h for h in history if h["iteration"] <= k), key=lambda h: h["iteration"])["grad_distance"]


def design_stat(rows: pd.DataFrame, design: str, defense: str, stat: str = "median", picture: str | None = None,
                column: str = "at_printed") -> float:
    """The median (or mean) of ``column`` over one design's trials of one defense (and picture)."""
    part = rows[(rows["design"] == design) & (rows["defense"] == defense)]
    if picture is not None:
        part = part[part["picture"] == picture]
    return float(getattr(part[column], stat)())
