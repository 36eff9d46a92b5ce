"""The main job: DLG against a LeNet on the embedded images with no defense, uniform
quantization and sparsification; prints a table and writes a figure to images/.

    python -m dlg_utils.demo [--images 0] [--defenses none uniform:16 sparsity:0.2] [--iterations 300]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

import pandas as pd

from .attack import dlg_batch, target_gradients
from .config import ROOT, quick_mode
from .data import load_dataset
from .defenses import defense_from_spec
from .experiments import trial_row
from .metrics import IMAGE_THRESHOLD
from .models import LeNet, init_uniform_
from .plotting import reconstruction_grid, save_figure


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[0], help="indices into the embedded samples")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="dummy-initialisation seeds")
    parser.add_argument("--defenses", nargs="+", default=["none", "uniform:16", "sparsity:0.2"])
    parser.add_argument("--iterations", type=int, default=30 if quick_mode() else 300)
    parser.add_argument("--model-seed", type=int, default=0, help="seed of the LeNet's uniform init")
    parser.add_argument("--figure", default="demo_dlg_defenses.png", help="file name under images/")
    args = parser.parse_args(argv)

    torch.manual_seed(args.model_seed)
    model = init_uniform_(LeNet(in_channels=3, num_classes=100, image_size=32))
    data = load_dataset("samples")
    trials = [dict(image=i, seed=s, defense=d) for i in args.images for s in args.seeds for d in args.defenses]
    xs = [data[t["image"]][0][None] for t in trials]
    ys = [int(data[t["image"]][1]) for t in trials]
    targets = [target_gradients(model, x, torch.tensor([y]), defense_from_spec(t["defense"]),
                                torch.Generator().manual_seed(t["seed"])) for x, y, t in zip(xs, ys, trials)]
    start = time.perf_counter()
    out = dlg_batch(model, targets, image_shape=xs[0].shape, num_classes=100, iterations=args.iterations,
                    seeds=[t["seed"] for t in trials], ground_truths=xs)
    wall = time.perf_counter() - start
    results = {(t["image"], t["seed"], t["defense"]): r for t, r in zip(trials, out)}
    table = pd.DataFrame([{**t, **trial_row(r, y, keep_history=False)} for t, r, y in zip(trials, out, ys)])
    table["recovered"] = table["mse"] < IMAGE_THRESHOLD
    table["converged_at"] = table["converged_at"].astype("Int64")  # <NA>: never below 1e-4
    cols = ["image", "seed", "defense", "grad_distance", "mse", "psnr", "ssim", "recovered",
            "label_correct", "converged_at"]
    print(f"\nDLG on LeNet (4 convs, uniform init, seed {args.model_seed}), embedded samples, "
          f"{args.iterations} L-BFGS iterations; recovered = image MSE < {IMAGE_THRESHOLD:g}")
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    iters_per_s = sum(r.history["iteration"].iloc[-1] for r in results.values()) / wall
    print(f"\n{len(trials)} attacks, batched, in {wall:.1f} s ({iters_per_s:.1f} trial-iterations/s) on "
          f"{torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}")

    image = args.images[0]
    truth = data[image][0]
    rows = [(f"{d}\nseed {args.seeds[0]}", results[(image, args.seeds[0], d)]) for d in args.defenses]
    step = max(1, args.iterations // 6)
    its = sorted({*range(0, args.iterations + 1, step), args.iterations} & set(rows[0][1].snapshots))
    title = (f"DLG on LeNet, embedded sample {image} ({data.classes[int(data[image][1])]}), "
             f"{args.iterations} iterations, 1 trial per row")
    fig = reconstruction_grid(rows, truth=truth, iterations=its, title=title)
    print(f"figure: {save_figure(fig, args.figure).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
