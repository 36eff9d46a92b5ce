"""The statistics of the studies: confidence intervals (bootstrap, t, Clopper-Pearson), the
success criteria under their own names, and the reading of an interval against a limit.

Criteria (what counts as a leaked image, on [0, 1] images):

- ``"ssim"``: SSIM >= 0.5 (the frontier's: between two different images and an image's
  half-resolution copy, notebook 9);
- ``"psnr"``: PSNR >= 25 dB;
- ``"mse"``: MSE < 1e-3 (:data:`IMAGE_THRESHOLD`, seed 002's image criterion);
- ``"lpips"``: LPIPS < 0.2 (AlexNet), scored only where its weights are on disk
  (:func:`~dlg_utils.metrics.lpips_available`): no paper fixes a threshold, so read it beside
  its chance level (:func:`~dlg_utils.rero.prior_baseline`);

and an attack *converged* when its gradient distance fell below :data:`GRAD_THRESHOLD` (1e-4,
seed 002; the engine records the first iteration where it did as ``converged_at``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

GRAD_THRESHOLD = 1e-4   # seed 002: gradient distance below this = the attack converged
IMAGE_THRESHOLD = 1e-3  # image MSE below this = the image is recovered


@dataclass(frozen=True)
class Criterion:
    """An image counts as recovered when its ``metric`` is at least ``threshold`` (``higher``,
    e.g. SSIM) or below it (not ``higher``, e.g. MSE)."""

    metric: str
    threshold: float
    higher: bool

    def __call__(self, values, threshold: float | None = None):
        limit = self.threshold if threshold is None else threshold
        return values >= limit if self.higher else values < limit

    def describe(self, threshold: float | None = None) -> str:
        limit = self.threshold if threshold is None else threshold
        return f"{self.metric.upper()} {'>=' if self.higher else '<'} {limit:g}"


CRITERIA = {"ssim": Criterion("ssim", 0.5, True), "psnr": Criterion("psnr", 25.0, True),
            "mse": Criterion("mse", IMAGE_THRESHOLD, False), "lpips": Criterion("lpips", 0.2, False)}
OPTIONAL = ("lpips",)  # criteria whose metric only some machines score


def scored_criteria(rows: pd.DataFrame | None = None) -> list[str]:
    """The criteria to judge by: those of :data:`CRITERIA` whose metric ``rows`` hold (an
    optional one only where every row scored by SSIM has it too: rows stored on a machine
    without it would otherwise count as not recovered), or without rows those this machine
    scores (:func:`~dlg_utils.metrics.metric_functions`)."""
    if rows is None:
        from .metrics import metric_functions
        return [n for n in CRITERIA if CRITERIA[n].metric in metric_functions()]
    def held(n: str) -> bool:
        m = CRITERIA[n].metric
        if m not in rows.columns:
            return False
        scored = rows["ssim"].notna() if "ssim" in rows.columns else True
        return n not in OPTIONAL or not (rows[m].isna() & scored).any()
    return [n for n in CRITERIA if held(n)]


def recovered(rows_or_values, criterion: str = "ssim", threshold: float | None = None):
    """Whether each image is recovered by ``criterion`` (a key of :data:`CRITERIA`) at its
    threshold or ``threshold``: ``rows_or_values`` is a table with the criterion's metric as a
    column (a Series comes back) or the metric's values (a float, array or Series). A missing
    value (a diverged attack) never counts as recovered."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    c = CRITERIA[criterion]
    if isinstance(rows_or_values, pd.DataFrame):
        if c.metric not in rows_or_values.columns:
            raise ValueError(f"rows have no column {c.metric!r}")
        rows_or_values = rows_or_values[c.metric]
    return c(rows_or_values, threshold)


def recovered_images(attempts: pd.DataFrame, criterion: str = "ssim") -> pd.Series:
    """Per image (the ``image`` column; one row per attack or dummy seed on it), whether its best
    attempt under ``criterion`` meets it: what a recovery rate counts (the best attempt by SSIM
    can miss a closer copy that another attack made)."""
    return recovered(attempts, criterion).groupby(attempts["image"].to_numpy()).any()


def converged(grad_distance, threshold: float = GRAD_THRESHOLD):
    """Seed 002's convergence criterion: the gradient distance fell below ``threshold`` (a
    float, array or Series)."""
    return grad_distance < threshold


def bootstrap_ci(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0,
                 statistic=np.mean) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (default the mean) of ``values``; (nan,
    nan) if there are none. 1-D values are resampled one by one (NaNs dropped); a 2-D array
    is resampled by rows (clusters: an image and all its trials), NaN entries padding short
    rows, and ``statistic`` must then ignore NaNs (``np.nanmedian``...)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    if v.ndim == 2:
        if len(v) == 0 or np.isnan(v).all():
            return float("nan"), float("nan")
        rows = rng.integers(0, len(v), size=(resamples, len(v)))
        stat = np.array([statistic(v[r].ravel()) for r in rows])
    else:
        v = v[~np.isnan(v)]
        if len(v) == 0:
            return float("nan"), float("nan")
        draws = rng.choice(v, size=(resamples, len(v)), replace=True)
        stat = draws.mean(1) if statistic is np.mean else np.apply_along_axis(statistic, 1, draws)
    alpha = (1 - level) / 2
    return float(np.quantile(stat, alpha)), float(np.quantile(stat, 1 - alpha))


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` with its Student-t ``level`` interval; the
    interval is (nan, nan) with fewer than two values (and the mean nan with none)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = np.asarray(values, float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    from scipy.stats import t  # scipy takes a second to import: only where it is used
    half = t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def samples_to_settle(values, bound: float, level: float = 0.95, most: int = 1000) -> float:
    """How many values a ``level`` t-interval of their mean would need to end clear of
    ``bound`` (all below it, or all above), were the mean and spread those of ``values``: the
    size of the run that would settle an "open" verdict. nan with fewer than two values or no
    spread, inf beyond ``most``."""
    values = np.asarray(values, float)
    if len(values) < 2 or values.std(ddof=1) == 0:
        return float("nan")
    from scipy.stats import t
    gap, sd = abs(bound - values.mean()), values.std(ddof=1)
    n = next((n for n in range(max(len(values), 2), most + 1)
              if t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n) < gap), None)
    return float(n) if n is not None else float("inf")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``level`` interval of a proportion, ``k`` successes of ``n``
    trials (scipy's ``binomtest(k, n).proportion_ci(method="exact")``); (nan, nan) for n = 0."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(k) != k or int(n) != n:
        raise ValueError(f"k and n must be whole numbers, got k={k}, n={n}")
    k, n = int(k), int(n)
    if k < 0 or n < 0:
        raise ValueError(f"k and n must be >= 0, got k={k}, n={n}")
    if k > n:
        raise ValueError(f"k must be at most n, got k={k} of n={n}")
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def verdict(low: float, high: float, limit: float) -> bool | None:
    """Is the quantity at or below ``limit``, read from its interval [low, high]? True when the
    whole interval is at or below it, False when the whole interval is above it, None when it
    straddles the limit or is missing (NaN): the data do not decide."""
    return True if high <= limit else False if low > limit else None


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` (family-wise error control for many
    comparisons): the adjusted p-values, in the order given."""
    p = np.asarray(pvalues, float)
    if np.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise ValueError(f"p-values must be in [0, 1], got {p.tolist()}")
    order, m = np.argsort(p), len(p)
    adjusted, running = np.empty(m), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
