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

import warnings
from dataclasses import fields
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .attacks import LABEL_COUNTS, LABEL_SOURCES, AttackConfig, attack_config
from .cases import Case, ServerView, shared_gradient
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




def count_labels(target_grads: Sequence[torch.Tensor], n: int, method: str = "bias-corrected") -> torch.Tensor:
    """The ``n`` labels of a batch's gradient (or FedAvg update: a sum of gradients), counted
    from the last layer; sorted, since a count has no order.

    ``"bias-corrected"`` (breaching's default): the last bias gradient is the batch's mean of
    softmax - onehot; every class with a negative entry is in the batch; the mean negative
    entry per image, m = sum of the negative entries / n, is the impact of one image, taken off
    each found class; the remaining labels go one at a time to the most negative entry, which
    loses m each time. ``"wainakh-simple"`` (Wainakh et al. 2022): the same two stages on the
    last weight gradient summed over its inputs, with impact m = sum of the negative entries *
    (1 + 1/K) / n (breaching's code decrements a stale index in stage 2; we decrement the chosen
    class). Both assume one layer of non-negative features for the weight rule and a last bias
    for the bias rule. With no negative entry at all there is nothing to count: a warning, and
    the ``n`` smallest entries (cycling)."""
    if method not in LABEL_COUNTS:
        raise ValueError(f"label counting method must be one of {LABEL_COUNTS}, got {method!r}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    dim = 1 if method == "bias-corrected" else 2
    found = [g for g in target_grads if g.dim() == dim]
    if not found:
        raise ValueError(f"no {'1-D (bias)' if dim == 1 else '2-D (linear layer weight)'} gradient for {method!r}")
    g = (found[-1] if dim == 1 else found[-1].sum(dim=-1)).detach().double().cpu().clone()
    K = len(g)
    negative = (g < 0).nonzero().flatten()
    negative = negative[g[negative].argsort()][:n]  # the most negative first, at most n of them
    labels = negative.tolist()
    impact = float(g[g < 0].sum()) / n * ((1 + 1 / K) if dim == 2 else 1.0)
    if not len(negative):  # nothing to count from (a defense zeroed or shifted the layer): a spread guess
        warnings.warn(f"count_labels: no negative entry in the last layer's gradient ({method}); returning the "
                      f"{n} smallest entries, cycling", stacklevel=2)
        order = g.argsort().tolist()
        return torch.tensor(sorted(order[k % K] for k in range(n)))
    g[negative] -= impact
    while len(labels) < n:
        chosen = int(g.argmin())
        labels.append(chosen)
        g[chosen] -= impact
    return torch.tensor(sorted(labels))


def initial_label(config: AttackConfig, given, grads: Sequence[torch.Tensor], n: int = 1) -> torch.Tensor | None:
    """The one decision of how a trial's labels are found: ``given`` labels (an int, a tensor
    of ``n`` labels) are used as they are; ``"idlg"``, or none given under an attack whose
    ``label`` is ``"idlg"``, reads them from the shared update: one image by :func:`idlg_label`
    with the attack's ``label_source``, a batch by :func:`count_labels` with its
    ``label_count``; otherwise ``None``: the attack learns soft dummy labels (DLG)."""
    if given is None and config.label == "learn":
        return None
    if given is None or (isinstance(given, str) and given == "idlg"):
        if n > 1:
            return count_labels(grads, n, config.label_count)
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
              cases: Case | Sequence[Case] | None = None, **settings) -> list[AttackResult]:
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
    ``cases``: the public training of each trial's update (:class:`~dlg_utils.cases.Case`: its
    batch size must be the N of ``image_shape``); None is one gradient of the N images. The
    attacker unrolls it on its dummy batch.
    """
    T = len(targets)
    if T == 0:
        return []
    shared = [_as_shared(t) for t in targets]
    labels, seeds = _trial_list(labels, T, "labels"), _trial_list(seeds, T, "seeds")
    truths = _trial_list(ground_truths, T, "ground_truths")
    model_list = _trial_list(models, T, "models") if isinstance(models, (list, tuple)) else None
    n = int(image_shape[0]) if len(image_shape) == 4 else 1
    case_list = [c or Case(batch_size=n) for c in _trial_list(cases, T, "cases")]
    configs = [attack_config(a, s.defense, c.dp is not None, **settings)
               for a, s, c in zip(_trial_list(attack, T, "attack"), shared, case_list)]
    labels = [initial_label(c, label, s.grads, n) for c, label, s in zip(configs, labels, shared)]
    # configs are equal when they run the same computation (name and label source aside): DLG
    # and iDLG trials, say, share a batch; trials of one batch also share the case's training
    groups: dict[tuple, list[int]] = {}
    for t, config in enumerate(configs):
        groups.setdefault((config, case_list[t]), []).append(t)
    results: list[AttackResult | None] = [None] * T
    show = progress_enabled() if progress is None else progress
    names = sorted({c.name for c in configs})
    bar = tqdm(total=sum(c.iterations * c.restarts for c in configs), desc=f"{'+'.join(names).upper()} x{T}",
               disable=not show, unit="it", mininterval=2)
    for (config, case), members in groups.items():
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
                    runs_of_t = finished.pop(t)
                    results[t] = best_restart(runs_of_t)
                    results[t].cost_seconds = sum(r.cost_seconds for r in runs_of_t)  # every restart was paid for
                    results[t].attack = configs[t].name
                    if on_result is not None:
                        on_result(t, results[t])

            Chunk(None if model_list else models, part, image_shape, num_classes, config, compile=compile,
                  case=case).run(bar, done)
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


def attack_view(view: ServerView, attack: str | AttackConfig = "ig", *, seed: int = 0, labels=None,
                progress: bool | None = None, **settings) -> AttackResult:
    """Attack what a server received (:class:`~dlg_utils.cases.ServerView`): B dummy images
    matched jointly against the update, through the case's local training (FedAvg's steps
    unrolled, DP-SGD's clipping applied to the dummy's per-example gradients). The labels are
    counted from the update unless given (by the attack's ``label``). Nothing here can see the
    client's data: ``settings`` are :class:`~dlg_utils.attacks.AttackConfig` fields only; score
    the result with :func:`~dlg_utils.metrics.score_batch` and the secret."""
    if not isinstance(view, ServerView):
        raise TypeError(f"attack_view takes a ServerView (cases.client_update), got {type(view).__name__}")
    allowed = {f.name for f in fields(AttackConfig)}
    if set(settings) - allowed:  # no way in for ground truth, or anything but the attack's settings
        raise TypeError(f"attack_view takes AttackConfig fields as settings, not {sorted(set(settings) - allowed)}")
    B = view.case.batch_size
    return dlg_batch(view.model, [view.update], image_shape=(B, *view.image_shape), num_classes=view.num_classes,
                     labels=[labels], seeds=[seed], attack=attack, cases=[view.case], progress=progress,
                     **settings)[0]
