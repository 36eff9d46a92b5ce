"""Where a DLG attack's time goes, per trial-evaluation (one closure call: forward, gradient
with create_graph, distance, backward, and L-BFGS's update after it): the FLOPs
(torch.utils.flop_counter), the achieved GFLOP/s against this machine's measured float32
matmul peak, and the split between the evaluation and the L-BFGS update; for the reference
loop (torch.optim.LBFGS, one trial at a time) and the batched engine at T trials, for LeNet
and ResNet-18 on 3x32x32 embedded images. Both are timed in the steady state of a DLG run:
with the L-BFGS history full (100 pairs), as in all but the first ~101 of a 300-iteration
run's 6,000 evaluations (the history's size moves the update's cost).

    python benchmarks/flops.py                                   # LeNet and ResNet-18, T = 1, 8, 64, 256
    python benchmarks/flops.py --models lenet --trials 64 --evals 100 --compile
    python benchmarks/flops.py --device cuda --trials 1,64,1024 --json out.jsonl

Time it on a quiet machine: another PyTorch process on the same cores slows both. Both ways
run with glibc's malloc keeping freed memory (dlg_utils.memory; the engine sets it itself);
--no-keep-memory leaves malloc as it is, for comparison.

"useful" GFLOP/s counts the reference's FLOPs per evaluation (the work one trial needs) over the
measured time. The counter's own figure for the batched engine is printed too: it counts the
grouped convolutions that vmap makes of per-trial weight gradients as if every group saw every
input channel, so it grows with T and can exceed the machine's peak: it is not work done.

The roofline printed under each model's table: an evaluation cannot take less than its FLOPs at
the matmul peak, and an update cannot take less than one read of the trial's history (2 x 100
vectors of the image's size) at the measured memory bandwidth; the two run one after the other.
The two-loop recursion reads the history twice, once per loop, the second read depending on the
first: the second line's bound counts both reads, as when the histories of T trials are larger
than the caches (the first bound needs the second read served from a cache).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dlg_utils.cases import shared_gradient
from dlg_utils.data import load_dataset
from dlg_utils.attacks import ATTACKS
from dlg_utils.engine import Chunk, Trial
from dlg_utils.memory import keep_freed_memory
from dlg_utils.models import get_model
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
    model = get_model("lenet", num_classes=100) if name == "lenet" else get_model("resnet18", num_classes=100).eval()
    return model.to(device)


def targets(model, data, T: int, device):
    xs = [data[t % len(data)][0][None].to(device) for t in range(T)]
    ys = [torch.tensor([data[t % len(data)][1]], device=device) for t in range(T)]
    return xs, [shared_gradient(model, x, y) for x, y in zip(xs, ys)]


def bandwidth(device: torch.device, mb: int = 256, repeats: int = 5) -> float:
    """GB/s of reading a ``mb`` MB float32 tensor once (a sum), the best of ``repeats``."""
    x = torch.ones(mb * 2**18, device=device)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        x.sum()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best / 1e9


def engine(model, data, T: int, evals: int, device, compile: bool = False) -> dict:
    """The engine's loop reduced to its two parts: ``Chunk.evaluate`` (all T trials at once,
    torch.compile'd with ``compile``) and ``BatchedLBFGS.tick`` (the update), ``evals`` times
    once the history is full."""
    xs, shared = targets(model, data, T, device)
    config = ATTACKS["dlg"]
    chunk = Chunk(model, [Trial(s, None, t, 0, None) for t, s in enumerate(shared)], xs[0].shape, 100, config)
    compiled = Chunk(model, chunk.trials, xs[0].shape, 100, config, compile=True) if compile else None
    idx = torch.arange(T, device=device)
    active = torch.ones(T, dtype=torch.bool, device=device)
    with FlopCounterMode(display=False) as counter:
        chunk.evaluate(idx)
    flops = counter.get_total_flops() / T
    if compiled is not None:  # the compiled graph is the same computation; time it from here on
        compile_s = time.perf_counter()
        compiled.evaluate(idx)
        compile_s, chunk = time.perf_counter() - compile_s, compiled
    evaluate_s = update_s = 0.0
    warm = config.history_size + 2  # fills the history (one pair per evaluation inside a step)
    for k in range(warm + evals):
        sync(device)
        start = time.perf_counter()
        _, objective, grad = chunk.evaluate(idx)
        sync(device)
        middle = time.perf_counter()
        chunk.opt.tick(objective, grad, active)
        sync(device)
        if k >= warm:
            evaluate_s += middle - start
            update_s += time.perf_counter() - middle
    total = evaluate_s + update_s
    return {"flops": flops, "seconds_per_trial_eval": total / (evals * T), "update_share": update_s / total,
            "history": int(chunk.opt.hist_len.min()), "n": chunk.opt.x.shape[1],
            **({"compile_s": compile_s} if compile else {})}


def reference(model, data, evals: int, device) -> dict:
    """torch.optim.LBFGS on one trial: the time of evaluations 121..(121 + evals) of a run, the
    difference of two runs from the same start (the first 120 evaluations fill the history)."""
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
    reference_dlg(model, shared[0].grads, xs[0].shape, 100, 1, seed=1)  # warm-up
    runs = []
    for iterations in (6, 6 + max(1, round(evals / 20))):  # 20 evaluations per iteration
        timings: dict = {}
        reference_dlg(model, shared[0].grads, xs[0].shape, 100, iterations, seed=0, timings=timings)
        sync(device)
        runs.append(timings)
    short, long = runs
    n = long["evaluations"] - short["evaluations"]
    step, closure = long["step_s"] - short["step_s"], long["closure_s"] - short["closure_s"]
    return {"flops": flops, "seconds_per_trial_eval": step / n, "update_share": (step - closure) / step,
            "evaluations": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lenet,resnet18", help="comma-separated: lenet, resnet18")
    p.add_argument("--trials", default="1,8,64,256", help="comma-separated batch sizes T for the engine (LeNet)")
    p.add_argument("--resnet-trials", default="1,8",
                   help="the same for ResNet-18 (T = 64 peaks at 14 GB of memory on the CPU)")
    p.add_argument("--evals", type=int, default=40, help="evaluations timed per configuration (LeNet)")
    p.add_argument("--resnet-evals", type=int, default=4, help="evaluations timed per configuration (ResNet-18)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="append each line of the table as JSON to this file")
    p.add_argument("--compile", action="store_true",
                   help="add LeNet rows with the evaluation torch.compile'd (dlg_batch(compile=True))")
    p.add_argument("--no-keep-memory", action="store_true",
                   help="leave glibc's malloc as it is (the engine keeps freed memory otherwise)")
    args = p.parse_args()
    if args.no_keep_memory:
        os.environ["DLG_UTILS_KEEP_MEMORY"] = "0"
    kept = keep_freed_memory()
    device = torch.device(args.device)
    models = [m for m in args.models.split(",") if m]
    if set(models) - {"lenet", "resnet18"}:
        p.error(f"--models: choose from lenet, resnet18, got {models}")
    trials = {"lenet": [int(t) for t in args.trials.split(",")],
              "resnet18": [int(t) for t in args.resnet_trials.split(",")]}
    peak, stream = matmul_peak(device), bandwidth(device)
    print(f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}; "
          f"float32 matmul peak (2048^3, best of 10): {peak:.1f} GFLOP/s; memory read: {stream:.1f} GB/s; "
          f"malloc keeps freed memory: {kept}")
    print(f"{'model':<10}{'way':<16}{'counted MFLOP':>14}{'ms/trial-eval':>15}{'useful GFLOP/s':>16}{'% of peak':>11}"
          f"{'L-BFGS update':>15}{'vs reference':>14}")
    data = load_dataset("samples")
    for name in models:
        model = build(name, device)
        evals = args.evals if name == "lenet" else args.resnet_evals
        rows = [("reference", reference(model, data, max(evals, 20), device))]
        rows += [(f"engine T={T}", engine(model, data, T, evals, device)) for T in trials[name]]
        if args.compile and name == "lenet":
            rows += [(f"compiled T={T}", engine(model, data, T, evals, device, compile=True)) for T in trials[name]]
        ref_time, useful = rows[0][1]["seconds_per_trial_eval"], rows[0][1]["flops"]
        for way, r in rows:
            rate = useful / r["seconds_per_trial_eval"] / 1e9
            print(f"{name:<10}{way:<16}{r['flops'] / 1e6:14.2f}{1e3 * r['seconds_per_trial_eval']:15.3f}{rate:16.2f}"
                  f"{100 * rate / peak:10.1f}%{100 * r['update_share']:14.1f}%{ref_time / r['seconds_per_trial_eval']:13.1f}x",
                  flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"model": name, "way": way, **r, "useful_flops": useful, "useful_gflops": rate,
                                        "peak_gflops": peak, "read_gbs": stream, "keep_memory": kept,
                                        "device": str(device), "threads": torch.get_num_threads(),
                                        "torch": torch.__version__}) + "\n")
        n = rows[-1][1]["n"]
        history_mb = 2 * ATTACKS["dlg"].history_size * n * 4 / 1e6
        compute_s, memory_s = useful / (peak * 1e9), history_mb / (stream * 1e3)
        best = min(r["seconds_per_trial_eval"] for way, r in rows[1:])
        print(f"roofline {name}: evaluation >= {1e3 * compute_s:.3f} ms (its FLOPs at the matmul peak), update >= "
              f"{1e3 * memory_s:.3f} ms (one read of the {history_mb:.1f} MB history): at best "
              f"{ref_time / (compute_s + memory_s):.1f}x the reference; the best engine row takes "
              f"{best / (compute_s + memory_s):.1f}x that bound", flush=True)
        print(f"  with both loops reading the history from memory (T x {history_mb:.1f} MB does not fit in a cache): "
              f"update >= {2e3 * memory_s:.3f} ms, at best {ref_time / (compute_s + 2 * memory_s):.1f}x the "
              f"reference; the best row takes {best / (compute_s + 2 * memory_s):.1f}x that bound", flush=True)


if __name__ == "__main__":
    main()
