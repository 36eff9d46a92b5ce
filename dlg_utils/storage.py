"""Keys and storage of results: a configuration's key (SHA-256 of its canonical JSON), digests
of what a result depends on (tensors, models), and JSON-lines files of finished rows that an
interrupted sweep resumes from (gzip-compressed where the path ends in ``.gz``). Rows written before keys covered every setting (only a
``trial`` field) are refused: ``scripts/migrate_results.py`` rewrites the project's files."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn


ADDED = {"added": True}  # metadata of a field added after results were stored (see canonical)


def canonical(value):
    """``value`` as plain JSON data, the same for equal settings: dataclasses and mappings as
    dicts with sorted keys, tuples as lists, paths and defenses by name. A dataclass field
    added after results were stored (``field(metadata=ADDED)``) is left out while it holds its
    default, so the stored rows keep their keys and a setting away from the default gets a new
    one."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in fields(value)
                if not (f.metadata.get("added") and getattr(value, f.name) == f.default)}
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        raise TypeError("a tensor cannot be part of a key: describe it (tensor_digest)")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def config_key(config) -> str:
    """The key of a configuration: SHA-256 of its canonical JSON."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short digest of a tensor's dtype, shape and values."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


def model_fingerprint(model: nn.Module) -> dict:
    """What of a model a result depends on: its class and constructor settings, its mode
    (train or eval: BatchNorm) and a digest of its weights and buffers."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return {"class": type(model).__name__, "options": canonical(getattr(model, "config", {})),
            "mode": "train" if model.training else "eval", "state": h.hexdigest()[:20]}


def load_rows(path: str | Path) -> list[dict]:
    """The finished rows stored at ``path`` (a torn last line or gzip member from a crash is
    ignored)."""
    return _read_rows(Path(path))[0]


def _read_rows(path: Path) -> tuple[list[dict], bool]:
    """(rows, torn): the rows at ``path`` and whether a gzip file ends in a torn member."""
    if not path.exists():
        return [], False
    rows, torn = [], False

    def parse(lines):
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if path.suffix == ".gz":
        try:  # one gzip member per appended row, or one for the whole file once compacted
            with gzip.open(path, "rt") as f:
                parse(f)
        except (EOFError, gzip.BadGzipFile, zlib.error):
            torn = True
    else:
        parse(path.read_text().splitlines())
    return rows, torn


def compact(path: str | Path) -> None:
    """Rewrite a gzip store as one gzip member (appending writes one per row, which
    compresses about half as well), atomically: the old file stands until the new one is
    complete. The same rows give the same bytes (no time or name in the header), so
    compacting an unchanged store leaves nothing for git to see."""
    path = Path(path)
    if path.suffix != ".gz" or not path.exists():
        return
    rows = load_rows(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as z:
            for row in rows:
                z.write((json.dumps(row, default=float) + "\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)


def _end_line(path: Path) -> None:
    """End a torn last line (a killed run's half-written row) so that the next row starts on a
    line of its own instead of being glued to it and lost; a gzip store with a torn last member
    is rewritten without it (a member appended after it could not be read)."""
    if path.suffix == ".gz":
        if _read_rows(path)[1]:
            compact(path)
        return
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            with open(path, "a") as f:
                f.write("\n")


class OldFormatError(ValueError):
    """A results file written before keys covered every setting."""


class RowStore:
    """Finished rows by key, kept in a JSON-lines file at ``path`` (gzip-compressed if it ends
    in ``.gz``: :func:`compact` it when a batch of rows is done), or in memory if None."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        rows = load_rows(self.path) if self.path else []
        old = sum("key" not in r for r in rows)
        if old:
            raise OldFormatError(
                f"{self.path}: {old} of {len(rows)} rows were written by the old key format (keyed by the trial's "
                "fields alone, which missed settings such as the iterations), so they cannot be matched to a "
                "setting. Rewrite the project's committed files with `python scripts/migrate_results.py`, or move "
                "this file away to compute its rows again.")
        self.rows = {r["key"]: r for r in rows}
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _end_line(self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, key: str, config: dict, row: dict) -> None:
        """Store one finished row with its key and configuration, on disk at once (synced)."""
        self.rows[key] = row = {**row, "key": key, "config": canonical(config)}
        if self.path:
            line = json.dumps(row, default=float) + "\n"
            with open(self.path, "ab") as f:
                f.write(gzip.compress(line.encode()) if self.path.suffix == ".gz" else line.encode())
                f.flush()
                os.fsync(f.fileno())

    def frame(self, keys: Sequence[str]) -> pd.DataFrame:
        return pd.DataFrame([self.rows[k] for k in keys])
