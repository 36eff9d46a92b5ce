"""Training under a gradient defense, with checkpoints at three stages (the Fig. 4 study that
uses it is :mod:`~dlg_utils.training_study`)."""
from __future__ import annotations

import datetime
import numbers
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
from .models import architecture, build_model, normalize_architecture

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
    """Load a checkpoint into ``model`` (or a model rebuilt from its metadata through
    :func:`~dlg_utils.models.get_model`): (model, meta).

    Raises ``ValueError`` naming both architectures when the checkpoint is for another one.
    """
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    meta = ckpt["meta"]
    theirs = normalize_architecture(meta["architecture"])  # checkpoints before the registry: class names
    if model is None:
        model = build_model(theirs)
    mine = architecture(model)
    state = model.state_dict()
    shapes_match = state.keys() == ckpt["state_dict"].keys() and all(
        state[k].shape == v.shape for k, v in ckpt["state_dict"].items())
    if mine != theirs or not shapes_match:
        raise ValueError(f"checkpoint {path} is for {theirs['name']}({theirs['options']}), "
                         f"but the model is {mine['name']}({mine['options']})")
    model.load_state_dict(ckpt["state_dict"])
    return model, meta


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train` trains: SGD with momentum and weight decay on cross-entropy (seed 000:
    lr 0.1, momentum 0.9, weight decay 5e-4, batch 128), every parameter gradient replaced by
    ``defense(gradients)`` (a :class:`~dlg_utils.defenses.Defense` or its spec) before each
    ``optimizer.step()``, for ``epochs`` epochs.

    ``seed`` seeds torch's global generator, the order of the batches (``torch.randperm`` on a
    generator seeded with it, as a shuffling DataLoader) and the defense's randomness (with
    ``seed + 1``). ``max_batches`` caps batches per epoch. ``normalize`` = (mean, std) is applied
    to every image (seed 000's code: (0.5, 0.5)). With ``checkpoint_dir``, :func:`train` saves
    ``{run_name}_{start,middle,converged}.pt`` at epoch 0, epochs // 2 and the last epoch, and
    ``{run_name}_step{n}.pt`` after optimizer step ``n`` for each ``n`` in ``checkpoint_steps``
    (seed 000 appendix C attacks a model after 5 steps); ``dataset_name`` goes into their
    metadata. ``on_step(step, loss, model)`` is called after every optimizer step with that
    batch's loss (to trace a run step by step); ``progress``: progress bars (None: the
    package's setting)."""

    epochs: int
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    defense: Defense | str | None = "none"
    normalize: tuple[float, float] | None = None
    max_batches: int | None = None
    checkpoint_dir: str | Path | None = None
    run_name: str = "model"
    dataset_name: str = ""
    checkpoint_steps: Sequence[int] = ()
    progress: bool | None = None
    on_step: Callable[[int, float, nn.Module], None] | None = None

    def __post_init__(self) -> None:
        whole = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)
        if not whole(self.epochs) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not whole(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.max_batches is not None and (not whole(self.max_batches) or self.max_batches < 1):
            raise ValueError(f"max_batches must be None or an integer >= 1, got {self.max_batches!r}")
        if not whole(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("lr", "momentum", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.normalize is not None and (len(self.normalize) != 2 or not self.normalize[1] > 0):
            raise ValueError(f"normalize must be None or (mean, std) with std > 0, got {self.normalize!r}")
        steps = tuple(self.checkpoint_steps)
        if any(not whole(n) or n < 1 for n in steps):
            raise ValueError(f"checkpoint_steps must be integers >= 1, got {list(steps)}")
        if steps and self.checkpoint_dir is None:
            raise ValueError("checkpoint_steps needs a checkpoint_dir")
        object.__setattr__(self, "checkpoint_steps", steps)
        defense_from_spec(self.defense)  # a bad spec fails here, not in the middle of a run


def train(model: nn.Module, train_data: Dataset | Tensors, test_data: Dataset | Tensors,
          config: TrainConfig) -> pd.DataFrame:
    """Train ``model`` as ``config`` says (:class:`TrainConfig`). Returns one row per epoch:
    epoch, train_loss, test_loss, test_accuracy.

    The last batch of an epoch holds what is left (len % batch_size images), as a DataLoader
    without ``drop_last`` gives it (the original's code). A subset whose size leaves a handful
    of images makes that batch's BatchNorm statistics noisy enough to throw the weights off
    at every epoch's end (notebook 4 measures it): use a multiple of ``batch_size``.

    The data sets are read into tensors on the model's device once (:func:`~dlg_utils.data.to_tensors`)
    and each epoch visits them in the order ``torch.randperm`` draws, with no DataLoader in
    the loop.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    c = config
    defense = defense_from_spec(c.defense)
    device = next(model.parameters()).device
    torch.manual_seed(c.seed)
    generator = torch.Generator().manual_seed(c.seed)
    noise = torch.Generator(device=device).manual_seed(c.seed + 1)
    images, labels = (t.to(device) for t in (train_data if isinstance(train_data, tuple) else to_tensors(train_data)))
    test = tuple(t.to(device) for t in (test_data if isinstance(test_data, tuple) else to_tensors(test_data)))
    in_channels = getattr(model, "config", {}).get("in_channels")
    if in_channels is not None and images.shape[1] != in_channels:
        raise ValueError(f"data has {images.shape[1]} channels, the model expects {in_channels}")
    n_batches = -(-len(labels) // c.batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    stage_at = {0: "start", max(1, c.epochs // 2): "middle", c.epochs: "converged"}
    show = progress_enabled() if c.progress is None else c.progress

    def checkpoint(stage: str, epoch: int, step: int, scores: tuple[float, float] | None = None) -> None:
        test_loss, test_accuracy = scores or evaluate(model, test, normalize=c.normalize)
        save_checkpoint(Path(c.checkpoint_dir) / f"{c.run_name}_{stage}.pt", model, stage=stage, epoch=epoch,
                        step=step, epochs=c.epochs, dataset=c.dataset_name, defense=defense.name,
                        test_loss=test_loss, test_accuracy=test_accuracy, lr=c.lr, momentum=c.momentum,
                        weight_decay=c.weight_decay, batch_size=c.batch_size, seed=c.seed, max_batches=c.max_batches)

    if c.checkpoint_dir is not None:
        checkpoint("start", 0, 0)
    rows, step = [], 0
    for epoch in tqdm(range(1, c.epochs + 1), desc=f"train {c.run_name}", disable=not show):
        model.train()
        total, count = 0.0, 0
        order = torch.randperm(len(labels), generator=generator).to(device)
        for b in tqdm(range(min(n_batches, c.max_batches or n_batches)), desc=f"epoch {epoch}", leave=False,
                      disable=not show):
            idx = order[b * c.batch_size:(b + 1) * c.batch_size]
            x, y = _normalize(images[idx], c.normalize), labels[idx]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch}, batch {b}")
            loss.backward()
            for p, g in zip(params, defense([p.grad for p in params], noise)):
                p.grad = g
            optimizer.step()
            step += 1
            if step in c.checkpoint_steps:
                checkpoint(f"step{step}", epoch, step)
            if c.on_step is not None:
                c.on_step(step, float(loss.detach()), model)
            total += float(loss.detach()) * len(y)
            count += len(y)
        test_loss, test_accuracy = evaluate(model, test, normalize=c.normalize)
        rows.append({"epoch": epoch, "train_loss": total / count, "test_loss": test_loss,
                     "test_accuracy": test_accuracy})
        if c.checkpoint_dir is not None and epoch in stage_at:
            checkpoint(stage_at[epoch], epoch, step, (test_loss, test_accuracy))
    return pd.DataFrame(rows)
