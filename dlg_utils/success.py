"""Success rates of DLG as seed 002 defines them, with bootstrap confidence intervals.

A trial succeeds when its gradient distance fell below the attack's convergence threshold
(1e-4, recorded as ``converged_at``) at some iteration *and* its final image MSE is below ``image_threshold`` (the image converged too:
seed 002 notes that the first does not imply the second, e.g. on ResNet-18). The success
rate of an image is the fraction of its seeds that succeed; a study reports the mean over
images, with a bootstrap interval that resamples images (the unit seed 002 averages over).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .metrics import IMAGE_THRESHOLD


def succeeded(rows: pd.DataFrame, image_threshold: float = IMAGE_THRESHOLD) -> pd.Series:
    """Per trial (a sweep row with ``converged_at`` and final ``mse``): converged and recovered."""
    for col in ("converged_at", "mse"):
        if col not in rows.columns:
            raise ValueError(f"rows have no column {col!r}")
    return rows["converged_at"].notna() & (rows["mse"] < image_threshold)


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped); (nan, nan) if empty."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(v) == 0:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(v, size=(resamples, len(v)), replace=True).mean(1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def success_table(rows: pd.DataFrame, by: Sequence[str] = (), image_threshold: float = IMAGE_THRESHOLD,
                  level: float = 0.95, resamples: int = 10_000) -> pd.DataFrame:
    """One row per group of ``by`` columns: images, trials, success rate (mean over images of
    each image's fraction of successful seeds) with its bootstrap interval over images, the
    lowest and highest image rate, and the mean iteration at which successful trials converged
    (mean over images of each image's mean, with its interval)."""
    rows = rows.assign(success=succeeded(rows, image_threshold))
    groups = rows.groupby(list(by), sort=False) if by else [((), rows)]
    out = []
    for key, g in groups:
        per_image = g.groupby("image").agg(rate=("success", "mean"), trials=("success", "size"))
        iters = g[g["success"]].groupby("image")["converged_at"].mean()
        lo, hi = bootstrap_ci(per_image["rate"], level, resamples)
        it_lo, it_hi = bootstrap_ci(iters, level, resamples)
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key)), "images": len(per_image), "trials": int(per_image["trials"].sum()),
                    "success rate": float(per_image["rate"].mean()), "rate low": lo, "rate high": hi,
                    "worst image": float(per_image["rate"].min()), "best image": float(per_image["rate"].max()),
                    "mean iteration at convergence": float(iters.mean()) if len(iters) else float("nan"),
                    "iteration low": it_lo, "iteration high": it_hi})
    return pd.DataFrame(out)


def threshold_sensitivity(rows: pd.DataFrame, thresholds: Sequence[float], by: Sequence[str] = ()
                          ) -> pd.DataFrame:
    """The success rate (and interval) for each image-MSE threshold: is the result robust to it?"""
    parts = [success_table(rows, by, t, resamples=2000).assign(**{"image threshold": t}) for t in thresholds]
    return pd.concat(parts, ignore_index=True)
