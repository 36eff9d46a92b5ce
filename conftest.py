"""Test-wide settings: the notebooks run under nbval in quick mode (their full runs are
committed and take minutes to hours), without progress bars."""
import os

os.environ.setdefault("DLG_QUICK", "1")
os.environ.setdefault("DLG_PROGRESS", "0")
