"""Seed 001's update codec: a model update <-> the integers and ranges a Flower message carries.

A precision policy is a :class:`~dlg_utils.defenses.MixedPrecision` (int8 or int16 and a TF
quantization mode per tensor); ``None`` is no quantization (plain float32). Both ends of a
message must use the same policy: the modes are not in the message (the secret seed 001's m^L
argument is about), only each tensor's integers and its output range (min, max).

Imports only :mod:`~dlg_utils.defenses` and :mod:`~dlg_utils.quantization` (and Flower's
record types): the Flower system (:mod:`~dlg_utils.federated`) and the leakage study
(:mod:`~dlg_utils.fl_leakage`) both build on it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.common import serde

from .defenses import LayerPrecision, MixedPrecision, defense_from_spec
from .quantization import DTYPES, MODES, dequantize, quantize

ARRAYS, UPDATE, RANGES = "arrays", "update", "ranges"  # message keys: float32 weights, integers, ranges

Policy = MixedPrecision | str | Sequence[LayerPrecision] | None


def as_policy(policy: Policy) -> MixedPrecision | None:
    """``None`` (no quantization), a :class:`MixedPrecision`, a list of :class:`LayerPrecision`
    (one per tensor), or a precision spec of :func:`~dlg_utils.defenses.defense_from_spec`:
    ``"mixed"``, ``"mixed:random:SEED"``, ``"int8"``, ``"int16"``."""
    if policy is None or isinstance(policy, MixedPrecision):
        return policy
    if isinstance(policy, str):
        try:
            parsed = defense_from_spec(policy)
        except ValueError as e:
            raise ValueError(f"bad precision policy {policy!r}: {e}") from e
        if not isinstance(parsed, MixedPrecision):
            raise ValueError(f"{policy!r} is not a precision policy: use 'mixed', 'mixed:random:SEED', "
                             "'int8' or 'int16' (None for no quantization)")
        return parsed
    return MixedPrecision(list(policy))


def wrong_modes(policy: MixedPrecision, num_tensors: int) -> MixedPrecision:
    """``policy`` with every tensor dequantized by a mode other than its own (seed 001 Fig. 4):
    SCALED for MIN_COMBINED / MIN_FIRST tensors, MIN_COMBINED for SCALED ones. (A SCALED
    tensor's range is symmetric, so every mode decodes it right; MIN_COMBINED and MIN_FIRST
    decode each other's tensors to within one step. SCALED is the one wrong guess that hurts.)"""
    return MixedPrecision([replace(p, dequantize_mode="MIN_COMBINED" if p.mode == "SCALED" else "SCALED")
                           for p in policy.layers(num_tensors)], ensure_minimum_range=policy.ensure_minimum_range)


def encode_update(update: dict[str, np.ndarray], policy: MixedPrecision) -> tuple[ArrayRecord, ConfigRecord]:
    """Quantize every tensor of ``update`` over its own [min, max] with its layer's dtype and
    mode (seed 001, Algorithm 1, step 11 / 23): the integers, and each tensor's output range
    ``[min, max]``."""
    arrays, ranges = {}, {}
    for (name, u), p in zip(update.items(), policy.layers(len(update))):
        u = torch.from_numpy(np.ascontiguousarray(u, dtype=np.float32))
        if not torch.isfinite(u).all():
            raise ValueError(f"update of {name!r} contains NaN or Inf (did local training diverge?)")
        q, lo, hi = quantize(u, u.min(), u.max(), p.dtype, p.mode,
                             ensure_minimum_range=policy.ensure_minimum_range)
        arrays[name], ranges[name] = Array(q.numpy()), [lo, hi]
    return ArrayRecord(arrays), ConfigRecord(ranges)


def decode_update(arrays: ArrayRecord, ranges: ConfigRecord, policy: MixedPrecision,
                  modes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Dequantize what :func:`encode_update` produced (step 13 / 25) with the policy's
    dequantize modes, or with ``modes`` (one per tensor: an attacker's guess)."""
    layers = policy.layers(len(arrays))
    if modes is not None and len(modes) != len(layers):
        raise ValueError(f"{len(modes)} modes for {len(layers)} tensors")
    out = {}
    for i, ((name, a), p) in enumerate(zip(arrays.items(), layers)):
        q = a.numpy()
        if torch.from_numpy(q).dtype != DTYPES[p.dtype][0]:
            raise ValueError(f"{name!r} arrived as {q.dtype} but the policy says {p.dtype}: "
                             "both ends must use the same precision policy")
        lo, hi = ranges[name]
        mode = modes[i] if modes is not None else (p.dequantize_mode or p.mode)
        out[name] = dequantize(torch.from_numpy(q), lo, hi, p.dtype, mode).reshape(q.shape).numpy()
    return out


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """A record's arrays as float32 numpy arrays (copies)."""
    return {k: v.numpy().astype(np.float32, copy=True) for k, v in record.items()}


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def payload_bytes(content: RecordDict) -> int:
    """Size of a message's content as Flower serializes it (protobuf), in bytes."""
    return serde.recorddict_to_proto(content).ByteSize()


def upload_bytes(update: dict[str, np.ndarray], policy: Policy) -> int:
    """Payload bytes of the message that uploads ``update`` (float32 when ``policy`` is None)."""
    policy = as_policy(policy)
    if policy is None:
        return payload_bytes(RecordDict({ARRAYS: to_record(update)}))
    q, ranges = encode_update(update, policy)
    return payload_bytes(RecordDict({UPDATE: q, RANGES: ranges}))


def raw_bytes(update: dict[str, np.ndarray], policy: Policy) -> int:
    """Bytes of ``update``'s numbers alone, without ranges or framing: 4 per parameter in float32
    (``policy`` None), else each tensor's integer width under ``policy``."""
    policy = as_policy(policy)
    if policy is None:
        return 4 * sum(int(np.size(u)) for u in update.values())
    return sum(int(np.size(u)) * DTYPES[p.dtype][3] // 8 for u, p in zip(update.values(), policy.layers(len(update))))


# --- the attacker's search space (seed 001's m^L argument; notebook 8) -----------------------------

def decoding_errors(update: dict[str, np.ndarray], policy: Policy = "mixed") -> pd.DataFrame:
    """``update`` encoded with ``policy``, then decoded by an attacker who reads the ranges in
    the message and guesses one mode for every tensor: one row per tensor with its dtype, its
    mode, the ratio of its range's ends (``range min / max``) and, per mode of
    :data:`~dlg_utils.quantization.MODES`, the relative L2 error of that decoding
    (``error decoded as MODE``: |decoded - update| / |update|)."""
    policy = as_policy(policy)
    if policy is None:
        raise ValueError("decoding_errors needs a precision policy, not None (no quantization)")
    q, ranges = encode_update(update, policy)
    decoded = {m: decode_update(q, ranges, policy, modes=[m] * len(update)) for m in MODES}
    rows = []
    for (name, u), p in zip(update.items(), policy.layers(len(update))):
        lo, hi = ranges[name]
        norm = float(np.linalg.norm(u))
        rows.append({"tensor": name, "dtype": p.dtype, "mode": p.mode, "range min / max": lo / hi if hi else float("nan"),
                     **{f"error decoded as {m}": float(np.linalg.norm(decoded[m][name] - u)) / norm if norm else float("nan")
                        for m in MODES}})
    return pd.DataFrame(rows)


def min_combined_worst_case(update: dict[str, np.ndarray], seeds: Sequence[int] = range(50)) -> float:
    """How far decoding every tensor as MIN_COMBINED (an attacker who knows the ranges but not
    the modes) lands from the right decoding, at worst over the random policies
    ``mixed:random:SEED`` for ``seeds`` and over the tensors: the largest absolute difference in
    units of the tensor's range (max - min). Times 255, it is in int8 steps."""
    worst = 0.0
    for seed in seeds:
        policy = as_policy(f"mixed:random:{seed}")
        q, ranges = encode_update(update, policy)
        guess = decode_update(q, ranges, policy, modes=["MIN_COMBINED"] * len(update))
        right = decode_update(q, ranges, policy)
        for k in update:
            lo, hi = ranges[k]
            worst = max(worst, float(np.abs(guess[k] - right[k]).max() / (hi - lo)))
    return worst
