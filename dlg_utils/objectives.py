"""What an attack minimises: gradient distances and image priors, batched over trials.

Every distance takes the dummy gradients and the targets as lists (one entry per parameter) of
tensors with a leading trial dimension T and returns one value per trial. A target is a
:class:`Targets`: the shared gradient and, where the defense allows it, the box [low, high]
of true gradients consistent with what was shared (the defense-aware attacker's knowledge).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Tensors = Sequence[torch.Tensor]


@dataclass
class Targets:
    """The shared gradients of T trials, stacked per parameter ([T, ...] each), with the box of
    true gradients they are consistent with (``low``/``high``, equal to ``grads`` where the
    defense gives no box)."""

    grads: list[torch.Tensor]
    low: list[torch.Tensor]
    high: list[torch.Tensor]

    def select(self, idx: torch.Tensor) -> "Targets":
        """The targets of trials ``idx`` (a copy)."""
        grads = [t[idx] for t in self.grads]
        if self.low is self.grads and self.high is self.grads:  # no box: one copy, not three
            return Targets(grads, grads, grads)
        return Targets(grads, [t[idx] for t in self.low], [t[idx] for t in self.high])


def _sum(parts) -> torch.Tensor:
    return torch.stack(list(parts)).sum(0)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1)


class _SquaredDistance(torch.autograd.Function):
    """sum((d - t)^2) per trial with one product in the backward pass (autograd's own
    ``(d - t) ** 2`` makes several passes over the per-trial gradients, the largest tensors of
    a batched attack). Works under torch.func transforms and torch.compile."""

    generate_vmap_rule = True

    @staticmethod
    def forward(d, t):
        diff = d - t
        return torch.linalg.vector_norm(diff.flatten(1), dim=1) ** 2, diff

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx, grad, _):
        diff, = ctx.saved_tensors
        return diff * (2 * grad).view(-1, *[1] * (diff.dim() - 1)), None


def l2(dummy: Tensors, target: Targets) -> torch.Tensor:
    """DLG's distance: sum over layers of the squared differences."""
    return _sum(_SquaredDistance.apply(d, t)[0] for d, t in zip(dummy, target.grads))


def l1(dummy: Tensors, target: Targets) -> torch.Tensor:
    """Sum of absolute differences (the Laplace log-likelihood, up to scale)."""
    return _sum(_flat((d - t).abs()).sum(1) for d, t in zip(dummy, target.grads))


def l1_relative(dummy: Tensors, target: Targets) -> torch.Tensor:
    """:func:`l1` relative to the target's L1 norm: the Laplace negative log-likelihood up to
    scale, on the same scale whatever the gradient's size (the noise-aware attacker's distance
    against Laplacian noise)."""
    return l1(dummy, target) / (_sum(_flat(t.abs()).sum(1) for t in target.grads) + 1e-30)


def cosine(dummy: Tensors, target: Targets) -> torch.Tensor:
    """Inverting Gradients' distance: 1 - cosine similarity of all layers' gradients taken as
    one vector (its ``cost_fn='sim'`` with equal weights): blind to the gradient's scale."""
    dot = _sum(_flat(d * t).sum(1) for d, t in zip(dummy, target.grads))
    nd = _sum(_flat(d * d).sum(1) for d in dummy)
    nt = _sum(_flat(t * t).sum(1) for t in target.grads)
    return 1 - dot / (nd.sqrt() * nt.sqrt() + 1e-30)


def correlation(dummy: Tensors, target: Targets) -> torch.Tensor:
    """Sum over layers of 1 - Pearson correlation: blind to any positive scale and offset per
    layer, so it matches quantized integers without knowing how they dequantize (every TF mode
    maps q to a * q + b per tensor)."""
    total = 0.0
    for d, t in zip(dummy, target.grads):
        d, t = _flat(d), _flat(t)
        d, t = d - d.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
        total = total + 1 - (d * t).sum(1) / torch.sqrt((d * d).sum(1) * (t * t).sum(1) + 1e-30)
    return total


def interval(dummy: Tensors, target: Targets) -> torch.Tensor:
    """Squared distance from the dummy gradient to the box [low, high] of true gradients that
    the shared one is consistent with, relative to the shared gradient's squared norm: zero
    anywhere inside the box; with an exact target (low = high) it is :func:`l2` / ||target||^2."""
    outside = _sum(_flat((d - torch.minimum(torch.maximum(d, lo), hi)) ** 2).sum(1)
                   for d, lo, hi in zip(dummy, target.low, target.high))
    return outside / (_sum(_flat(t * t).sum(1) for t in target.grads) + 1e-30)


DISTANCES: dict[str, Callable[[Tensors, Targets], torch.Tensor]] = {
    "l2": l2, "l1": l1, "l1-rel": l1_relative, "cosine": cosine, "correlation": correlation, "interval": interval}


def masked(dummy: Tensors, target: Targets) -> list[torch.Tensor]:
    """The dummy gradient with the entries the target does not have (zeros: pruned by
    sparsification) set to zero, so that a distance ignores them."""
    return [d * (t != 0) for d, t in zip(dummy, target.grads)]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per trial (Inverting Gradients' prior): the mean absolute
    difference of horizontal neighbours plus that of vertical ones; x is T x N x C x H x W."""
    dx = (x[..., :, :-1] - x[..., :, 1:]).abs().flatten(1).mean(1)
    dy = (x[..., :-1, :] - x[..., 1:, :]).abs().flatten(1).mean(1)
    return dx + dy


class _StraightThrough(torch.autograd.Function):
    """Forward: the defended value; backward: the identity (BPDA, Athalye et al. 2018)."""

    @staticmethod
    def forward(ctx, g, defended):
        return defended

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(defense: Callable, grads: Tensors, generator: torch.Generator | None = None
                     ) -> list[torch.Tensor]:
    """``defense(grads)`` in the forward pass with an identity backward pass: lets an attacker
    optimise through a quantizer whose own derivative is zero almost everywhere."""
    defended = defense([g.detach() for g in grads], generator)
    return [_StraightThrough.apply(g, d) for g, d in zip(grads, defended)]
