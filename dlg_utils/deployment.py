"""Attacks on the updates a deployment shares (notebook 10): undefended updates of batches of
B images (FedSGD) and of E local SGD steps (FedAvg), from DLG's LeNet at the start and at the
end of one training run on Fashion-MNIST, attacked by DLG with the labels counted from the
update. Every trial is a :class:`~dlg_utils.cases.Case`; its rows are scored per image after
matching (:func:`~dlg_utils.experiments.per_image`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from torch import nn

from .cases import Case
from .config import CHECKPOINTS_DIR
from .experiments import AttackTrial, Execution, RowOptions, attack_sweep, per_image, trial_cost
from .frontier import best_of_attacks
from .stats import clopper_pearson, recovered_images, scored_criteria
from .training import load_checkpoint

# the model states: checkpoints of one training run of DLG's LeNet on Fashion-MNIST (notebook 4:
# SGD lr 0.01, momentum 0.9, batch 128; test accuracy in each checkpoint's metadata)
STATES = {"init": "lenet_fashion-mnist_start.pt", "trained": "lenet_fashion-mnist_converged.pt"}

ROWS = RowOptions(keep_history=False, keep_image=True)  # what a row keeps: metrics and the 8-bit reconstruction


@dataclass(frozen=True)
class Study:
    """The grid: every model state x batch size B x local steps E, on the same ``images`` (split
    into consecutive batches of B), one dummy seed, DLG's L-BFGS for ``iterations`` (stopping
    once the gradient distance is below 1e-4) with the labels counted from the update; the
    ``ig_states`` models' FedSGD cases also by Inverting Gradients (``ig_iterations``; on the
    untrained LeNet's 1x28x28 pilot images its budget curve, :mod:`~dlg_utils.strength`, is
    flat from 1,000 to 4,000; the trained model's is not measured). An
    image counts what its best attack recovers. FedAvg steps use ``local_lr`` on the whole
    batch each step (Inverting Gradients' FedAvg setting)."""

    images: Sequence[int] = tuple(range(16))
    batches: Sequence[int] = (1, 4, 16)
    steps: Sequence[int] = (1, 5)
    states: Sequence[str] = ("init", "trained")
    iterations: int = 300
    local_lr: float = 0.05
    attack: str = "idlg"
    seed: int = 0
    ig_iterations: int = 4000
    ig_states: Sequence[str] = ("trained",)

    def __post_init__(self):
        for B in self.batches:
            if len(self.images) % B:
                raise ValueError(f"{len(self.images)} images do not split into batches of {B}")


def quick_study() -> Study:
    """A minute-scale version (CI): 4 images, B in {1, 4}, E in {1, 2}, 20 iterations."""
    return Study(images=(0, 1, 2, 3), batches=(1, 4), steps=(1, 2), iterations=20, ig_iterations=20)


def study_trials(study: Study) -> list[AttackTrial]:
    """One trial per (state, B, E, batch of B images)."""
    out = []
    for state in study.states:
        for B in study.batches:
            for E in study.steps:
                case = Case(batch_size=B, local_steps=E, local_lr=study.local_lr)
                attacks = [(study.attack, {"iterations": study.iterations, "stop_when_converged": True})]
                if state in study.ig_states and E == 1 and study.ig_iterations:
                    attacks.append(("ig", {"iterations": study.ig_iterations}))
                for k in range(0, len(study.images), B):
                    part = tuple(int(i) for i in study.images[k:k + B])
                    out.extend(AttackTrial(part if B > 1 else part[0], study.seed, attack=a, model=state, settings=s,
                                           case=case) for a, s in attacks)
    return out


def study_models(states: Sequence[str] = tuple(STATES), folder: Path = CHECKPOINTS_DIR) -> dict[str, nn.Module]:
    """The attacked model of each state, in eval mode, with its checkpoint's test accuracy as
    ``model.test_accuracy``."""
    models = {}
    for state in states:
        if state not in STATES:
            raise ValueError(f"unknown model state {state!r}; choose from {sorted(STATES)}")
        model, meta = load_checkpoint(folder / STATES[state])
        model.test_accuracy = float(meta.get("test_accuracy", float("nan")))
        models[state] = model.eval()
    return models


def run_study(study: Study, data, path: str | Path | None, models: dict[str, nn.Module] | None = None,
              over: Callable[[], bool] = lambda: False, progress: bool | None = None) -> pd.DataFrame:
    """Attack every trial, cheapest cells first (B then E), each row stored at ``path`` as it
    finishes; ``over()`` is asked between cells (a time budget). Returns the rows run."""
    models = models or study_models(study.states)
    trials = study_trials(study)
    frames = []
    cells = sorted({(t.attack != study.attack, t.case.local_steps, t.case.batch_size) for t in trials})
    for other, E, B in cells:
        if over():
            break
        part = [t for t in trials if (t.attack != study.attack, t.case.local_steps, t.case.batch_size) == (other, E, B)]
        frames.append(attack_sweep(part, models, data, path, rows=ROWS,
                                   execution=Execution(progress=progress)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def cell_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model state, B, E): images, the attacks run, the share of images recovered by
    their best attack under each criterion the rows hold (:func:`~dlg_utils.stats.scored_criteria`) with its exact
    95% interval over images, the labels found (DLG's count) and the attacks' CPU seconds per
    image (all attacks together; :func:`~dlg_utils.experiments.trial_cost`: for rows stored
    before per-trial costs, the batch's wall time, an upper bound)."""
    attempts = per_image(rows)
    images = best_of_attacks(attempts, keys=("model", "batch_size", "local_steps", "image"))
    criteria = scored_criteria(images)
    out = []
    for (state, B, E), g in images.groupby(["model", "batch_size", "local_steps"], sort=True):
        trials = rows[(rows["model"] == state) & (rows["batch_size"] == B) & (rows["local_steps"] == E)]
        tried = attempts[(attempts["model"] == state) & (attempts["batch_size"] == B) & (attempts["local_steps"] == E)]
        row = {"model": state, "B": int(B), "E": int(E), "images": len(g),
               "attacks": "+".join(sorted(trials["attack"].unique()))}
        for name in criteria:
            k = int(recovered_images(tried, name).sum())
            lo, hi = clopper_pearson(k, len(g))
            row[f"{name} recovered"] = k / len(g)
            row[f"{name} 95% CI"] = f"[{lo:.0%}, {hi:.0%}]"
        counted = trials[trials["attack"] == trials["attack"].iloc[0]]
        row["labels found"] = float(counted["label_accuracy"].fillna(counted["label_correct"].astype(float)).mean()) \
            if "label_accuracy" in counted else float(counted["label_correct"].mean())
        row["median SSIM"] = float(g["ssim"].median())
        row["CPU s per image"] = float(trial_cost(trials).sum()) / len(g)
        out.append(row)
    return pd.DataFrame(out)


def case_images(rows: pd.DataFrame, data, state: str, B: int, E: int, count: int = 8, attack: str = "idlg"):
    """The reconstructions by ``attack`` of the study's first ``count`` images in the case
    (state, B, E), each matched to its true image, in the study's order (from the rows' kept
    images)."""
    import torch
    cell = rows[(rows["model"] == state) & (rows["batch_size"] == B) & (rows["local_steps"] == E)
                & (rows["attack"] == attack)]
    out = []
    for _, row in cell.iterrows():
        out.extend(matched_images(row, data)[1])
        if len(out) >= count:
            break
    return torch.stack(out[:count])


def matched_images(row, data) -> tuple:
    """(true images, the reconstructions matched to them) of a stored row (kept image), in the
    order of the trial's images: what a gallery shows."""
    import torch

    from .experiments import row_image
    images = row["image"] if isinstance(row["image"], list) else [row["image"]]
    truths = torch.stack([data[i][0] for i in images])
    recon = row_image(row).view(len(images), *truths.shape[1:])
    order = {r["slot"]: r["match"] for r in row["per_image"]}
    return truths, recon[[order[k] for k in range(len(images))]]
