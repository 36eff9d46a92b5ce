"""Success rates of DLG as seed 002 defines them, with bootstrap confidence intervals
(:mod:`~dlg_utils.stats` holds the criteria and the intervals).

A trial succeeds when its gradient distance fell below the attack's convergence threshold
(1e-4, recorded as ``converged_at``) at some iteration *and* its final image MSE is below ``image_threshold`` (the image converged too:
seed 002 notes that the first does not imply the second, e.g. on ResNet-18). The success
rate of an image is the fraction of its seeds that succeed; a study reports the mean over
images, with a bootstrap interval that resamples images (the unit seed 002 averages over).

Seed 002 also compares DLG with iDLG, whose label is read off the gradient:
:func:`label_survival` measures whether that label survives each gradient defense.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from .attack import idlg_label, target_gradients
from .defenses import GaussianNoise, LaplacianNoise, StochasticRounding, defense_from_spec
from .experiments import AttackTrial, DatasetTargets, RowOptions
from .stats import IMAGE_THRESHOLD, bootstrap_ci, recovered


def succeeded(rows: pd.DataFrame, image_threshold: float = IMAGE_THRESHOLD) -> pd.Series:
    """Per trial (a sweep row with ``converged_at`` and final ``mse``): converged (the engine
    records ``converged_at`` when :func:`~dlg_utils.stats.converged` first holds) and
    recovered by the MSE criterion at ``image_threshold``."""
    for col in ("converged_at", "mse"):
        if col not in rows.columns:
            raise ValueError(f"rows have no column {col!r}")
    return rows["converged_at"].notna() & recovered(rows["mse"], "mse", image_threshold)


def success_table(rows: pd.DataFrame, by: Sequence[str] = (), image_threshold: float = IMAGE_THRESHOLD,
                  level: float = 0.95, resamples: int = 10_000) -> pd.DataFrame:
    """One row per group of ``by`` columns: images, trials, success rate (mean over images of
    each image's fraction of successful seeds) with its bootstrap interval over images, the
    lowest and highest image rate, and the mean iteration at which successful trials converged
    (mean over images of each image's mean, with its interval)."""
    rows = rows.assign(success=succeeded(rows, image_threshold))
    groups = rows.groupby(list(by), sort=False) if by else [((), rows)]
    out = []
    for key, g in groups:
        per_image = g.groupby("image").agg(rate=("success", "mean"), trials=("success", "size"))
        iters = g[g["success"]].groupby("image")["converged_at"].mean()
        lo, hi = bootstrap_ci(per_image["rate"], level, resamples)
        it_lo, it_hi = bootstrap_ci(iters, level, resamples)
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key)), "images": len(per_image), "trials": int(per_image["trials"].sum()),
                    "success rate": float(per_image["rate"].mean()), "rate low": lo, "rate high": hi,
                    "worst image": float(per_image["rate"].min()), "best image": float(per_image["rate"].max()),
                    "mean iteration at convergence": float(iters.mean()) if len(iters) else float("nan"),
                    "iteration low": it_lo, "iteration high": it_hi})
    return pd.DataFrame(out)


def threshold_sensitivity(rows: pd.DataFrame, thresholds: Sequence[float], by: Sequence[str] = ()
                          ) -> pd.DataFrame:
    """The success rate (and interval) for each image-MSE threshold: is the result robust to it?"""
    parts = [success_table(rows, by, t, resamples=2000).assign(**{"image threshold": t}) for t in thresholds]
    return pd.concat(parts, ignore_index=True)


SUCCESS_ROWS = RowOptions(keep_history=False)  # what a success-study row keeps

RANDOM_DEFENSES = (StochasticRounding, GaussianNoise, LaplacianNoise)  # drawn anew per shared gradient


def label_survival(models: dict[str, nn.Module], data: Dataset, images: Iterable[int], defenses: Sequence[str],
                   draws: int = 3, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Does iDLG's label survive a gradient defense? For every model, image of ``data`` and
    defense spec, whether :func:`~dlg_utils.attack.idlg_label` (from the last weight gradient)
    of the defended single-image gradient is the true label; the random defenses are drawn
    ``draws`` times (generator seeds 0 to draws - 1). One row per (model, image, defense, draw)
    with the column ``right``."""
    rows = []
    for name, model in models.items():
        for i in images:
            x, y = data[i]
            clean = target_gradients(model, x[None].to(device), torch.tensor([y], device=device))
            for spec in defenses:
                defense = defense_from_spec(spec)
                for draw in range(draws if isinstance(defense, RANDOM_DEFENSES) else 1):
                    g = defense(clean, torch.Generator(device).manual_seed(draw))
                    rows.append({"model": name, "image": i, "defense": spec, "draw": draw, "right": idlg_label(g) == y})
    return pd.DataFrame(rows)


def dlg_and_idlg(models: dict[str, tuple[nn.Module, int, int]], x: torch.Tensor, y: int, seed: int,
                 num_classes: int, device: str | torch.device = "cpu") -> dict:
    """Seed 002's Fig. 1 and 2: on each model (name -> (model, iterations, evaluations per L-BFGS
    step)), DLG (label learned) and iDLG (the true label given) on image ``x`` of label ``y``,
    both from dummy seed ``seed``. Returns ``"NAME DLG"`` / ``"NAME iDLG"`` ->
    :class:`~dlg_utils.engine.AttackResult`, in the order of ``models``."""
    from .attack import dlg_batch
    runs = {}
    for name, (model, iterations, evals) in models.items():
        g = target_gradients(model, x[None].to(device), torch.tensor([y], device=device))
        runs[f"{name} DLG"], runs[f"{name} iDLG"] = dlg_batch(
            model, [g, g], image_shape=x[None].shape, num_classes=num_classes, iterations=iterations, labels=[None, y],
            seeds=seed, ground_truths=x[None].to(device), max_iter=evals)
    return runs


@dataclass(frozen=True)
class SuccessStudy:
    """Seed 002's success-rate study: DLG and iDLG on DLG's LeNet (uniform init) and
    torchvision ResNets (ReLU, default init, eval mode), a random set of the data set's images,
    many dummy seeds each. The defaults are seed 002's scale (1200 iterations, 20 images x 50
    seeds for LeNet, 20 x 20 for ResNet-18/34/50)."""

    dataset: str = "samples"
    images: int = 20
    lenet_seeds: int = 50
    iterations: int = 1200
    resnet_depths: tuple[int, ...] = (18, 34, 50)
    resnet_seeds: int = 20
    resnet_iterations: int = 1200
    resnet_max_iter: int = 20  # evaluations per L-BFGS step
    classes: int = 100  # the heads of seed 002's CIFAR-100 models

    def image_indices(self, n: int) -> list[int]:
        """``images`` indices drawn from ``n`` with seed 0 (sorted)."""
        return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(0))[: self.images].tolist())

    def models(self, device: str | torch.device = "cpu") -> dict[str, nn.Module]:
        """LeNet and the ResNets, each drawn after ``torch.manual_seed(0)``."""
        from .models import get_model
        torch.manual_seed(0)
        models = {"lenet": get_model("lenet", in_channels=3, num_classes=self.classes, image_size=32).to(device)}
        for depth in self.resnet_depths:
            torch.manual_seed(0)
            models[f"resnet{depth}"] = get_model(f"resnet{depth}", num_classes=self.classes).eval().to(device)
        return models

    def trials(self, n: int) -> tuple[list[AttackTrial], list[AttackTrial]]:
        """(LeNet trials, ResNet trials), DLG and iDLG for every image and seed, at the study's
        iterations (and evaluations per L-BFGS step for the ResNets)."""
        images, attacks = self.image_indices(n), ("dlg", "idlg")
        lenet = [AttackTrial(i, s, "none", a, "lenet", {"iterations": self.iterations})
                 for a in attacks for i in images for s in range(self.lenet_seeds)]
        settings = {"iterations": self.resnet_iterations, "max_iter": self.resnet_max_iter}
        resnets = [AttackTrial(i, s, "none", a, f"resnet{d}", settings)
                   for d in self.resnet_depths for a in attacks for i in images for s in range(self.resnet_seeds)]
        return lenet, resnets

    def paths(self, folder: str | Path) -> tuple[Path, Path]:
        """Where the LeNet and the ResNet rows are stored."""
        folder = Path(folder)
        return folder / f"success_lenet_{self.dataset}.jsonl", folder / f"success_resnet_{self.dataset}.jsonl"

    def complete(self, data: Dataset, folder: str | Path, models: dict[str, nn.Module]) -> bool:
        """Whether every trial of the study is stored under ``folder``, under its full key."""
        from .experiments import attack_keys
        from .storage import RowStore
        targets = DatasetTargets(data)
        return all(all(k in RowStore(path) for k, _, _ in attack_keys(trials, models, targets, rows=SUCCESS_ROWS))
                   for path, trials in zip(self.paths(folder), self.trials(len(data))))

    def run(self, data: Dataset, folder: str | Path, models: dict[str, nn.Module],
            only: Sequence[AttackTrial] | None = None, lenet_chunk: int = 64, resnet_chunk: int = 20,
            progress: bool | None = None) -> pd.DataFrame:
        """Attack every trial (or those of ``only``) and store each row under ``folder``;
        stored trials are not run again. Rows with a ``success`` column."""
        from .experiments import Execution, attack_sweep
        lenet, resnets = self.trials(len(data))
        if only is not None:
            lenet, resnets = ([t for t in part if t in only] for part in (lenet, resnets))
        lenet_path, resnet_path = self.paths(folder)
        parts = [attack_sweep(trials, models, data, path, rows=SUCCESS_ROWS,
                              execution=Execution(chunk_size=chunk, progress=progress))
                 for trials, path, chunk in ((lenet, lenet_path, lenet_chunk), (resnets, resnet_path, resnet_chunk))
                 if trials]
        rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if len(rows):
            rows["success"] = succeeded(rows)
        return rows
