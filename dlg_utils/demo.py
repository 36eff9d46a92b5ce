"""The main job: DLG against a LeNet on the embedded images with no defense, 16-level uniform
quantization and 20% sparsification; prints a table and writes a figure (to images/runs/ by
default, so a run never changes a committed file).

    python -m dlg_utils.demo [--images 0] [--defenses none uniform:16 sparsity:0.2] [--iterations 300]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from .config import IMAGES_DIR, ROOT, free_cores, quick_mode
from .data import load_dataset
from .defenses import SPECS, defense_from_spec, describe
from .experiments import dataset_target, run_attacks
from .models import get_model
from .stats import IMAGE_THRESHOLD
from .plotting import reconstruction_grid, save_figure


def parse_args(argv=None) -> argparse.Namespace:
    """The demo's options, each checked: a bad value ends with a one-line error, not a traceback."""
    n = len(load_dataset("samples"))
    parser = argparse.ArgumentParser(prog="python -m dlg_utils.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[0], help=f"indices into the {n} embedded samples")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="dummy-initialisation seeds (>= 0)")
    parser.add_argument("--defenses", nargs="+", default=["none", "uniform:16", "sparsity:0.2"],
                        help=f"defense specs, one per row of the figure; forms: {', '.join(SPECS)}")
    parser.add_argument("--iterations", type=int, default=30 if quick_mode() else 300,
                        help="L-BFGS iterations per attack, each up to 20 evaluations (default 300, DLG's)")
    parser.add_argument("--model-seed", type=int, default=0, help="seed of the LeNet's uniform init")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the cores not busy with other work, see config.free_cores)")
    parser.add_argument("--device", default="cpu", help="torch device to attack on (cpu, cuda, cuda:1...)")
    parser.add_argument("--out", default=str(IMAGES_DIR / "runs"), help="folder for the figure (default images/runs)")
    parser.add_argument("--figure", default="demo_dlg_defenses.png", help="the figure's file name")
    args = parser.parse_args(argv)
    if bad := [i for i in args.images if not 0 <= i < n]:
        parser.error(f"--images: {bad} out of range; the embedded samples are 0..{n - 1}")
    if any(s < 0 for s in args.seeds):
        parser.error("--seeds must be >= 0")
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    for spec in args.defenses:
        try:
            defense_from_spec(spec)
        except ValueError as e:
            parser.error(f"--defenses: {e}")
    try:
        args.device = torch.device(args.device)
        torch.empty(0, device=args.device)
    except (RuntimeError, AssertionError) as e:
        parser.error(f"--device {args.device}: {str(e).splitlines()[0]}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or free_cores())
    torch.manual_seed(args.model_seed)
    model = get_model("lenet", in_channels=3, num_classes=100, image_size=32).to(args.device)
    data = load_dataset("samples")
    trials = [dict(image=i, seed=s, defense=d) for i in args.images for s in args.seeds for d in args.defenses]
    results = {}
    start = time.perf_counter()
    table = run_attacks(trials, model, lambda m, t: dataset_target(m, data, t), keep_history=False,
                        on_result=lambda t, r: results.update({(t["image"], t["seed"], t["defense"]): r}),
                        iterations=args.iterations)
    wall = time.perf_counter() - start
    table["recovered"] = table["mse"] < IMAGE_THRESHOLD
    table["converged_at"] = table["converged_at"].astype("Int64")  # <NA>: never below 1e-4
    cols = ["image", "seed", "defense", "grad_distance", "mse", "psnr", "ssim", "recovered",
            "label_correct", "converged_at"]
    print(f"\nDLG on LeNet (4 convs, uniform init, seed {args.model_seed}), embedded samples, "
          f"{args.iterations} L-BFGS iterations; recovered = image MSE < {IMAGE_THRESHOLD:g}")
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    iters_per_s = sum(r.history["iteration"].iloc[-1] for r in results.values()) / wall
    where = f"{torch.get_num_threads()} CPU threads" if args.device.type == "cpu" else str(args.device)
    print(f"\n{len(trials)} attacks, batched, in {wall:.1f} s ({iters_per_s:.1f} trial-iterations/s) on "
          f"{where}, {platform.processor() or platform.machine()}, torch {torch.__version__}")

    image = args.images[0]
    rows = []
    for d in args.defenses:
        r = results[(image, args.seeds[0], d)]
        rows.append((f"{d}\n{describe(d)}\nfinal PSNR {r.final['psnr']:.1f} dB, SSIM {r.final['ssim']:.2f}", r))
    step = max(1, args.iterations // 6)
    its = sorted({*range(0, args.iterations + 1, step), args.iterations} & set(rows[0][1].snapshots))
    title = (f"DLG on LeNet, embedded sample {image} ({data.classes[int(data[image][1])]}), "
             f"{args.iterations} L-BFGS iterations, dummy seed {args.seeds[0]}, 1 trial per row")
    fig = reconstruction_grid(rows, truth=data[image][0], iterations=its, title=title)
    path = save_figure(fig, Path(args.out) / args.figure).resolve()
    print(f"figure: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
