"""Deep Leakage from Gradients (Zhu et al. 2019) and iDLG (Zhao et al. 2020).

:func:`dlg` follows the original DLG loop: a dummy image and dummy label drawn from N(0, 1),
soft-label cross-entropy, the gradient distance sum_l ||grad'_l - grad_l||^2, and L-BFGS
(lr 1, history 100, max_iter 20 per step) with exactly ``torch.optim.LBFGS``'s algorithm.
Given a label it is iDLG. :func:`dlg_batch` runs many independent trials in one batched
computation (``torch.func.vmap`` over the double backward, :class:`BatchedLBFGS`); a single
trial is the batch of one.

Models with BatchNorm: the attack evaluates the model functionally in the mode it is in. In
eval mode BatchNorm uses its running statistics. In train mode it normalises with the dummy
batch's own statistics and leaves the running statistics untouched (the attacker must not
change the model); a batch of one image then needs spatial size > 1 at every BatchNorm.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, stack_module_state, vmap
from tqdm.auto import tqdm

from .config import progress_enabled
from .defenses import Defense, defense_from_spec
from .lbfgs import BatchedLBFGS
from .metrics import GRAD_THRESHOLD, l1, mse, psnr, ssim


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


def idlg_label(target_grads: Sequence[torch.Tensor], source: str = "weight") -> int:
    """iDLG's label of a single-image gradient: the class whose row of the last linear layer's
    weight gradient sums to the most negative value (softmax(z)_c - 1 < 0 times non-negative
    features). ``source="bias"`` reads the last bias gradient, softmax(z) - onehot, whose only
    negative entry is the label whatever the sign of the features (tanh networks, LeNet-5)."""
    if source not in ("weight", "bias"):
        raise ValueError(f"source must be 'weight' or 'bias', got {source!r}")
    if source == "bias":
        biases = [g for g in target_grads if g.dim() == 1]
        if not biases:
            raise ValueError("no 1-D (bias) gradient found for iDLG")
        return int(biases[-1].argmin())
    weights = [g for g in target_grads if g.dim() == 2]
    if not weights:
        raise ValueError("no 2-D (linear layer weight) gradient found for iDLG")
    return int(weights[-1].sum(dim=-1).argmin())


def gradient_distance(dummy_grads: Iterable[torch.Tensor], target_grads: Iterable[torch.Tensor]) -> torch.Tensor:
    """DLG's objective: the sum over layers of the squared differences (fused per layer)."""
    return sum(F.mse_loss(d, t, reduction="sum") for d, t in zip(dummy_grads, target_grads))


def correlation_distance(dummy_grads: Iterable[torch.Tensor], target_grads: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum over layers of 1 - Pearson correlation: blind to any positive scale and offset per
    layer, so it matches quantized integers without knowing how they dequantize (every TF mode
    maps q to a * q + b per tensor)."""
    total = 0.0
    for d, t in zip(dummy_grads, target_grads):
        d, t = d.flatten() - d.mean(), t.flatten() - t.mean()
        total = total + 1 - (d * t).sum() / torch.sqrt((d * d).sum() * (t * t).sum() + 1e-30)
    return total


DISTANCES = {"l2": gradient_distance, "correlation": correlation_distance}


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


def _batchnorm_without_running_stats(model: nn.Module) -> nn.Module:
    """A copy of a train-mode model whose BatchNorms use batch statistics and update nothing."""
    if not model.training or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return model


def _trial_list(value, count: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries for {count} trials")
        return list(value)
    return [value] * count


def dlg_batch(models: nn.Module | Sequence[nn.Module], targets: Sequence[Sequence[torch.Tensor]], *,
              image_shape: Sequence[int], num_classes: int, iterations: int = 300,
              labels=None, seeds: Sequence[int] | int = 0, ground_truths=None, lr: float = 1.0,
              history_size: int = 100, max_iter: int = 20, tolerance_grad: float = 1e-7,
              tolerance_change: float = 1e-9, snapshot_every: int = 10, snapshot_at: Iterable[int] = (),
              grad_threshold: float = GRAD_THRESHOLD, stop_when_converged: bool = False,
              chunk_size: int = 64, progress: bool | None = None, distance: str = "l2",
              line_search_fn: str | None = None, on_result: Callable[[int, AttackResult], None] | None = None) -> list[AttackResult]:
    """Run T = len(targets) independent DLG trials at once; returns one :class:`AttackResult`
    per trial, each the same (to floating-point tolerance) as a separate run with
    ``torch.optim.LBFGS``.

    models: one model (shared weights) or T models of one architecture (per-trial weights).
    targets: T lists of target gradients. labels / seeds / ground_truths: one value for all
    trials or a list of T (see :func:`dlg`). Trials are processed ``chunk_size`` at a time to
    bound memory; finished trials leave the batch, so the rest run faster, and
    ``on_result(index, result)`` is called as each one finishes (to save it at once).
    ``distance``: ``"l2"`` (DLG's :func:`gradient_distance`) or ``"correlation"``
    (:func:`correlation_distance`, for targets known only up to a per-layer affine map).
    ``line_search_fn``: None (DLG's fixed step) or ``"strong_wolfe"`` (torch's line search,
    run per trial).
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {sorted(DISTANCES)}, got {distance!r}")
    T = len(targets)
    if T == 0:
        return []
    labels, seeds = _trial_list(labels, T, "labels"), _trial_list(seeds, T, "seeds")
    truths = _trial_list(ground_truths, T, "ground_truths")
    model_list = _trial_list(models, T, "models") if isinstance(models, (list, tuple)) else None
    results = []
    show = progress_enabled() if progress is None else progress
    bar = tqdm(total=T * iterations, desc=f"DLG x{T}", disable=not show, unit="it", mininterval=2)
    for lo in range(0, T, chunk_size):
        sl = slice(lo, lo + chunk_size)
        done = (lambda t, r, lo=lo: on_result(lo + t, r)) if on_result else None
        results += _run_chunk(model_list[sl] if model_list else models, targets[sl], labels[sl], seeds[sl],
                              truths[sl], image_shape, num_classes, iterations, lr, history_size, max_iter,
                              tolerance_grad, tolerance_change, snapshot_every, set(snapshot_at),
                              grad_threshold, stop_when_converged, bar, done, DISTANCES[distance],
                              line_search_fn)
    bar.close()
    return results


def _run_chunk(models, targets, labels, seeds, truths, image_shape, num_classes, iterations, lr,
               history_size, max_iter, tolerance_grad, tolerance_change, snapshot_every, snapshot_at,
               grad_threshold, stop_when_converged, bar, on_result, match=gradient_distance,
               line_search_fn=None) -> list[AttackResult]:
    T = len(targets)
    per_trial = isinstance(models, (list, tuple))
    base = _batchnorm_without_running_stats(models[0] if per_trial else models)
    named = [(n, p) for n, p in base.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    device, dtype = named[0][1].device, named[0][1].dtype
    if per_trial:
        stacked, _ = stack_module_state([_batchnorm_without_running_stats(m) for m in models])
        params = {n: stacked[n].detach() for n in names}
    else:
        params = {n: p.detach() for n, p in named}
    frozen = {n: p.detach() for n, p in base.named_parameters() if not p.requires_grad}
    buffers = dict(base.named_buffers())

    shape = tuple(image_shape) if len(image_shape) == 4 else (1, *image_shape)
    N, nx, ny = shape[0], int(torch.Size(shape).numel()), shape[0] * num_classes
    target = {}
    for i, name in enumerate(names):
        per = [torch.as_tensor(t[i]) for t in targets]
        if any(len(t) != len(names) for t in targets) or any(p.shape != named[i][1].shape for p in per):
            raise ValueError("target_grads do not match the model's parameters "
                             f"({len(targets[0])} tensors for {len(names)} parameters)")
        target[name] = torch.stack(per).to(device, dtype)
    if not all(torch.isfinite(t).all() for t in target.values()):
        raise ValueError("target_grads contain NaN or Inf")

    # Dummies: image then (for DLG) label from N(0, 1) with each trial's own seed; a fixed
    # label's slot in the flat vector stays 0 and gets no gradient (exactly equivalent).
    x0, learn, onehot, fixed = [], [], [], []
    for t in range(T):
        gen = torch.Generator().manual_seed(int(seeds[t]))
        x = torch.randn(shape, generator=gen).flatten()
        lab = labels[t]
        if lab is None:
            y = torch.randn((N, num_classes), generator=gen).flatten()
            fixed.append(None)
        else:
            lab = torch.tensor([idlg_label(targets[t])]) if isinstance(lab, str) and lab == "idlg" \
                else torch.as_tensor(lab).long().reshape(-1)
            if len(lab) != N:
                raise ValueError(f"{len(lab)} labels for a batch of {N}")
            y = torch.zeros(ny)
            fixed.append(lab)
        x0.append(torch.cat([x, y]))
        learn.append(lab is None)
        onehot.append(F.one_hot(lab, num_classes).to(dtype) if lab is not None else torch.zeros(N, num_classes))
    flat0 = torch.stack(x0).to(device, dtype)
    learn = torch.tensor(learn, device=device)
    onehot = torch.stack(onehot).to(device, dtype)
    truth = [None if g is None else g.detach().reshape(shape).to(device, dtype) for g in truths]

    def loss_fn(p, x, target_probs):
        pred = functional_call(base, ({**p, **frozen}, buffers), (x,))
        return torch.mean(torch.sum(-target_probs * F.log_softmax(pred, -1), -1))

    def distance(flat, learn_t, onehot_t, target_t, p):
        x = flat[:nx].view(shape)
        probs = torch.where(learn_t, F.softmax(flat[nx:].view(N, num_classes), -1), onehot_t)
        g = grad(loss_fn)(p, x, probs)
        return match([g[n] for n in names], [target_t[n] for n in names])

    one = grad_and_value(distance)
    many = vmap(one, in_dims=(0, 0, 0, 0, 0 if per_trial else None))

    def evaluate(flat, learn_t, onehot_t, target_t, p):
        if len(flat) > 1 or per_trial:
            return many(flat, learn_t, onehot_t, target_t, p)
        g, value = one(flat[0], learn_t[0], onehot_t[0], {n: v[0] for n, v in target_t.items()}, p)
        return g[None], value[None]  # a lone trial skips vmap's overhead

    opt = BatchedLBFGS(flat0, lr=lr, max_iter=max_iter, tolerance_grad=tolerance_grad,
                       tolerance_change=tolerance_change, history_size=history_size,
                       line_search_fn=line_search_fn)
    active = torch.ones(T, dtype=torch.bool, device=device)
    steps = [0] * T
    rows = [[] for _ in range(T)]
    snaps = [{} for _ in range(T)]
    images = [flat0[t, :nx].view(shape).clone() for t in range(T)]
    converged_at, diverged = [None] * T, [False] * T
    snap_at = snapshot_at | ({*range(0, iterations + 1, snapshot_every), iterations} if snapshot_every else set())
    start = time.perf_counter()
    out: list[AttackResult | None] = [None] * T

    def finish(t: int) -> None:
        label = opt.x[t, nx:].view(N, num_classes).argmax(-1) if fixed[t] is None else fixed[t]
        out[t] = AttackResult(image=images[t].cpu(), label=label.cpu(), history=pd.DataFrame(rows[t]),
                              snapshots=snaps[t], converged=converged_at[t] is not None,
                              diverged=diverged[t], converged_at=converged_at[t], seed=int(seeds[t]),
                              seconds=time.perf_counter() - start)
        bar.update(iterations - max(steps[t] - 1, 0))  # the iterations it skipped
        if on_result is not None:
            on_result(t, out[t])

    while active.any():
        idx = active.nonzero().squeeze(1)
        everyone = len(idx) == T
        sel = lambda d: d if everyone else {n: v[idx] for n, v in d.items()}
        with torch.enable_grad():
            if everyone:
                full_grad, full_loss = evaluate(opt.x, learn, onehot, target, params)
            else:
                g, loss = evaluate(opt.x[idx], learn[idx], onehot[idx], sel(target), sel(params) if per_trial else params)
                full_loss = torch.zeros(T, dtype=dtype, device=device).index_copy(0, idx, loss.detach())
                full_grad = torch.zeros_like(opt.x).index_copy(0, idx, g.detach())
        # evaluations that start an L-BFGS step give the history rows: iteration k = after k steps
        starting = (active & opt.starts_step).nonzero().squeeze(1).tolist()
        finite = torch.isfinite(full_loss) & torch.isfinite(opt.x).all(-1)
        recorded = []
        for t in starting:
            if not finite[t]:
                diverged[t] = True
                active[t] = False
                finish(t)
                continue
            k = steps[t]
            rows[t].append({"iteration": k, "grad_distance": float(full_loss[t])})
            images[t] = opt.x[t, :nx].view(shape).clone()
            recorded.append(t)
            if k in snap_at:
                snaps[t][k] = images[t].clamp(0, 1).cpu()
            if converged_at[t] is None and float(full_loss[t]) < grad_threshold:
                converged_at[t] = k
            steps[t] += 1
            if k == iterations or (stop_when_converged and converged_at[t] is not None):
                active[t] = False
            if k > 0:
                bar.update(1)
        with_truth = [t for t in recorded if truth[t] is not None]
        if with_truth:
            x = torch.stack([images[t] for t in with_truth]).clamp(0, 1).flatten(0, 1)
            y = torch.stack([truth[t] for t in with_truth]).flatten(0, 1)
            per_image = {name: fn(x, y).view(len(with_truth), N).mean(1).tolist()
                         for name, fn in (("mse", mse), ("l1", l1), ("psnr", psnr), ("ssim", ssim))}
            for j, t in enumerate(with_truth):
                rows[t][-1].update({name: v[j] for name, v in per_image.items()})
        for t in recorded:
            if not active[t]:
                finish(t)
        opt.tick(full_loss, full_grad, active)
    return out


def dlg(model: nn.Module, target_grads: Sequence[torch.Tensor], *, image_shape: Sequence[int],
        num_classes: int, iterations: int = 300, label: int | torch.Tensor | str | None = None,
        seed: int = 0, ground_truth: torch.Tensor | None = None, **kwargs) -> AttackResult:
    """Reconstruct the batch behind ``target_grads`` by matching gradients (DLG): one trial.

    image_shape: N x C x H x W (or C x H x W for one image). label: ``None`` learns a soft dummy
    label (DLG); an int / tensor of N labels fixes it (iDLG); ``"idlg"`` extracts it with
    :func:`idlg_label`. seed: draws the dummy image, then the dummy label, from N(0, 1).
    iterations: L-BFGS steps (seed 000: 100, DLG: 300, seed 002: 1200), each of up to
    ``max_iter`` (20) evaluations; ``lr`` (1), ``history_size`` (100), ``tolerance_grad``,
    ``tolerance_change`` as in ``torch.optim.LBFGS``. Snapshots (clamped to [0, 1]) every
    ``snapshot_every`` (10) iterations and at ``snapshot_at``. ``converged`` once the gradient
    distance falls below ``grad_threshold`` (1e-4, seed 002; ``stop_when_converged`` ends the
    run there); ``diverged`` (and the run stops, keeping the last finite image) on NaN or Inf.
    """
    return dlg_batch(model, [target_grads], image_shape=image_shape, num_classes=num_classes,
                     iterations=iterations, labels=[label], seeds=[seed], ground_truths=[ground_truth],
                     **kwargs)[0]
