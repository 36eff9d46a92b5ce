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

from .attack import AttackResult, target_gradients
from .codec import Policy, as_policy, decode_update, encode_update, wrong_modes
from .defenses import NoDefense, SharedGradient
from .experiments import Prepared, run_attacks, trial_key


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
    trials = [{"image": int(i), "seed": int(s), "view": v, "distance": d, "iterations": iterations}
              for i in images for s in seeds for v, d in LEAK_ATTACKS]
    if not trials:
        return pd.DataFrame()
    views: dict[int, tuple[torch.Tensor, int, dict[str, list[torch.Tensor]]]] = {}  # once per image

    def prepare(model: torch.nn.Module, trial: dict) -> Prepared:
        if trial["image"] not in views:
            x, y = data[trial["image"]]
            update = one_step_update(model, x[None], torch.tensor([int(y)]), lr)
            views[trial["image"]] = x[None], int(y), attacker_views(update, policy, lr)
        x, y, seen = views[trial["image"]]
        return Prepared(SharedGradient(seen[trial["view"]], NoDefense()), x, y)

    def snapshots(result: AttackResult) -> dict:
        return {"snapshots": {int(k): v[0].numpy().round(4).tolist() for k, v in result.snapshots.items()
                              if k in snapshot_at}}

    # the distance is one setting of a whole batch: one run per distance
    frames = [run_attacks([t for t in trials if t["distance"] == distance], model, prepare, path, extra=snapshots,
                          progress=progress, iterations=iterations, distance=distance, label="idlg",
                          label_source="bias", snapshot_every=0, snapshot_at=tuple(snapshot_at))
              for distance in dict.fromkeys(d for _, d in LEAK_ATTACKS)]
    rows = {row["trial"]: row for frame in frames for row in frame.to_dict("records")}
    return pd.DataFrame([rows[trial_key(t)] for t in trials])  # in the order of trials
