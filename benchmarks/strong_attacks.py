"""Throughput of the batched Inverting Gradients and defense-aware attacks against the same
attacks run one trial at a time (``dlg`` per trial, the engine at T = 1), on the same trials in
one process. Prints seconds, trials/s, ms per iteration per trial, median SSIM and the ratio.

    python benchmarks/strong_attacks.py --trials 32 --iterations 200
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from dlg_utils.attack import dlg, dlg_batch
from dlg_utils.cases import shared_gradient
from dlg_utils.data import load_dataset
from dlg_utils.models import get_model


def main() -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/strong_attacks.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=32, help="trials per attack (default 32)")
    p.add_argument("--iterations", type=int, default=200, help="Adam iterations per trial (default 200)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    data = load_dataset("samples-gray28")
    torch.manual_seed(0)
    model = get_model("lenet", in_channels=1, num_classes=10, image_size=28).to(device)
    print(f"{args.trials} trials per attack (LeNet, 1x28x28 samples-gray28, {args.iterations} iterations), {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}")
    print(f"{'attack':<26}{'way':<16}{'seconds':>9}{'trials/s':>10}{'ms/it/trial':>13}{'median SSIM':>13}")
    for attack, defense in [("ig", "none"), ("adaptive", "uniform:8"), ("adaptive", "sparsity:0.9")]:
        idx = [i % len(data) for i in range(args.trials)]
        xs = [data[i][0][None].to(device) for i in idx]
        targets = [shared_gradient(model, x, torch.tensor([data[i][1]], device=device), defense,
                                   torch.Generator().manual_seed(s)) for s, (x, i) in enumerate(zip(xs, idx))]
        common = dict(image_shape=xs[0].shape, num_classes=10, iterations=args.iterations, progress=False)
        times, ssims = {}, {}
        start = time.perf_counter()
        one = [dlg(model, t, attack=attack, seed=s, ground_truth=x, **common)
               for s, (t, x) in enumerate(zip(targets, xs))]
        times["one at a time"], ssims["one at a time"] = time.perf_counter() - start, [r.final["ssim"] for r in one]
        start = time.perf_counter()
        batch = dlg_batch(model, targets, seeds=list(range(len(xs))), ground_truths=xs, attack=attack,
                          chunk_size=args.trials, **common)
        times["batched"], ssims["batched"] = time.perf_counter() - start, [r.final["ssim"] for r in batch]
        for way, sec in times.items():
            print(f"{attack + ' vs ' + defense:<26}{way:<16}{sec:9.1f}{args.trials / sec:10.2f}"
                  f"{1e3 * sec / (args.trials * args.iterations):13.3f}{np.median(ssims[way]):13.3f}")
        print(f"{'':<26}ratio {times['one at a time'] / times['batched']:.1f}x")


if __name__ == "__main__":
    main()
