"""Gradient leakage attacks: Deep Leakage from Gradients (Zhu et al. 2019), iDLG (Zhao et al.
2020), Inverting Gradients (Geiping et al. 2020) and a defense-aware attacker, all run by one
batched engine (:mod:`~dlg_utils.engine`).

:func:`dlg` follows the original DLG loop: a dummy image and dummy label drawn from N(0, 1),
soft-label cross-entropy, the gradient distance sum_l ||grad'_l - grad_l||^2, and L-BFGS
(lr 1, history 100, max_iter 20 per step) with exactly ``torch.optim.LBFGS``'s algorithm.
Given a label it is iDLG. :func:`dlg_batch` runs many independent trials in one batched
computation; a single trial is the batch of one. ``attack="ig"`` / ``"adaptive"`` (or any
:class:`~dlg_utils.attacks.AttackConfig`) runs the other attacks through the same engine. The
shared gradient comes from :func:`~dlg_utils.cases.shared_gradient`.

Models with BatchNorm: the attack evaluates the model functionally in the mode it is in. In
eval mode BatchNorm uses its running statistics. In train mode it normalises with the dummy
batch's own statistics and leaves the running statistics untouched (the attacker must not
change the model); a batch of one image then needs spatial size > 1 at every BatchNorm.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .attacks import LABEL_SOURCES, AttackConfig, attack_config
from .cases import shared_gradient
from .config import progress_enabled
from .defenses import Defense, NoDefense, SharedGradient
from .engine import AttackResult, Chunk, Trial, best_restart
from .objectives import Targets, correlation, l2


def target_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     defense: Defense | str | None = None,
                     generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The gradient a client shares: d CE(model(x), y) / d parameters, one tensor per parameter
    (x a batch N x C x H x W in [0, 1], y N integer labels), after ``defense`` (drawn once)."""
    return shared_gradient(model, x, y, defense, generator).grads


def idlg_label(target_grads: Sequence[torch.Tensor], source: str = "weight") -> int:
    """iDLG's label of a single-image gradient: the class whose row of the last linear layer's
    weight gradient sums to the most negative value (softmax(z)_c - 1 < 0 times non-negative
    features). ``source="bias"`` reads the last bias gradient, softmax(z) - onehot, whose only
    negative entry is the label whatever the sign of the features (tanh networks, LeNet-5)."""
    if source not in LABEL_SOURCES:
        raise ValueError(f"source must be one of {LABEL_SOURCES}, got {source!r}")
    dim = 1 if source == "bias" else 2
    found = [g for g in target_grads if g.dim() == dim]
    if not found:
        raise ValueError(f"no {'1-D (bias)' if dim == 1 else '2-D (linear layer weight)'} gradient found for iDLG")
    return int(found[-1].argmin() if dim == 1 else found[-1].sum(dim=-1).argmin())




def initial_label(config: AttackConfig, given, grads: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The one decision of how a trial's label is found: ``given`` labels (an int, a tensor of
    N labels) are used as they are; ``"idlg"``, or no label under an attack whose ``label`` is
    ``"idlg"``, reads it from the shared gradient (:func:`idlg_label` with the attack's
    ``label_source``); otherwise ``None``: the attack learns a soft dummy label (DLG)."""
    if given is None and config.label == "learn":
        return None
    if given is None or (isinstance(given, str) and given == "idlg"):
        return torch.tensor([idlg_label(grads, config.label_source)])
    if isinstance(given, str):
        raise ValueError(f"label must be an int, a tensor of labels, 'idlg' or None, got {given!r}")
    return torch.as_tensor(given).long().reshape(-1).cpu()


def _one_trial(fn, dummy_grads: Iterable[torch.Tensor], target_grads: Iterable[torch.Tensor]) -> torch.Tensor:
    target = [t[None] for t in target_grads]
    return fn([d[None] for d in dummy_grads], Targets(target, target, target))[0]


def gradient_distance(dummy_grads: Iterable[torch.Tensor], target_grads: Iterable[torch.Tensor]) -> torch.Tensor:
    """DLG's objective: the sum over layers of the squared differences."""
    return _one_trial(l2, dummy_grads, target_grads)


def correlation_distance(dummy_grads: Iterable[torch.Tensor], target_grads: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum over layers of 1 - Pearson correlation (see :func:`~dlg_utils.objectives.correlation`)."""
    return _one_trial(correlation, dummy_grads, target_grads)


def _trial_list(value, count: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries for {count} trials")
        return list(value)
    return [value] * count


def _as_shared(target) -> SharedGradient:
    """A plain list of tensors is a gradient shared without a (known) defense."""
    return target if isinstance(target, SharedGradient) else SharedGradient(list(target), NoDefense())


def dlg_batch(models: nn.Module | Sequence[nn.Module], targets: Sequence, *, image_shape: Sequence[int],
              num_classes: int, labels=None, seeds: Sequence[int] | int = 0, ground_truths=None,
              attack: str | AttackConfig | Sequence = "dlg", chunk_size: int = 64, progress: bool | None = None,
              on_result: Callable[[int, AttackResult], None] | None = None, compile: bool = False,
              **settings) -> list[AttackResult]:
    """Run T = len(targets) independent attack trials at once; returns one
    :class:`AttackResult` per trial. With the default ``attack="dlg"`` each is the same (to
    floating-point tolerance) as a separate DLG run with ``torch.optim.LBFGS``.

    models: one model (shared weights) or T models of one architecture (per-trial weights).
    targets: T shared gradients: lists of tensors, or :class:`SharedGradient` (which also
    carries the defense and its box, for ``attack="adaptive"``). labels / seeds /
    ground_truths / attack: one value for all trials or a list of T (see :func:`dlg`). attack: a name of
    :data:`~dlg_utils.attacks.ATTACKS` (``"dlg"``, ``"idlg"``, ``"ig"``), an
    :class:`~dlg_utils.attacks.AttackConfig`, or ``"adaptive"`` (the defense-aware attacker,
    chosen per trial's defense: pass :class:`SharedGradient` targets). ``settings``: fields of :class:`AttackConfig` that
    override the attack's (``iterations``, ``max_iter``, ``distance``, ``line_search_fn``,
    ``restarts``...). Trials run ``chunk_size`` at a time (restarts count as trials);
    finished trials leave the batch, and ``on_result(index, result)`` is called as each one
    finishes (to save it at once). ``compile``: evaluate each chunk as one ``torch.compile``'d
    graph of all its trials (the same values to float tolerance; measured 1.5x faster
    evaluations for 64 LeNet trials on 2 CPU cores, after a compile of 5-20 s per chunk shape);
    attacks that are not :attr:`~dlg_utils.attacks.AttackConfig.compilable` run eager.
    """
    T = len(targets)
    if T == 0:
        return []
    shared = [_as_shared(t) for t in targets]
    labels, seeds = _trial_list(labels, T, "labels"), _trial_list(seeds, T, "seeds")
    truths = _trial_list(ground_truths, T, "ground_truths")
    model_list = _trial_list(models, T, "models") if isinstance(models, (list, tuple)) else None
    configs = [attack_config(a, s.defense, **settings) for a, s in zip(_trial_list(attack, T, "attack"), shared)]
    labels = [initial_label(c, label, s.grads) for c, label, s in zip(configs, labels, shared)]
    # configs are equal when they run the same computation (name and label source aside): DLG
    # and iDLG trials, say, share a batch
    groups: dict[AttackConfig, list[int]] = {}
    for t, config in enumerate(configs):
        groups.setdefault(config, []).append(t)
    results: list[AttackResult | None] = [None] * T
    show = progress_enabled() if progress is None else progress
    names = sorted({c.name for c in configs})
    bar = tqdm(total=sum(c.iterations * c.restarts for c in configs), desc=f"{'+'.join(names).upper()} x{T}",
               disable=not show, unit="it", mininterval=2)
    for config, members in groups.items():
        runs = [Trial(shared[t], labels[t], int(seeds[t]), r, truths[t], model_list[t] if model_list else None)
                for t in members for r in range(config.restarts)]
        owner = [t for t in members for _ in range(config.restarts)]
        finished: dict[int, list[AttackResult]] = {}
        for lo in range(0, len(runs), chunk_size):
            part = runs[lo:lo + chunk_size]

            def done(j: int, result: AttackResult, lo=lo, config=config) -> None:
                t = owner[lo + j]
                finished.setdefault(t, []).append(result)
                if len(finished[t]) == config.restarts:
                    results[t] = best_restart(finished.pop(t))
                    results[t].attack = configs[t].name
                    if on_result is not None:
                        on_result(t, results[t])

            Chunk(None if model_list else models, part, image_shape, num_classes, config, compile=compile).run(bar, done)
    bar.close()
    return results


def dlg(model: nn.Module, target_grads: Sequence[torch.Tensor] | SharedGradient, *, image_shape: Sequence[int],
        num_classes: int, iterations: int | None = None, label: int | torch.Tensor | str | None = None,
        seed: int = 0, ground_truth: torch.Tensor | None = None, **kwargs) -> AttackResult:
    """Reconstruct the batch behind ``target_grads`` by matching gradients (DLG): one trial.

    image_shape: N x C x H x W (or C x H x W for one image). label: ``None`` learns a soft dummy
    label (DLG); an int / tensor of N labels fixes it (iDLG); ``"idlg"`` extracts it with
    :func:`~dlg_utils.attacks.idlg_label`. seed: draws the dummy image, then the dummy label, from N(0, 1).
    iterations: L-BFGS steps (seed 000: 100, DLG: 300, seed 002: 1200), each of up to
    ``max_iter`` (20) evaluations; ``lr`` (1), ``history_size`` (100), ``tolerance_grad``,
    ``tolerance_change`` as in ``torch.optim.LBFGS``. Snapshots (clamped to [0, 1]) every
    ``snapshot_every`` (10) iterations and at ``snapshot_at``. ``converged`` once the gradient
    distance falls below ``grad_threshold`` (1e-4, seed 002; ``stop_when_converged`` ends the
    run there); ``diverged`` (and the run stops, keeping the last finite image) on NaN or Inf.
    Other keywords go to :func:`dlg_batch` (``attack="ig"`` runs Inverting Gradients).
    """
    if iterations is not None:
        kwargs["iterations"] = iterations
    return dlg_batch(model, [target_grads], image_shape=image_shape, num_classes=num_classes,
                     labels=[label], seeds=[seed], ground_truths=[ground_truth], **kwargs)[0]
