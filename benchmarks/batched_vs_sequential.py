"""Throughput of the batched DLG engine against the reference loop (one trial at a time,
torch.optim.LBFGS), on the same trials in one process. Prints trials/s, time per iteration,
the ratio, the success rate of each way and peak memory.

    python benchmarks/batched_vs_sequential.py --trials 64 --iterations 300
    python benchmarks/batched_vs_sequential.py --trials 64 --iterations 100 --reference-trials 8 --compile
    python benchmarks/batched_vs_sequential.py --device cuda --trials 4096 --reference-trials 8 --json out.jsonl
    python benchmarks/batched_vs_sequential.py --device cuda --model resnet18 --trials 256 --iterations 20 --reference-trials 2

--reference-trials times the reference loop on the first k trials only (its time per trial
does not depend on how many there are; 0 skips it); --compile runs the batched way with
dlg_batch(compile=True), its compile time included; --json appends the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from dlg_utils.reference import reference_dlg

from dlg_utils.attack import dlg_batch
from dlg_utils.attack import target_gradients
from dlg_utils.data import load_dataset
from dlg_utils.metrics import mse
from dlg_utils.stats import IMAGE_THRESHOLD
from dlg_utils.memory import keep_freed_memory
from flops import build  # the benchmarks' models (this script's folder is on sys.path)


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["lenet", "resnet18"], default="lenet",
                   help="DLG's LeNet (uniform init) or ResNet-18 in eval mode, 100 classes, as benchmarks/flops.py")
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--line-search", choices=["none", "strong_wolfe"], default="none",
                   help="torch.optim.LBFGS's line_search_fn, both ways (DLG uses none)")
    p.add_argument("--reference-trials", type=int, default=None,
                   help="run the reference loop on the first k trials only (default: all; 0: not at all, "
                        "when another run of the same model measured it)")
    p.add_argument("--compile", action="store_true", help="the batched run with dlg_batch(compile=True)")
    p.add_argument("--json", default=None, help="append the figures as a JSON line to this file")
    args = p.parse_args()
    if args.trials < 1 or args.iterations < 1:
        p.error("--trials and --iterations must be >= 1")
    if args.reference_trials is not None and args.reference_trials < 0:
        p.error("--reference-trials must be >= 0")
    n_ref = args.trials if args.reference_trials is None else min(args.trials, args.reference_trials)
    line_search = None if args.line_search == "none" else args.line_search
    device = torch.device(args.device)
    kept = keep_freed_memory()  # for both ways (the engine would set it for itself anyway)

    data = load_dataset("samples")
    model = build(args.model, device)
    trials = [(i % len(data), i) for i in range(args.trials)]  # (image, seed)
    xs = [data[i][0][None].to(device) for i, _ in trials]
    targets = [target_gradients(model, x, torch.tensor([data[i][1]], device=device)) for x, (i, _) in zip(xs, trials)]
    print(f"{args.trials} DLG trials ({'LeNet' if args.model == 'lenet' else 'ResNet-18'}, 3x32x32 embedded images, {args.iterations} L-BFGS iterations, "
          f"line search {args.line_search}), "
          f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}, "
          f"malloc keeps freed memory: {kept}")

    reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    ok_seq = 0
    for x, target, (_, seed) in list(zip(xs, targets, trials))[:n_ref]:
        image, *_ = reference_dlg(model, target, x.shape, 100, args.iterations, seed=seed,
                                  line_search_fn=line_search)
        ok_seq += int(float(mse(image.clamp(0, 1), x)[0]) < IMAGE_THRESHOLD)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seq = time.perf_counter() - start
    seq_mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()

    reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = dlg_batch(model, targets, image_shape=xs[0].shape, num_classes=100, iterations=args.iterations,
                        seeds=[s for _, s in trials], chunk_size=args.chunk_size, snapshot_every=0, progress=False,
                        line_search_fn=line_search, compile=args.compile)
    if device.type == "cuda":
        torch.cuda.synchronize()
    bat = time.perf_counter() - start
    bat_mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
    ok_bat = sum(int(float(mse(r.image.to(device).clamp(0, 1), x)[0]) < IMAGE_THRESHOLD) for r, x in zip(results, xs))

    mem = "peak GPU memory" if device.type == "cuda" else "peak resident memory"
    T, n = args.trials, args.iterations
    print(f"{'way':<30}{'trials':>7}{'seconds':>9}{'trials/s':>10}{'ms/iteration/trial':>20}{'success':>9}{mem:>22}")
    if n_ref:
        print(f"{'one at a time':<30}{n_ref:7d}{seq:9.1f}{n_ref / seq:10.3f}{1e3 * seq / (n_ref * n):20.2f}"
              f"{ok_seq / n_ref:9.2f}{seq_mem:19.0f} MB")
    label = f"batched (chunk {args.chunk_size}{', compiled' if args.compile else ''})"
    print(f"{label:<30}{T:7d}{bat:9.1f}{T / bat:10.3f}{1e3 * bat / (T * n):20.2f}"
          f"{ok_bat / T:9.2f}{bat_mem:19.0f} MB")
    ratio = (T / bat) / (n_ref / seq) if n_ref else None
    if ratio is not None:
        print(f"throughput ratio: {ratio:.1f}x")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"model": args.model, "trials": T, "iterations": n, "chunk_size": args.chunk_size,
                                "compile": args.compile,
                                "device": str(device),
                                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                                "threads": torch.get_num_threads(), "torch": torch.__version__,
                                "reference_trials": n_ref, "reference_seconds": seq if n_ref else None,
                                "batched_seconds": bat, "batched_trials_per_s": T / bat,
                                "reference_trials_per_s": n_ref / seq if n_ref else None,
                                "ratio": ratio, "batched_peak_mb": bat_mem,
                                "reference_peak_mb": seq_mem if n_ref else None, "batched_success": ok_bat / T,
                                "reference_success": ok_seq / n_ref if n_ref else None}) + "\n")


if __name__ == "__main__":
    main()
