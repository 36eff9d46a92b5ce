"""Deep Leakage from Gradients (Zhu et al. 2019) and iDLG (Zhao et al. 2020).

:func:`dlg` follows the original DLG loop: a dummy image and dummy label drawn from N(0, 1),
soft-label cross-entropy, the gradient distance sum_l ||grad'_l - grad_l||^2, and
``torch.optim.LBFGS`` (lr 1, history 100, max_iter 20 per step). Given a label it is iDLG.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import progress_enabled
from .defenses import Defense, defense_from_spec
from .metrics import GRAD_THRESHOLD, image_metrics


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def target_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     defense: Defense | str | None = None,
                     generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The gradient a client shares: d CE(model(x), y) / d parameters, one tensor per parameter
    (x a batch N x C x H x W in [0, 1], y N integer labels), after ``defense`` (drawn once)."""
    if x.dim() != 4:
        raise ValueError(f"x must be a batch N x C x H x W, got shape {tuple(x.shape)}")
    y = torch.as_tensor(y, device=x.device).long().reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    loss = F.cross_entropy(model(x), y)
    grads = [g.detach() for g in torch.autograd.grad(loss, _params(model))]
    if not all(torch.isfinite(g).all() for g in grads):
        raise ValueError("the model's gradient contains NaN or Inf")
    return defense_from_spec(defense)(grads, generator)


def idlg_label(target_grads: Sequence[torch.Tensor]) -> int:
    """iDLG's label of a single-image gradient: the class whose row of the last linear layer's
    weight gradient sums to the most negative value (softmax(z)_c - 1 < 0 times non-negative
    features)."""
    weights = [g for g in target_grads if g.dim() == 2]
    if not weights:
        raise ValueError("no 2-D (linear layer weight) gradient found for iDLG")
    return int(weights[-1].sum(dim=-1).argmin())


def gradient_distance(dummy_grads: Iterable[torch.Tensor], target_grads: Iterable[torch.Tensor]) -> torch.Tensor:
    """DLG's objective: the sum over layers of the squared differences."""
    return sum(((d - t) ** 2).sum() for d, t in zip(dummy_grads, target_grads))


@dataclass
class AttackResult:
    """What one attack produced. ``image`` is the final dummy batch (N x C x H x W, unclamped);
    ``history`` has one row per iteration (0 = the random start) with the gradient distance and,
    given the ground truth, image mse / l1 / psnr / ssim (image clamped to [0, 1] for them)."""

    image: torch.Tensor
    label: torch.Tensor
    history: pd.DataFrame
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    converged: bool = False
    diverged: bool = False
    converged_at: int | None = None
    seed: int = 0
    seconds: float = 0.0

    @property
    def final(self) -> pd.Series:
        """The last row of the history."""
        return self.history.iloc[-1]


def dlg(model: nn.Module, target_grads: Sequence[torch.Tensor], *, image_shape: Sequence[int],
        num_classes: int, iterations: int = 300, label: int | torch.Tensor | str | None = None,
        seed: int = 0, ground_truth: torch.Tensor | None = None, lr: float = 1.0,
        history_size: int = 100, max_iter: int = 20, snapshot_every: int = 10,
        snapshot_at: Iterable[int] = (), grad_threshold: float = GRAD_THRESHOLD,
        stop_when_converged: bool = False, progress: bool | None = None) -> AttackResult:
    """Reconstruct the batch behind ``target_grads`` by matching gradients (DLG).

    image_shape: N x C x H x W (or C x H x W for one image). label: ``None`` learns a soft dummy
    label (DLG); an int / tensor of N labels fixes it (iDLG); ``"idlg"`` extracts it with
    :func:`idlg_label`. seed: draws the dummy image, then the dummy label, from N(0, 1).
    iterations: L-BFGS steps (seed 000: 100, DLG: 300, seed 002: 1200), each of up to
    ``max_iter`` evaluations. Snapshots (clamped to [0, 1]) are kept every ``snapshot_every``
    iterations and at ``snapshot_at``. ``converged`` once the gradient distance falls below
    ``grad_threshold`` (seed 002); ``diverged`` (and the run stops, keeping the last finite
    image) when it becomes NaN or Inf.
    """
    params = _params(model)
    target = [t.detach().to(params[0].device) for t in target_grads]
    if len(target) != len(params) or any(t.shape != p.shape for t, p in zip(target, params)):
        raise ValueError("target_grads do not match the model's parameters "
                         f"({len(target)} tensors for {len(params)} parameters)")
    if not all(torch.isfinite(t).all() for t in target):
        raise ValueError("target_grads contain NaN or Inf")
    shape = tuple(image_shape) if len(image_shape) == 4 else (1, *image_shape)
    device = params[0].device
    gen = torch.Generator().manual_seed(seed)
    dummy_x = torch.randn(shape, generator=gen).to(device).requires_grad_(True)
    leaves = [dummy_x]
    if label is None:
        dummy_y = torch.randn((shape[0], num_classes), generator=gen).to(device).requires_grad_(True)
        leaves.append(dummy_y)
    else:
        fixed = torch.tensor([idlg_label(target)]) if isinstance(label, str) and label == "idlg" \
            else torch.as_tensor(label).long().reshape(-1)
        if len(fixed) != shape[0]:
            raise ValueError(f"{len(fixed)} labels for a batch of {shape[0]}")
        fixed = fixed.to(device)
    truth = None if ground_truth is None else ground_truth.detach().reshape(shape).to(device)

    def distance() -> torch.Tensor:
        pred = model(dummy_x)
        if label is None:
            loss = torch.mean(torch.sum(-F.softmax(dummy_y, -1) * F.log_softmax(pred, -1), -1))
        else:
            loss = F.cross_entropy(pred, fixed)
        dummy_grads = torch.autograd.grad(loss, params, create_graph=True)
        return gradient_distance(dummy_grads, target)

    optimizer = torch.optim.LBFGS(leaves, lr=lr, history_size=history_size, max_iter=max_iter)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        d = distance()
        for leaf, g in zip(leaves, torch.autograd.grad(d, leaves)):
            leaf.grad = g
        return d.detach()

    snap_at = set(snapshot_at) | ({*range(0, iterations + 1, snapshot_every), iterations}
                                  if snapshot_every else set())
    rows, snapshots = [], {}
    converged_at, diverged, image = None, False, dummy_x.detach().clone()
    show = progress_enabled() if progress is None else progress
    start = time.perf_counter()
    for it in tqdm(range(iterations + 1), desc=f"DLG seed {seed}", leave=False, disable=not show):
        x_now = dummy_x.detach().clone()  # the state after `it` steps
        if not torch.isfinite(x_now).all():
            diverged = True
            break
        if it < iterations:
            dist = float(optimizer.step(closure))  # step() returns the distance at its start
        else:
            dist = float(distance().detach())
        if dist != dist or dist == float("inf"):
            diverged = True
            break
        image = x_now
        row = {"iteration": it, "grad_distance": dist}
        if truth is not None:
            row.update(image_metrics(x_now, truth))
        rows.append(row)
        if it in snap_at:
            snapshots[it] = x_now.clamp(0, 1).cpu()
        if converged_at is None and dist < grad_threshold:
            converged_at = it
            if stop_when_converged:
                break

    out_label = dummy_y.detach().argmax(-1).cpu() if label is None else fixed.cpu()
    return AttackResult(image=image.cpu(), label=out_label, history=pd.DataFrame(rows),
                        snapshots=snapshots, converged=converged_at is not None,
                        diverged=diverged, converged_at=converged_at, seed=seed,
                        seconds=time.perf_counter() - start)
