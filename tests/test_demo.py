"""The main job, as a user runs it: its table, its figure, and one-line errors for bad options
before any attack runs."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def demo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLG_PROGRESS": "0", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "dlg_utils.demo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_prints_its_table_and_writes_its_figure(tmp_path):
    run = demo("--iterations", "200", "--defenses", "none", "uniform:16", "--threads", "1", "--out", str(tmp_path),
               "--figure", "demo.png")
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["image", "seed", "defense"])
    rows = [line.split() for line in lines[header + 1:header + 3]]
    assert [r[2] for r in rows] == ["none", "uniform:16"]
    ssim = {r[2]: float(r[6]) for r in rows}
    recovered = {r[2]: (r[7], r[8]) for r in rows}  # by MSE < 0.001 and by SSIM >= 0.5
    # 200 DLG iterations recover the undefended photo (below 1e-4 at iteration 117-119; the image
    # then sharpens: SSIM 0.89 at 130); 16-level quantization leaves noise
    assert ssim["none"] > 0.9 and ssim["uniform:16"] < 0.5, run.stdout
    assert recovered == {"none": ("True", "True"), "uniform:16": ("False", "False")}, run.stdout
    assert "2 attacks, batched" in run.stdout
    figure = tmp_path / "demo.png"
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"
    assert f"figure: {figure}" in run.stdout


@pytest.mark.parametrize("args, message", [
    (["--out", "/proc/x"], "--out: cannot write to /proc/x"),
    (["--out", "README.md"], "--out: README.md exists and is not a folder"),
    (["--images", "99"], "--images: [99] out of range"),
    (["--iterations", "-3"], "--iterations must be >= 1"),
    (["--figure", "a/b.png"], "--figure must be a file name"),
    (["--defenses", "uniform16"], "--defenses: unknown defense spec"),
])
def test_bad_options_end_with_one_line_before_any_attack(args, message):
    start = time.perf_counter()
    run = demo(*args, timeout=120)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("python -m dlg_utils.demo: error:")
    assert time.perf_counter() - start < 60  # no attack ran


def test_help_does_not_import_torch():
    """--help and the plain argument errors come before torch loads (they took 6-8 s)."""
    code = ("import sys; from dlg_utils import demo\n"
            "try:\n    demo.parse_args(['--iterations', '0'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "False", run.stderr
