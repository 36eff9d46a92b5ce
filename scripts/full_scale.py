"""Every study at the papers' scale on one CUDA device, in resumable slices.

Each finished unit of work (a training run, a slice of attack trials, one benchmark) is stored
at once as JSON lines under --out; a re-run skips what is stored. A slice stops by itself
before --budget-s: it starts a unit only if the longest unit of that study so far still fits.
Run it again until it prints "all done".

    python scripts/full_scale.py --device cuda --budget-s 540         # one slice; repeat
    python scripts/full_scale.py --device cuda                         # everything in one go
    python scripts/full_scale.py --tiny --device cpu --out /tmp/fs     # the whole path in a minute

Studies (--studies, in this order):
  fig4       seed 000 Fig. 4 / Table I accuracy: ResNet-18 on all of Fashion-MNIST, 20 epochs,
             6 methods x 3 seeds, inputs normalised (0.5, 0.5), lr 0.1, data on the device
  seed002    seed 002's success rates: LeNet 20 images x 50 seeds, ResNet-18/34/50 20 x 20,
             1200 L-BFGS iterations, DLG and iDLG
  frontier   the privacy-utility frontier's utility side for ResNet-18: 17 defenses x 3 seeds,
             8 epochs on all of Fashion-MNIST
  operating  the frontier at operating points at the larger grid (dlg_utils.operating.full_study):
             every point with all 20 defenses at 1x28x28 and 3x32x32, the 3x32x32 attacks at
             the authors' 24,000 iterations, ResNet-18 beside LeNet; one cell per unit; then
             the budget curves of operating.CURVES (one per unit) and the utility runs of
             every setting (3 seeds), one run per unit
  benchmark  the batched engine against the reference loop on the device (LeNet, 300 its,
             1,024 and 4,096 trials first, then 256 and 64, eager and compile=True; ResNet-18,
             20 its, 256, 64 and 8 trials); the reference is timed once per model

Notebooks 4, 6 and 7 show these results when --out is results/full_scale and a study is
complete. Fashion-MNIST comes from --data-root (torchvision's layout, or Debian's gz files).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from dlg_utils.data import load_dataset
from dlg_utils.storage import load_rows
from dlg_utils.frontier import DEFENSES, Setup, run_utility
from dlg_utils.fedsim import FedRun
from dlg_utils import operating as op
from dlg_utils.success import SuccessStudy
from dlg_utils.training_study import FIG4_DEFENSES, TrainingSetting, defense_training, load_tensors

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("fig4", "seed002", "frontier", "operating", "benchmark")


@dataclasses.dataclass
class Scale:
    """The size of every study: :func:`full` is the papers', :func:`tiny` a smoke test."""

    fig4: TrainingSetting
    fig4_seeds: tuple[int, ...]
    fig4_defenses: tuple[str, ...]
    seed002: SuccessStudy
    lenet_slice: int  # LeNet trials per unit of seed 002
    frontier: Setup
    operating: object  # dlg_utils.operating.Study
    operating_training: dict  # run_utility's size: run (FedRun), seeds, train_subset, test_subset
    # the benchmark's runs (model, trials, compiled) in the order they run: the question
    # (1,000 LeNet trials x 300 iterations) first, since a GPU is lent for minutes at a time
    benchmark_units: tuple[tuple[str, int, bool], ...]
    benchmark_iterations: int  # LeNet
    benchmark_resnet_iterations: int = 20
    benchmark_reference_trials: tuple[int, int] = (4, 2)  # LeNet, ResNet-18: timed once per model
    operating_curves: tuple = op.CURVE_BUDGETS  # the budget curves' iterations (operating.run_curves)


def full() -> Scale:
    return Scale(fig4=TrainingSetting(), fig4_seeds=(0, 1, 2), fig4_defenses=FIG4_DEFENSES, seed002=SuccessStudy(),
                 lenet_slice=500, frontier=Setup(models=("resnet18",), defenses=DEFENSES), operating=op.full_study(),
                 operating_training={},
                 benchmark_units=(("lenet", 1024, False), ("lenet", 1024, True), ("lenet", 4096, False),
                                  ("lenet", 4096, True), ("resnet18", 256, False), ("lenet", 256, False),
                                  ("lenet", 256, True), ("lenet", 64, False), ("lenet", 64, True),
                                  ("resnet18", 64, False), ("resnet18", 8, False)),
                 benchmark_iterations=300, benchmark_resnet_iterations=20)


def tiny() -> Scale:
    return Scale(fig4=TrainingSetting(train_size=256, test_size=256, epochs=1), fig4_seeds=(0,),
                 fig4_defenses=("none", "uniform:16"),
                 seed002=SuccessStudy(images=2, lenet_seeds=2, iterations=3, resnet_depths=(18,), resnet_seeds=1,
                                      resnet_iterations=1, resnet_max_iter=2),
                 lenet_slice=4, frontier=Setup(models=("resnet18",), defenses=("none", "uniform:8"), train_seeds=(0,),
                                               epochs=1, train_subset=256, test_subset=256),
                 operating=tiny_operating(),
                 operating_training=dict(run=FedRun(epochs=0.02, evaluations=1), seeds=(0,), train_subset=256,
                                         test_subset=256), operating_curves=(5, 10),
                 benchmark_units=(("lenet", 2, False), ("resnet18", 2, False), ("lenet", 3, False)),
                 benchmark_iterations=2, benchmark_resnet_iterations=1)


def tiny_operating():
    """One cell (2 images, 5 iterations) and its two training runs: the operating study's path."""
    study = op.quick_study()
    domains = {"gray28": dataclasses.replace(study.domains["gray28"], images=(0, 1), iterations=5)}
    return dataclasses.replace(study, grid=(("gray28", op.Point(defenses=("none",))),), domains=domains,
                               dlg_iterations=5)


class Budget:
    """Runs units while the longest unit of their study so far still fits in the budget, and
    logs how long each took."""

    def __init__(self, seconds: float | None, log: Path, device: str):
        self.start = time.perf_counter()
        self.end = self.start + seconds if seconds else float("inf")
        self.longest: dict[str, float] = {}
        self.log, self.device, self.stopped = log, device, False

    def run(self, study: str, unit: str, work: Callable[[], object]) -> bool:
        """Run ``work`` unless it might overrun; False (and stop every later unit) if not."""
        if self.stopped or time.perf_counter() + self.longest.get(study, 0.0) > self.end:
            self.stopped = True
            return False
        t = time.perf_counter()
        work()
        seconds = time.perf_counter() - t
        self.longest[study] = max(self.longest.get(study, 0.0), seconds)
        if seconds > 1:  # a unit that was stored already takes no time and is not logged
            with open(self.log, "a") as f:
                f.write(json.dumps({"study": study, "unit": unit, "seconds": round(seconds, 2), "device": self.device,
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        return True


def fig4(scale: Scale, out: Path, budget: Budget, device: str, root: str | None) -> None:
    data = []  # loaded once, on the device, when the first run needs it

    def unit(d: str, s: int) -> None:
        if not data:
            data.append(load_tensors(scale.fig4, device, root))
        defense_training(scale.fig4, [d], [s], out / "fig4.jsonl", device, data=data[0], progress=False)

    done = {(r["defense"], r["seed"]) for r in load_rows(out / "fig4.jsonl")}
    for s in scale.fig4_seeds:
        for d in scale.fig4_defenses:
            if (d, s) not in done and not budget.run("fig4", f"{d} seed {s}", lambda: unit(d, s)):
                return


def seed002(scale: Scale, out: Path, budget: Budget, device: str, root: str | None) -> None:
    study = scale.seed002
    data = load_dataset(study.dataset, root=root)
    models = study.models(device)
    lenet, resnets = study.trials(len(data))
    slices = ([lenet[i:i + scale.lenet_slice] for i in range(0, len(lenet), scale.lenet_slice)]
              + [resnets[i:i + 20] for i in range(0, len(resnets), 20)])  # ResNet trials: 20 per batch
    for n, part in enumerate(slices):
        if not budget.run("seed002", f"{part[0].model} slice {n}", lambda: study.run(
                data, out, models, only=part, progress=False, lenet_chunk=scale.lenet_slice)):
            return


def frontier(scale: Scale, out: Path, budget: Budget, device: str, root: str | None) -> None:
    setup = scale.frontier
    train, test = load_dataset("fashion-mnist", root=root), load_dataset("fashion-mnist", train=False, root=root)
    for s in setup.train_seeds:
        for d in setup.defenses:
            one = dataclasses.replace(setup, defenses=(d,), train_seeds=(s,))
            if not budget.run("frontier", f"resnet18 {d} seed {s}", lambda: run_utility(
                    one, train, test, "fashion-mnist", out / "frontier_utility.jsonl", device=device, progress=False)):
                return


def operating(scale: Scale, out: Path, budget: Budget, device: str, root: str | None) -> None:
    """One cell (a defense at a point, all its images and attacks) per unit, then one training
    run per unit."""
    study, size = scale.operating, dict(scale.operating_training)
    for domain, point, defense in study.cells():
        one = dataclasses.replace(study, grid=((domain, dataclasses.replace(point, defenses=(defense,))),))
        if not budget.run("operating", f"{domain} {point.name} {defense}", lambda: op.run_study(
                one, out / "operating", progress=False, device=device)):
            return
    curves = [(d, name, (defense,)) for d, name, defenses in op.study_curves(study) for defense in defenses]
    if not curves:  # a study without the curves' points (the tiny one): its first cell's curve, on the same path
        (d, point, defense), *_ = study.cells()
        curves = [(d, point.name, (defense,))]
    for curve in curves:  # where a cell could protect: is its budget saturated?
        if not budget.run("operating", f"budget curve {curve[0]} {curve[1]} {curve[2][0]}", lambda: op.run_curves(
                study, out / "operating_budget.jsonl.gz", curves=[curve], budgets=scale.operating_curves,
                progress=False, device=device)):
            return
    seeds = size.pop("seeds", op.UTILITY_SEEDS)
    for trial in op.utility_trials(study, seeds):
        only = dataclasses.replace(study, grid=(("gray28", op.Point(batch_size=trial["batch_size"], local_steps=trial[
            "local_steps"], epsilon=trial["epsilon"], defenses=(trial["defense"],))),))
        if not budget.run("operating", f"training {trial['setting']} {trial['defense']} seed {trial['seed']}",
                          lambda: op.run_utility(only, out / "operating_utility.jsonl", seeds=(trial["seed"],),
                                              device=device, **size)):
            return


def benchmark(scale: Scale, out: Path, budget: Budget, device: str, root: str | None) -> None:
    """Each unit runs benchmarks/batched_vs_sequential.py in its own process. The reference
    loop's time per trial does not depend on the number of trials, so only a model's first
    unit times it (on a few trials); the others compare with that row."""
    path = out / "benchmark.jsonl"
    done = {(r["model"], r["trials"], r["compile"]) for r in load_rows(path)}
    for model, trials, compile in scale.benchmark_units:
        if (model, trials, compile) in done:
            continue
        timed = {r["model"] for r in load_rows(path) if r.get("reference_trials")}
        iterations = scale.benchmark_iterations if model == "lenet" else scale.benchmark_resnet_iterations
        reference = 0 if model in timed else scale.benchmark_reference_trials[model != "lenet"]
        command = [sys.executable, str(ROOT / "benchmarks" / "batched_vs_sequential.py"), "--device", device,
                   "--model", model, "--trials", str(trials), "--iterations", str(iterations),
                   "--chunk-size", str(trials), "--reference-trials", str(reference),
                   "--json", str(path)] + ["--compile"] * compile
        unit = dict(model=model, trials=trials, compile=compile)
        if not budget.run("benchmark", f"{model} {trials} trials{', compiled' if compile else ''}",
                          lambda: _run_benchmark(command, path, unit)):
            return
    if load_rows(path):
        print(benchmark_table(load_rows(path)).to_string(index=False), flush=True)


def benchmark_table(rows: list[dict]) -> pd.DataFrame:
    """One line per stored benchmark run, its speed-up over the reference loop as timed by
    any run of the same model (a run that timed none is compared with the one that did)."""
    reference = {r["model"]: r["reference_trials_per_s"] for r in rows if r.get("reference_trials")}
    table = []
    for r in rows:
        line = {"model": r["model"], "trials": r["trials"], "compiled": r["compile"]}
        if "error" not in r:
            line.update({"iterations": r["iterations"], "trials/s": r["batched_trials_per_s"],
                         "ms/iteration/trial": 1e3 * r["batched_seconds"] / (r["trials"] * r["iterations"]),
                         "peak MB": r["batched_peak_mb"], "success": r["batched_success"],
                         "vs reference": r["batched_trials_per_s"] / reference[r["model"]]
                         if r["model"] in reference else None})
        table.append({**line, "error": r.get("error", "")})
    return pd.DataFrame(table)


def _run_benchmark(command: list[str], path: Path, unit: dict) -> None:
    """One benchmark run; a failure (out of memory, say) is stored as a row with its error, so
    that the study goes on and a re-run does not repeat it."""
    run = subprocess.run(command, capture_output=True, text=True)
    print(run.stdout, end="")
    if run.returncode:
        with open(path, "a") as f:
            f.write(json.dumps({**unit, "error": f"exit status {run.returncode}", "stderr": run.stderr[-2000:]}) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/full_scale.py", description=__doc__.split("\n\n")[0],
                                     epilog="studies: " + ", ".join(STUDIES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where everything runs (default: cuda when present)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop before starting a unit that might end after this many seconds (re-run to go on)")
    parser.add_argument("--out", default=str(ROOT / "results" / "full_scale"), help="folder of the JSON-lines results")
    parser.add_argument("--data-root", default=None, help="where Fashion-MNIST is (default: dlg_utils' data root)")
    parser.add_argument("--studies", default=",".join(STUDIES), help="comma-separated, of " + ", ".join(STUDIES))
    parser.add_argument("--tiny", action="store_true", help="every study at a tiny size (CI's test of this script)")
    args = parser.parse_args(argv)
    studies = [s for s in args.studies.split(",") if s]
    unknown = [s for s in studies if s not in STUDIES]
    if unknown:
        parser.error(f"unknown studies {unknown}; choose from {', '.join(STUDIES)}")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error(f"--budget-s must be > 0, got {args.budget_s}")
    try:
        torch.empty(1, device=args.device)
    except (RuntimeError, AssertionError) as e:
        parser.error(f"--device {args.device}: {str(e).splitlines()[0]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale = tiny() if args.tiny else full()
    budget = Budget(args.budget_s, out / "slices.jsonl", args.device)
    print(f"{'tiny' if args.tiny else 'full'} scale on {args.device} ({platform.node()}, torch {torch.__version__}), "
          f"budget {args.budget_s or 'none'} s, results in {out}", flush=True)
    run = {"fig4": fig4, "seed002": seed002, "frontier": frontier, "operating": operating, "benchmark": benchmark}
    for study in studies:
        if budget.stopped:
            break
        t = time.perf_counter()
        run[study](scale, out, budget, args.device, args.data_root)
        print(f"{study}: {'stopped (budget)' if budget.stopped else 'done'} after {time.perf_counter() - t:.0f} s",
              flush=True)
    print("budget reached: run again to continue" if budget.stopped else "all done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
