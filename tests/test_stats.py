import math

import numpy as np
import pandas as pd
import pytest

from dlg_utils.stats import (CRITERIA, GRAD_THRESHOLD, IMAGE_THRESHOLD, bootstrap_ci, clopper_pearson, converged,
                             recovered, scored_criteria, t_interval, verdict)


def test_clopper_pearson_known_values():
    low, high = clopper_pearson(0, 16)
    assert low == 0 and high == pytest.approx(0.2059, abs=5e-5)  # 1 - 0.025 ** (1 / 16)
    assert high == pytest.approx(1 - 0.025 ** (1 / 16), rel=1e-9)
    low, high = clopper_pearson(16, 16)
    assert low == pytest.approx(0.025 ** (1 / 16), rel=1e-9) and high == 1
    low, high = clopper_pearson(5, 10)  # symmetric about 1/2; the textbook (0.187, 0.813)
    assert low == pytest.approx(0.18709, abs=1e-5) and high == pytest.approx(1 - low, abs=1e-12)
    wide, narrow = clopper_pearson(3, 20, level=0.99), clopper_pearson(3, 20, level=0.9)
    assert wide[0] < narrow[0] < 3 / 20 < narrow[1] < wide[1]
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))


def test_clopper_pearson_rejects_impossible_counts():
    with pytest.raises(ValueError, match="k must be at most n"):
        clopper_pearson(5, 4)
    with pytest.raises(ValueError, match=">= 0"):
        clopper_pearson(-1, 4)
    with pytest.raises(ValueError, match=">= 0"):
        clopper_pearson(0, -4)
    with pytest.raises(ValueError, match="whole numbers"):
        clopper_pearson(1.5, 4)
    with pytest.raises(ValueError, match="level"):
        clopper_pearson(1, 4, level=95)


def test_bootstrap_ci():
    rng = np.random.default_rng(1)
    v = rng.normal(3.0, 1.0, size=400)
    lo, hi = bootstrap_ci(v, resamples=4000)
    half = 1.96 / np.sqrt(400)
    assert lo == pytest.approx(v.mean() - half, abs=0.03) and hi == pytest.approx(v.mean() + half, abs=0.03)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert bootstrap_ci([1.0, np.nan, 1.0]) == (1.0, 1.0)  # NaNs dropped
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], level=1.5)


def test_bootstrap_ci_resamples_clusters():
    # two images: all of one's trials recovered, none of the other's; a cluster goes whole
    v = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, np.nan]])
    lo, hi = bootstrap_ci(v, resamples=2000, statistic=np.nanmean)
    assert (lo, hi) == (0.0, 1.0)
    assert bootstrap_ci(v, resamples=200, seed=3, statistic=np.nanmean) == bootstrap_ci(
        v, resamples=200, seed=3, statistic=np.nanmean)  # seeded: reproducible


def test_t_interval():
    values = [1.0, 2.0, 3.0, 4.0]
    mean, lo, hi = t_interval(values)
    half = 3.182446305284263 * np.std(values, ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert mean == 2.5 and lo == pytest.approx(2.5 - half) and hi == pytest.approx(2.5 + half)
    assert t_interval(values, level=0.5)[2] < hi
    assert t_interval([0.1, 0.1, 0.1]) == pytest.approx((0.1, 0.1, 0.1))  # no spread
    mean, lo, hi = t_interval([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in t_interval([]))


def test_criteria_on_values_and_rows():
    assert CRITERIA["ssim"].threshold == 0.5 and CRITERIA["psnr"].threshold == 25 and CRITERIA["mse"].threshold == 1e-3
    assert IMAGE_THRESHOLD == 1e-3 and GRAD_THRESHOLD == 1e-4
    assert recovered(0.5) and not recovered(0.49)  # SSIM at the threshold counts
    assert recovered(25.0, "psnr") and not recovered(24.9, "psnr")
    assert recovered(5e-4, "mse") and not recovered(1e-3, "mse") and not recovered(0.01, "mse")
    assert recovered(0.3, threshold=0.2) and not recovered(5e-4, "mse", threshold=1e-4)
    rows = pd.DataFrame({"ssim": [0.9, 0.2, np.nan], "psnr": [30.0, 10.0, np.nan], "mse": [1e-4, 0.1, np.nan]})
    for criterion in ("ssim", "psnr", "mse"):
        assert recovered(rows, criterion).tolist() == [True, False, False]  # a diverged attack never counts
    assert recovered(rows["ssim"].to_numpy()).tolist() == [True, False, False]
    assert CRITERIA["ssim"].describe() == "SSIM >= 0.5" and CRITERIA["mse"].describe() == "MSE < 0.001"
    with pytest.raises(ValueError, match="criterion must be one of ssim, psnr, mse, lpips"):
        recovered(rows, "l1")
    with pytest.raises(ValueError, match="no column 'psnr'"):
        recovered(rows.drop(columns="psnr"), "psnr")


def test_converged():
    assert converged(5e-5) and not converged(2e-4) and not converged(GRAD_THRESHOLD)
    assert converged(pd.Series([1e-5, 1.0]), threshold=1e-3).tolist() == [True, False]


@pytest.mark.parametrize("low,high,expected", [
    (0.0, 0.05, True),    # the whole interval below the limit
    (0.0, 0.10, True),    # at the limit counts as below
    (0.05, 0.30, None),   # straddles it: the data do not decide
    (0.10, 0.30, None),
    (0.12, 0.40, False),  # the whole interval above
    (np.nan, np.nan, None),  # no interval (a defense not attacked)
])
def test_verdict(low, high, expected):
    assert verdict(low, high, 0.10) is expected


def test_lpips_is_judged_only_where_every_scored_row_holds_it():
    rows = pd.DataFrame({"ssim": [0.9, 0.2, np.nan], "psnr": [30.0, 10.0, np.nan], "mse": [1e-4, 0.1, np.nan]})
    assert scored_criteria(rows) == ["ssim", "psnr", "mse"]
    scored = rows.assign(lpips=[0.1, 0.5, np.nan])  # the diverged attack has no LPIPS either
    assert scored_criteria(scored) == ["ssim", "psnr", "mse", "lpips"]
    assert recovered(scored, "lpips").tolist() == [True, False, False] and CRITERIA["lpips"].describe() == "LPIPS < 0.2"
    mixed = rows.assign(lpips=[0.1, np.nan, np.nan])  # a row scored on a machine without LPIPS's weights
    assert scored_criteria(mixed) == ["ssim", "psnr", "mse"]


def test_samples_to_settle_is_the_first_size_whose_interval_clears_the_bound():
    from dlg_utils.stats import samples_to_settle, t_interval
    values = np.array([-1.0, 0.0, 1.0])  # mean 0, sd 1

    def high(n: int) -> float:  # the upper end for n values of the same mean and spread
        x = np.linspace(-1, 1, n)
        return t_interval(x / x.std(ddof=1))[2]

    n = int(samples_to_settle(values, 1.0))
    assert high(n) < 1.0 <= high(n - 1)
    assert samples_to_settle(values + 2.0, 1.0) == n  # above the bound: as far, as many
    assert np.isnan(samples_to_settle([0.5, 0.5], 1.0)) and np.isnan(samples_to_settle([0.5], 1.0))
    assert samples_to_settle(values, 0.0) == float("inf")  # the mean on the bound never settles
