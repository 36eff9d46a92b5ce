import math

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from dlg_utils.defenses import (GaussianNoise, HalfPrecision, LaplacianNoise, LayerPrecision,
                                MixedPrecision, NoDefense, Sparsification, StochasticRounding,
                                UniformQuantization, default_policy, defense_from_spec, describe, random_policy)

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


def test_absolute_noise_is_its_number_times_a_standard_draw():
    """gaussian:S adds S * N(0, 1) and laplacian:B adds B * Laplace(0, 1) (S a std, B a scale, not
    variances): the draws committed results were made with."""
    x = torch.randn(1000, generator=gen(0))
    assert torch.equal(GaussianNoise(0.01)([x], gen(3))[0], x + 0.01 * torch.randn(1000, generator=gen(3)))
    g = gen(3)
    e1, e2 = torch.empty(1000).exponential_(generator=g), torch.empty(1000).exponential_(generator=g)
    assert torch.equal(LaplacianNoise(0.01)([x], gen(3))[0], x + 0.01 * (e1 - e2))


def rms(t):
    return float(t.double().square().mean().sqrt())


@pytest.mark.parametrize("scale", [1e-6, 1e3])
def test_relative_noise_is_a_fraction_of_each_tensors_rms(scale):
    big = torch.randn(200_000, generator=gen(1)) * scale + 0.5 * scale  # RMS sqrt(1.25) * scale
    small = torch.randn(50, 40, generator=gen(2)) * 1e-3  # a second tensor of another size and scale
    for d, std_per_unit in ((GaussianNoise(0.1, relative=True), 1.0), (LaplacianNoise(0.1, relative=True), math.sqrt(2))):
        out = d([big, small], gen(0))
        noise = out[0] - big
        assert abs(float(noise.double().std()) / (0.1 * std_per_unit * rms(big)) - 1) < 0.02
        assert abs(float(noise.double().mean())) < 0.01 * 0.1 * rms(big)
        if d.kind == "laplacian":  # b = fraction * RMS: mean |noise| = b
            assert abs(float(noise.double().abs().mean()) / (0.1 * rms(big)) - 1) < 0.02
        small_noise = out[1] - small  # each tensor its own RMS
        assert 0.7 < float(small_noise.std()) / (0.1 * std_per_unit * rms(small)) < 1.3


@settings(max_examples=60, deadline=None)
@given(x=tensors, c=st.sampled_from([1e-4, 0.5, 3.0, 1e4]), seed=st.integers(0, 2**16),
       family=st.sampled_from([GaussianNoise, LaplacianNoise]))
def test_relative_noise_is_scale_invariant(x, c, seed, family):
    """defense(c * g) = c * defense(g) with the same draws: one spec is one strength at any scale."""
    # Below float32's normal range (~1.2e-38) c * x itself loses digits: a property of the
    # arithmetic, not of the defense, so the scaled input must stay well inside it.
    assume(c * float(x.abs().max()) > 1e6 * torch.finfo(torch.float32).tiny)
    d = family(0.2, relative=True)
    scaled = d([c * x], gen(seed))[0]
    assert torch.allclose(scaled, c * d([x], gen(seed))[0], rtol=1e-4, atol=1e-6 * c * float(x.abs().max()))


def test_relative_noise_leaves_a_zero_tensor_alone():
    zero, x = torch.zeros(3, 4), torch.randn(10, generator=gen(0))
    for d in (GaussianNoise(0.5, relative=True), LaplacianNoise(0.5, relative=True)):
        out = d([zero, x, torch.zeros(0)], gen(1))
        assert torch.equal(out[0], zero) and not torch.equal(out[1], x) and out[2].numel() == 0
    huge = torch.full((4,), 1e30)  # its square overflows float32; its RMS does not
    assert torch.isfinite(GaussianNoise(0.1, relative=True)([huge], gen(0))[0]).all()


def test_relative_noise_is_noise():
    from dlg_utils.attacks import attack_config
    from dlg_utils.frontier import NOISE
    shapes = [(6, 3, 5, 5), (6,)]
    for spec, kind in (("gaussian-rel:0.1", "gaussian"), ("laplacian-rel:0.1", "laplacian")):
        d = defense_from_spec(spec)
        assert d.kind == kind and kind in NOISE and d.relative
        assert attack_config("adaptive", spec) == attack_config("adaptive", f"{kind}:0.1")  # as for noise
        assert d.bits(shapes) == GaussianNoise(0.1).bits(shapes) == 456 * 32  # float32 entries
        assert d.share([torch.ones(3)], gen()).bounds is None


def test_describe_says_what_a_noise_number_is():
    assert describe("gaussian:0.01") == "Gaussian noise of std 0.01 (variance 0.0001) added"
    assert describe("laplacian:0.01") == "Laplacian noise of scale 0.01 (std 0.0141) added"
    assert describe("gaussian-rel:0.1") == "Gaussian noise of std 0.1 x each tensor's RMS added"
    assert describe("laplacian-rel:0.1") == "Laplacian noise of scale 0.1 x each tensor's RMS (std 0.141 x RMS) added"


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
                                  "laplacian:0.001", "gaussian-rel:0.1", "laplacian-rel:0.05", "half", "mixed",
                                  "mixed:random:3"])
def test_spec_round_trip(spec):
    d = defense_from_spec(spec)
    assert d.name == spec and defense_from_spec(d.name).name == spec
    x = [torch.randn(3, 4, generator=gen(0))]
    assert d(x, gen(0))[0].shape == (3, 4)


@pytest.mark.parametrize("spec", ["uniform:1", "uniform:2.5", "sparsity:1", "sparsity:-0.1", "gaussian:-1",
                                  "bogus:3", "uniform", "half:2", "mixed:zigzag", "gaussian-rel", "gaussian-rel:nan"])
def test_bad_specs_raise(spec):
    with pytest.raises(ValueError):
        defense_from_spec(spec)


@pytest.mark.parametrize("spec, form", [("gaussian-rel:-1", "gaussian-rel:FRACTION"),
                                        ("gaussian-rel:abc", "gaussian-rel:FRACTION"),
                                        ("laplacian-rel:-0.1", "laplacian-rel:FRACTION"),
                                        ("gaussian:x", "gaussian:STD"), ("uniform:x", "uniform:LEVELS")])
def test_a_bad_number_names_its_valid_form(spec, form):
    with pytest.raises(ValueError, match=f"bad defense spec .*valid: {form}"):
        defense_from_spec(spec)


def test_an_unknown_spec_lists_every_form_and_what_noise_numbers_mean():
    with pytest.raises(ValueError) as e:
        defense_from_spec("gaussian-relative:0.1")
    for form in ("gaussian:STD", "laplacian:SCALE", "gaussian-rel:FRACTION", "laplacian-rel:FRACTION", "mixed"):
        assert form in str(e.value)
    assert "not a variance" in str(e.value)


@pytest.mark.parametrize("d", [NoDefense(), UniformQuantization(4), StochasticRounding(4), Sparsification(0.5),
                               GaussianNoise(1.0), GaussianNoise(0.1, relative=True), HalfPrecision(),
                               MixedPrecision()])
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
