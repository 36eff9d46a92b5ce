"""Figures: reconstruction grids over iterations and metric-vs-iteration curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


import matplotlib
import matplotlib.lines
import matplotlib.ticker
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from adjustText import adjust_text
import torch

from .attack import AttackResult
from .config import output_path


def _show(ax, image: torch.Tensor) -> None:
    img = image.detach().cpu().clamp(0, 1)
    img = img[0] if img.dim() == 4 else img
    if img.shape[0] == 1:  # numpy arrays: matplotlib reading a tensor warns (torch's __array__ takes no copy)
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).numpy())
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
                  path: str | Path | None = None, x: str = "iteration") -> plt.Figure:
    """``metric`` per ``x`` (iteration) from a tidy history (columns ``x``, ``metric``, ``hue``
    and optionally seed): the mean over seeds/images with a 95% bootstrap band per ``hue``."""
    for col in (x, metric, hue):
        if col not in history.columns:
            raise ValueError(f"history has no column {col!r}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
    else:
        fig = ax.figure
    sns.lineplot(data=history, x=x, y=metric, hue=hue, errorbar=("ci", 95), ax=ax)
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


# --- the privacy-utility frontier (notebook 9) ----------------------------------------------------

def frontier_plot(table: pd.DataFrame, leakage: str = "median ssim", title: str | None = None,
                  path: str | Path | None = None) -> plt.Figure:
    """Accuracy drop (y, with its interval) against the best attack's leakage (x, with its
    bootstrap interval), one point per defense measured both ways, one panel per model; the
    colour is the bits sent per parameter (log scale), each point named by its defense."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6.2 * len(models), 4.8), squeeze=False)
    norm = matplotlib.colors.LogNorm(vmin=table["bits"].min(), vmax=table["bits"].max())
    for ax, model in zip(axes[0], models):
        t = table[(table["model"] == model) & table[leakage].notna() & table["drop"].notna()].copy()
        for c in ("drop", "drop low", "drop high"):
            t[c] = 100 * t[c]  # points
        spread = lambda mid, lo, hi: np.clip([mid - lo, hi - mid], 0, None)  # noqa: E731
        ax.errorbar(t[leakage], t["drop"], xerr=spread(t[leakage], t[f"{leakage} low"], t[f"{leakage} high"]),
                    yerr=spread(t["drop"], t["drop low"], t["drop high"]), fmt="none", ecolor="0.6", lw=0.8, zorder=1)
        points = ax.scatter(t[leakage], t["drop"], c=t["bits"], cmap="viridis", norm=norm, s=46, edgecolor="k",
                            zorder=2)
        texts = [ax.text(r[leakage], r["drop"], r["defense"], fontsize=7) for _, r in t.iterrows()]
        ax.axhline(0, color="0.3", lw=0.7, ls=":")
        # move the names apart so none covers another, each tied to its point by a thin line
        adjust_text(texts, x=t[leakage].to_numpy(), y=t["drop"].to_numpy(), ax=ax,
                    arrowprops=dict(arrowstyle="-", color="0.5", lw=0.5))
        ax.set_xlabel(f"leakage: {leakage} of the best attack's reconstruction")
        ax.set_ylabel("test-accuracy drop vs. no defense (points)")
        ax.set_title(model, fontsize=9)
        fig.colorbar(points, ax=ax, label="bits sent per parameter")
    if title:
        fig.suptitle(title, fontsize=9)
    return _finish(fig, path)


def threshold_plot(curve: pd.DataFrame, title: str | None = None, path: str | Path | None = None) -> plt.Figure:
    """The fraction of trials recovered against the SSIM threshold that counts as recovered,
    one line per defense, one panel per model (legend outside the panels)."""
    models = list(dict.fromkeys(curve["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models) + 2, 3.8), squeeze=False, sharey=True)
    palette = dict(zip(dict.fromkeys(curve["defense"]), sns.color_palette("tab20", curve["defense"].nunique())))
    dashes = dict(zip(palette, ["-", "--", "-.", ":"] * len(palette)))  # lines that coincide stay visible
    for ax, model in zip(axes[0], models):
        for defense, d in curve[curve["model"] == model].groupby("defense", sort=False):
            ax.plot(d["threshold"], d["recovered"], color=palette[defense], ls=dashes[defense], lw=1.4, label=defense)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("SSIM threshold for 'recovered'")
        ax.set_ylabel("fraction of trials recovered")
    handles = [matplotlib.lines.Line2D([], [], color=c, ls=dashes[d], label=d) for d, c in palette.items()]
    fig.legend(handles=handles, title="defense", fontsize=7, bbox_to_anchor=(1.0, 0.9), loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    return _finish(fig, path)


def best_reconstructions(images: dict[str, list[torch.Tensor]], truths: list[torch.Tensor],
                         scores: dict[str, list[str]] | None = None, title: str | None = None,
                         path: str | Path | None = None) -> plt.Figure:
    """A grid: the true images on top, then one row per defense (``images[defense]``, one per
    column), each cell captioned by ``scores[defense][column]``."""
    rows = [("truth", truths, None)] + [(d, imgs, (scores or {}).get(d)) for d, imgs in images.items()]
    ncols = len(truths)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.0 * ncols + 1.6, 1.12 * len(rows) + 0.6), squeeze=False)
    for r, (label, imgs, caps) in enumerate(rows):
        for c in range(ncols):
            _show(axes[r, c], imgs[c])
            if caps:
                axes[r, c].set_title(caps[c], fontsize=6, pad=2)
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    return _finish(fig, path)


# --- seed 001's leakage study (notebook 8) --------------------------------------------------------

def fl_method_label(method: str, curve: pd.DataFrame, delta: float) -> str:
    """A legend entry for a federated method's accuracy curve (:func:`~dlg_utils.federated.run_federated`'s
    rows): the method, and for DP-SGD the epsilon its last round reports (``epsilon-max``) at ``delta``."""
    if method == "dp" and "epsilon-max" in curve and curve["epsilon-max"].notna().any():
        return f"dp (epsilon {curve['epsilon-max'].dropna().iloc[-1]:.2f} spent, delta {delta:g})"
    return method


def leak_grid(rows: pd.DataFrame, truth: torch.Tensor, title: str, path: str | Path, label: str = "attack",
              caption: str | None = None) -> None:
    """One row per sweep row (:func:`~dlg_utils.fl_leakage.leakage_sweep`): its stored
    ``snapshots`` (iteration -> image, keys int or, read back from JSON, str), then the
    original image; each row named by its ``label`` column, and ``caption`` (what the row names
    mean) under the grid. Saved to ``path``; the figure stays open for the notebook to show
    (nothing is returned, so it shows once)."""
    snaps = [int(k) for k in rows.iloc[0]["snapshots"]]
    fig, axes = plt.subplots(len(rows), len(snaps) + 1, figsize=(1.3 * (len(snaps) + 1), 1.45 * len(rows)),
                             squeeze=False)
    for ax_row, (_, r) in zip(axes, rows.iterrows()):
        for ax, k in zip(ax_row, snaps):
            _show(ax, torch.as_tensor(r["snapshots"][str(k)] if str(k) in r["snapshots"] else r["snapshots"][k]))
        ax_row[0].set_ylabel(r[label], fontsize=7)
        _show(ax_row[-1], truth)
        ax_row[-1].axis("off")
    for ax, k in zip(axes[0], snaps):
        ax.set_title(f"it {k}", fontsize=8)
    axes[0][-1].set_title("original", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if caption:
        fig.text(0.01, 0, caption, fontsize=7, va="top", ha="left", wrap=True)
    if path is not None:
        save_figure(fig, path)


def case_success_plot(summary: pd.DataFrame, title: str, criteria: Sequence[str] = ("ssim", "psnr", "mse"),
                      path: str | Path | None = None) -> plt.Figure:
    """Share of images recovered (with its exact 95% interval) against the batch size B, one
    line per number of local steps E, one panel per (criterion, model state): the table of
    :func:`~dlg_utils.deployment.cell_summary`."""
    from .stats import CRITERIA, clopper_pearson
    states = list(dict.fromkeys(summary["model"]))
    fig, axes = plt.subplots(len(criteria), len(states), figsize=(3.6 * len(states), 2.5 * len(criteria) + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    colors = dict(zip(sorted(summary["E"].unique()), sns.color_palette("colorblind")))
    for r, name in enumerate(criteria):
        for c, state in enumerate(states):
            ax = axes[r][c]
            for j, (E, g) in enumerate(summary[summary["model"] == state].groupby("E")):
                g = g.sort_values("B")
                k = (g[f"{name} recovered"] * g["images"]).round().astype(int)
                bounds = np.array([clopper_pearson(a, b) for a, b in zip(k, g["images"])])
                x = np.arange(len(g)) + (j - 0.5) * 0.12  # side by side: no interval hides another
                ax.errorbar(x, g[f"{name} recovered"], yerr=[g[f"{name} recovered"] - bounds[:, 0],
                                                             bounds[:, 1] - g[f"{name} recovered"]],
                            marker="o", capsize=3, color=colors[E], label=f"E = {E} local step{'s' * (E > 1)}")
                ax.set_xticks(np.arange(len(g)), [str(b) for b in g["B"]])
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{state} model, {CRITERIA[name].describe()}", fontsize=9)
            if c == 0:
                ax.set_ylabel("images recovered")
            if r == len(criteria) - 1:
                ax.set_xlabel("batch size B")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def case_gallery(truths: torch.Tensor, rows: Sequence[tuple[str, torch.Tensor]], title: str,
                 path: str | Path | None = None) -> plt.Figure:
    """The true images on top, then one row per (label, reconstructions), each reconstruction
    under the true image it was matched to (N x C x H x W each)."""
    if not rows:
        raise ValueError("nothing to show")
    ncols = len(truths)
    fig, axes = plt.subplots(len(rows) + 1, ncols, figsize=(0.85 * ncols + 1.9, 0.85 * (len(rows) + 1) + 0.8),
                             squeeze=False)
    for r, (label, images) in enumerate([("true", truths), *rows]):
        for k in range(ncols):
            if k < len(images):
                _show(axes[r][k], images[k])
            else:
                axes[r][k].axis("off")
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9, wrap=True)
    fig.tight_layout()
    return _finish(fig, path)


def budget_plot(table: pd.DataFrame, title: str, path: str | Path | None = None) -> plt.Figure:
    """Median SSIM (and the range over images) against the attack's iterations, one line per
    (attack, defense), one panel per input domain: :func:`~dlg_utils.strength.budget_table`."""
    domains = list(dict.fromkeys(table["domain"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.4 * len(domains), 3.8), sharey=True, squeeze=False)
    lines = sorted({(a, d) for a, d in zip(table["attack"], table["defense"])})
    colors = dict(zip(lines, sns.color_palette("colorblind", len(lines))))
    for ax, domain in zip(axes[0], domains):
        part = table[table["domain"] == domain]
        for j, ((attack, defense), g) in enumerate(part.groupby(["attack", "defense"])):
            g = g.sort_values("budget")
            x = g["budget"] * (1 + 0.04 * (j - len(lines) / 2))  # side by side on the log axis
            ax.errorbar(x, g["median ssim"], yerr=[g["median ssim"] - g["min ssim"], g["max ssim"] - g["median ssim"]],
                        marker="o", capsize=3, color=colors[(attack, defense)], label=f"{attack} vs {defense}")
        ax.set_xscale("log")
        budgets = sorted(part["budget"].unique())
        ax.set_xticks(budgets, [f"{b:,}" for b in budgets])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("iterations (each a run of its own)")
        ax.set_title(domain, fontsize=9)
    axes[0][0].set_ylabel("SSIM (median; bars: min-max over images)")
    axes[0][0].set_ylim(-0.05, 1.05)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(lines), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _finish(fig, path)


def operating_plot(table: pd.DataFrame, title: str, limit: float = 0.10, columns: int = 3,
                   criteria: Sequence[str] = ("ssim", "psnr", "mse"), unsaturated: Sequence[tuple[str, str, str]] = (),
                   path: str | Path | None = None) -> plt.Figure:
    """Share of images recovered per defense with its exact 95% interval, one marker per
    criterion side by side, one panel per (domain, point) of
    :func:`~dlg_utils.operating.cell_table`; the dashed line is the protection limit. The
    cells of ``unsaturated`` (domain, point, defense) have a budget that carries no "protects"
    (a rate under the line there is not protection): their labels are grey and italic, and a
    panel of such cells only says so in its title."""
    from . import operating as op
    from .stats import CRITERIA
    panels = list(dict.fromkeys(zip(table["domain"], table["point"])))
    columns = max(1, min(columns, len(panels)))
    rows_ = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(6.2 * columns, 3.4 * rows_ + 0.8), squeeze=False, sharey=True)
    colors = dict(zip(criteria, sns.color_palette("colorblind")))
    for ax, (domain, point) in zip(axes.flat, panels):
        g = table[(table["domain"] == domain) & (table["point"] == point)]
        x = np.arange(len(g))
        for j, name in enumerate(criteria):
            v = g[f"{name} recovered"].to_numpy()
            ax.errorbar(x + (j - (len(criteria) - 1) / 2) * 0.22, v,
                        yerr=[v - g[f"{name} low"].to_numpy(), g[f"{name} high"].to_numpy() - v], fmt="o", ms=3.5,
                        capsize=2, color=colors[name], label=CRITERIA[name].describe())
        ax.axhline(limit, ls="--", lw=0.8, color="0.3")
        ax.set_xticks(x, [op.defense_label(point, d) for d in g["defense"]], rotation=60, ha="right", fontsize=7)
        open_ = [(domain, point, d) in set(unsaturated) for d in g["defense"]]
        for tick, flagged in zip(ax.get_xticklabels(), open_):
            if flagged and not all(open_):
                tick.set_color("0.45"), tick.set_fontstyle("italic")
        ax.set_xlim(-0.6, max(len(g), 8) - 0.4)  # a point with few finished cells keeps the spacing
        ax.set_ylim(-0.04, 1.04)
        ax.set_title(f"{op.domain_label(domain)}: {point} ({int(g['images'].max())} images)"
                     + ("\nbudget not saturated here: under the line is open, not protected"
                        if all(open_) else ""), fontsize=9)
        ax.set_ylabel("images recovered")
        ax.set_xlabel("defense", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()  # under the panels: no marker hidden
    handles.append(matplotlib.lines.Line2D([], [], ls="--", lw=0.8, color="0.3"))
    labels.append(f"limit {limit:.0%}")
    if len(unsaturated):
        handles.append(matplotlib.lines.Line2D([], [], ls="none"))
        labels.append("grey italic defense: its budget is not shown saturated (under the line: open)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
               title="an image is recovered when", title_fontsize=8)
    fig.suptitle(title, fontsize=10, wrap=True)
    fig.tight_layout(rect=(0, 0.15 / rows_, 1, 1))  # room for the legend under the x labels
    if path is not None:  # not _finish: its tight_layout would drop that room
        save_figure(fig, path)
    return fig


def operating_frontier_plot(table: pd.DataFrame, title: str, limit: float = 0.10, columns: int = 2,
                            path: str | Path | None = None) -> plt.Figure:
    """The frontier per (domain, point) as two forest plots on one row per defense: left, the
    share of images recovered (SSIM, exact 95% interval; shaded: at most ``limit``); right, the
    accuracy drop of training in the point's setting (mean over seeds, 95% t-interval in orange,
    the Bonferroni-corrected one in grey, arrows where it runs past the edge; shaded: at most
    one point). A defense that holds has its label in green. Rows, not scattered labels: no
    name can hide another however the defenses cluster."""
    from . import operating as op
    panels = list(dict.fromkeys(zip(table["domain"], table["point"])))
    if not panels:
        raise ValueError("no cell with utility to plot")
    columns = max(1, min(columns, len(panels)))
    grid = [panels[i:i + columns] for i in range(0, len(panels), columns)]
    heights = [0.2 * max(int(((table["domain"] == d) & (table["point"] == p)).sum()) for d, p in row) + 1.4
               for row in grid]
    fig = plt.figure(figsize=(7.0 * columns, sum(heights) + 0.6), layout="constrained")
    subs = fig.subfigures(len(grid), columns, height_ratios=heights, squeeze=False)
    for (r, c), (domain, point) in ((divmod(i, columns), panel) for i, panel in enumerate(panels)):
        g = table[(table["domain"] == domain) & (table["point"] == point)].iloc[::-1]  # first defense on top
        y = np.arange(len(g))
        leak_ax, drop_ax = subs[r, c].subplots(1, 2, sharey=True)
        v = g["ssim recovered"].to_numpy()
        leak_ax.axvspan(-0.02, limit, color="C2", alpha=0.1, lw=0)
        leak_ax.errorbar(v, y, xerr=[v - g["ssim low"].to_numpy(), g["ssim high"].to_numpy() - v], fmt="o", ms=3.5,
                         capsize=2, color="C0", lw=1)
        leak_ax.set_yticks(y, [op.defense_label(point, d) for d in g["defense"]], fontsize=7)
        for tick, held in zip(leak_ax.get_yticklabels(), g["holds"].fillna(False).astype(bool)):
            if held:
                tick.set_fontweight("bold"), tick.set_color("C2")
        leak_ax.set(xlim=(-0.02, 1.02), ylim=(-0.7, len(g) - 0.3))
        leak_ax.set_xlabel("images recovered (SSIM ≥ 0.5)", fontsize=8)
        leak_ax.set_ylabel("defense", fontsize=8)
        drop, lo, hi, alo, ahi = (100 * g[k].to_numpy(dtype=float)
                                  for k in ("drop", "drop low", "drop high", "adjusted low", "adjusted high"))
        left = min(-3.0, np.nanmin(drop) - 2, max(np.nanmin(lo, initial=0.0), -15.0))  # every mean shown
        right = max(3.0, np.nanmax(drop) + 2, min(np.nanmax(hi, initial=0.0), 15.0))
        drop_ax.axvspan(left, 1.0, color="C2", alpha=0.1, lw=0)
        drop_ax.axvline(0.0, color="0.6", lw=0.6)
        drop_ax.hlines(y, np.clip(alo, left, right), np.clip(ahi, left, right), color="0.6", lw=1)
        drop_ax.hlines(y, np.clip(lo, left, right), np.clip(hi, left, right), color="C1", lw=2.2)
        drop_ax.plot(drop, y, "o", ms=3.5, color="C1")
        for edge, beyond, marker in ((left, alo < left, "<"), (right, ahi > right, ">")):
            if beyond.any():
                drop_ax.plot(np.full(int(beyond.sum()), edge), y[beyond], marker, ms=4, color="0.4", clip_on=False)
        drop_ax.set_xlim(left, right)
        drop_ax.set_xlabel("accuracy drop (points)", fontsize=8)
        drop_ax.tick_params(labelleft=False)
        for ax in (leak_ax, drop_ax):
            ax.tick_params(axis="x", labelsize=7)
        seeds = sorted({int(k) for k in g["seeds"].dropna()})
        subs[r, c].suptitle(f"{op.domain_label(domain)}: {point} ({int(g['images'].max())} images, "
                            + (f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}")
                            + " training seeds)", fontsize=9)
    fig.suptitle(title, fontsize=10, wrap=True)
    if path is not None:
        save_figure(fig, path)
    return fig


# --- the audit of a Flower run (notebook 11) -------------------------------------------------------

def audit_training_plot(curve: pd.DataFrame, images: pd.DataFrame, title: str,
                        path: str | Path | None = None) -> plt.Figure:
    """Leakage as a model trains, one audited run: the global model's test accuracy and the
    clients' training loss over rounds (audited rounds dotted), then each audited image's PSNR
    and SSIM (its best attack; one dot per image, the median as a bar) at each audited round,
    the success thresholds dotted. ``curve``: the run's history (``round``,
    ``test_accuracy``, ``train-loss``); ``images``: :func:`~dlg_utils.audit.image_rows`."""
    from .stats import CRITERIA
    if images.empty:
        raise ValueError("no scored images to plot")
    rounds = sorted(images["round"].unique())
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.6), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    ax = axes[0]
    ax.plot(curve["round"], curve["test_accuracy"], color="C0", label="test accuracy")
    ax.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1))
    loss_ax = ax.twinx()
    trained = curve.dropna(subset=["train-loss"]) if "train-loss" in curve else curve.iloc[:0]
    loss_ax.plot(trained["round"], trained["train-loss"], color="C1", label="clients' training loss")
    loss_ax.set_ylabel("training loss", color="C1")
    for r in rounds:
        ax.axvline(r, color="gray", lw=0.6, ls=":")
    handles = ax.get_lines()[:1] + loss_ax.get_lines()[:1]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=2, frameon=False)  # below the axes: no curve hidden
    ax.set_title("training (dotted: audited rounds)", fontsize=9)
    accuracy = curve.set_index("round")["test_accuracy"]
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes[1:], ("psnr", "ssim")):
        for i, r in enumerate(rounds):
            values = images.loc[images["round"] == r, metric].to_numpy()
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(values)), values, s=12, alpha=0.7, color="C2")
            ax.plot([i - 0.3, i + 0.3], [np.median(values)] * 2, color="black", lw=1.5)
        ax.axhline(CRITERIA[metric].threshold, color="gray", lw=0.8, ls=":")
        ax.set_xticks(range(len(rounds)),
                      [f"{r}\n{accuracy.get(r, float('nan')):.0%}" for r in rounds], fontsize=7)
        ax.set(xlabel="audited round (test accuracy)", ylabel=f"{metric.upper()} of the best attack")
        ax.set_title(f"{metric.upper()} per image (bar: median; dotted: recovered)", fontsize=9)
    fig.suptitle(title, fontsize=9, wrap=True)
    return _finish(fig, path)


def audit_plot(rows: pd.DataFrame, title: str, metrics: Sequence[str] = ("psnr", "ssim"),
               path: str | Path | None = None) -> plt.Figure:
    """Leakage over rounds: per run (a column) and metric (a row), each audited client's
    reconstructions (the mean over its images of the best attack's ``metric``) against the
    round, one line per client, the success threshold dotted (:data:`~dlg_utils.stats.CRITERIA`).
    ``rows``: the audit's rows (:func:`~dlg_utils.audit.load_audit`) that were scored."""
    from .stats import CRITERIA
    scored = rows[rows["per_image"].apply(lambda v: isinstance(v, list))] if "per_image" in rows else rows.iloc[:0]
    if scored.empty:
        raise ValueError("no scored audit rows to plot")
    runs = list(dict.fromkeys(scored["run"]))
    fig, axes = plt.subplots(len(metrics), len(runs), figsize=(3.6 * len(runs) + 0.8, 2.6 * len(metrics) + 0.7),
                             sharex=True, sharey="row", squeeze=False)
    clients = sorted(scored["client"].unique())
    colors = dict(zip(clients, sns.color_palette("colorblind", len(clients))))
    for c, run in enumerate(runs):
        part = scored[scored["run"] == run]
        for r, metric in enumerate(metrics):
            ax = axes[r][c]
            for client, g in part.groupby("client"):
                g = g.sort_values("round")
                ax.plot(g["round"], g[metric], marker="o", ms=3, color=colors[client], label=f"client {client}")
            ax.axhline(CRITERIA[metric].threshold, color="gray", lw=0.8, ls=":")
            ax.set_title(f"{run} ({part['defense'].iloc[0]})" if r == 0 else "", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{metric.upper()} of the best attack\n(mean over the client's images)", fontsize=8)
            if r == len(metrics) - 1:
                ax.set_xlabel("round")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="audited", title_fontsize=7)
    fig.suptitle(title, fontsize=9, wrap=True)
    return _finish(fig, path)


def rero_plot(curves: pd.DataFrame, theory: pd.DataFrame, title: str, limit: float = 0.10,
              criteria: Sequence[str] = ("ssim", "psnr", "mse"), path: str | Path | None = None) -> plt.Figure:
    """DP-SGD's published bounds on reconstruction success over epsilon (lines, from
    :func:`~dlg_utils.operating.dp_bound_curves`) beside the measured shares at the study's
    points (markers with exact 95% intervals, :func:`~dlg_utils.operating.dp_theory`), one
    panel per criterion; the dotted line is the prior's baseline kappa, the dashed one the limit."""
    from .stats import CRITERIA
    if theory["domain"].nunique() != 1 or curves["domain"].nunique() != 1:
        raise ValueError("rero_plot draws one domain: pass its rows of the theory and of the curves")
    shown = [c for c in criteria if c in set(theory["criterion"])]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 5.0), squeeze=False, sharey=True)
    colors = sns.color_palette("colorblind")
    lines = {"bound one step": ("one step, the update attacked (Hayes et al. 2023)", colors[0], "-"),
             "bound whole training": ("whole training at its epsilon (Hayes et al. 2023)", colors[1], "-"),
             "bound whole training RDP": ("whole training at its epsilon (Balle et al. 2022, from RDP)", colors[1], "--")}
    marks = {"inversion": ("gradient inversion (the strongest of DLG / IG / defense-aware)", colors[2], "o", 0.93),
             "informed": ("informed attack (knows the candidate images)", colors[3], "s", 1.07)}
    for ax, name in zip(axes[0], shown):
        c = curves[curves["criterion"] == name]
        for key, (label, color, ls) in lines.items():
            ax.plot(c["epsilon"], c[key], ls=ls, color=color, label=label)
        t = theory[theory["criterion"] == name]
        for key, (label, color, marker, shift) in marks.items():
            if f"{key} recovered" not in t or t[f"{key} recovered"].isna().all():
                continue
            v = t[f"{key} recovered"].to_numpy(float)
            ax.errorbar(t["epsilon"] * shift, v, yerr=[v - t[f"{key} low"], t[f"{key} high"] - v], fmt=marker,
                        ms=5, capsize=3, color=color, label=label)
        kappa = float(t["kappa"].iloc[0])
        ax.axhline(kappa, ls=":", lw=1, color="0.3", label="prior baseline kappa (a guess without the update)")
        ax.axhline(limit, ls="--", lw=0.8, color="0.5", label=f"limit {limit:.0%}")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_ylim(-0.03, 1.03)
        proven = bool(t["kappa proven"].iloc[0])
        ax.set_title(f"{CRITERIA[name].describe()}; kappa {'<=' if proven else '>='} {kappa:.3f} "
                     f"({'proven' if proven else 'estimate: the bounds may be higher'})", fontsize=9)
        ax.set_xlabel("epsilon of the whole training (delta 1e-5)")
        ax.set_ylabel("images recovered")
    handles, labels = axes[0][0].get_legend_handles_labels()  # under the panels: nothing hidden
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10, wrap=True)
    fig.tight_layout()
    fig.subplots_adjust(bottom=0.27, top=0.86)  # room for the legend under the x labels
    if path is not None:  # not _finish: its tight_layout would undo the room
        save_figure(fig, path)
    return fig
