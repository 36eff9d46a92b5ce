"""Federated training at an operating point, simulated in one process: the accuracy a defense
costs in the setting its privacy is measured in (batch size B per update, E local steps,
DP-SGD, the defense on every client's update).

Every round each of ``clients`` IID clients takes its next B images (cycling through its shard),
computes its update with the function the attacker unrolls
(:func:`~dlg_utils.cases.update_function`: E SGD steps, DP-SGD's clipping and noise), sends it
through the defense (the values :meth:`~dlg_utils.defenses.Defense.share` sends), and
the server averages the updates and steps the global model by ``local_lr`` times the mean
(FedAvg; FedSGD for E = 1), with server momentum (FedAvgM, Hsu et al. 2019) when
``server_momentum`` > 0. The clients run as one vmapped computation: a round of B = 1 costs
milliseconds, where Flower's simulation pays a message round trip per client; the arithmetic
is FedAvg's, tested against torch.optim.SGD (tests/test_fedsim.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from .cases import CLIENT_STREAM, Case, derived_seed, update_function
from .defenses import defense_from_spec
from .training import evaluate


@dataclass(frozen=True)
class FedRun:
    """One simulated federated training run: ``clients`` clients, each update from the client's
    next ``case.batch_size`` images, for ``epochs`` passes over the training set in all;
    ``seed`` draws the initial weights (DLG's LeNet init, as the attacked checkpoints' run),
    the split into shards and the clients' randomness. ``evaluations``: test accuracy at this
    many evenly spaced rounds (the last included)."""

    clients: int = 15
    epochs: float = 2.0
    server_momentum: float = 0.9
    seed: int = 0
    evaluations: int = 4

    def __post_init__(self):
        if self.clients < 1 or not self.epochs > 0 or not 0 <= self.server_momentum < 1 or self.evaluations < 1:
            raise ValueError(f"need clients >= 1, epochs > 0, server_momentum in [0, 1), evaluations >= 1: {self}")

    def rounds(self, case: Case, examples: int) -> int:
        """Rounds that pass over ``epochs`` x ``examples`` images, B per client per round."""
        return max(1, math.ceil(self.epochs * examples / (self.clients * case.batch_size)))


def client_updates(model: nn.Module, case: Case, params: dict[str, torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor, num_classes: int, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Each client's update (undefended): ``x`` is clients x B x C x H x W, ``y`` clients x B.
    Without DP, or with DP and one local step (the noise then adds to the clipped sum), all
    clients run as one vmapped call; DP with several steps draws its noise step by step, one
    client at a time."""
    fn = update_function(model, case)
    probs = F.one_hot(y, num_classes).to(x.dtype)
    if case.dp is None or case.local_steps == 1:
        batched = vmap(lambda xb, pb: fn(params, xb, pb), in_dims=(0, 0))(x, probs)
        out = [{n: v[k] for n, v in batched.items()} for k in range(len(x))]
        if case.dp is not None and case.dp.noise > 0:  # one step: update = (clipped sum + sigma C z) / B
            scale = case.dp.noise * case.dp.clip / case.batch_size
            out = [{n: v + scale * torch.randn(v.shape, generator=generator, dtype=v.dtype, device=v.device)
                    for n, v in u.items()} for u in out]
        return out
    noise = lambda name, shape: torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    return [fn(params, x[k], probs[k], noise) for k in range(len(x))]


def train_federated(model: nn.Module, case: Case, train: tuple[torch.Tensor, torch.Tensor],
                    test: tuple[torch.Tensor, torch.Tensor], run: FedRun = FedRun(),
                    progress: bool = False) -> pd.DataFrame:
    """Train ``model`` (in place) by simulated FedAvg in the setting of ``case`` (its B, E,
    local lr, momentum, DP-SGD and defense) on ``train`` = (images, labels) split IID into
    ``run.clients`` shards; returns the test curve: round, images seen, test loss and accuracy,
    seconds."""
    from tqdm.auto import tqdm
    images, labels = train
    if len(images) < run.clients * case.batch_size:
        raise ValueError(f"{len(images)} training images cannot give {run.clients} clients {case.batch_size} each")
    K = int(labels.max()) + 1
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(run.seed))
    shards = [s for s in torch.tensor_split(order, run.clients)]
    shortest = min(len(s) for s in shards)
    rounds = run.rounds(case, len(images))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    buffer = None
    gen = torch.Generator(images.device).manual_seed(derived_seed(run.seed, CLIENT_STREAM))
    marks = {int(round(rounds * (k + 1) / run.evaluations)) for k in range(run.evaluations)}
    curve, start, B = [], time.perf_counter(), case.batch_size
    defense = defense_from_spec(case.defense)  # its values, as share() sends them (the box is the attacker's)

    def record(r: int) -> None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in params:
                    p.copy_(params[n])
        loss, accuracy = evaluate(model, test)
        curve.append({"round": r, "images": r * run.clients * B, "test_loss": loss, "test_accuracy": accuracy,
                      "seconds": time.perf_counter() - start})

    for r in tqdm(range(1, rounds + 1), desc=f"FedAvg {case.describe()}", disable=not progress, mininterval=5):
        pos = [((r - 1) * B + torch.arange(B)) % shortest for _ in shards]
        idx = torch.stack([s[p] for s, p in zip(shards, pos)]).to(images.device)
        updates = client_updates(model, case, params, images[idx], labels[idx], K, gen)
        shared = [defense([u[n] for n in names], gen) for u in updates]
        mean = [torch.stack(parts).mean(0) for parts in zip(*shared)]
        if not all(torch.isfinite(m).all() for m in mean):
            raise FloatingPointError(f"round {r}: the averaged update is not finite ({case.describe()})")
        buffer = mean if buffer is None or not run.server_momentum else \
            [run.server_momentum * b + m for b, m in zip(buffer, mean)]
        params = {n: params[n] - case.local_lr * b for n, b in zip(names, buffer)}
        if r in marks:
            record(r)
    return pd.DataFrame(curve)


def utility_row(run: FedRun, case: Case, train, test, model: nn.Module) -> dict:
    """What a stored utility trial keeps: the curve, the final accuracy and the wall seconds."""
    start = time.perf_counter()
    curve = train_federated(model, case, train, test, run)
    return {"curve": curve.to_dict("records"), "accuracy": float(curve["test_accuracy"].iloc[-1]),
            "seconds": time.perf_counter() - start, "rounds": int(curve["round"].iloc[-1]), **asdict(run)}


def paired_drops(acc: pd.DataFrame, by: list[str], baseline: str = "none", level: float = 0.95,
                 limit: float = 0.01) -> pd.DataFrame:
    """Per group of ``by`` and defense: mean accuracy, the drop against ``baseline`` paired by
    seed with its t-interval at ``level`` and at the Bonferroni level of the group's family
    (every defense of the group compared with the baseline), the Holm-adjusted p-value of
    "no drop", and the verdict "free" (adjusted upper bound <= ``limit``), "costs" (adjusted
    lower bound > ``limit``) or "open", with the seeds an open verdict would need at the drop's
    observed mean and spread (:func:`~dlg_utils.stats.samples_to_settle`). Intervals are cut to
    the values an accuracy in [0, 1] allows (a t-interval of few seeds, one of them at chance,
    can reach past them). ``acc``: columns ``by``, defense, seed, accuracy."""
    from scipy.stats import ttest_1samp

    from .stats import holm, samples_to_settle, t_interval
    out = []
    for key, g in acc.groupby(by, sort=False):
        base = g[g["defense"] == baseline].set_index("seed")["accuracy"]
        others = [d for d in g["defense"].unique() if d != baseline]
        family = max(len(others), 1)
        rows = []
        for defense, h in g.groupby("defense", sort=False):
            mine = h.set_index("seed")["accuracy"]
            seeds = mine.index.intersection(base.index)
            drop = (base[seeds] - mine[seeds]).to_numpy()
            room = (float(base[seeds].mean()) - 1, float(base[seeds].mean()))  # the drops an accuracy allows
            mean, lo, hi = t_interval(drop, level)
            _, alo, ahi = t_interval(drop, 1 - (1 - level) / family)
            (lo, hi), (alo, ahi) = (np.clip((lo, hi), *room), np.clip((alo, ahi), *room))
            p = float(ttest_1samp(drop, 0).pvalue) if len(drop) > 1 and drop.std() > 0 else float("nan")
            _, acc_lo, acc_hi = np.clip(t_interval(mine.to_numpy(), level), 0.0, 1.0)
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "defense": defense,
                         "seeds": len(mine), "accuracy": float(mine.mean()), "accuracy low": acc_lo,
                         "accuracy high": acc_hi, "drop": mean, "drop low": lo, "drop high": hi,
                         "adjusted low": alo, "adjusted high": ahi, "p": p,
                         "seeds to settle": samples_to_settle(drop, limit, 1 - (1 - level) / family)})
        tested = [r for r in rows if r["defense"] != baseline and not np.isnan(r["p"])]
        for r, q in zip(tested, holm([r["p"] for r in tested])):
            r["p holm"] = q
        for r in rows:
            r.setdefault("p holm", float("nan"))
            r["cost verdict"] = ("baseline" if r["defense"] == baseline else "free" if r["adjusted high"] <= limit
                                 else "costs" if r["adjusted low"] > limit else "open")
        out += rows
    return pd.DataFrame(out)
