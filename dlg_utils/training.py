"""Training under a gradient defense (seed 000 Fig. 4) with checkpoints at three stages."""
from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .config import progress_enabled
from .data import to_tensors
from .defenses import Defense, defense_from_spec
from .models import architecture, build_model

Tensors = tuple[torch.Tensor, torch.Tensor]


def _normalize(x: torch.Tensor, normalize: tuple[float, float] | None) -> torch.Tensor:
    return x if normalize is None else (x - normalize[0]) / normalize[1]


BATCHNORM_MODES = ("running", "batch")


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | DataLoader | Tensors, batch_size: int = 1024,
             normalize: tuple[float, float] | None = None, batchnorm: str = "running") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``data`` (a data set, a DataLoader or
    (images, labels) tensors); ``normalize`` = (mean, std) applied to the images. ``batchnorm``:
    ``"running"`` evaluates in eval mode (BatchNorm with its running statistics, as a deployed
    model); ``"batch"`` normalises with each evaluation batch's own statistics (train mode)
    and leaves the running statistics as they were: the two differ when the running
    statistics lag behind the weights."""
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    device = next(model.parameters()).device
    if isinstance(data, DataLoader):
        batches = ((x.to(device), y.to(device)) for x, y in data)
    else:
        images, labels = data if isinstance(data, tuple) else to_tensors(data)
        images, labels = images.to(device), labels.to(device)
        batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size))
    was_training = model.training
    saved = {k: v.clone() for k, v in model.named_buffers()} if batchnorm == "batch" else {}
    model.train(batchnorm == "batch")
    loss, correct, count = 0.0, 0, 0
    for x, y in batches:
        out = model(_normalize(x, normalize))
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        count += len(y)
    for k, v in model.named_buffers():
        if k in saved:
            v.copy_(saved[k])
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluation data set is empty")
    return loss / count, correct / count


def save_checkpoint(path: str | Path, model: nn.Module, **meta) -> Path:
    """Save ``model``'s weights with its architecture and ``meta`` (data set, defense, epoch...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"architecture": architecture(model), "saved": datetime.datetime.now().isoformat(timespec="seconds"), **meta}
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)
    return path


def load_checkpoint(path: str | Path, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """Load a checkpoint into ``model`` (or a model rebuilt from its metadata): (model, meta).

    Raises ``ValueError`` naming both architectures when the checkpoint is for another one.
    """
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    meta = ckpt["meta"]
    if model is None:
        model = build_model(meta["architecture"])
    mine, theirs = architecture(model), meta["architecture"]
    state = model.state_dict()
    shapes_match = state.keys() == ckpt["state_dict"].keys() and all(
        state[k].shape == v.shape for k, v in ckpt["state_dict"].items())
    if mine != theirs or not shapes_match:
        raise ValueError(f"checkpoint {path} is for {theirs['name']}({theirs['config']}), "
                         f"but the model is {mine['name']}({mine['config']})")
    model.load_state_dict(ckpt["state_dict"])
    return model, meta


def train(model: nn.Module, train_data: Dataset | Tensors, test_data: Dataset | Tensors, epochs: int,
          defense: Defense | str | None = None, *, lr: float = 0.1, momentum: float = 0.9,
          weight_decay: float = 5e-4, batch_size: int = 128, seed: int = 0,
          max_batches: int | None = None, checkpoint_dir: str | Path | None = None,
          run_name: str = "model", dataset_name: str = "", checkpoint_steps: Sequence[int] = (),
          normalize: tuple[float, float] | None = None, progress: bool | None = None,
          on_step: Callable[[int, float, nn.Module], None] | None = None) -> pd.DataFrame:
    """Train with SGD and cross-entropy (seed 000: lr 0.1, momentum 0.9, weight decay 5e-4,
    batch 128), replacing every parameter gradient by ``defense(gradients)`` before each
    ``optimizer.step()``. Returns one row per epoch: epoch, train_loss, test_loss,
    test_accuracy. With ``checkpoint_dir``, saves ``{run_name}_{start,middle,converged}.pt`` at
    epoch 0, epochs // 2 and the last epoch, and ``{run_name}_step{n}.pt`` after optimizer step
    ``n`` for each ``n`` in ``checkpoint_steps`` (seed 000 appendix C attacks a model after 5
    steps). ``max_batches`` caps batches per epoch. ``normalize`` = (mean, std) is applied to
    every image (seed 000's code: (0.5, 0.5)). ``on_step(step, loss, model)`` is called after
    every optimizer step with that batch's loss (to trace a run step by step).

    The last batch of an epoch holds what is left (len % batch_size images), as a DataLoader
    without ``drop_last`` gives it (the original's code). A subset whose size leaves a handful
    of images makes that batch's BatchNorm statistics noisy enough to throw the weights off
    at every epoch's end (notebook 4 measures it): use a multiple of ``batch_size``.

    The data sets are read into tensors on the model's device once (:func:`~dlg_utils.data.to_tensors`)
    and each epoch visits them in the order ``torch.randperm`` draws from a generator seeded
    with ``seed`` (the order a shuffling DataLoader with that generator gives), with no
    DataLoader in the loop. ``seed`` also seeds torch's global generator and the defense's
    randomness (with ``seed + 1``).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if any(int(n) < 1 for n in checkpoint_steps):
        raise ValueError(f"checkpoint_steps must be >= 1, got {list(checkpoint_steps)}")
    if checkpoint_steps and checkpoint_dir is None:
        raise ValueError("checkpoint_steps needs a checkpoint_dir")
    defense = defense_from_spec(defense)
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    images, labels = (t.to(device) for t in (train_data if isinstance(train_data, tuple) else to_tensors(train_data)))
    test = tuple(t.to(device) for t in (test_data if isinstance(test_data, tuple) else to_tensors(test_data)))
    in_channels = getattr(model, "config", {}).get("in_channels")
    if in_channels is not None and images.shape[1] != in_channels:
        raise ValueError(f"data has {images.shape[1]} channels, the model expects {in_channels}")
    n_batches = -(-len(labels) // batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    stage_at = {0: "start", max(1, epochs // 2): "middle", epochs: "converged"}
    show = progress_enabled() if progress is None else progress

    def checkpoint(stage: str, epoch: int, step: int, scores: tuple[float, float] | None = None) -> None:
        test_loss, test_accuracy = scores or evaluate(model, test, normalize=normalize)
        save_checkpoint(Path(checkpoint_dir) / f"{run_name}_{stage}.pt", model, stage=stage, epoch=epoch,
                        step=step, epochs=epochs, dataset=dataset_name, defense=defense.name,
                        test_loss=test_loss, test_accuracy=test_accuracy, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, batch_size=batch_size, seed=seed, max_batches=max_batches)

    if checkpoint_dir is not None:
        checkpoint("start", 0, 0)
    rows, step = [], 0
    for epoch in tqdm(range(1, epochs + 1), desc=f"train {run_name}", disable=not show):
        model.train()
        total, count = 0.0, 0
        order = torch.randperm(len(labels), generator=generator).to(device)
        for b in tqdm(range(min(n_batches, max_batches or n_batches)), desc=f"epoch {epoch}", leave=False,
                      disable=not show):
            idx = order[b * batch_size:(b + 1) * batch_size]
            x, y = _normalize(images[idx], normalize), labels[idx]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch}, batch {b}")
            loss.backward()
            for p, g in zip(params, defense([p.grad for p in params], noise)):
                p.grad = g
            optimizer.step()
            step += 1
            if step in checkpoint_steps:
                checkpoint(f"step{step}", epoch, step)
            if on_step is not None:
                on_step(step, float(loss.detach()), model)
            total += float(loss.detach()) * len(y)
            count += len(y)
        test_loss, test_accuracy = evaluate(model, test, normalize=normalize)
        rows.append({"epoch": epoch, "train_loss": total / count, "test_loss": test_loss,
                     "test_accuracy": test_accuracy})
        if checkpoint_dir is not None and epoch in stage_at:
            checkpoint(stage_at[epoch], epoch, step, (test_loss, test_accuracy))
    return pd.DataFrame(rows)


def trace(model: nn.Module, train_data: Dataset | Tensors, test_data: Tensors, epochs: int, every: int = 5,
          **train_kwargs) -> pd.DataFrame:
    """Train as :func:`train` does and record each step's loss and, every ``every`` steps and
    at each epoch's end, the test accuracy with running and with batch BatchNorm statistics
    and the weight norm: where a run goes unstable, and whether BatchNorm is why."""
    n = len(train_data[1] if isinstance(train_data, tuple) else train_data)
    batch = train_kwargs.get("batch_size", 128)
    per_epoch, last_batch = -(-n // batch), n - (-(-n // batch) - 1) * batch
    normalize = train_kwargs.get("normalize")
    rows = []

    def record(step: int, loss: float, m: nn.Module) -> None:
        end = step % per_epoch == 0
        row = {"step": step, "epoch_end": end, "loss": loss, "last_batch": last_batch if end else None}
        if step % every == 0 or row["epoch_end"]:
            for mode in BATCHNORM_MODES:
                row[f"accuracy_{mode}_bn"] = evaluate(m, test_data, normalize=normalize, batchnorm=mode)[1]
            row["weight_norm"] = float(torch.sqrt(sum((p.detach() ** 2).sum() for p in m.parameters())))
        rows.append(row)

    train(model, train_data, test_data, epochs, on_step=record, **train_kwargs)
    return pd.DataFrame(rows)


FIG4_DEFENSES = ("none", "uniform:16", "stochastic:16", "sparsity:0.2", "sparsity:0.4", "uniform:240")


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
    from .models import resnet18
    train_t, test_t = data if data is not None else load_tensors(setting, device, root)
    label = setting.describe(len(train_t[1]), len(test_t[1]))
    classes, channels = int(train_t[1].max()) + 1, train_t[0].shape[1]

    def run(trial: dict) -> dict:
        torch.manual_seed(trial["seed"])
        model = resnet18(num_classes=classes, in_channels=channels).to(device)
        start = time.perf_counter()
        curve = train(model, train_t, test_t, setting.epochs, trial["defense"], lr=setting.lr,
                      batch_size=setting.batch_size, seed=trial["seed"], normalize=setting.normalize, progress=False)
        return {"curve": curve.to_dict("records"), "seconds": time.perf_counter() - start, "device": str(device)}

    trials = [{"defense": d, "seed": s, "setting": label} for s in seeds for d in defenses]  # a seed at a time
    return sweep(trials, run, path, progress=progress, desc="training runs")


def complete_runs(path: str | Path, setting: str, defenses: Sequence[str] = FIG4_DEFENSES,
                  seeds: Sequence[int] = (0, 1, 2)) -> pd.DataFrame | None:
    """The runs of :func:`defense_training` stored at ``path`` for ``setting`` (its
    description) when every (defense, seed) is there, else None."""
    from .experiments import load_rows
    rows = [r for r in load_rows(path) if r.get("setting") == setting and r["defense"] in defenses and r["seed"] in seeds]
    if {(r["defense"], r["seed"]) for r in rows} < {(d, s) for d in defenses for s in seeds}:
        return None
    return pd.DataFrame(rows)
