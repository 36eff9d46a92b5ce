"""quantize/dequantize against TensorFlow's documented formulas and known values."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dlg_utils.quantization import DTYPES, MODES, dequantize, quantize, quantize_dequantize

LIMITS = {k: (lo, hi) for k, (_, lo, hi, _) in DTYPES.items()}


def reference_quantize(x, lo, hi, dtype, mode):
    """TF documentation's formulas, in float64 (ranges already containing 0 and wide enough)."""
    qmin, qmax = LIMITS[dtype]
    x = np.asarray(x, np.float64)
    rnd = lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5)  # half away from zero
    if mode == "MIN_COMBINED":
        out = (np.clip(x, lo, hi) - lo) * (qmax - qmin) / (hi - lo)
        return rnd(out - (qmax - qmin + 1) / 2) if qmin < 0 else np.floor(out + 0.5)
    if mode == "MIN_FIRST":
        n = 2.0 ** (8 * (1 if qmax < 256 else 2))
        scale = n / ((hi - lo) * n / (n - 1))
        return np.clip(rnd(x * scale) - rnd(lo * scale) + qmin, qmin, qmax)
    f_min = qmin / lo if qmin * lo > 0 else np.inf
    f_max = qmax / hi if qmax * hi > 0 else np.inf
    s = min(f_min, f_max)
    return rnd(np.clip(x, qmin / s, qmax / s) * s)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("mode", MODES)
def test_matches_documented_formulas(dtype, mode):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, generator=g) * 3
    lo, hi = -7.5, 6.25
    q, out_min, out_max = quantize(x, lo, hi, dtype, mode)
    ref = reference_quantize(x.numpy(), lo, hi, dtype, mode) if DTYPES[dtype][1] < 0 or mode != "SCALED" \
        else reference_quantize(x.numpy(), 0.0, hi, dtype, mode)
    assert q.dtype == DTYPES[dtype][0]
    diff = np.abs(q.to(torch.int64).numpy() - ref.astype(np.int64))
    if DTYPES[dtype][3] == 8:
        assert diff.max() == 0
    else:  # TF computes in float32: at 16 bits a value can land on the other side of a half
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    if mode != "SCALED":
        assert (out_min, out_max) == (lo, hi)


def test_scaled_example_from_tf_docs():
    # "if T = qint8, and initially min_range = -10, and max_range = 9, we would compare
    # -128/-10.0 = 12.8 to 127/9.0 = 14.11, and set scaling_factor = 12.8 ...
    # max_range would be adjusted to 127 / 12.8 = 9.921875"
    q, lo, hi = quantize(torch.tensor([-10.0, 0.0, 9.0, 10.0]), -10, 9, "qint8", "SCALED")
    assert (lo, hi) == (-10.0, 9.921875)
    assert q.tolist() == [-128, 0, round(9 * 12.8), 127]
    d = dequantize(q, lo, hi, "qint8", "SCALED")
    assert torch.allclose(d, q.float() / 12.8)


def test_min_combined_known_values():
    # quint8 over [0, 255]: identity; qint8 shifts by 128
    x = torch.tensor([0.0, 1.0, 127.4, 127.5, 128.0, 255.0])
    assert quantize(x, 0, 255, "quint8", "MIN_COMBINED")[0].tolist() == [0, 1, 127, 128, 128, 255]
    # qint8: round(v - 128) half away from zero, so 127.5 -> round(-0.5) = -1
    assert quantize(x, 0, 255, "qint8", "MIN_COMBINED")[0].tolist() == [-128, -127, -1, -1, 0, 127]


def test_round_modes():
    x = torch.tensor([2.5, -2.5, 3.5, 0.5])
    away = quantize(x, -127, 127, "qint8", "SCALED")[0]
    even = quantize(x, -127, 127, "qint8", "SCALED", round_mode="HALF_TO_EVEN")[0]
    assert away.tolist() == [3, -3, 4, 1]
    assert even.tolist() == [2, -2, 4, 0]


def test_narrow_range():
    q, lo, hi = quantize(torch.tensor([-1.0, 1.0]), -1, 1, "qint8", "SCALED", narrow_range=True)
    assert q.tolist() == [-127, 127] and lo == -1.0 and hi == 1.0
    # without narrow_range the scale is min(128/1, 127/1) = 127, so -1 maps to -127
    q, lo, _ = quantize(torch.tensor([-1.0]), -1, 1, "qint8", "SCALED")
    assert q.tolist() == [-127] and lo == pytest.approx(-128 / 127)


def test_range_is_widened_to_contain_zero_and_a_minimum_width():
    _, lo, hi = quantize(torch.tensor([2.0, 3.0]), 2, 3, "quint8", "MIN_COMBINED")
    assert (lo, hi) == (0.0, 3.0)
    q, lo, hi = quantize(torch.zeros(4), 0, 0, "qint8", "MIN_COMBINED")  # constant tensor
    assert hi - lo == pytest.approx(0.01)
    assert torch.allclose(dequantize(q, lo, hi, "qint8", "MIN_COMBINED"), torch.zeros(4), atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(list(DTYPES)), mode=st.sampled_from(MODES),
       values=st.lists(st.floats(-1e3, 1e3, width=32), min_size=2, max_size=64))
def test_round_trip_error_is_at_most_half_a_step(dtype, mode, values):
    x = torch.tensor(values)
    if DTYPES[dtype][1] == 0 and mode == "SCALED":
        x = x.abs()  # unsigned SCALED cannot represent negatives (clamped to 0, as in TF)
    q, lo, hi = quantize(x, x.min(), x.max(), dtype, mode)
    qmin, qmax = LIMITS[dtype]
    q64 = q.to(torch.int64)
    assert qmin <= int(q64.min()) and int(q64.max()) <= qmax
    d = dequantize(q, lo, hi, dtype, mode)
    step = (hi - lo) / (qmax - qmin)
    # MIN_FIRST rounds the range minimum too: up to one full step
    tol = (1.0 if mode == "MIN_FIRST" else 0.5) * step + 1e-6 * max(1.0, float(x.abs().max()))
    assert float((d - x).abs().max()) <= tol * 1.0001


def test_wrong_mode_dequantization_is_far_off():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 0.01
    right = quantize_dequantize(x, "qint8", "MIN_COMBINED")
    wrong = quantize_dequantize(x, "qint8", "MIN_COMBINED", dequantize_mode="SCALED")
    assert (right - x).abs().max() < 1e-3
    assert (wrong - x).abs().mean() > 10 * (right - x).abs().mean()


def test_bad_input_raises():
    x = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="HALF_TO_EVEN"):
        quantize(x, 0, 1, "qint8", "MIN_COMBINED", round_mode="HALF_TO_EVEN")
    with pytest.raises(ValueError, match="max_range"):
        quantize(x, 1, 0)
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([float("nan")]), 0, 1)
    with pytest.raises(ValueError, match="finite"):
        quantize(x, float("nan"), 1)
    with pytest.raises(ValueError, match="dtype"):
        quantize(x, 0, 1, "qint4")
    with pytest.raises(ValueError, match="mode"):
        dequantize(torch.tensor([1]), 0, 1, "qint8", "MAX")


def test_mode_errors_table():
    """Right mode: a fraction of a step; SCALED tensors decode the same under every mode; a
    MIN_* tensor of a one-sided gradient read as SCALED goes wrong."""
    from dlg_utils.quantization import mode_errors
    g = torch.Generator().manual_seed(0)
    grads = [torch.rand(50, generator=g) * 0.5 + 0.1, torch.randn(30, generator=g)]
    table = mode_errors(grads)
    assert list(table.index) == sorted((d, m) for d in ("qint8", "qint16") for m in MODES)
    assert list(table.columns) == sorted(MODES)
    for d in ("qint8", "qint16"):
        for m in MODES:
            assert table.loc[(d, m), m] < (0.01 if d == "qint8" else 1e-4)
    scaled = table.xs("SCALED", level="quantize")
    assert np.allclose(scaled.to_numpy(), scaled[["SCALED"]].to_numpy(), atol=1e-6)
    assert table.loc[("qint8", "MIN_COMBINED"), "SCALED"] > 0.1
