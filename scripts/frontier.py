"""Run the privacy-utility frontier (notebook 9): every defense against every attack on the
embedded images, and every defense in training on the full Fashion-MNIST. Resumable: each
finished trial or training run is one JSON line under results/, and a re-run skips it.

    python scripts/frontier.py                      # all parts, the committed CPU setting
    python scripts/frontier.py --part utility --device cuda --models resnet18
    python scripts/frontier.py --quick --out /tmp/frontier   # a minute-scale smoke run
    python scripts/frontier.py --executor ray --ray-address auto --task-gpus 1   # on a Ray cluster
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from dlg_utils.data import load_dataset
from dlg_utils.frontier import MODELS, Setup, quick_setup, run_pilot, run_privacy, run_utility


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/frontier.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["pilot", "privacy", "utility", "all"], default="all")
    parser.add_argument("--models", default=None, help=f"comma-separated, of {sorted(MODELS)} (default: lenet,lenet5)")
    parser.add_argument("--defenses", default=None, help="comma-separated defense specs (default: the 17 of the study)")
    parser.add_argument("--quick", action="store_true", help="a tiny setting, for a smoke test")
    parser.add_argument("--out", default="results", help="folder of the JSON-lines results (default: results)")
    parser.add_argument("--device", default="cpu", help="where training runs (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop before starting new work after this many seconds (re-run to continue)")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="run attack chunks and training runs in this process or as Ray tasks")
    parser.add_argument("--ray-address", default=None,
                        help="an existing Ray cluster (e.g. auto, or ray://host:10001); default: a local Ray")
    parser.add_argument("--task-cpus", type=float, default=1, help="CPUs per Ray task (default 1)")
    parser.add_argument("--task-gpus", type=float, default=0, help="GPUs per Ray task (default 0)")
    parser.add_argument("--compile", action="store_true",
                        help="evaluate each chunk of attack trials as one torch.compile'd graph")
    args = parser.parse_args(argv)
    resources = {"num_cpus": args.task_cpus, **({"num_gpus": args.task_gpus} if args.task_gpus else {})}
    if args.executor == "ray":
        import ray
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False)
    ray_kw = dict(executor=args.executor, resources=resources)
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = quick_setup() if args.quick else Setup()
    if args.models:
        setup = dataclasses.replace(setup, models=tuple(args.models.split(",")))
    if args.defenses:
        setup = dataclasses.replace(setup, defenses=tuple(args.defenses.split(",")), attacked={})
    unknown = [m for m in setup.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    out = Path(args.out)
    start = time.perf_counter()
    over = lambda: args.budget_s is not None and time.perf_counter() - start > args.budget_s
    images = load_dataset("samples-gray28")
    if args.part in ("pilot", "all"):
        run_pilot(setup, images, out / "frontier_pilot.jsonl")
    if args.part in ("privacy", "all"):
        for defense in setup.defenses:  # one defense at a time, so a budget can stop between them
            if over():
                break
            run_privacy(dataclasses.replace(setup, defenses=(defense,)), images, out / "frontier_privacy.jsonl",
                        compile=args.compile, **ray_kw)
    if args.part in ("utility", "all"):
        train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", train=False)
        for defense in setup.defenses:
            if over():
                break
            run_utility(dataclasses.replace(setup, defenses=(defense,)), train, test, "fashion-mnist",
                        out / "frontier_utility.jsonl", device=args.device, **ray_kw)
    print(f"done in {time.perf_counter() - start:.0f} s" + (" (budget reached: re-run to continue)" if over() else ""))


if __name__ == "__main__":
    main()
