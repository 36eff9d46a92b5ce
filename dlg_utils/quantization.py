"""TensorFlow-compatible quantize / dequantize (``tf.quantization.quantize`` / ``dequantize``).

Follows TensorFlow's CPU kernels (QuantizeV2 and Dequantize) step by step, in float32, for
qint8, quint8, qint16 and quint16 and the modes MIN_COMBINED, MIN_FIRST and SCALED (seed 001,
Algorithm 2, is SCALED). Quantized values are returned in the matching torch integer dtype.
"""
from __future__ import annotations

import torch

DTYPES = {  # name: (torch storage dtype, lowest, highest, bits)
    "qint8": (torch.int8, -128, 127, 8),
    "quint8": (torch.uint8, 0, 255, 8),
    "qint16": (torch.int16, -32768, 32767, 16),
    "quint16": (torch.uint16, 0, 65535, 16),
}
MODES = ("MIN_COMBINED", "MIN_FIRST", "SCALED")
ROUND_MODES = ("HALF_AWAY_FROM_ZERO", "HALF_TO_EVEN")
F32 = torch.float32
FLOAT_MAX = torch.finfo(F32).max


def _f32(v) -> torch.Tensor:
    """A float32 scalar tensor: every intermediate below is rounded to float32, as in TF."""
    return torch.as_tensor(v, dtype=torch.float64).to(F32)


def round_half_away_from_zero(x: torch.Tensor) -> torch.Tensor:
    """``std::round``: halves go away from zero (torch.round goes to even)."""
    t = torch.trunc(x)
    return t + torch.sign(x) * ((x - t).abs() >= 0.5).to(x.dtype)


def check_format(dtype: str, mode: str, round_mode: str = "HALF_AWAY_FROM_ZERO") -> None:
    """Raise ``ValueError`` unless ``dtype``, ``mode`` and ``round_mode`` are a combination TF accepts."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if round_mode not in ROUND_MODES:
        raise ValueError(f"round_mode must be one of {ROUND_MODES}, got {round_mode!r}")
    if round_mode == "HALF_TO_EVEN" and mode != "SCALED":
        raise ValueError("round_mode 'HALF_TO_EVEN' is only supported for mode 'SCALED' (as in TF)")


def _scalar(v, name: str) -> float:
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def quantize(x: torch.Tensor, min_range, max_range, dtype: str = "qint8",
             mode: str = "MIN_COMBINED", round_mode: str = "HALF_AWAY_FROM_ZERO",
             narrow_range: bool = False, ensure_minimum_range: float = 0.01
             ) -> tuple[torch.Tensor, float, float]:
    """Quantize float ``x`` to ``dtype``; returns ``(q, output_min, output_max)`` like TF.

    As in TF, the range is first widened to contain 0 and to be at least
    ``ensure_minimum_range * max(1, |min|, |max|)`` wide; SCALED then shrinks one side so the
    scale is symmetric. Pass ``output_min``/``output_max`` to :func:`dequantize`.
    """
    check_format(dtype, mode, round_mode)
    lo, hi = _scalar(min_range, "min_range"), _scalar(max_range, "max_range")
    if hi < lo:
        raise ValueError(f"max_range ({hi}) must be >= min_range ({lo})")
    x = torch.as_tensor(x)
    if not torch.isfinite(x).all():
        raise ValueError("quantize: input contains NaN or Inf")
    storage, lowest, highest, bits = DTYPES[dtype]
    x = x.to(F32)
    # Widen the range (QuantizeV2's "ensure_minimum_range" nudge).
    lo32, hi32 = _f32(lo), _f32(hi)
    min_r = torch.minimum(_f32(0.0), lo32)
    eps = torch.maximum(_f32(1.0), torch.maximum(lo32.abs(), hi32.abs())) * _f32(ensure_minimum_range)
    max_r = torch.maximum(_f32(0.0), torch.maximum(hi32, min_r + eps))

    if mode == "MIN_COMBINED":
        scale = _f32((float(highest) - float(lowest)) / float(max_r - min_r))
        v = (x.clamp(min_r, max_r) - min_r) * scale
        if lowest < 0:  # signed: shift by half the range, round half away from zero
            q = round_half_away_from_zero(v - _f32((highest - lowest + 1) / 2))
        else:  # unsigned: the kernel adds 0.5 and truncates
            q = torch.trunc(v + _f32(0.5))
    elif mode == "MIN_FIRST":
        scale = _f32(0.0 if float(max_r) == float(min_r) else (2.0 ** bits - 1.0) / float(max_r - min_r))
        min_scaled = round_half_away_from_zero(min_r * scale)
        q = round_half_away_from_zero(x * scale) - (min_scaled - _f32(lowest))
    else:  # SCALED
        min_out = lowest + (1 if narrow_range else 0)
        from_min = _f32(min_out) / min_r if min_out * float(min_r) > 0 else _f32(FLOAT_MAX)
        from_max = _f32(highest) / max_r if highest * float(max_r) > 0 else _f32(FLOAT_MAX)
        scale = torch.minimum(from_min, from_max)
        min_r, max_r = _f32(min_out) / scale, _f32(highest) / scale
        v = x.clamp(min_r, max_r) * scale
        q = torch.round(v) if round_mode == "HALF_TO_EVEN" else round_half_away_from_zero(v)
    q = q.clamp(lowest, highest).to(storage)
    return q, float(min_r), float(max_r)


def dequantize(q: torch.Tensor, min_range, max_range, dtype: str = "qint8",
               mode: str = "MIN_COMBINED", narrow_range: bool = False) -> torch.Tensor:
    """Map quantized ``q`` back to float32 with TF's ``Dequantize`` for ``dtype`` and ``mode``."""
    check_format(dtype, mode)
    lo, hi = _f32(_scalar(min_range, "min_range")), _f32(_scalar(max_range, "max_range"))
    _, lowest, highest, bits = DTYPES[dtype]
    qf = torch.as_tensor(q).to(torch.int64).to(F32)
    if mode == "MIN_COMBINED":
        half = _f32((highest - lowest + 1) / 2 if lowest < 0 else 0.0)
        scale = (hi - lo) / _f32(float(highest) - float(lowest))
        return (qf + half) * scale + lo
    if mode == "MIN_FIRST":
        if float(hi) == float(lo):
            return torch.full_like(qf, float(lo))
        step = _f32((float(hi) - float(lo)) / (2.0 ** bits - 1.0))
        lo_rounded = round_half_away_from_zero(lo / step) * step
        return (lo_rounded - _f32(lowest) * step) + qf * step
    min_out = lowest + (1 if narrow_range else 0)
    scale = hi / _f32(highest) if lowest == 0 else torch.maximum(lo / _f32(min_out), hi / _f32(highest))
    return qf * scale


def step_size(min_range, max_range, dtype: str = "qint8", mode: str = "MIN_COMBINED",
              narrow_range: bool = False) -> float:
    """The float value of one integer step when :func:`dequantize` maps ``q`` back with these
    output ranges: every mode is q -> a * q + b per tensor, and this is ``a``."""
    check_format(dtype, mode)
    lo, hi = _scalar(min_range, "min_range"), _scalar(max_range, "max_range")
    _, lowest, highest, bits = DTYPES[dtype]
    if mode == "MIN_COMBINED":
        return (hi - lo) / (highest - lowest)
    if mode == "MIN_FIRST":
        return (hi - lo) / (2.0 ** bits - 1.0)
    min_out = lowest + (1 if narrow_range else 0)
    return hi / highest if lowest == 0 else max(lo / min_out, hi / highest)


def quantize_dequantize(x: torch.Tensor, dtype: str = "qint8", mode: str = "SCALED",
                        dequantize_mode: str | None = None, **kwargs) -> torch.Tensor:
    """Quantize ``x`` over its own [min, max] and dequantize it (with ``dequantize_mode``, default
    the same mode): what a receiver of the quantized tensor and its ranges reconstructs."""
    q, out_min, out_max = quantize(x, x.min(), x.max(), dtype=dtype, mode=mode, **kwargs)
    return dequantize(q, out_min, out_max, dtype=dtype, mode=dequantize_mode or mode,
                      narrow_range=kwargs.get("narrow_range", False)).reshape(x.shape)


def mode_errors(grads, dtypes=("qint8", "qint16")):
    """The relative error of quantizing every tensor of ``grads`` over its own range with one
    mode and dequantizing it with another (seed 001 Fig. 4's mismatch): sum over tensors of
    |out - g| divided by the sum of |g|. A DataFrame indexed by (dtype, quantize mode), one
    column per dequantize mode."""
    import pandas as pd
    rows = []
    for dtype in dtypes:
        for mode in MODES:
            for deq in MODES:
                out = [quantize_dequantize(t, dtype, mode, deq) for t in grads]
                rel = sum(float((o - t).norm()) for o, t in zip(out, grads)) / sum(float(t.norm()) for t in grads)
                rows.append({"dtype": dtype, "quantize": mode, "dequantize": deq, "relative error": rel})
    return pd.DataFrame(rows).pivot_table(index=["dtype", "quantize"], columns="dequantize", values="relative error")
