"""Attacks on deployment updates (notebook 10, dlg_utils.deployment): batches of 1, 4 and 16
Fashion-MNIST test images, FedSGD and FedAvg with 5 local steps, DLG's LeNet untrained and
trained. Resumable: each finished trial is one JSON line in results/deployment.jsonl.

    python scripts/deployment.py --budget-s 540      # a slice of about 9 minutes; re-run to go on
    python scripts/deployment.py --quick --out /tmp/deployment
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from dlg_utils.config import slice_arguments, start_slice
from dlg_utils.data import load_dataset
from dlg_utils.deployment import Study, quick_study, run_study


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/deployment.py", description=__doc__.split("\n\n")[0])
    slice_arguments(parser, "deployment.jsonl")
    args = parser.parse_args(argv)
    over, start = start_slice(args), time.perf_counter()
    study = quick_study() if args.quick else Study()
    data = load_dataset("samples-gray28" if args.quick else "fashion-mnist", train=False)
    rows = run_study(study, data, Path(args.out) / "deployment.jsonl", over=over)
    print(f"{len(rows)} rows; done in {time.perf_counter() - start:.0f} s"
          + (" (budget reached: re-run to continue)" if over() else ""))


if __name__ == "__main__":
    main()
