"""The attack engine: T gradient-matching trials advanced together as one computation. Pure
mechanics: what to run comes from the catalogue (:mod:`~dlg_utils.attacks`), each trial's label
already decided (:func:`~dlg_utils.attack.initial_label`).

An attack is an :class:`~dlg_utils.attacks.AttackConfig`: a distance between the dummy gradient and the shared one
(:mod:`~dlg_utils.objectives`), an optimizer (the batched L-BFGS of DLG or the batched Adam of
Inverting Gradients), an image prior and box, and how the label is found. Every evaluation
computes the dummy gradients of all trials with ``torch.func`` (``vmap`` over ``grad`` of the
cross-entropy, per-trial or shared weights), the distance per trial with plain torch (so a
defense can be applied to the dummy gradient, straight through), and the gradient with
respect to every trial's dummy with one backward pass. Trials are independent: a trial that
turns NaN ends as diverged and leaves the others untouched.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad_and_value, stack_module_state, vmap

from .adam import BatchedAdam
from .attacks import AUTHORS_MOMENTS, AttackConfig
from .cases import ATTACKER_STREAM, Case, batchnorm_frozen, derived_seed, update_function
from .defenses import SharedGradient
from .lbfgs import BatchedLBFGS
from .memory import keep_freed_memory
from .metrics import image_table
from .objectives import DISTANCES, Targets, masked, straight_through, total_variation

@dataclass
class AttackResult:
    """What one attack produced. ``image`` is the final dummy batch (N x C x H x W, unclamped);
    ``history`` has one row per recorded iteration (0 = the random start) with the gradient
    distance and, given the ground truth, image mse / l1 / psnr / ssim (image clamped to
    [0, 1] for them)."""

    image: torch.Tensor
    label: torch.Tensor
    history: pd.DataFrame
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    converged: bool = False
    diverged: bool = False
    converged_at: int | None = None
    seed: int = 0
    seconds: float = 0.0
    attack: str = ""
    restart: int = 0
    cost_seconds: float = 0.0

    @property
    def final(self) -> pd.Series:
        """The last row of the history."""
        return self.history.iloc[-1]


def check_inputs(model: nn.Module, image_shape: Sequence[int], num_classes: int) -> tuple[int, ...]:
    """The dummy batch's shape N x C x H x W from ``image_shape`` (C x H x W is one image),
    checked once against the model with a forward pass of zeros: a shape the model cannot take
    or a ``num_classes`` other than its output is a one-line error naming the argument."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"image_shape must be N x C x H x W or C x H x W, got {tuple(image_shape)}")
    p = next(model.parameters())
    try:
        with torch.no_grad():  # in the model's own mode (train-mode BatchNorm: a copy that tracks nothing)
            out = model(torch.zeros(shape, device=p.device, dtype=p.dtype))
    except RuntimeError as e:
        raise ValueError(f"image_shape {tuple(image_shape)} does not fit the model: {str(e).splitlines()[0]}") from None
    if out.shape != (shape[0], num_classes):
        raise ValueError(f"num_classes={num_classes} but the model outputs {tuple(out.shape[1:])} values per image")
    return shape


def attacker_seed(seed: int) -> int:
    """The seed of the attacker's own randomness (BPDA's draws) in a trial of dummy seed ``seed``."""
    return derived_seed(seed, ATTACKER_STREAM)


@dataclass
class Trial:
    """One engine trial: what it attacks and how its dummy starts. ``label``: the trial's N
    labels, or None to learn a soft dummy label (:func:`~dlg_utils.attack.initial_label`)."""

    target: SharedGradient
    label: torch.Tensor | None = None
    seed: int = 0
    restart: int = 0
    truth: torch.Tensor | None = None
    model: nn.Module | None = None


class Chunk:
    """The state of one batch of trials run together: the model as a function, the stacked
    targets, the optimizer over all dummies, and what each trial has recorded."""

    def __init__(self, model: nn.Module | None, trials: list[Trial], image_shape: Sequence[int],
                 num_classes: int, config: AttackConfig, compile: bool = False, case: Case | None = None):
        self.config, self.trials, T = config, trials, len(trials)
        self.case = case or Case(batch_size=int(image_shape[0]) if len(image_shape) == 4 else 1)
        self.per_trial = model is None
        base = batchnorm_frozen(trials[0].model if self.per_trial else model)
        named = [(n, p) for n, p in base.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.device, self.dtype = named[0][1].device, named[0][1].dtype
        if self.device.type == "cpu":
            keep_freed_memory()  # page faults were 40% of a batched evaluation's time
        if self.per_trial:
            stacked, _ = stack_module_state([batchnorm_frozen(t.model) for t in trials])
            self.params = {n: stacked[n].detach() for n in self.names}
        else:
            self.params = {n: p.detach() for n, p in named}
        # the dummy's update under the case's public training (one step: the gradient); the
        # client's own function (cases.update_function), without the noise the attacker cannot know
        update = update_function(base, self.case)
        self._one = update
        self._many = vmap(update, in_dims=(0 if self.per_trial else None, 0, 0))
        self.shape = check_inputs(base, image_shape, num_classes)  # base: never updates BatchNorm statistics
        self.N, self.K = self.shape[0], num_classes
        if self.N != self.case.batch_size:
            raise ValueError(f"the case's batch size is {self.case.batch_size} but image_shape {self.shape} "
                             f"holds {self.N} images")
        self.nx = int(torch.Size(self.shape).numel())
        self.shift, self.scale = self._space()
        self.targets = self._stack_targets(named)
        if config.redraw_defense and any(t.target.source is None for t in trials):
            raise ValueError("redraw_defense needs the true gradient: share the targets with "
                             "shared_gradient(..., keep_source=True)")
        self._init_dummies()
        # ground truths stacked (zeros where a trial has none), so metrics are one batched call
        self.has_truth = [t.truth is not None for t in trials]
        for t in trials:
            if t.truth is not None and (t.truth.numel() != self.nx or not torch.isfinite(t.truth).all()):
                raise ValueError(f"ground_truth must be {self.nx} finite values (image_shape {self.shape}), got "
                                 f"shape {tuple(t.truth.shape)}" + ("" if torch.isfinite(t.truth).all() else " with NaN/Inf"))
        self.truth = torch.stack([torch.zeros(self.shape) if t.truth is None else t.truth.detach().reshape(self.shape)
                                  for t in trials]).to(self.device, self.dtype)
        # redraw_defense replays the client's own draws (seed 000's simulation); the attacker's
        # BPDA draws its own, from a stream apart from the client's (cases.derived_seed)
        self.generators = [torch.Generator(self.device).manual_seed(t.seed) for t in trials]
        self.attacker_generators = [torch.Generator(self.device).manual_seed(attacker_seed(t.seed)) for t in trials]
        if config.optimizer == "lbfgs":
            self.opt = BatchedLBFGS(self.x0, lr=config.lr, max_iter=config.max_iter,
                                    tolerance_grad=config.tolerance_grad, tolerance_change=config.tolerance_change,
                                    history_size=config.history_size, line_search_fn=config.line_search_fn)
        else:
            self.opt = BatchedAdam(self.x0, lr=config.lr, signed=config.signed, gamma=config.decay,
                                   milestones=[math.floor(config.iterations * f) for f in config.decay_at],
                                   box=self._box() if config.boxed else None, boxed=self.nx,
                                   project_start=self.scale is None)
        self._compiled = self._compile() if compile and config.compilable else None  # else eager
        self._active: tuple | None = None  # (idx, weights, targets) of the last set of active trials
        self.steps = [0] * T
        self.rows: list[list[dict]] = [[] for _ in range(T)]
        self.snaps: list[dict] = [{} for _ in range(T)]
        self.images = self.pixels(self.opt.x[:, : self.nx]).clone()  # each trial's image at its last step, [T, nx]
        self.converged_at: list[int | None] = [None] * T
        self.diverged = [False] * T
        every = config.snapshot_every
        self.snap_at = set(config.snapshot_at) | (
            {*range(0, config.iterations + 1, every), config.iterations} if every else set())

    def _space(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(shift, scale) per entry of the flat image for ``space="normalized"`` (image = shift +
        scale * z, the data's mean and std per channel); (None, None) for pixels."""
        if self.config.space == "pixel":
            return None, None
        C = self.shape[1]
        moments = self.config.moments or AUTHORS_MOMENTS.get(C)
        if moments is None or len(moments[0]) != C:
            raise ValueError(f"space='normalized' needs moments for {C} channels: give AttackConfig.moments "
                             f"(the authors' constants cover {sorted(AUTHORS_MOMENTS)} channels)")
        per = lambda v: torch.tensor(v, dtype=self.dtype, device=self.device).view(1, C, 1, 1).expand(self.shape).flatten()
        return per(moments[0]), per(moments[1])

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        """The images ([..., nx]) of the dummies ``z`` in the attack's space."""
        return z if self.scale is None else self.shift + self.scale * z

    def _box(self) -> tuple:
        """The box [0, 1] of pixels in the attack's space."""
        if self.scale is None:
            return 0.0, 1.0
        return -self.shift / self.scale, (1 - self.shift) / self.scale

    def _stack_targets(self, named) -> Targets:
        grads, low, high = [], [], []
        boxed = self.config.distance == "interval" and any(t.target.bounds is not None for t in self.trials)
        n_params = len(named)
        for t in self.trials:
            if len(t.target.grads) != n_params or any(
                    tuple(g.shape) != tuple(p.shape) for g, (_, p) in zip(t.target.grads, named)):
                raise ValueError("target_grads do not match the model's parameters "
                                 f"({len(t.target.grads)} tensors for {n_params} parameters)")
        for i in range(n_params):
            per = [torch.as_tensor(t.target.grads[i]).to(self.device, self.dtype) for t in self.trials]
            if not all(torch.isfinite(g).all() for g in per):
                raise ValueError("target_grads contain NaN or Inf")
            grads.append(torch.stack(per))
            if boxed:
                bounds = [t.target.bounds[i] if t.target.bounds is not None else (g, g)
                          for t, g in zip(self.trials, per)]
                low.append(torch.stack([torch.as_tensor(b[0]).to(self.device, self.dtype) for b in bounds]))
                high.append(torch.stack([torch.as_tensor(b[1]).to(self.device, self.dtype) for b in bounds]))
        # only the box distance reads the bounds: elsewhere they are the targets themselves, not
        # two more copies (for 256 ResNet-18 trials each copy is 11 GB)
        return Targets(grads, low, high) if boxed else Targets(grads, grads, grads)

    def _init_dummies(self) -> None:
        """Image then (to learn it) label from N(0, 1) with each trial's seed, the ``restart``-th
        draw of that generator; a fixed label's slot stays 0 and gets no gradient."""
        x0, learn, onehot, self.fixed = [], [], [], []
        ny = self.N * self.K
        for t in self.trials:
            lab = t.label
            gen = torch.Generator().manual_seed(int(t.seed))
            for _ in range(t.restart + 1):
                x = torch.randn(self.shape, generator=gen).flatten()
                y = torch.randn((self.N, self.K), generator=gen).flatten() if lab is None else torch.zeros(ny)
            if lab is not None:
                lab = torch.as_tensor(lab).long().reshape(-1).cpu()
                if len(lab) != self.N:
                    raise ValueError(f"{len(lab)} labels for a batch of {self.N} images (image_shape {self.shape})")
                if not ((0 <= lab) & (lab < self.K)).all():
                    raise ValueError(f"labels {lab.tolist()} out of range for num_classes={self.K}")
            self.fixed.append(lab)
            x0.append(torch.cat([x, y]))
            learn.append(lab is None)
            onehot.append(F.one_hot(lab, self.K) if lab is not None else torch.zeros(self.N, self.K))
        self.x0 = torch.stack(x0).to(self.device, self.dtype)
        self.learn = torch.tensor(learn, device=self.device)
        self.onehot = torch.stack(onehot).to(self.device, self.dtype)

    def objective(self, flat: torch.Tensor, params: dict, target: Targets, learn: torch.Tensor,
                  onehot: torch.Tensor, trials: list[int] | None = None):
        """(sum of the objectives, (distance, objective) per trial) at dummies ``flat`` [n, ...]
        of trials whose weights, targets and labels are given: the function :meth:`evaluate`
        differentiates. ``trials`` (indices) only for a defense applied straight through."""
        config, n = self.config, len(flat)
        z = flat[:, : self.nx]
        x = self.pixels(z).view(n, *self.shape)
        probs = torch.where(learn[:, None, None], F.softmax(flat[:, self.nx:].reshape(n, self.N, self.K), -1), onehot)
        if n == 1 and not self.per_trial and self._compiled is None:  # a lone trial skips vmap's overhead
            g = self._one(params, x[0], probs[0])
            dummy = [g[name][None] for name in self.names]
        else:
            g = self._many(params, x, probs)
            dummy = [g[name] for name in self.names]
        if config.straight_through:
            dummy = self._straight_through(dummy, trials)
        if config.masked:
            dummy = masked(dummy, target)
        distance = DISTANCES[config.distance](dummy, target)
        # the prior on the optimised variable: the image, or z (Inverting Gradients' TV in the normalisation)
        objective = distance + config.tv * total_variation(z.view(n, *self.shape)) if config.tv else distance
        return objective.sum(), (distance.detach(), objective.detach())

    def _compile(self) -> Callable:
        """:meth:`objective` and its gradient as one torch.compile'd function of all T trials."""
        return torch.compile(grad_and_value(self.objective, has_aux=True), dynamic=False)

    def evaluate(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(distance, objective, gradient of the objective) at the dummies of trials ``idx``.
        Compiled, every trial is evaluated (one graph for the chunk) and ``idx`` selected."""
        if self._compiled is not None:
            gradient, (_, (distance, objective)) = self._compiled(self.opt.x, self.params, self.targets, self.learn,
                                                                   self.onehot)
            return distance[idx], objective[idx], gradient[idx]
        flat = self.opt.x[idx].detach().requires_grad_(True)
        params, target = self._active_inputs(idx)
        if self.config.redraw_defense:
            target = self._redrawn(idx.tolist())
        with torch.enable_grad():
            total, (distance, objective) = self.objective(flat, params, target, self.learn[idx], self.onehot[idx],
                                                          idx.tolist())
            gradient, = torch.autograd.grad(total, flat)
        return distance, objective, gradient

    def _active_inputs(self, idx: torch.Tensor) -> tuple[dict, Targets]:
        """The weights and targets of the active trials ``idx``: the chunk's own when every trial
        is active, else copies, made once per set of active trials (which changes only when a
        trial leaves) and not at every evaluation."""
        if len(idx) == len(self.trials):  # idx: sorted and distinct, so every trial
            return self.params, self.targets
        if self._active is None or not torch.equal(self._active[0], idx):
            self._active = None  # free the previous copies before making the next
            params = {k: v[idx] for k, v in self.params.items()} if self.per_trial else self.params
            targets = None if self.config.redraw_defense else self.targets.select(idx)  # redrawn each time
            self._active = (idx, params, targets)
        return self._active[1], self._active[2]

    def _redrawn(self, trials: list[int]) -> Targets:
        """Each trial's defense applied anew to its true gradient (seed 000's closure)."""
        rows = [self.trials[t].target.defense([g.to(self.device, self.dtype) for g in self.trials[t].target.source],
                                              self.generators[t]) for t in trials]
        grads = [torch.stack(parts) for parts in zip(*rows)]
        return Targets(grads, grads, grads)

    def _straight_through(self, dummy: list[torch.Tensor], trials: list[int]) -> list[torch.Tensor]:
        rows = []
        for j, t in enumerate(trials):
            mine = [d[j] for d in dummy]
            if all(torch.isfinite(d).all() for d in mine):  # a diverging trial passes as it is
                mine = straight_through(self.trials[t].target.defense, mine, self.attacker_generators[t])
            rows.append(mine)
        return [torch.stack(parts) for parts in zip(*rows)]

    def result(self, t: int, seconds: float) -> AttackResult:
        fixed = self.fixed[t]
        label = self.opt.x[t, self.nx:].view(self.N, self.K).argmax(-1) if fixed is None else fixed
        trial = self.trials[t]
        image = self.images[t].view(self.shape).to("cpu", copy=True)
        return AttackResult(image=image, label=label.cpu(), history=pd.DataFrame(self.rows[t]),
                            snapshots=self.snaps[t], converged=self.converged_at[t] is not None,
                            diverged=self.diverged[t], converged_at=self.converged_at[t], seed=int(trial.seed),
                            seconds=seconds, restart=trial.restart, cost_seconds=float(self.cost[t]))

    def run(self, bar, on_result: Callable[[int, AttackResult], None]) -> None:
        """Advance every trial to the end; ``on_result(t, result)`` as each one finishes.

        The bookkeeping of the trials that start a step is batched: one transfer of their
        distances to the host, one copy of their images, one batch of snapshots and of image
        metrics per evaluation, whatever the number of trials (on a GPU each per-trial read
        would be a synchronisation)."""
        config, T = self.config, len(self.trials)
        active = torch.ones(T, dtype=torch.bool, device=self.device)
        start = last = time.perf_counter()
        self.cost = [0.0] * T  # each trial's share of the time: every step's split among the trials it advanced

        def finish(t: int) -> None:
            active[t] = False
            bar.update(config.iterations - max(self.steps[t] - 1, 0))  # the iterations it skipped
            on_result(t, self.result(t, time.perf_counter() - start))

        while active.any():
            idx = active.nonzero().squeeze(1)
            distance, objective, g = self.evaluate(idx)
            now = time.perf_counter()  # this step (and the bookkeeping of the last), split among its trials
            for t in idx.tolist():
                self.cost[t] += (now - last) / len(idx)
            last = now
            full = lambda v: torch.zeros(T, dtype=self.dtype, device=self.device).index_copy(0, idx, v)
            full_distance, full_objective = full(distance), full(objective)
            full_grad = torch.zeros_like(self.opt.x).index_copy(0, idx, g)
            starting = (active & self.opt.starts_step).nonzero().squeeze(1)
            if len(starting):
                finite = torch.isfinite(full_objective[starting]) & torch.isfinite(self.opt.x[starting]).all(-1)
                self._record(starting, finite, full_distance[starting], bar, finish)
            self.opt.tick(full_objective, full_grad, active)

    def _record(self, starting: torch.Tensor, finite: torch.Tensor, distance: torch.Tensor, bar,
                finish: Callable[[int], None]) -> None:
        """The start of a step for trials ``starting``: a diverged trial ends; the others count
        an iteration, keep their image, and record, snapshot, converge or end as configured."""
        config = self.config
        kept = starting[finite]
        self.images[kept] = self.pixels(self.opt.x[kept, : self.nx])
        recorded, snapped, done, counted = [], [], [], 0
        for t, ok, value in zip(starting.tolist(), finite.tolist(), distance.tolist()):
            if not ok:
                self.diverged[t] = True
                finish(t)
                continue
            k = self.steps[t]
            self.steps[t] += 1
            if self.converged_at[t] is None and value < config.grad_threshold:
                self.converged_at[t] = k
            last = k == config.iterations or (config.stop_when_converged and self.converged_at[t] is not None)
            if k % config.record_every == 0 or last:
                self.rows[t].append({"iteration": k, "grad_distance": value})
                recorded.append(t)
            if k in self.snap_at:
                snapped.append((t, k))
            counted += k > 0
            if last:
                done.append(t)
        if snapped:
            trials = torch.tensor([t for t, _ in snapped], device=self.device)
            for (t, k), image in zip(snapped, self.images[trials].clamp(0, 1).cpu().unbind()):
                self.snaps[t][k] = image.view(self.shape).clone()  # its own storage, not the batch's
        self._add_image_metrics(recorded)
        bar.update(counted)
        for t in done:
            finish(t)

    def _add_image_metrics(self, trials: list[int]) -> None:
        with_truth = [t for t in trials if self.has_truth[t]]
        if with_truth:
            rows = torch.tensor(with_truth, device=self.device)
            x = self.images[rows].view(len(rows), *self.shape)
            for t, metrics in zip(with_truth, image_table(x, self.truth[rows])):
                self.rows[t][-1].update(metrics)


def best_restart(results: Sequence[AttackResult]) -> AttackResult:
    """The restart with the lowest final distance (Inverting Gradients' choice); diverged
    restarts only if all diverged."""
    finite = [r for r in results if not r.diverged and len(r.history)]
    pool = finite or list(results)
    return min(pool, key=lambda r: float(r.final["grad_distance"]) if len(r.history) else math.inf)
