"""Test-wide settings: the notebooks run under nbval in quick mode (their full runs are
committed and take minutes to hours), without progress bars."""
import os
import sys


os.environ.setdefault("DLG_QUICK", "1")
os.environ.setdefault("DLG_PROGRESS", "0")


def pytest_collection_modifyitems(config, items):
    """Every notebook cell counts as slow: ``pytest -m "not slow"`` is the one-minute check."""
    import pytest
    for item in items:
        if item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_logfinish(nodeid, location):
    """Show each test's dot at once, also when the output goes to a file or a pipe (CI logs)."""
    sys.stdout.flush()
