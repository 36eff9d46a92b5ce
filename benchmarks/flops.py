"""Where a DLG attack's time goes, per trial-evaluation (one closure call: forward, gradient
with create_graph, distance, backward): the FLOPs (torch.utils.flop_counter), the achieved
GFLOP/s against this machine's measured float32 matmul peak, and the share of the time in the
L-BFGS update itself; for the reference loop (torch.optim.LBFGS, one trial at a time) and the
batched engine at T trials, for LeNet and ResNet-18 on 3x32x32 embedded images.

    python benchmarks/flops.py                                   # LeNet and ResNet-18, T = 1, 8, 64, 256
    python benchmarks/flops.py --models lenet --trials 64 --evals 200
    python benchmarks/flops.py --device cuda --trials 1,64,1024 --json out.jsonl

Time it on a quiet machine: another PyTorch process on the same cores slows both.

"useful" GFLOP/s counts the reference's FLOPs per evaluation (the work one trial needs) over the
measured time. The counter's own figure for the batched engine is printed too: it counts the
grouped convolutions that vmap makes of per-trial weight gradients as if every group saw every
input channel, so it grows with T and can exceed the machine's peak: it is not work done.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dlg_utils.attack import shared_gradient
from dlg_utils.data import load_dataset
from dlg_utils.engine import ATTACKS, Chunk, Trial
from dlg_utils.models import LeNet, init_uniform_, resnet
from dlg_utils.reference import reference_dlg


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an n x n float32 matmul, the best of ``repeats`` (after a warm-up)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def build(name: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = init_uniform_(LeNet(3, 100, 32)) if name == "lenet" else resnet(18, 100).eval()
    return model.to(device)


def targets(model, data, T: int, device):
    xs = [data[t % len(data)][0][None].to(device) for t in range(T)]
    ys = [torch.tensor([data[t % len(data)][1]], device=device) for t in range(T)]
    return xs, [shared_gradient(model, x, y) for x, y in zip(xs, ys)]


def engine(model, data, T: int, evals: int, device) -> dict:
    """The engine's loop reduced to its two parts: ``Chunk.evaluate`` (all T trials at once)
    and ``BatchedLBFGS.tick`` (the update), ``evals`` times after one warm-up."""
    xs, shared = targets(model, data, T, device)
    chunk = Chunk(model, [Trial(s, None, t, 0, None) for t, s in enumerate(shared)], xs[0].shape, 100, ATTACKS["dlg"])
    idx = torch.arange(T, device=device)
    active = torch.ones(T, dtype=torch.bool, device=device)
    with FlopCounterMode(display=False) as counter:
        chunk.evaluate(idx)
    flops = counter.get_total_flops() / T
    evaluate_s = update_s = 0.0
    for k in range(evals + 1):
        sync(device)
        start = time.perf_counter()
        _, objective, grad = chunk.evaluate(idx)
        sync(device)
        middle = time.perf_counter()
        chunk.opt.tick(objective, grad, active)
        sync(device)
        if k:  # the first round warms up
            evaluate_s += middle - start
            update_s += time.perf_counter() - middle
    total = evaluate_s + update_s
    return {"flops": flops, "seconds_per_trial_eval": total / (evals * T), "update_share": update_s / total}


def reference(model, data, evals: int, device) -> dict:
    """torch.optim.LBFGS on one trial until ``evals`` closure calls (after a warm-up run)."""
    xs, shared = targets(model, data, 1, device)
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.randn_like(xs[0]).requires_grad_(True)
    y = torch.randn(1, 100, device=device).requires_grad_(True)
    with FlopCounterMode(display=False) as counter:  # one closure call, as reference_dlg makes it
        pred = model(x)
        loss = torch.mean(torch.sum(-torch.softmax(y, -1) * torch.log_softmax(pred, -1), -1))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        sum(((g - t) ** 2).sum() for g, t in zip(grads, shared[0].grads)).backward()
    flops = counter.get_total_flops()
    iterations = max(1, evals // 20)
    reference_dlg(model, shared[0].grads, xs[0].shape, 100, 1, seed=1)  # warm-up
    timings: dict = {}
    reference_dlg(model, shared[0].grads, xs[0].shape, 100, iterations, seed=0, timings=timings)
    sync(device)
    n = timings["evaluations"]
    return {"flops": flops, "seconds_per_trial_eval": timings["step_s"] / n,
            "update_share": (timings["step_s"] - timings["closure_s"]) / timings["step_s"], "evaluations": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lenet,resnet18", help="comma-separated: lenet, resnet18")
    p.add_argument("--trials", default="1,8,64,256", help="comma-separated batch sizes T for the engine")
    p.add_argument("--evals", type=int, default=40, help="evaluations timed per configuration (LeNet)")
    p.add_argument("--resnet-evals", type=int, default=4, help="evaluations timed per configuration (ResNet-18)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="append each line of the table as JSON to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    models = [m for m in args.models.split(",") if m]
    if set(models) - {"lenet", "resnet18"}:
        p.error(f"--models: choose from lenet, resnet18, got {models}")
    trials = [int(t) for t in args.trials.split(",")]
    peak = matmul_peak(device)
    print(f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}; "
          f"float32 matmul peak (2048^3, best of 10): {peak:.1f} GFLOP/s")
    print(f"{'model':<10}{'way':<16}{'counted MFLOP':>14}{'ms/trial-eval':>15}{'useful GFLOP/s':>16}{'% of peak':>11}"
          f"{'L-BFGS update':>15}{'vs reference':>14}")
    data = load_dataset("samples")
    for name in models:
        model = build(name, device)
        evals = args.evals if name == "lenet" else args.resnet_evals
        rows = [("reference", reference(model, data, max(evals, 20), device))]
        rows += [(f"engine T={T}", engine(model, data, T, evals, device)) for T in trials]
        ref_time, useful = rows[0][1]["seconds_per_trial_eval"], rows[0][1]["flops"]
        for way, r in rows:
            rate = useful / r["seconds_per_trial_eval"] / 1e9
            print(f"{name:<10}{way:<16}{r['flops'] / 1e6:14.2f}{1e3 * r['seconds_per_trial_eval']:15.3f}{rate:16.2f}"
                  f"{100 * rate / peak:10.1f}%{100 * r['update_share']:14.1f}%{ref_time / r['seconds_per_trial_eval']:13.1f}x",
                  flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"model": name, "way": way, **r, "useful_flops": useful, "useful_gflops": rate,
                                        "peak_gflops": peak,
                                        "device": str(device), "threads": torch.get_num_threads(),
                                        "torch": torch.__version__}) + "\n")


if __name__ == "__main__":
    main()
