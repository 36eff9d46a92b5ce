import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from dlg_utils.defenses import (GaussianNoise, HalfPrecision, LaplacianNoise, LayerPrecision,
                                MixedPrecision, NoDefense, Sparsification, StochasticRounding,
                                UniformQuantization, default_policy, defense_from_spec, random_policy)

tensors = arrays("float32", st.integers(2, 200), elements=st.floats(-10, 10, width=32)).map(torch.from_numpy)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@settings(max_examples=80, deadline=None)
@given(x=tensors, levels=st.integers(2, 300))
def test_uniform_quantization_properties(x, levels):
    q = UniformQuantization(levels)([x])[0]
    lo, hi = x.min(), x.max()
    if lo == hi:
        assert torch.equal(q, x)
        return
    step = (hi - lo) / (levels - 1)
    if step == 0:  # a range of a few denormals: no representable grid, returned unchanged
        assert torch.equal(q, x)
        return
    assert q.unique().numel() <= levels
    assert float((q - x).abs().max()) <= float(step) / 2 * (1 + 1e-4) + 1e-6
    pos = (q - lo) / step  # every value sits on the grid
    assert torch.allclose(pos, pos.round(), atol=1e-3)
    assert torch.isclose(q.min(), lo, atol=1e-5) and torch.isclose(q.max(), hi, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(x=tensors, levels=st.integers(2, 64), seed=st.integers(0, 2**16))
def test_stochastic_rounding_rounds_to_a_neighbouring_level(x, levels, seed):
    q = StochasticRounding(levels)([x], gen(seed))[0]
    lo, hi = x.min(), x.max()
    if lo == hi:
        assert torch.equal(q, x)
        return
    step = (hi - lo) / (levels - 1)
    if step == 0:
        assert torch.equal(q, x)
        return
    assert float((q - x).abs().max()) <= float(step) * (1 + 1e-4) + 1e-6
    assert q.unique().numel() <= levels


@pytest.mark.parametrize("defense", [UniformQuantization(3), StochasticRounding(3)])
def test_a_range_of_denormals_is_returned_unchanged_not_nan(defense):
    """Found by hypothesis: a range of one denormal over 2 steps has step 0 in float32."""
    x = torch.tensor([1.4013e-45, 0.0, 0.0, 0.0])
    q = defense([x], gen(0))[0]
    assert torch.isfinite(q).all() and torch.equal(q, x)


def test_stochastic_rounding_is_unbiased():
    x = torch.randn(500, generator=gen(1))
    levels, n = 8, 4000
    d = StochasticRounding(levels)
    g = gen(2)
    mean = torch.stack([d([x], g)[0] for _ in range(n)]).mean(0)
    step = float((x.max() - x.min()) / (levels - 1))
    # the variance of one draw is at most step^2 / 4: allow 5 standard errors
    assert float((mean - x).abs().max()) < 5 * step / 2 / math.sqrt(n)
    # uniform quantization is biased on the same tensor
    assert float((UniformQuantization(levels)([x])[0] - x).abs().mean()) > 10 * float((mean - x).abs().mean())


@settings(max_examples=80, deadline=None)
@given(x=tensors, ratio=st.floats(0, 0.999))
def test_sparsification_keeps_exactly_the_largest_entries(x, ratio):
    s = Sparsification(ratio)([x])[0]
    k = int(ratio * x.numel())
    kept = s != 0
    dropped_idx = torch.topk(x.abs(), k, largest=False).indices if k else torch.tensor([], dtype=torch.long)
    assert torch.all(s[dropped_idx] == 0)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[dropped_idx] = False
    assert torch.equal(s[mask], x[mask])  # everything else unchanged
    if k:  # nothing dropped is larger than anything kept
        assert float(x[~mask].abs().max()) <= float(x[mask].abs().min()) if mask.any() else True
    assert int((~kept).sum()) >= k


def test_noise_statistics_and_determinism():
    x = torch.zeros(200_000)
    gauss = GaussianNoise(1e-2)([x], gen(0))[0]
    lap = LaplacianNoise(1e-2)([x], gen(0))[0]
    assert abs(float(gauss.std()) - 1e-2) < 2e-4 and abs(float(gauss.mean())) < 2e-4
    assert abs(float(lap.std()) - math.sqrt(2) * 1e-2) < 3e-4  # Laplace(b) has std sqrt(2) b
    assert abs(float(lap.abs().mean()) - 1e-2) < 2e-4  # and mean |x| = b
    assert torch.equal(GaussianNoise(1e-2)([x], gen(5))[0], GaussianNoise(1e-2)([x], gen(5))[0])
    assert not torch.equal(GaussianNoise(1e-2)([x], gen(5))[0], GaussianNoise(1e-2)([x], gen(6))[0])


def test_half_precision():
    x = torch.tensor([1e-3, 1.0 / 3, 1e5, -1e5])
    h = HalfPrecision()([x])[0]
    assert torch.equal(h[:2], x[:2].half().float())
    assert h[2] == 65504 and h[3] == -65504  # saturates, no Inf


def test_mixed_precision_error_is_bounded_per_layer():
    grads = [torch.randn(12, 3, 5, 5, generator=gen(i)) * 10 ** -i for i in range(6)]
    d = MixedPrecision("default")
    out = d(grads)
    for g, o, p in zip(grads, out, d.layers(len(grads))):
        levels = 255 if p.dtype == "qint8" else 65535
        lo, hi = min(0.0, float(g.min())), float(g.max())  # TF widens the range to contain 0 ...
        hi = max(0.0, hi, lo + 0.01 * max(1.0, abs(lo), abs(hi)))  # ... and to be >= 0.01 wide
        assert float((o - g).abs().max()) <= 2.0 * (hi - lo) / levels  # SCALED: up to 2x the step
    tight = MixedPrecision("default", ensure_minimum_range=0.0)(grads)
    assert float((tight[-1] - grads[-1]).abs().max()) < float((out[-1] - grads[-1]).abs().max())
    assert {p.dtype for p in default_policy(10)} == {"qint8", "qint16"}
    assert random_policy(10, seed=3) == random_policy(10, seed=3) != random_policy(10, seed=4)
    with pytest.raises(ValueError):
        MixedPrecision([LayerPrecision()])(grads)  # one entry for six tensors


def test_mixed_precision_wrong_mode_breaks_the_gradient():
    g = [torch.randn(1000, generator=gen(0)) * 1e-3]
    right = MixedPrecision([LayerPrecision("qint8", "MIN_COMBINED")])(g)[0]
    wrong = MixedPrecision([LayerPrecision("qint8", "MIN_COMBINED", "SCALED")])(g)[0]
    assert (wrong - g[0]).abs().mean() > 10 * (right - g[0]).abs().mean()


@pytest.mark.parametrize("spec", ["none", "uniform:16", "stochastic:16", "sparsity:0.2", "gaussian:0.001",
                                  "laplacian:0.001", "half", "mixed", "mixed:random:3"])
def test_spec_round_trip(spec):
    d = defense_from_spec(spec)
    assert d.name == spec and defense_from_spec(d.name).name == spec
    x = [torch.randn(3, 4, generator=gen(0))]
    assert d(x, gen(0))[0].shape == (3, 4)


@pytest.mark.parametrize("spec", ["uniform:1", "uniform:2.5", "sparsity:1", "sparsity:-0.1", "gaussian:-1",
                                  "bogus:3", "uniform", "half:2", "mixed:zigzag"])
def test_bad_specs_raise(spec):
    with pytest.raises(ValueError):
        defense_from_spec(spec)


@pytest.mark.parametrize("d", [NoDefense(), UniformQuantization(4), StochasticRounding(4), Sparsification(0.5),
                               GaussianNoise(1.0), HalfPrecision(), MixedPrecision()])
def test_nan_gradients_raise(d):
    with pytest.raises(ValueError, match="NaN"):
        d([torch.tensor([1.0, float("nan")])], gen())


def test_constant_tensor_is_defined():
    c = torch.full((10,), 0.25)
    for d in (UniformQuantization(16), StochasticRounding(16), MixedPrecision()):
        out = d([c], gen())[0]
        assert torch.isfinite(out).all() and torch.allclose(out, c, atol=1e-3)


def test_level_errors_shrink_with_levels_and_stay_within_half_a_step():
    from dlg_utils.defenses import level_errors
    g = torch.randn(500, generator=gen(3))
    err = level_errors(g, [4, 16, 64], draws=8)
    assert err["levels"].tolist() == [4, 16, 64] and "stochastic, mean of 8 draws" in err
    assert (err["uniform max |err|"] <= err["half step"] * (1 + 1e-5)).all()
    for col in ("uniform mean |err|", "stochastic mean |err|", "stochastic, mean of 8 draws"):
        assert err[col].is_monotonic_decreasing, col
    assert (err["stochastic, mean of 8 draws"] < err["stochastic mean |err|"]).all()  # averaging draws helps


def test_stochastic_average_error_falls_below_the_uniform_bias():
    from dlg_utils.defenses import stochastic_average_error
    g = torch.randn(2000, generator=gen(4))
    curve = stochastic_average_error(g, 16, 300, at=(1, 4, 16, 64, 256, 1024), seed=1)
    assert curve["draws"].tolist() == [1, 4, 16, 64, 256, 300]  # 1024 is never reached; the last draw is kept
    err = curve["mean |avg - g|"]
    assert err.iloc[-1] < err.iloc[0] / 8  # about 1 / sqrt(300) of one draw's
    assert err.iloc[-1] < float((UniformQuantization(16)([g])[0] - g).abs().mean()) / 4
