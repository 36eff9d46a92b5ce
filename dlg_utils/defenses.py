"""Gradient defenses: callables ``defense(grads, generator=None) -> grads`` applied per tensor.

Each works on one gradient tensor (one layer's weight or bias) at a time, as in seed 000
section III and its code, and has a short ``name`` that :func:`defense_from_spec` parses back.
Random defenses draw from the ``torch.Generator`` they are given, once per call: call them once
per target gradient. (Seed 000's code re-drew them at every L-BFGS closure call; the engine
does so only when asked: ``AttackConfig(redraw_defense=True)``.)

Each defense also says what it reveals and what it costs: :meth:`Defense.share` returns the
defended gradient with the box of true gradients consistent with it (``bounds``: what a
defense-aware attacker can match; None for noise, which leaves no box), and
:meth:`Defense.bits` the size of the message that carries it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .quantization import DTYPES, MODES, check_format, dequantize, quantize, step_size

Grads = Sequence[torch.Tensor]
FLOAT_BITS = 32  # a float32 value: a gradient entry, or one end of a tensor's range
RELATIVE = "-rel"  # the suffix of a noise spec whose number is in units of each tensor's RMS


def _finite(g: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(g).all():
        raise ValueError("gradient contains NaN or Inf; a defense cannot be applied to it")
    return g


def _nonnegative(value, name: str) -> float:
    if not float(value) >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _levels(levels) -> int:
    if isinstance(levels, bool) or int(levels) != levels or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    return int(levels)


def _grid(g: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Position of ``g`` on the grid of ``levels`` values from g.min() to g.max(): (pos, lo, step);
    None when there is no grid to round to: an empty or constant tensor, or a range so small
    (a few denormals) that its step is 0 in the tensor's precision."""
    if g.numel() == 0:
        return None
    lo, hi = g.min(), g.max()
    step = (hi - lo) / (levels - 1)
    if not step > 0:
        return None
    return (g - lo) / step, lo, step


@dataclass
class SharedGradient:
    """What leaves the client: the defended gradient (one tensor per parameter), the defense
    that made it (an attacker who knows it, Kerckhoffs) and, where the defense allows, the box
    (low, high) per tensor of true gradients consistent with it. ``source``, the gradient
    before the defense, is not shared: it is kept only to replay seed 000's simulation, which
    re-applies the defense to it at every closure call (``AttackConfig.redraw_defense``)."""

    grads: list[torch.Tensor]
    defense: "Defense"
    bounds: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    source: list[torch.Tensor] | None = None


def _widen(low: torch.Tensor, high: torch.Tensor, slack: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    return low - slack, high + slack


class Defense:
    """Base class: applies :meth:`one` to every gradient tensor."""

    name = "defense"
    entry_bits = FLOAT_BITS  # bits per gradient entry on the wire
    range_bits = 0  # bits of metadata per tensor (its range)

    def __call__(self, grads: Grads, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [self.one(_finite(g.detach()), generator) for g in grads]

    def one(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def share(self, grads: Grads, generator: torch.Generator | None = None) -> SharedGradient:
        """The defended gradient with the box of true gradients it is consistent with."""
        out = self(grads, generator)
        return SharedGradient(out, self, self.bounds(out))

    def bounds(self, shared: Grads) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per tensor, (low, high) such that the true gradient lies in [low, high], computed from
        the shared gradient alone; None where the defense leaves no box (noise)."""
        return None

    def bits(self, shapes: Sequence[Sequence[int]]) -> int:
        """Bits of the message that carries a gradient of tensors of ``shapes``, metadata
        (each tensor's range) included."""
        return sum(math.prod(s) * self.entry_bits + self.range_bits for s in shapes)

    @property
    def kind(self) -> str:
        """The family of the defense: its spec's name before any ``:`` ("uniform", "sparsity",
        "gaussian", "mixed", ...), a relative noise in its noise's family (``gaussian-rel:0.1``
        is "gaussian"). The one place a defense's kind is read from its name."""
        return self.name.partition(":")[0].removesuffix(RELATIVE)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class NoDefense(Defense):
    """Share the gradient as it is."""

    name = "none"

    def one(self, g, generator):
        return g.clone()

    def bounds(self, shared):
        return [(g, g) for g in shared]


@dataclass(repr=False)
class UniformQuantization(Defense):
    """Round each entry to the nearest of ``levels`` evenly spaced values from the tensor's min to
    its max ((max-min)/(levels-1) apart). A constant tensor is returned unchanged (one level), as
    is one whose range is too small for its step to be represented (a few denormals)."""

    levels: int

    def __post_init__(self):
        self.levels = _levels(self.levels)
        self.name = f"uniform:{self.levels}"
        self.entry_bits, self.range_bits = math.ceil(math.log2(self.levels)), 2 * FLOAT_BITS

    def one(self, g, generator):
        grid = _grid(g, self.levels)
        if grid is None:
            return g.clone()
        pos, lo, step = grid
        return torch.round(pos) * step + lo

    reach = 0.5  # the true value is within this many steps of the shared one

    def bounds(self, shared):
        """The tensor's min and max are kept exactly (they are the grid's ends), so the step is
        known, and the true value lies within ``reach`` steps of the shared one."""
        out = []
        for q in shared:
            step = (q.max() - q.min()) / (self.levels - 1) if q.numel() else q.new_zeros(())
            out.append(_widen(q - self.reach * step, q + self.reach * step, 1e-6 * step + 1e-30))
        return out


@dataclass(repr=False)
class StochasticRounding(Defense):
    """Same grid as :class:`UniformQuantization`, but round up with probability equal to the
    fractional position between two levels: unbiased, E[q(g)] = g."""

    levels: int

    def __post_init__(self):
        self.levels = _levels(self.levels)
        self.name = f"stochastic:{self.levels}"
        self.entry_bits, self.range_bits = math.ceil(math.log2(self.levels)), 2 * FLOAT_BITS

    reach = 1.0  # rounded up or down: within one step
    bounds = UniformQuantization.bounds

    def one(self, g, generator):
        grid = _grid(g, self.levels)
        if grid is None:
            return g.clone()
        pos, lo, step = grid
        lower = torch.floor(pos)
        u = torch.rand(g.shape, generator=generator, device=g.device, dtype=g.dtype)
        return (lower + (u < pos - lower).to(g.dtype)) * step + lo


@dataclass(repr=False)
class Sparsification(Defense):
    """Zero the ``ratio`` fraction (floor(ratio * n) entries) of smallest magnitude in each tensor;
    exactly that many, ties broken by position. DLG's gradient pruning."""

    ratio: float

    def __post_init__(self):
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ValueError(f"sparsity ratio must be in [0, 1), got {self.ratio!r}")
        self.ratio = float(self.ratio)
        self.name = f"sparsity:{self.ratio:g}"

    def one(self, g, generator):
        k = int(self.ratio * g.numel())
        if k == 0:
            return g.clone()
        flat = g.flatten()
        drop = torch.topk(flat.abs(), k, largest=False, sorted=False).indices
        out = flat.clone()
        out[drop] = 0
        return out.view_as(g)

    def bounds(self, shared):
        """Kept entries are exact; a zeroed one was no larger in magnitude than the smallest kept."""
        out = []
        for q in shared:
            kept = q[q != 0].abs()
            limit = kept.min() if kept.numel() and int(self.ratio * q.numel()) else q.new_zeros(())
            dropped = (q == 0).to(q.dtype) * limit
            out.append((q - dropped, q + dropped))
        return out

    def bits(self, shapes):
        """Per tensor: the kept values, and their positions as a bitmap or as indices, whichever
        is smaller."""
        total = 0
        for s in shapes:
            n = math.prod(s)
            kept = n - int(self.ratio * n)
            total += kept * FLOAT_BITS + min(n, kept * max(1, math.ceil(math.log2(n))))
        return total


def _rms(g: torch.Tensor) -> torch.Tensor:
    """The root mean square of ``g``'s entries (0 for an empty or all-zero tensor), computed on
    g / max|g| so that squaring neither overflows nor underflows."""
    if g.numel() == 0:
        return g.new_zeros(())
    peak = g.abs().amax()
    return peak * (g / torch.where(peak > 0, peak, torch.ones_like(peak))).square().mean().sqrt()


def _noise_size(value: float, relative: bool, g: torch.Tensor):
    """The noise's std (Gaussian) or scale (Laplacian) for tensor ``g``: ``value`` itself, or
    ``value`` times ``g``'s RMS when ``relative``."""
    return value * _rms(g) if relative else value


def _noise_name(family: str, value: float, relative: bool) -> str:
    return f"{family}{RELATIVE if relative else ''}:{value:g}"


@dataclass(repr=False)
class GaussianNoise(Defense):
    """Add N(0, std^2) noise to every entry: ``std`` is the standard deviation, not the variance
    (``gaussian:0.01`` has variance 1e-4; a variance v is ``gaussian:{sqrt(v)}``). The DLG paper
    (Zhu et al. 2019) states its levels, 1e-1 to 1e-4, as variances; the project's specs
    (``gaussian:0.0001`` to ``gaussian:0.1``) take those numbers as std (docs/defenses.md).

    ``relative=True`` (spec ``gaussian-rel:F``): the std of each tensor's noise is ``std`` times
    that tensor's RMS (root mean square of its entries), so that one spec is the same strength
    on any model or layer; a tensor of zeros (RMS 0) gets no noise."""

    std: float
    relative: bool = False

    def __post_init__(self):
        self.relative = bool(self.relative)
        self.std = _nonnegative(self.std, "fraction of the RMS" if self.relative else "std")
        self.name = _noise_name("gaussian", self.std, self.relative)

    def one(self, g, generator):
        size = _noise_size(self.std, self.relative, g)
        return g + size * torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)


@dataclass(repr=False)
class LaplacianNoise(Defense):
    """Add Laplace(0, scale) noise to every entry, density exp(-|x| / b) / 2b with b = ``scale``:
    mean |noise| = b, variance 2 b^2 (std sqrt(2) b). ``scale`` is b, not the variance
    (``laplacian:0.01`` has variance 2e-4; a variance v is ``laplacian:{sqrt(v / 2)}``).

    ``relative=True`` (spec ``laplacian-rel:F``): b of each tensor's noise is ``scale`` times that
    tensor's RMS, so its std is sqrt(2) * F * RMS (``laplacian-rel:{F / sqrt(2)}`` has the std of
    ``gaussian-rel:F``); a tensor of zeros (RMS 0) gets no noise."""

    scale: float
    relative: bool = False

    def __post_init__(self):
        self.relative = bool(self.relative)
        self.scale = _nonnegative(self.scale, "fraction of the RMS" if self.relative else "scale")
        self.name = _noise_name("laplacian", self.scale, self.relative)

    def one(self, g, generator):
        e1 = torch.empty_like(g).exponential_(generator=generator)
        e2 = torch.empty_like(g).exponential_(generator=generator)
        size = _noise_size(self.scale, self.relative, g)
        return g + size * (e1 - e2)  # the difference of two Exp(1) is Laplace(0, 1)


class HalfPrecision(Defense):
    """Round to IEEE half precision and back (DLG's fp16 defense); values beyond the fp16 range
    saturate at +-65504 instead of becoming Inf."""

    name = "half"
    entry_bits = 16

    def one(self, g, generator):
        limit = torch.finfo(torch.float16).max
        return g.clamp(-limit, limit).half().to(g.dtype)

    def bounds(self, shared):
        """Within half a unit in the last place of float16 (2^-24 below its smallest normal);
        a saturated entry only says the true one was at least as large."""
        info = torch.finfo(torch.float16)
        out = []
        for q in shared:
            exponent = torch.floor(torch.log2(q.abs().clamp(min=info.smallest_normal)))
            half_ulp = torch.exp2(exponent - 11)
            low, high = _widen(q - half_ulp, q + half_ulp, 1e-6 * half_ulp)
            high = torch.where(q >= info.max, torch.full_like(q, math.inf), high)
            low = torch.where(q <= -info.max, torch.full_like(q, -math.inf), low)
            out.append((low, high))
        return out


@dataclass(frozen=True)
class LayerPrecision:
    """How one tensor is sent: TF dtype and quantization mode (and the mode the receiver uses)."""

    dtype: str = "qint8"
    mode: str = "SCALED"
    dequantize_mode: str | None = None

    def __post_init__(self):
        for mode in (self.mode, self.dequantize_mode or self.mode):
            check_format(self.dtype, mode)


def default_policy(num_tensors: int) -> list[LayerPrecision]:
    """int16 for the first and last layer (weight and bias), which are the most sensitive, int8
    for the rest; quantization modes alternate over layers (seed 001 varies them per layer)."""
    policy = []
    for i in range(num_tensors):
        layer = i // 2
        edge = layer == 0 or i >= num_tensors - 2
        policy.append(LayerPrecision("qint16" if edge else "qint8", MODES[layer % len(MODES)]))
    return policy


def random_policy(num_tensors: int, seed: int = 0) -> list[LayerPrecision]:
    """Each tensor's dtype (qint8 or qint16) and mode drawn uniformly at random from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    dtypes = torch.randint(0, 2, (num_tensors,), generator=g).tolist()
    modes = torch.randint(0, len(MODES), (num_tensors,), generator=g).tolist()
    return [LayerPrecision(("qint8", "qint16")[d], MODES[m]) for d, m in zip(dtypes, modes)]


SINGLE = {"int8": "qint8", "int16": "qint16"}


@dataclass(repr=False)
class MixedPrecision(Defense):
    """Seed 001's mixed precision: each tensor quantized to int8 or int16 with its own TF mode
    over its own [min, max], then dequantized, as the server does before averaging.

    ``policy`` is ``"default"`` (:func:`default_policy`), ``"random"`` (:func:`random_policy`
    with ``seed``), ``"int8"`` / ``"int16"`` (every tensor qint8 / qint16, SCALED: single
    precision, for comparison) or an explicit list of :class:`LayerPrecision`, one per tensor.
    ``ensure_minimum_range`` is TF's: every range is widened to contain 0 and to be at least
    0.01 * max(1, |min|, |max|) wide, so gradients much smaller than 0.01 lose precision
    (int8: a step of at least 0.01 / 255), as they did in seed 001's TensorFlow code.
    """

    policy: str | Sequence[LayerPrecision] = "default"
    seed: int = 0
    ensure_minimum_range: float = 0.01

    def __post_init__(self):
        if isinstance(self.policy, str):
            if self.policy not in ("default", "random", *SINGLE):
                raise ValueError(f"policy must be 'default', 'random', 'int8', 'int16' or a list, "
                                 f"got {self.policy!r}")
            self.name = {"default": "mixed", "random": f"mixed:random:{self.seed}"}.get(self.policy, self.policy)
        else:
            self.policy = [p if isinstance(p, LayerPrecision) else LayerPrecision(*p) for p in self.policy]
            self.name = "mixed:" + ",".join(f"{p.dtype}/{p.mode}" for p in self.policy)

    def layers(self, num_tensors: int) -> list[LayerPrecision]:
        """The per-tensor precisions for a model with ``num_tensors`` gradient tensors."""
        if self.policy == "default":
            return default_policy(num_tensors)
        if self.policy == "random":
            return random_policy(num_tensors, self.seed)
        if isinstance(self.policy, str):
            return [LayerPrecision(SINGLE[self.policy], "SCALED")] * num_tensors
        if len(self.policy) != num_tensors:
            raise ValueError(f"policy has {len(self.policy)} entries but there are {num_tensors} gradient tensors")
        return list(self.policy)

    def __call__(self, grads, generator=None):
        return self.share(grads, generator).grads

    def share(self, grads, generator=None):
        """Quantize each tensor over its own [min, max], dequantize it as the receiver does
        (:func:`~dlg_utils.quantization.quantize_dequantize`), and bound the true tensor from
        the message's ranges: within half a step of the dequantized value (a little more for
        TF's float32 arithmetic; MIN_FIRST's rounded offset can clamp an extreme entry by one
        more step)."""
        grads = [_finite(g.detach()) for g in grads]
        out, bounds = [], []
        for g, p in zip(grads, self.layers(len(grads))):
            q, lo, hi = quantize(g, g.min(), g.max(), p.dtype, p.mode, ensure_minimum_range=self.ensure_minimum_range)
            out.append(dequantize(q, lo, hi, p.dtype, p.dequantize_mode or p.mode).reshape(g.shape).to(g.dtype))
            step = step_size(lo, hi, p.dtype, p.mode)
            reach = (1.5 if p.mode == "MIN_FIRST" else 0.5) * step
            bounds.append(_widen(out[-1] - reach, out[-1] + reach, 0.01 * step))
        wrong = any(p.dequantize_mode not in (None, p.mode) for p in self.layers(len(grads)))
        return SharedGradient(out, self, None if wrong else bounds)

    def bits(self, shapes):
        """Each tensor's integers at its precision, and its range (two float32)."""
        return sum(math.prod(s) * DTYPES[p.dtype][3] + 2 * FLOAT_BITS
                   for s, p in zip(shapes, self.layers(len(shapes))))


SPECS = ("none", "uniform:LEVELS", "stochastic:LEVELS", "sparsity:RATIO", "gaussian:STD", "laplacian:SCALE",
         "gaussian-rel:FRACTION", "laplacian-rel:FRACTION", "half", "mixed", "mixed:random:SEED", "int8", "int16")
# What a noise spec's number means: a help line for the valid forms of SPECS.
NOISE_HELP = ("gaussian:STD is a standard deviation, not a variance (a variance v is gaussian:sqrt(v)); "
              "laplacian:SCALE is the Laplace scale b (variance 2b^2); the -rel forms give the std / b "
              "as a FRACTION of each tensor's RMS")


def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{what} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def defense_from_spec(spec: str | Defense | None) -> Defense:
    """Parse a short name: ``none``, ``uniform:16``, ``stochastic:16``, ``sparsity:0.2``,
    ``gaussian:1e-3``, ``laplacian:1e-3``, ``gaussian-rel:0.1``, ``laplacian-rel:0.1``, ``half``,
    ``mixed``, ``mixed:random[:SEED]``, ``int8``, ``int16`` (case and spaces do not matter). A
    noise's number is its std (Gaussian) or Laplace scale b (Laplacian), never a variance; in a
    ``-rel`` form, in units of each tensor's RMS (:data:`NOISE_HELP`). A bad name raises
    ``ValueError`` listing the valid forms (:data:`SPECS`); a bad number, the form of its kind."""
    if spec is None:
        return NoDefense()
    if isinstance(spec, Defense):
        return spec
    kind, _, arg = str(spec).strip().lower().replace(" ", "").partition(":")
    rel = "fraction of the RMS"
    makers = {"uniform": lambda a: UniformQuantization(_number(a, int, "levels")),
              "stochastic": lambda a: StochasticRounding(_number(a, int, "levels")),
              "sparsity": lambda a: Sparsification(_number(a, float, "sparsity ratio")),
              "gaussian": lambda a: GaussianNoise(_number(a, float, "std")),
              "laplacian": lambda a: LaplacianNoise(_number(a, float, "scale")),
              "gaussian" + RELATIVE: lambda a: GaussianNoise(_number(a, float, rel), relative=True),
              "laplacian" + RELATIVE: lambda a: LaplacianNoise(_number(a, float, rel), relative=True)}
    try:
        if kind in makers and arg:
            return makers[kind](arg)
        if kind in ("none", "") and not arg:
            return NoDefense()
        if kind in ("half", "fp16") and not arg:
            return HalfPrecision()
        if kind in SINGLE and not arg:
            return MixedPrecision(kind)
        if kind == "mixed":
            if arg in ("", "default"):
                return MixedPrecision("default")
            policy, _, seed = arg.partition(":")
            if policy == "random":
                return MixedPrecision("random", seed=_number(seed or "0", int, "seed"))
    except ValueError as e:
        forms = " or ".join(f for f in SPECS if f.partition(":")[0] == kind)
        raise ValueError(f"bad defense spec {spec!r}: {e} (valid: {forms})") from e
    raise ValueError(f"unknown defense spec {spec!r}; valid: {', '.join(SPECS)} "
                     f"(e.g. 'uniform:16', 'sparsity:0.2', 'gaussian:1e-3', 'gaussian-rel:0.1'); {NOISE_HELP}")


def describe(spec: str | Defense | None) -> str:
    """What a defense does, in a few words for a figure or a table (``"uniform:16"`` -> "each
    tensor rounded to 16 evenly spaced levels"; a noise with its std, or its Laplace scale and std:
    ``"gaussian:0.01"`` -> "Gaussian noise of std 0.01 (variance 0.0001) added")."""
    d = defense_from_spec(spec)
    if isinstance(d, NoDefense):
        return "no defense: the exact gradient"
    if isinstance(d, StochasticRounding):
        return f"each tensor randomly rounded to {d.levels} evenly spaced levels"
    if isinstance(d, UniformQuantization):
        return f"each tensor rounded to {d.levels} evenly spaced levels"
    if isinstance(d, Sparsification):
        return f"the smallest {d.ratio:.0%} of each tensor's entries set to 0"
    per = " x each tensor's RMS" if getattr(d, "relative", False) else ""
    if isinstance(d, GaussianNoise):
        return f"Gaussian noise of std {d.std:g}{per or f' (variance {d.std ** 2:g})'} added"
    if isinstance(d, LaplacianNoise):
        return f"Laplacian noise of scale {d.scale:g}{per} (std {math.sqrt(2) * d.scale:.3g}{per and ' x RMS'}) added"
    if isinstance(d, HalfPrecision):
        return "rounded to 16-bit floats"
    if isinstance(d, MixedPrecision):
        return "each tensor quantized to int8 or int16 (seed 001)" if d.policy in ("default", "random") else \
            f"each tensor quantized to {d.policy}"
    return d.name


# --- what a quantizer does to one tensor (notebook 1) ----------------------------------------------

def level_errors(g: torch.Tensor, levels: Sequence[int], draws: int = 8):
    """Per number of levels: half a grid step of ``g``'s [min, max], the max and mean absolute
    error per entry of uniform quantization, the mean one of one stochastic rounding, and the
    mean one of the average of ``draws`` stochastic roundings (generator seeds 0 to draws - 1).
    A DataFrame, one row per level count; its last column is named after ``draws``."""
    import pandas as pd
    rows = []
    for n in levels:
        step = float(g.max() - g.min()) / (n - 1)
        u = UniformQuantization(n)([g])[0]
        s = torch.stack([StochasticRounding(n)([g], torch.Generator().manual_seed(i))[0] for i in range(draws)])
        rows.append({"levels": n, "half step": step / 2, "uniform max |err|": float((u - g).abs().max()),
                     "uniform mean |err|": float((u - g).abs().mean()),
                     "stochastic mean |err|": float((s[0] - g).abs().mean()),
                     f"stochastic, mean of {draws} draws": float((s.mean(0) - g).abs().mean())})
    return pd.DataFrame(rows)


def stochastic_average_error(g: torch.Tensor, levels: int, draws: int, at: Sequence[int] = (1, 4, 16, 64, 256, 1024),
                             seed: int = 0):
    """Stochastic rounding is unbiased: the mean absolute error per entry of the running average
    of ``draws`` independent stochastic roundings of ``g`` (one generator seeded ``seed``), after
    each count of ``at`` (and after all ``draws``). A DataFrame with columns ``draws`` and
    ``mean |avg - g|``."""
    import pandas as pd
    gen, acc, rows = torch.Generator().manual_seed(seed), torch.zeros_like(g), []
    marks = set(at) | {draws}
    for i in range(1, draws + 1):
        acc += StochasticRounding(levels)([g], gen)[0]
        if i in marks:
            rows.append({"draws": i, "mean |avg - g|": float((acc / i - g).abs().mean())})
    return pd.DataFrame(rows)
