"""DP-SGD's reconstruction bounds (dlg_utils.rero): the Gaussian blow-up against a Monte Carlo
Neyman-Pearson test, the RDP bound never below it, Opacus's RDP at one full-batch step, the
prior's baseline kappa on images built to have a known one, and the informed attack that
identifies its target when the noise is small and not when it is large."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from dlg_utils import rero
from dlg_utils.cases import Case, DPSGD
from dlg_utils.frontier import MODELS


@pytest.mark.parametrize("kappa,mu", [(1 / 64, 1.2), (0.2, 0.5), (0.05, 2.3)])
def test_gaussian_bound_is_the_neyman_pearson_blow_up(kappa, mu):
    """The largest P(E) under N(mu, 1) over events with P(E) <= kappa under N(0, 1), estimated
    by the best test (a threshold on the draw) on samples."""
    rng = np.random.default_rng(0)
    without, with_ = rng.standard_normal(400_000), mu + rng.standard_normal(400_000)
    t = np.quantile(without, 1 - kappa)
    assert rero.gaussian_rero(kappa, mu) == pytest.approx((with_ > t).mean(), abs=3e-3)
    assert rero.gaussian_rero(kappa, 0.0) == pytest.approx(kappa)  # no signal: the prior alone


def test_rdp_bound_is_never_below_the_tight_gaussian_one():
    """For a Gaussian step (RDP alpha mu^2 / 2) Balle et al.'s bound from RDP is valid, so it
    cannot undercut the exact blow-up; Opacus's RDP of one full-batch step is that curve."""
    orders = np.array([1.5, 2, 3, 4, 8, 16, 32, 64])
    for sigma in (0.4, 0.8, 1.5, 4.0):
        rdp = rero.dp_sgd_rdp(sigma, 1.0, 1, orders)
        assert rdp == pytest.approx(orders / (2 * sigma**2))
        for kappa in (1 / 64, 0.1, 0.3):
            assert rero.rdp_rero(kappa, rdp, orders) >= rero.gaussian_rero(kappa, 1 / sigma) - 1e-9
    assert rero.rdp_rero(0.01, [1e6], [2.0]) == 1.0  # a vacuous guarantee gives the trivial bound


def test_bounds_reject_bad_input():
    with pytest.raises(ValueError, match="kappa"):
        rero.gaussian_rero(0.0, 1.0)
    with pytest.raises(ValueError, match="mu"):
        rero.gaussian_rero(0.1, float("nan"))
    with pytest.raises(ValueError, match="order"):
        rero.rdp_rero(0.1, [1.0, 2.0], [1.0, 2.0])


def test_schedule_is_what_the_noise_was_calibrated_for():
    assert DPSGD.schedule(examples=4000, batch_size=4, epochs=20) == (0.001, 20_000)
    with pytest.raises(ValueError, match="batch_size"):
        DPSGD.schedule(examples=3, batch_size=4)


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_prior_baseline_finds_a_pair_a_midpoint_covers_and_proves_no_guess_covers_more(tmp_path, monkeypatch):
    x = _images()
    x[1] = (x[0] + 0.08).clamp(0, 1)  # MSE ~ 6e-3: neither image is within PSNR 25 dB (MSE 3.2e-3)
    gap = float(((x[0] - x[1]) ** 2).mean())  # of the other, their midpoint is of both
    assert 10 ** -2.5 < gap < 4 * 10 ** -2.5
    base = rero.prior_baseline(x, list(range(8)), "psnr")
    assert base.low == base.high == 2 / 8 and base.exact and base.guess == "midpoint 0-1"
    mse = rero.prior_baseline(x, list(range(8)), "mse")  # MSE < 1e-3: no pair within 4e-3, one image at most
    assert mse.low == mse.high == 1 / 8
    ssim = rero.prior_baseline(x, [0] * 8, "ssim")  # no metric: a lower estimate only
    assert math.isnan(ssim.high) and not ssim.exact and ssim.low == 2 / 8  # image 0 meets its shifted copy; noise meets nothing else
    with pytest.raises(ValueError, match="criterion"):
        rero.prior_baseline(x, list(range(8)), "l1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS weights there
    with pytest.raises(FileNotFoundError, match="lpips is not scored on this machine"):
        rero.prior_baseline(x, list(range(8)), "lpips")


def test_informed_attack_identifies_under_little_noise_and_guesses_under_much():
    x, labels = _images(16, seed=1), [i % 10 for i in range(16)]
    model = MODELS["lenet"].build(0, 1, 10, 28).eval()
    quiet = rero.informed_attack(model, Case(dp=DPSGD(clip=1.0, noise=1e-3)), x, labels)
    assert quiet["identified"].all() and (quiet["psnr"] == float("inf")).all()
    loud = rero.informed_attack(model, Case(dp=DPSGD(clip=1.0, noise=1e3)), x, labels)
    assert loud["identified"].sum() <= 4  # chance is 1 of 16
    with pytest.raises(ValueError, match="one image per update"):
        rero.informed_attack(model, Case(batch_size=2, dp=DPSGD()), x, labels)


def test_dp_theory_puts_the_bounds_beside_the_strongest_single_attack_and_the_informed_one():
    import pandas as pd
    import matplotlib
    matplotlib.use("Agg")
    from dlg_utils import operating as op
    from dlg_utils.plotting import rero_plot
    point = op.Point("init", epsilon=8.0, defenses=("none",))
    study = op.Study(grid=(("gray28", point), ("gray28", op.Point("init", batch_size=4, epsilon=8.0, defenses=("none",)))),
                     domains={"gray28": op.Domain("fashion-mnist", images=(0, 1, 2, 3), iterations=5)})
    fake = pd.DataFrame([{"domain": "gray28", "point": point.name, "defense": "none", "attack": a, "image": i,
                          "ssim": 0.9 if i < k else 0.1, "psnr": 30.0 if i < k else 10.0, "mse": 1e-4 if i < k else 0.1}
                         for a, k in (("idlg", 1), ("ig", 2)) for i in range(4)])
    theory = op.dp_theory(study, fake)
    assert len(theory) == 3 and set(theory["point"]) == {point.name}  # the B = 4 point has no one-step bound
    psnr = theory.set_index("criterion").loc["psnr"]
    sigma = point.case().dp.noise
    assert psnr["noise"] == sigma and psnr["kappa proven"]
    assert psnr["bound one step"] == pytest.approx(norm.cdf(norm.ppf(psnr["kappa"]) + 1 / sigma))
    assert psnr["inversion attack"] == "ig" and psnr["inversion recovered"] == 0.5  # one guess per image, not the best of two
    assert 0 <= psnr["informed low"] <= psnr["informed recovered"] <= psnr["informed high"] <= 1
    curves = op.dp_bound_curves(study, theory, epsilons=(1, 8))
    for _, c in curves.groupby("criterion"):
        assert c["bound one step"].is_monotonic_increasing and c["noise"].is_monotonic_decreasing
    at8 = curves[(curves["criterion"] == "psnr") & (curves["epsilon"] == 8)].iloc[0]
    assert at8["bound whole training"] == pytest.approx(psnr["bound whole training"])
    assert len(rero_plot(curves, theory, title="t").axes) == 3
    with pytest.raises(ValueError, match="one domain"):
        rero_plot(curves, pd.concat([theory, theory.assign(domain="other")]), title="t")
    empty = op.dp_theory(op.Study(grid=(("gray28", op.Point(defenses=("none",))),), domains=study.domains), fake)
    assert empty.empty and op.dp_bound_curves(study, empty).empty  # no DP point: empty tables, no error


def _hayes_monte_carlo(kappa, sigma, q, steps, draws, seed=0):
    """Hayes et al.'s estimator: likelihood ratios of the subsampled training with / without
    the target at draws without it; the blow-up is 1 minus the mean of the lowest (1 - kappa)."""
    x = np.random.default_rng(seed).standard_normal((draws, steps)) * sigma
    r = np.sort(np.exp(np.log1p(q * np.expm1((2 * x - 1) / (2 * sigma**2))).sum(1)))
    return 1 - r[:int(round(draws * (1 - kappa)))].sum() / draws


def test_whole_training_bound_matches_the_closed_form_and_the_authors_monte_carlo():
    kappas = [1 / 64, 0.2]
    one = rero.dp_sgd_rero(kappas, 0.9, 1.0, 1)  # one full-batch step: the Gaussian closed form
    assert one == pytest.approx([rero.gaussian_rero(k, 1 / 0.9) for k in kappas], abs=2e-3)
    sub = rero.dp_sgd_rero(kappas, 1.0, 0.1, 50)
    assert sub == pytest.approx([_hayes_monte_carlo(k, 1.0, 0.1, 50, 200_000) for k in kappas], abs=6e-3)
    orders = np.array([1.5, 2, 3, 4, 8, 16, 32])  # tighter than the RDP bound of the same training
    rdp = rero.dp_sgd_rdp(1.0, 0.1, 50, orders)
    assert all(s <= rero.rdp_rero(k, rdp, orders) + 1e-3 for s, k in zip(sub, kappas))
