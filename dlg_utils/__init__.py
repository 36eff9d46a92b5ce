"""dlg_utils: measure how much private data leaks from shared gradients (DLG, iDLG, Inverting
Gradients, a defense-aware attacker) and how well gradient defenses (quantization above all)
stop it, at what cost in accuracy.

Every name has one home, its module (``from dlg_utils.attack import dlg``); the submodules load
on first use (``dlg_utils.config.free_cores()`` works after ``import dlg_utils``), so ``python -m
dlg_utils.<module>`` runs a module that the package has not imported yet. The map of the
modules is in the README.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil

__all__ = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
