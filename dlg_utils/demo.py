"""The main job: DLG against a LeNet on the embedded images with no defense, uniform
quantization and sparsification; prints a table and writes a figure to images/.

    python -m dlg_utils.demo [--images 0] [--defenses none uniform:16 sparsity:0.2] [--iterations 300]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from .config import ROOT, quick_mode
from .data import load_dataset
from .experiments import attack_trial, sweep
from .metrics import IMAGE_THRESHOLD
from .models import LeNet, init_uniform_
from .plotting import reconstruction_grid


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
    results = {}

    def run(trial: dict) -> dict:
        row, result = attack_trial(model, data, trial["image"], trial["seed"], trial["defense"],
                                   iterations=args.iterations, keep_history=False, progress=False)
        results[(trial["image"], trial["seed"], trial["defense"])] = result
        return row

    trials = [dict(image=i, seed=s, defense=d) for i in args.images for s in args.seeds for d in args.defenses]
    start = time.perf_counter()
    table = sweep(trials, run, desc="attacks")
    wall = time.perf_counter() - start
    table["recovered"] = table["mse"] < IMAGE_THRESHOLD
    cols = ["image", "seed", "defense", "grad_distance", "mse", "psnr", "ssim", "recovered",
            "label_correct", "seconds"]
    print(f"\nDLG on LeNet (4 convs, uniform init, seed {args.model_seed}), embedded samples, "
          f"{args.iterations} L-BFGS iterations; recovered = image MSE < {IMAGE_THRESHOLD:g}")
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    iters_per_s = sum(r.history["iteration"].iloc[-1] for r in results.values()) / wall
    print(f"\n{len(trials)} attacks in {wall:.1f} s ({iters_per_s:.1f} iterations/s) on "
          f"{torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}")

    image = args.images[0]
    truth = data[image][0]
    rows = [(f"{d}\nseed {args.seeds[0]}", results[(image, args.seeds[0], d)]) for d in args.defenses]
    step = max(1, args.iterations // 6)
    its = sorted({*range(0, args.iterations + 1, step), args.iterations} & set(rows[0][1].snapshots))
    title = (f"DLG on LeNet, embedded sample {image} ({data.classes[int(data[image][1])]}), "
             f"{args.iterations} iterations, 1 trial per row")
    reconstruction_grid(rows, truth=truth, iterations=its, title=title, path=args.figure)
    print(f"figure: {(ROOT / 'images' / args.figure).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
