"""Training under a gradient defense (seed 000 Fig. 4) with checkpoints at three stages."""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Sequence

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


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | DataLoader | Tensors, batch_size: int = 1024,
             normalize: tuple[float, float] | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``data`` (a data set, a DataLoader or
    (images, labels) tensors), in eval mode; ``normalize`` = (mean, std) applied to the images."""
    device = next(model.parameters()).device
    if isinstance(data, DataLoader):
        batches = ((x.to(device), y.to(device)) for x, y in data)
    else:
        images, labels = data if isinstance(data, tuple) else to_tensors(data)
        images, labels = images.to(device), labels.to(device)
        batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size))
    was_training = model.training
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for x, y in batches:
        out = model(_normalize(x, normalize))
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        count += len(y)
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
          normalize: tuple[float, float] | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Train with SGD and cross-entropy (seed 000: lr 0.1, momentum 0.9, weight decay 5e-4,
    batch 128), replacing every parameter gradient by ``defense(gradients)`` before each
    ``optimizer.step()``. Returns one row per epoch: epoch, train_loss, test_loss,
    test_accuracy. With ``checkpoint_dir``, saves ``{run_name}_{start,middle,converged}.pt`` at
    epoch 0, epochs // 2 and the last epoch, and ``{run_name}_step{n}.pt`` after optimizer step
    ``n`` for each ``n`` in ``checkpoint_steps`` (seed 000 appendix C attacks a model after 5
    steps). ``max_batches`` caps batches per epoch. ``normalize`` = (mean, std) is applied to
    every image (seed 000's code: (0.5, 0.5)).

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
            total += float(loss.detach()) * len(y)
            count += len(y)
        test_loss, test_accuracy = evaluate(model, test, normalize=normalize)
        rows.append({"epoch": epoch, "train_loss": total / count, "test_loss": test_loss,
                     "test_accuracy": test_accuracy})
        if checkpoint_dir is not None and epoch in stage_at:
            checkpoint(stage_at[epoch], epoch, step, (test_loss, test_accuracy))
    return pd.DataFrame(rows)
