"""Run-wide switches: quick mode for CI, progress bars, the repository's folders."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = ROOT / "images"
CHECKPOINTS_DIR = ROOT / "checkpoints"
RESULTS_DIR = ROOT / "results"


def quick_mode() -> bool:
    """True when ``DLG_QUICK=1`` or when running under CI (``CI`` set): shrink every run."""
    flag = os.environ.get("DLG_QUICK")
    if flag is not None:
        return flag.strip().lower() not in ("", "0", "false", "no")
    return bool(os.environ.get("CI"))


def progress_enabled() -> bool:
    """Progress bars are on unless ``DLG_PROGRESS=0``."""
    return os.environ.get("DLG_PROGRESS", "1").strip().lower() not in ("0", "false", "no")


def output_path(name: str | Path, folder: Path = IMAGES_DIR) -> Path:
    """Where a run writes ``name``: a bare file name goes into ``folder`` (``images/`` by
    default), or into ``folder/quick/`` in quick mode, so that a quick run never overwrites or
    reuses a full run's output; a path with a folder is used as it is."""
    path = Path(name)
    if path.parent == Path("."):
        path = (folder / "quick" if quick_mode() else folder) / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def free_cores() -> int:
    """CPU cores not busy with other work right now: the cores this process may use minus the
    1-minute load average (at least 1). Two PyTorch processes that each take every core run
    several times slower than one; threads = free cores avoids that."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def slice_arguments(parser, study: str) -> None:
    """The options every resumable study script shares: ``--out`` (the folder of its JSON-lines
    file), ``--budget-s`` (a slice's length), ``--threads`` and ``--quick`` (``study`` names the
    file, for the help)."""
    parser.add_argument("--out", default="results", help=f"folder of {study} (default: results)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new part after this many seconds (re-run to continue)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="a minute-scale version, for a smoke run")


def start_slice(args):
    """Apply ``--threads`` and return ``over()``: whether the slice's ``--budget-s`` is spent."""
    import time

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    return lambda: args.budget_s is not None and time.perf_counter() - start > args.budget_s
