"""scripts/full_scale.py end to end in its tiny mode on the CPU: every study writes its rows,
a budget stops a slice between units, and a re-run continues without redoing or losing any."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dlg_utils.storage import load_rows

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "full_scale.py"
spec = importlib.util.spec_from_file_location("full_scale", SCRIPT)
full_scale = importlib.util.module_from_spec(spec)
sys.modules["full_scale"] = full_scale  # its dataclasses look their module up
spec.loader.exec_module(full_scale)


def rows(path: Path) -> list[dict]:
    return load_rows(path)  # JSON lines, gzip-compressed or not


def counts(out: Path) -> dict[str, int]:
    files = sorted([*out.glob("*.jsonl"), *out.glob("*.jsonl.gz"), *out.glob("*/*.jsonl.gz")])
    return {str(p.relative_to(out)): len(rows(p)) for p in files if p.name != "slices.jsonl"}


@pytest.mark.slow
def test_tiny_full_scale_in_slices(tmp_path, capsys):
    out = tmp_path / "fs"
    args = ["--tiny", "--device", "cpu", "--out", str(out)]
    # a budget that ends at once: nothing starts, and the script says to run again
    assert full_scale.main(args + ["--budget-s", "1e-9"]) == 0
    assert "budget reached" in capsys.readouterr().out and counts(out) == {}
    # one study, then the rest: every unit of the tiny scale is stored
    full_scale.main(args + ["--studies", "fig4"])
    assert counts(out) == {"fig4.jsonl": 2}
    full_scale.main(args)
    assert "all done" in capsys.readouterr().out
    scale = full_scale.tiny()
    lenet, resnets = scale.seed002.trials(32)
    lenet_path, resnet_path = scale.seed002.paths(out)  # one file per model family: the keys hold the settings
    expected = {"fig4.jsonl": 2, "benchmark.jsonl": 3, "frontier_utility.jsonl": 2,
                lenet_path.name: len(lenet), resnet_path.name: len(resnets),
                "operating/gray28--init-B-1-FedSGD.jsonl.gz": 4, "operating_utility.jsonl": 1,  # one cell: 2 images x (DLG, IG); one run
                "operating_budget.jsonl.gz": 8}  # its budget curve: IG on 4 unscored images at 2 budgets
    assert counts(out) == expected
    fig4 = rows(out / "fig4.jsonl")
    assert {(r["defense"], r["seed"]) for r in fig4} == {("none", 0), ("uniform:16", 0)}
    assert all(len(r["curve"]) == 1 and 0 <= r["curve"][0]["test_accuracy"] <= 1 for r in fig4)
    assert "normalised (0.5, 0.5)" in fig4[0]["setting"]
    bench = rows(out / "benchmark.jsonl")
    assert [(r["model"], r["trials"]) for r in bench] == [("lenet", 2), ("resnet18", 2), ("lenet", 3)]
    assert not any("error" in r for r in bench)
    # the reference loop is timed once per model, by its first unit; the others skip it
    assert [r["reference_trials"] for r in bench] == [2, 2, 0]
    assert bench[0]["ratio"] > 0 and bench[1]["ratio"] > 0 and bench[2]["ratio"] is None
    assert bench[2]["batched_trials_per_s"] > 0
    table = full_scale.benchmark_table(bench)  # the third run is compared with the first run's reference
    assert table["vs reference"].iloc[2] == pytest.approx(bench[2]["batched_trials_per_s"]
                                                          / bench[0]["reference_trials_per_s"])
    assert table["vs reference"].iloc[0] == pytest.approx(bench[0]["ratio"])
    logged = rows(out / "slices.jsonl")
    assert {r["study"] for r in logged} <= set(full_scale.STUDIES) and all(r["seconds"] > 0 for r in logged)
    # a re-run redoes nothing and loses nothing
    before = {p.name: p.read_text() for p in out.glob("*.jsonl") if p.name != "slices.jsonl"}
    full_scale.main(args)
    assert {p.name: p.read_text() for p in out.glob("*.jsonl") if p.name != "slices.jsonl"} == before


def test_bad_arguments(capsys):
    for bad, message in [(["--studies", "fig5"], "unknown studies"), (["--budget-s", "0"], "--budget-s must be > 0"),
                         (["--device", "cuda:7"] , "--device cuda:7")]:
        with pytest.raises(SystemExit):
            full_scale.main(bad)
        assert message in capsys.readouterr().err


def test_a_failed_benchmark_is_stored_with_its_error(tmp_path):
    """An out-of-memory benchmark on the device must not end the study: its row says why."""
    path = tmp_path / "benchmark.jsonl"
    command = [sys.executable, "-c", "import sys; print('ran'); sys.exit('CUDA out of memory')"]
    full_scale._run_benchmark(command, path, {"model": "resnet18", "trials": 256, "compile": False})
    row, = rows(path)
    assert row["model"] == "resnet18" and row["error"] == "exit status 1" and "out of memory" in row["stderr"]
