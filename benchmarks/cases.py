"""Attacks on deployment cases, batched against one case at a time, in one process: T trials of
one case (B images per update, E local steps) advanced as one engine batch, against the same
T trials each run alone through the same engine. Prints seconds, ms per iteration per trial,
the ratio and peak resident memory of each way.

    python benchmarks/cases.py                          # B=16 FedSGD and B=16 FedAvg E=5
    python benchmarks/cases.py --trials 8 --iterations 10 --batch 4 --steps 5

The attack is DLG's L-BFGS with counted labels (``"idlg"``) on DLG's LeNet, 1x28x28 embedded
images; its evaluations are what a case changes (FedAvg unrolls E steps on the dummy batch).
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from dlg_utils.attack import dlg_batch
from dlg_utils.cases import Case, client_update
from dlg_utils.data import load_dataset
from dlg_utils.memory import keep_freed_memory
from dlg_utils.models import get_model
from batched_vs_sequential import peak_rss_mb, reset_peak  # this script's folder is on sys.path


def views(case: Case, trials: int, model, data) -> list:
    """``trials`` updates of ``case``, each from its own B images of ``data`` (cycling)."""
    out = []
    for t in range(trials):
        idx = [(t * case.batch_size + j) % len(data) for j in range(case.batch_size)]
        x = torch.stack([data[i][0] for i in idx])
        y = torch.tensor([data[i][1] for i in idx])
        out.append(client_update(case, model, x, y)[0])
    return out


def timed(fn) -> tuple[float, float]:
    reset_peak()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, peak_rss_mb()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--iterations", type=int, default=5, help="L-BFGS iterations (20 evaluations each)")
    p.add_argument("--batch", type=int, nargs="*", default=[16, 16], help="B of each setting")
    p.add_argument("--steps", type=int, nargs="*", default=[1, 5], help="E of each setting")
    args = p.parse_args()
    if len(args.batch) != len(args.steps):
        p.error("--batch and --steps need one value per setting")
    keep_freed_memory()
    data = load_dataset("samples-gray28")
    torch.manual_seed(0)
    model = get_model("lenet", in_channels=1, num_classes=10, image_size=28)
    print(f"DLG's LeNet, 1x28x28, {args.trials} trials per setting, {args.iterations} L-BFGS iterations, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}")
    print(f"{'case':<28}{'way':<16}{'seconds':>9}{'ms/iter/trial':>15}{'peak RSS':>12}")
    for B, E in zip(args.batch, args.steps):
        case = Case(batch_size=B, local_steps=E, local_lr=0.05)
        targets = views(case, args.trials, model, data)
        kw = dict(image_shape=(B, 1, 28, 28), num_classes=10, attack="idlg", iterations=args.iterations,
                  cases=case, progress=False, snapshot_every=0)
        one, one_mb = timed(lambda: [dlg_batch(model, [v.update], **kw) for v in targets])
        many, many_mb = timed(lambda: dlg_batch(model, [v.update for v in targets], **kw))
        per = lambda s: 1e3 * s / (args.trials * args.iterations)
        print(f"{case.describe():<28}{'one at a time':<16}{one:9.1f}{per(one):15.1f}{one_mb:9.0f} MB")
        print(f"{'':<28}{'batched':<16}{many:9.1f}{per(many):15.1f}{many_mb:9.0f} MB   ratio {one / many:.2f}x")


if __name__ == "__main__":
    main()
