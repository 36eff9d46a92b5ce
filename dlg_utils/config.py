"""Run-wide switches: quick mode for CI, progress bars, the repository's folders."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = ROOT / "images"
CHECKPOINTS_DIR = ROOT / "checkpoints"


def quick_mode() -> bool:
    """True when ``DLG_QUICK=1`` or when running under CI (``CI`` set): shrink every run."""
    flag = os.environ.get("DLG_QUICK")
    if flag is not None:
        return flag.strip().lower() not in ("", "0", "false", "no")
    return bool(os.environ.get("CI"))


def progress_enabled() -> bool:
    """Progress bars are on unless ``DLG_PROGRESS=0``."""
    return os.environ.get("DLG_PROGRESS", "1").strip().lower() not in ("0", "false", "no")
