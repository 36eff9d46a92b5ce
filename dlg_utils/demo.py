"""The main job: DLG against a LeNet on the embedded images with no defense, 16-level uniform
quantization and 20% sparsification; prints a table and writes a figure (to images/runs/ by
default, so a run never changes a committed file).

    python -m dlg_utils.demo [--images 0] [--defenses none uniform:16 sparsity:0.2] [--iterations 300]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .config import IMAGES_DIR, ROOT, quick_mode

DEFAULT_DEFENSES = ("none", "uniform:16", "sparsity:0.2")


def _samples() -> int:
    """How many embedded samples there are (numpy only: --help and argument errors stay instant)."""
    import numpy as np
    with np.load(Path(__file__).resolve().parent / "samples" / "samples.npz") as f:
        return len(f["labels"])


def writable_folder(folder: str | Path) -> str | None:
    """None if ``folder`` is (or can be made) a folder this process can write, else why not."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        return f"{folder} exists and is not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as e:
        return f"cannot write to {folder}: {e.strerror or e}"
    return None


def parse_args(argv=None) -> argparse.Namespace:
    """The demo's options, each checked before any attack runs: a bad value ends with a
    one-line error, not a traceback (and before torch loads, except a defense or device)."""
    n = _samples()
    parser = argparse.ArgumentParser(prog="python -m dlg_utils.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[0], help=f"indices into the {n} embedded samples")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="dummy-initialisation seeds (>= 0)")
    parser.add_argument("--defenses", nargs="+", default=list(DEFAULT_DEFENSES),
                        help="defense specs, one per row of the figure (none, uniform:N, stochastic:N, sparsity:R, "
                             "gaussian:STD, laplacian:SCALE, gaussian-rel:F, laplacian-rel:F, half, mixed, int8, int16; "
                             "a noise's STD is not a variance, F is a fraction of each tensor's RMS)")
    parser.add_argument("--iterations", type=int, default=30 if quick_mode() else 300,
                        help="L-BFGS iterations per attack, each up to 20 evaluations (default 300, DLG's)")
    parser.add_argument("--model-seed", type=int, default=0, help="seed of the LeNet's uniform init")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the cores not busy with other work, see config.free_cores)")
    parser.add_argument("--device", default="cpu", help="torch device to attack on (cpu, cuda, cuda:1...)")
    parser.add_argument("--out", default=str(IMAGES_DIR / "runs"), help="folder for the figure (default images/runs)")
    parser.add_argument("--figure", default="demo_dlg_defenses.png", help="the figure's file name (.png, .pdf, .svg)")
    args = parser.parse_args(argv)
    if bad := [i for i in args.images if not 0 <= i < n]:
        parser.error(f"--images: {bad} out of range; the embedded samples are 0..{n - 1}")
    if any(s < 0 for s in args.seeds):
        parser.error("--seeds must be >= 0")
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if Path(args.figure).name != args.figure or Path(args.figure).suffix.lower() not in (".png", ".pdf", ".svg"):
        parser.error(f"--figure must be a file name ending in .png, .pdf or .svg, got {args.figure!r}")
    if why := writable_folder(args.out):
        parser.error(f"--out: {why}")
    from .defenses import defense_from_spec  # loads torch
    for spec in args.defenses:
        try:
            defense_from_spec(spec)
        except ValueError as e:
            parser.error(f"--defenses: {e}")
    import torch
    try:
        args.device = torch.device(args.device)
        torch.empty(0, device=args.device)
    except (RuntimeError, AssertionError) as e:
        parser.error(f"--device {args.device}: {str(e).splitlines()[0]}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import platform
    import time

    import torch

    from .config import free_cores
    from .data import load_dataset
    from .defenses import describe
    from .experiments import AttackTrial, DatasetTargets, RowOptions, run_attacks
    from .models import get_model
    from .plotting import reconstruction_grid, save_figure
    from .stats import CRITERIA, recovered

    torch.set_num_threads(args.threads or free_cores())
    torch.manual_seed(args.model_seed)
    model = get_model("lenet", in_channels=3, num_classes=100, image_size=32).to(args.device)
    data = load_dataset("samples")
    trials = [AttackTrial(i, s, d, "dlg", settings={"iterations": args.iterations})
              for i in args.images for s in args.seeds for d in args.defenses]
    results = {}
    start = time.perf_counter()
    table = run_attacks(trials, model, DatasetTargets(data), rows=RowOptions(keep_history=False),
                        on_result=lambda t, r: results.update({(t.image, t.seed, t.defense): r}))
    wall = time.perf_counter() - start
    for name in ("mse", "ssim"):
        table[f"recovered ({CRITERIA[name].describe()})"] = recovered(table, name)
    table["converged_at"] = table["converged_at"].astype("Int64")  # <NA>: never below 1e-4
    cols = ["image", "seed", "defense", "grad_distance", "mse", "psnr", "ssim",
            *(c for c in table.columns if c.startswith("recovered")), "label_correct", "converged_at"]
    print(f"\nDLG on LeNet (4 convs, uniform init, seed {args.model_seed}), embedded samples, "
          f"{args.iterations} L-BFGS iterations")
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
