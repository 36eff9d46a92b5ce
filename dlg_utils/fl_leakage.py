"""Seed 001's leakage study (Fig. 1-4): what a gradient leakage attacker gets from each view
of a federated client's quantized update, attacked through the one attack pipeline
(:func:`~dlg_utils.experiments.run_attacks`).

Imports the codec (:mod:`~dlg_utils.codec`), :mod:`~dlg_utils.attack` and
:mod:`~dlg_utils.experiments`; nothing of the Flower system (:mod:`~dlg_utils.federated`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .attacks import AttackConfig
from .attack import target_gradients
from .codec import Policy, as_policy, decode_update, encode_update, wrong_modes
from .defenses import NoDefense, SharedGradient
from .experiments import AttackTrial, Execution, Prepared, RowOptions, run_attacks
from .storage import tensor_digest


def one_step_update(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> dict[str, np.ndarray]:
    """The update a client sends after one SGD step of size ``lr`` on the batch (x, y):
    ``-lr`` times the gradient. This is the setting gradient leakage attacks need (seed 001's
    Fig. 1 and 2); an update of many steps over many images mixes them."""
    grads = target_gradients(model, x, y)
    return {n: (-lr * g).numpy() for (n, _), g in zip(model.named_parameters(), grads)}


ATTACK_VIEWS = {
    "plain": "the float32 update of base FL",
    "sent": "the quantized update as it travels: its integers read as numbers (no ranges, no modes)",
    "server": "dequantized with the right modes: what the server averages (Fig. 3)",
    "wrong-mode": "dequantized with a wrong mode for every tensor (Fig. 4; see wrong_modes)",
    "guess": "dequantized with MIN_COMBINED for every tensor, using the ranges in the message",
}


def attacker_views(update: dict[str, np.ndarray], policy: Policy, lr: float) -> dict[str, list[torch.Tensor]]:
    """The gradients (update / -lr) an attacker obtains in each of :data:`ATTACK_VIEWS`."""
    policy = as_policy(policy)
    q, ranges = encode_update(update, policy)
    n = len(update)
    decoded = {
        "plain": update,
        "sent": {k: a.numpy().astype(np.float32) for k, a in q.items()},
        "server": decode_update(q, ranges, policy),
        "wrong-mode": decode_update(q, ranges, wrong_modes(policy, n)),
        "guess": decode_update(q, ranges, policy, modes=["MIN_COMBINED"] * n),
    }
    return {view: [torch.from_numpy(np.asarray(v, dtype=np.float32)) / -lr for v in d.values()]
            for view, d in decoded.items()}


LEAK_ATTACKS = [(view, "l2") for view in ATTACK_VIEWS] + [("sent", "correlation")]


class UpdateViews:
    """Targets for :func:`leakage_sweep`: the one-step update of a client holding image
    ``trial.image`` of ``data``, as the attacker sees it in the view ``trial.tags["view"]``."""

    def __init__(self, data: Dataset, policy: Policy, lr: float):
        self.data, self.policy, self.lr = data, policy, lr
        self._views: dict[int, tuple[torch.Tensor, int, dict[str, list[torch.Tensor]]]] = {}  # once per image

    def describe(self, trial: AttackTrial) -> dict:
        x, y = self.data[trial.image]
        return {"source": "one-step update", "policy": str(self.policy), "lr": self.lr, "image": tensor_digest(x),
                "label": int(y)}

    def prepare(self, model: torch.nn.Module, trial: AttackTrial, config: AttackConfig) -> Prepared:
        if trial.image not in self._views:
            x, y = self.data[trial.image]
            update = one_step_update(model, x[None], torch.tensor([int(y)]), self.lr)
            self._views[trial.image] = x[None], int(y), attacker_views(update, self.policy, self.lr)
        x, y, seen = self._views[trial.image]
        return Prepared(SharedGradient(seen[trial.tags["view"]], NoDefense()), x, y)


def leakage_sweep(model: torch.nn.Module, data: Dataset, images: Sequence[int], policy: Policy,
                  lr: float, iterations: int = 450, seeds: Sequence[int] = (0,), path: str | Path | None = None,
                  snapshot_at: Sequence[int] = (0, 10, 20, 30, 50, 100, 200, 450), progress: bool | None = None
                  ) -> pd.DataFrame:
    """Seed 001 Fig. 1-4 as a sweep: for each image, the one-step update of a client holding it,
    attacked in every view of :data:`ATTACK_VIEWS` with DLG's distance, and the sent integers
    also with :func:`~dlg_utils.attack.correlation_distance`. The label is read from each
    view's own last bias gradient (iDLG's rule for a tanh network). One row per (image, seed,
    view, distance), stored at ``path`` as it finishes, with the snapshots (clamped images) at
    ``snapshot_at``; trials already stored there are not run again."""
    settings = lambda distance: {"iterations": iterations, "distance": distance, "label_source": "bias",
                                 "snapshot_every": 0, "snapshot_at": tuple(snapshot_at)}
    trials = [AttackTrial(int(i), int(s), "none", "idlg", "model", settings(d), {"view": v, "distance": d})
              for i in images for s in seeds for v, d in LEAK_ATTACKS]
    if not trials:
        return pd.DataFrame()
    return run_attacks(trials, model, UpdateViews(data, policy, lr), path,
                       rows=RowOptions(keep_history=True, keep_snapshots=tuple(snapshot_at)),
                       execution=Execution(progress=progress))
