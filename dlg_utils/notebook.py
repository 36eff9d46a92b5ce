"""What every notebook starts with, and small helpers the notebooks share.

Imports only :mod:`~dlg_utils.config` and :mod:`~dlg_utils.data`.
"""
from __future__ import annotations

from pathlib import Path

from .config import RESULTS_DIR, quick_mode
from .data import load_dataset


def start() -> bool:
    """The first cell of every notebook: says whether quick mode is on and returns it.
    ``DLG_QUICK=1`` (or ``CI``) shrinks every run; committed outputs are full runs."""
    quick = quick_mode()
    print("quick mode:", quick)
    return quick


def present(name: str) -> bool:
    """Whether data set ``name`` is on this machine (its test split loads)."""
    try:
        load_dataset(name, train=False)
        return True
    except FileNotFoundError:
        return False


def results_folder(quick: bool) -> Path:
    """Where a notebook's studies store their rows: ``results/`` (the committed full runs), or
    a fresh temporary folder in quick mode, so that a quick run neither reads nor writes them."""
    if quick:
        import tempfile
        return Path(tempfile.mkdtemp())
    return RESULTS_DIR
