"""Figures: reconstruction grids over iterations and metric-vs-iteration curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from .attack import AttackResult
from .config import output_path


def _show(ax, image: torch.Tensor) -> None:
    img = image.detach().cpu().clamp(0, 1)
    img = img[0] if img.dim() == 4 else img
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0))
    ax.set_xticks([]), ax.set_yticks([])


def reconstruction_grid(rows: Sequence[tuple[str, AttackResult]], truth: torch.Tensor | None = None,
                        iterations: Sequence[int] | None = None, title: str | None = None,
                        path: str | Path | None = None) -> plt.Figure:
    """One row per (label, result): the ground truth, then the snapshots at ``iterations``
    (default: every snapshot of the first result). Saves to ``path`` when given."""
    if not rows:
        raise ValueError("no results to plot")
    iterations = list(iterations if iterations is not None else sorted(rows[0][1].snapshots))
    ncols = len(iterations) + (truth is not None)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.15 * ncols + 1.2, 1.25 * len(rows) + 0.6),
                             squeeze=False)
    for r, (label, result) in enumerate(rows):
        col = 0
        if truth is not None:
            _show(axes[r, 0], truth)
            axes[r, 0].set_title("truth" if r == 0 else "", fontsize=8)
            col = 1
        for j, it in enumerate(iterations):
            ax = axes[r, col + j]
            if it in result.snapshots:
                _show(ax, result.snapshots[it])
            else:  # diverged or stopped before this iteration
                ax.axis("off")
            if r == 0:
                ax.set_title(f"it {it}", fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    return _finish(fig, path)


def metric_curves(history: pd.DataFrame, metric: str = "l1", hue: str = "defense",
                  title: str | None = None, logy: bool = False, ax=None,
                  path: str | Path | None = None) -> plt.Figure:
    """``metric`` per iteration from a tidy history (columns iteration, ``metric``, ``hue`` and
    optionally seed): the mean over seeds/images with a 95% bootstrap band per ``hue``."""
    for col in ("iteration", metric, hue):
        if col not in history.columns:
            raise ValueError(f"history has no column {col!r}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
    else:
        fig = ax.figure
    sns.lineplot(data=history, x="iteration", y=metric, hue=hue, errorbar=("ci", 95), ax=ax)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(fig, path)


def _finish(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save into ``images/`` (a bare file name; ``images/quick/`` in quick mode, so that a quick
    run never overwrites a committed full-run figure) or to ``path``; returns the path."""
    path = output_path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
