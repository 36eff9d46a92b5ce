"""Batched Adam: T independent runs of ``torch.optim.Adam`` with ``MultiStepLR``, as Inverting
Gradients (Geiping et al. 2020) optimises its dummy image: optionally on the sign of the
gradient, with the step size decayed at fixed fractions of the run and the iterate projected
into a box after every step. Same interface as :class:`~dlg_utils.lbfgs.BatchedLBFGS`: the
caller evaluates at :attr:`x` and hands (loss, gradient) to :meth:`tick`; every evaluation
starts a step.
"""
from __future__ import annotations

from typing import Sequence

import torch


class BatchedAdam:
    """Adam (``betas``, ``eps`` as torch) for T x n parameters. ``milestones``: steps (0-based)
    from which the step size is multiplied by ``gamma`` once more (``MultiStepLR``);
    ``signed``: step on sign(gradient); ``box``: (low, high) applied to the first ``boxed``
    coordinates of every trial after each step (all of them if ``boxed`` is None; the bounds are
    numbers or tensors of that many entries), and to the start unless ``project_start`` is off
    (Inverting Gradients' code clamps only after steps)."""

    def __init__(self, x0: torch.Tensor, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, milestones: Sequence[int] = (), gamma: float = 0.1,
                 signed: bool = False, box: tuple | None = None, boxed: int | None = None,
                 project_start: bool = True):
        if x0.dim() != 2:
            raise ValueError(f"x0 must be T x n, got shape {tuple(x0.shape)}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.lr, self.betas, self.eps, self.gamma, self.signed = lr, betas, eps, gamma, signed
        self.milestones = sorted(int(m) for m in milestones)
        self.box, self.boxed = box, boxed
        self.x = x0.detach().clone()
        if box is not None and project_start:
            self._project(torch.ones(len(x0), dtype=torch.bool, device=x0.device))
        self.m, self.v = torch.zeros_like(self.x), torch.zeros_like(self.x)
        self.steps = torch.zeros(len(x0), dtype=torch.long, device=x0.device)
        self.starts_step = torch.ones(len(x0), dtype=torch.bool, device=x0.device)

    def _project(self, rows: torch.Tensor) -> None:
        part = self.x[:, : self.boxed] if self.boxed is not None else self.x
        low, high = self.box
        if isinstance(low, torch.Tensor):
            part[rows] = torch.maximum(torch.minimum(part[rows], high), low)  # the authors' max(min(x, hi), lo)
        else:
            part[rows] = part[rows].clamp(low, high)

    def step_size(self) -> torch.Tensor:
        """Each trial's step size for its next step."""
        passed = sum((self.steps >= m).long() for m in self.milestones) if self.milestones else 0
        return self.lr * self.gamma ** torch.as_tensor(passed, dtype=self.x.dtype, device=self.x.device)

    def tick(self, loss: torch.Tensor, grad: torch.Tensor, active: torch.Tensor) -> None:
        """One Adam step for the ``active`` trials from their gradient at :attr:`x`."""
        g = grad.detach().to(self.x.dtype)
        if self.signed:
            g = g.sign()
        lr = self.step_size()
        b1, b2 = self.betas
        a = active[:, None]
        self.steps = self.steps + active.long()
        self.m = torch.where(a, b1 * self.m + (1 - b1) * g, self.m)
        self.v = torch.where(a, b2 * self.v + (1 - b2) * g * g, self.v)
        k = self.steps.clamp(min=1).to(self.x.dtype)
        m_hat = self.m / (1 - b1 ** k)[:, None]
        denom = (self.v / (1 - b2 ** k)[:, None]).sqrt() + self.eps
        self.x = torch.where(a, self.x - (lr * torch.ones_like(k))[:, None] * m_hat / denom, self.x)
        if self.box is not None:
            self._project(active)
