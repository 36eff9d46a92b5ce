"""The same attack sweep in this process and on a local Ray cluster of N workers: wall time,
trials/s and whether the rows agree. Time it on a quiet machine.

    python benchmarks/ray_sweep.py --trials 32 --iterations 50 --workers 2
    python benchmarks/ray_sweep.py --address auto        # an existing cluster instead of a local one
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dlg_utils.data import load_dataset
from dlg_utils.experiments import AttackTrial, Execution, attack_sweep
from dlg_utils.models import get_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster, one per task")
    p.add_argument("--address", default=None, help="connect to this Ray cluster instead of starting one")
    args = p.parse_args()
    import ray

    data = load_dataset("samples")
    torch.manual_seed(0)
    model = get_model("lenet", in_channels=3, num_classes=100, image_size=32)
    trials = [AttackTrial(t % len(data), t // len(data), "none", settings={"iterations": args.iterations})
              for t in range(args.trials)]
    chunk = max(1, args.trials // (2 * args.workers))  # two tasks per worker
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        local = attack_sweep(trials, model, data, Path(tmp) / "local.jsonl",
                             execution=Execution(chunk_size=chunk, progress=False))
        local_s = time.perf_counter() - start
        if args.address:
            ray.init(address=args.address, log_to_driver=False)
        else:
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter()
        remote = attack_sweep(trials, model, data, Path(tmp) / "ray.jsonl", execution=Execution(
            chunk_size=chunk, progress=False, executor="ray", resources={"num_cpus": 1}))
        ray_s = time.perf_counter() - start
        ray.shutdown()
    agree = float((local["grad_distance"] - remote["grad_distance"]).abs().max() /
                  local["grad_distance"].abs().max())
    print(f"{args.trials} DLG trials (LeNet, {args.iterations} iterations), chunks of {chunk}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads in-process")
    print(f"{'in-process':<28}{local_s:8.1f} s {args.trials / local_s:8.2f} trials/s")
    print(f"{'Ray, ' + (args.address or f'{args.workers} local workers'):<28}{ray_s:8.1f} s "
          f"{args.trials / ray_s:8.2f} trials/s (Ray's start included)")
    print(f"largest difference of a final gradient distance, relative: {agree:.1e}")


if __name__ == "__main__":
    main()
