"""Sweeps on Ray: a local cluster of 2 workers gives the rows of the in-process run, and a
sweep killed mid-way and run again loses and redoes no finished trial."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

from dlg_utils.experiments import AttackTrial, Execution, attack_sweep, sweep
from dlg_utils.storage import load_rows
from dlg_utils.models import get_model

ray = pytest.importorskip("ray")

TRIALS = [AttackTrial(i, s, d, settings={"iterations": 3}) for i in (0, 12) for s in (0, 1) for d in ("none", "uniform:16")]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def lenet():
    torch.manual_seed(0)
    return get_model("lenet", in_channels=3, num_classes=100, image_size=32)


@pytest.mark.slow
def test_ray_attack_sweep_equals_in_process(local_ray, samples, tmp_path):
    model = lenet()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a one-CPU Ray worker runs: the same kernels, so round-off, L-BFGS amplifies
    try:
        mine = attack_sweep(TRIALS, model, samples, tmp_path / "local.jsonl",
                            execution=Execution(chunk_size=2, progress=False))
    finally:
        torch.set_num_threads(threads)
    theirs = attack_sweep(TRIALS, model, samples, tmp_path / "ray.jsonl", execution=Execution(
        chunk_size=2, progress=False, executor="ray", resources={"num_cpus": 1}))
    assert len(load_rows(tmp_path / "ray.jsonl")) == len(TRIALS)  # every row stored once
    assert list(theirs["key"]) == list(mine["key"])
    for col in ("grad_distance", "mse", "psnr", "ssim"):
        pd.testing.assert_series_equal(theirs[col], mine[col], rtol=1e-4, check_names=False)
    assert (theirs["label"] == mine["label"]).all()


@pytest.mark.slow
def test_ray_sweep_runs_each_trial_as_a_task(local_ray, tmp_path):
    def square(trial: dict) -> dict:  # local: Ray ships it by value (the test module is not importable there)
        return {"square": trial["x"] ** 2, "pid": os.getpid()}

    rows = sweep([{"x": x} for x in range(6)], square, tmp_path / "s.jsonl", progress=False, executor="ray")
    assert rows["square"].tolist() == [x * x for x in range(6)] and os.getpid() not in set(rows["pid"])


KILLABLE = textwrap.dedent("""
    import sys, torch
    from dlg_utils.data import load_dataset
    from dlg_utils.experiments import AttackTrial, Execution, attack_sweep
    from dlg_utils.models import get_model
    torch.manual_seed(0)
    model = get_model("lenet", in_channels=3, num_classes=100, image_size=32)
    trials = [AttackTrial(i, s, "none", settings={"iterations": 12}) for i in range(4) for s in range(2)]
    attack_sweep(trials, model, load_dataset("samples"), sys.argv[1], execution=Execution(
        chunk_size=1, progress=False, executor="ray", resources={"num_cpus": 1}))
""")


@pytest.mark.slow
def test_killed_ray_sweep_resumes_without_loss(tmp_path):
    script, path = tmp_path / "sweep.py", tmp_path / "rows.jsonl"
    script.write_text(KILLABLE)
    run = lambda: subprocess.Popen([sys.executable, str(script), str(path)], start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc, deadline = run(), time.time() + 300
    while not path.exists() or not path.read_text().strip():  # wait for the first finished task
        assert proc.poll() is None and time.time() < deadline, "the sweep ended or stalled before any row"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    before = [line for line in path.read_text().splitlines() if line.strip()]
    assert 1 <= len(before) < 8
    assert run().wait(timeout=600) == 0
    after = [line for line in path.read_text().splitlines() if line.strip()]
    keys = [json.loads(line)["key"] for line in after]
    assert len(keys) == len(set(keys)) == 8  # nothing lost, nothing run twice
    assert after[:len(before)] == before  # the rows stored before the kill stand as they were


def test_unknown_executor(samples):
    with pytest.raises(ValueError, match="executor must be one of"):
        attack_sweep(TRIALS[:1], lenet(), samples, execution=Execution(executor="dask"))
    with pytest.raises(ValueError, match="executor must be one of"):
        sweep([{"x": 1}], lambda t: t, executor="threads")
