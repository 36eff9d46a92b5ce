"""Gradient defenses: callables ``defense(grads, generator=None) -> grads`` applied per tensor.

Each works on one gradient tensor (one layer's weight or bias) at a time, as in seed 000
section III and its code, and has a short ``name`` that :func:`defense_from_spec` parses back.
Random defenses draw from the ``torch.Generator`` they are given, once per call: call them once
per target gradient (the original code re-drew them at every L-BFGS closure call; we do not).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .quantization import DTYPES, MODES, quantize_dequantize

Grads = Sequence[torch.Tensor]


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


class Defense:
    """Base class: applies :meth:`one` to every gradient tensor."""

    name = "defense"

    def __call__(self, grads: Grads, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [self.one(_finite(g.detach()), generator) for g in grads]

    def one(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class NoDefense(Defense):
    """Share the gradient as it is."""

    name = "none"

    def one(self, g, generator):
        return g.clone()


@dataclass(repr=False)
class UniformQuantization(Defense):
    """Round each entry to the nearest of ``levels`` evenly spaced values from the tensor's min to
    its max ((max-min)/(levels-1) apart). A constant tensor is returned unchanged (one level), as
    is one whose range is too small for its step to be represented (a few denormals)."""

    levels: int

    def __post_init__(self):
        self.levels = _levels(self.levels)
        self.name = f"uniform:{self.levels}"

    def one(self, g, generator):
        grid = _grid(g, self.levels)
        if grid is None:
            return g.clone()
        pos, lo, step = grid
        return torch.round(pos) * step + lo


@dataclass(repr=False)
class StochasticRounding(Defense):
    """Same grid as :class:`UniformQuantization`, but round up with probability equal to the
    fractional position between two levels: unbiased, E[q(g)] = g."""

    levels: int

    def __post_init__(self):
        self.levels = _levels(self.levels)
        self.name = f"stochastic:{self.levels}"

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


@dataclass(repr=False)
class GaussianNoise(Defense):
    """Add N(0, std^2) noise to every entry (DLG's Gaussian defense, std 1e-4 to 1e-1)."""

    std: float

    def __post_init__(self):
        self.std = _nonnegative(self.std, "std")
        self.name = f"gaussian:{self.std:g}"

    def one(self, g, generator):
        return g + self.std * torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)


@dataclass(repr=False)
class LaplacianNoise(Defense):
    """Add Laplace(0, scale) noise to every entry (DLG's Laplacian defense)."""

    scale: float

    def __post_init__(self):
        self.scale = _nonnegative(self.scale, "scale")
        self.name = f"laplacian:{self.scale:g}"

    def one(self, g, generator):
        e1 = torch.empty_like(g).exponential_(generator=generator)
        e2 = torch.empty_like(g).exponential_(generator=generator)
        return g + self.scale * (e1 - e2)  # the difference of two Exp(1) is Laplace(0, 1)


class HalfPrecision(Defense):
    """Round to IEEE half precision and back (DLG's fp16 defense); values beyond the fp16 range
    saturate at +-65504 instead of becoming Inf."""

    name = "half"

    def one(self, g, generator):
        limit = torch.finfo(torch.float16).max
        return g.clamp(-limit, limit).half().to(g.dtype)


@dataclass(frozen=True)
class LayerPrecision:
    """How one tensor is sent: TF dtype and quantization mode (and the mode the receiver uses)."""

    dtype: str = "qint8"
    mode: str = "SCALED"
    dequantize_mode: str | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        for m in (self.mode, self.dequantize_mode or self.mode):
            if m not in MODES:
                raise ValueError(f"mode must be one of {MODES}, got {m!r}")


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
        grads = [_finite(g.detach()) for g in grads]
        return [quantize_dequantize(g, p.dtype, p.mode, p.dequantize_mode,
                                    ensure_minimum_range=self.ensure_minimum_range)
                for g, p in zip(grads, self.layers(len(grads)))]


def defense_from_spec(spec: str | Defense | None) -> Defense:
    """Parse a short name: ``none``, ``uniform:16``, ``stochastic:16``, ``sparsity:0.2``,
    ``gaussian:1e-3``, ``laplacian:1e-3``, ``half``, ``mixed``, ``mixed:random[:SEED]``, ``int8``, ``int16``."""
    if spec is None:
        return NoDefense()
    if isinstance(spec, Defense):
        return spec
    kind, _, arg = str(spec).strip().lower().partition(":")
    makers = {"uniform": lambda a: UniformQuantization(int(a)),
              "stochastic": lambda a: StochasticRounding(int(a)),
              "sparsity": lambda a: Sparsification(float(a)),
              "gaussian": lambda a: GaussianNoise(float(a)),
              "laplacian": lambda a: LaplacianNoise(float(a))}
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
                return MixedPrecision("random", seed=int(seed or 0))
    except ValueError as e:
        raise ValueError(f"bad defense spec {spec!r}: {e}") from e
    raise ValueError(f"unknown defense spec {spec!r}; expected e.g. 'none', 'uniform:16', "
                     "'stochastic:16', 'sparsity:0.2', 'gaussian:1e-3', 'laplacian:1e-3', "
                     "'half', 'mixed', 'mixed:random:0', 'int8', 'int16'")
