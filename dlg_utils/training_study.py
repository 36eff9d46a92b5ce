"""Seed 000's training study (Fig. 4, Table I's accuracy column): ResNet-18 trained under each
gradient defense (:func:`defense_training`), and the step-by-step trace that diagnoses an
unstable run (:func:`trace`, :func:`run_trace`; notebook 4)."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from .data import to_tensors
from .models import get_model
from .training import BATCHNORM_MODES, Tensors, TrainConfig, evaluate, train

FIG4_DEFENSES = ("none", "uniform:16", "stochastic:16", "sparsity:0.2", "sparsity:0.4", "uniform:240")


def trace(model: nn.Module, train_data: Dataset | Tensors, test_data: Tensors, config: TrainConfig,
          every: int = 5) -> pd.DataFrame:
    """Train as :func:`~dlg_utils.training.train` does with ``config`` and record each step's
    loss and, every ``every`` steps and at each epoch's end, the test accuracy with running and
    with batch BatchNorm statistics and the weight norm: where a run goes unstable, and whether
    BatchNorm is why. One row per step (``config.on_step``, if any, is called after each)."""
    n = len(train_data[1] if isinstance(train_data, tuple) else train_data)
    batch = config.batch_size
    per_epoch, last_batch = -(-n // batch), n - (-(-n // batch) - 1) * batch
    rows = []

    def record(step: int, loss: float, m: nn.Module) -> None:
        end = step % per_epoch == 0
        row = {"step": step, "epoch_end": end, "loss": loss, "last_batch": last_batch if end else None}
        if step % every == 0 or row["epoch_end"]:
            for mode in BATCHNORM_MODES:
                row[f"accuracy_{mode}_bn"] = evaluate(m, test_data, normalize=config.normalize, batchnorm=mode)[1]
            row["weight_norm"] = float(torch.sqrt(sum((p.detach() ** 2).sum() for p in m.parameters())))
        rows.append(row)
        if config.on_step is not None:
            config.on_step(step, loss, m)

    train(model, train_data, test_data, replace(config, on_step=record))
    return pd.DataFrame(rows)


def run_trace(data: tuple[Tensors, Tensors], train_size: int, normalize: tuple[float, float] | None, epochs: int,
              test_images: int, device: str | torch.device = "cpu", every: int = 5, seed: int = 0,
              model: str = "resnet18") -> dict:
    """Notebook 4's trace of one setting: ``model`` (drawn after ``torch.manual_seed(seed)``,
    for ``data``'s channels and classes) trained with seed 000's optimizer (lr 0.1, momentum 0.9,
    weight decay 5e-4, batch 128, seed ``seed``) on the first ``train_size`` training images
    (inputs normalised with ``normalize``), for ``epochs`` epochs, evaluated on the first
    ``test_images`` test images (:func:`trace`). A row for
    :func:`~dlg_utils.experiments.sweep`: ``{"steps": one record per step}``."""
    (train_x, train_y), (test_x, test_y) = data
    torch.manual_seed(seed)
    net = get_model(model, num_classes=int(train_y.max()) + 1, in_channels=train_x.shape[1]).to(device)
    df = trace(net, (train_x[:train_size], train_y[:train_size]), (test_x[:test_images], test_y[:test_images]),
               TrainConfig(epochs=epochs, normalize=normalize, seed=seed, progress=False), every=every)
    return {"steps": df.to_dict("records")}


def trace_summary(steps: pd.DataFrame, warmup: int = 0) -> pd.DataFrame:
    """What notebook 4 reads from traces (:func:`trace` rows with a ``trace`` column naming the
    setting), one row per trace in order of appearance: ``end loss`` (the largest loss of an
    epoch's last step) and ``worst end epoch`` (the epoch it ends, from 1), ``median loss`` (of
    the other steps after ``warmup``), ``end drop`` (the largest fall of running-statistics test
    accuracy from the evaluation before an epoch's end to the one at it), ``weight norm jump``
    (the largest change of the weight norm between consecutive evaluations) and ``bn gap`` (the
    median of batch-statistics minus running-statistics accuracy after ``warmup``)."""
    out = {}
    for name, d in steps.groupby("trace", sort=False):
        ends = d[d["epoch_end"]]
        acc = d.dropna(subset=["accuracy_running_bn"]).set_index("step")["accuracy_running_bn"]
        falls = [acc.loc[:s].iloc[-2] - acc.loc[s] for s in ends["step"] if len(acc.loc[:s]) > 1]
        late = d[d["step"] > warmup].dropna(subset=["accuracy_running_bn"])
        out[name] = {"end loss": ends["loss"].max(),
                     "worst end epoch": 1 + int(ends["loss"].reset_index(drop=True).idxmax()) if len(ends) else None,
                     "median loss": d[~d["epoch_end"] & (d["step"] > warmup)]["loss"].median(),
                     "end drop": max(falls, default=float("nan")),
                     "weight norm jump": d["weight_norm"].dropna().diff().abs().max(),
                     "bn gap": (late["accuracy_batch_bn"] - late["accuracy_running_bn"]).median()}
    return pd.DataFrame.from_dict(out, orient="index")


@dataclass(frozen=True)
class TrainingSetting:
    """A setting of seed 000's training study (Fig. 4, Table I's accuracy): ResNet-18 trained
    with SGD (momentum 0.9, weight decay 5e-4) under each defense. The defaults are the
    original's: all training and test images, inputs normalised with (0.5, 0.5), 20 epochs,
    lr 0.1 with no schedule, batch 128."""

    dataset: str = "fashion-mnist"
    train_size: int | None = None  # None: every training image
    test_size: int | None = None
    epochs: int = 20
    normalize: tuple[float, float] | None = (0.5, 0.5)
    lr: float = 0.1
    batch_size: int = 128

    def describe(self, n_train: int, n_test: int) -> str:
        norm = "inputs normalised (0.5, 0.5)" if self.normalize else "inputs in [0, 1]"
        return (f"ResNet-18, {self.dataset}, {n_train:,} training / {n_test:,} test images, {self.epochs} epochs, "
                f"batch {self.batch_size}, SGD lr {self.lr} (no schedule), {norm}")


def load_tensors(setting: TrainingSetting, device: str | torch.device = "cpu",
                 root: str | Path | None = None) -> tuple[Tensors, Tensors]:
    """The setting's training and test images as tensors on ``device`` (the first
    ``train_size`` / ``test_size`` of each split), read once: no DataLoader in the loop."""
    from .data import load_dataset
    train_t = to_tensors(load_dataset(setting.dataset, root=root))
    test_t = to_tensors(load_dataset(setting.dataset, train=False, root=root))
    train_t = tuple(t[: setting.train_size].to(device) for t in train_t)
    test_t = tuple(t[: setting.test_size].to(device) for t in test_t)
    return train_t, test_t


def defense_training(setting: TrainingSetting, defenses: Sequence[str], seeds: Sequence[int],
                     path: str | Path | None, device: str | torch.device = "cpu", root: str | Path | None = None,
                     data: tuple[Tensors, Tensors] | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Train ResNet-18 under every (defense, seed) of ``setting`` (weights and data order drawn
    from the seed) and store each run's per-epoch curve at ``path`` as it finishes; runs
    stored there already are not trained again. Rows: defense, seed, setting (its
    description), curve, seconds, device."""
    from .experiments import sweep
    train_t, test_t = data if data is not None else load_tensors(setting, device, root)
    label = setting.describe(len(train_t[1]), len(test_t[1]))
    classes, channels = int(train_t[1].max()) + 1, train_t[0].shape[1]

    def run(trial: dict) -> dict:
        torch.manual_seed(trial["seed"])
        model = get_model("resnet18", num_classes=classes, in_channels=channels).to(device)
        start = time.perf_counter()
        curve = train(model, train_t, test_t, TrainConfig(
            epochs=setting.epochs, defense=trial["defense"], lr=setting.lr, batch_size=setting.batch_size,
            seed=trial["seed"], normalize=setting.normalize, progress=False))
        return {"curve": curve.to_dict("records"), "seconds": time.perf_counter() - start, "device": str(device)}

    trials = [{"defense": d, "seed": s, "setting": label} for s in seeds for d in defenses]  # a seed at a time
    return sweep(trials, run, path, progress=progress, desc="training runs")


def complete_runs(path: str | Path, setting: str, defenses: Sequence[str] = FIG4_DEFENSES,
                  seeds: Sequence[int] = (0, 1, 2)) -> pd.DataFrame | None:
    """The runs of :func:`defense_training` stored at ``path`` for ``setting`` (its
    description) when every (defense, seed) is there, else None."""
    from .storage import load_rows
    rows = [r for r in load_rows(path) if r.get("setting") == setting and r["defense"] in defenses and r["seed"] in seeds]
    if {(r["defense"], r["seed"]) for r in rows} < {(d, s) for d in defenses for s in seeds}:
        return None
    return pd.DataFrame(rows)
