"""The frontier at operating points (notebook 9, dlg_utils.operating): every defense attacked on
the updates of each operating point (model state, batch size, FedAvg's local steps, DP-SGD), on
64 Fashion-MNIST test images and 64 colour photo crops; and (``--part utility``) the accuracy
of federated training in each point's setting under each defense, 3 seeds; and (``--part budget``)
the budget curves of the cells that could protect (results/operating_budget.jsonl.gz). Resumable: each
finished trial is one JSON line in its point's store in results/operating/ (gzip JSON lines,
one file per point; results/operating_utility.jsonl for training runs),
the cells run in a fixed order (the papers' point first).

    python scripts/operating.py --budget-s 540 --threads 1   # a slice of about 9 minutes; re-run to go on
    python scripts/operating.py --part utility --budget-s 540 --threads 1
    python scripts/operating.py --part budget --budget-s 540 --threads 1
    python scripts/operating.py --part utility --dataset cifar10 --data-root ~/data   # where you have CIFAR-10
    python scripts/operating.py --quick --out /tmp/operating
    python scripts/operating.py --status                     # which cells are done
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from dlg_utils.config import slice_arguments, start_slice
from dlg_utils.fedsim import FedRun
from dlg_utils.operating import Study, quick_study, run_curves, run_study, run_utility, study_progress


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/operating.py", description=__doc__.split("\n\n")[0])
    slice_arguments(parser, "operating/")
    parser.add_argument("--part", choices=("privacy", "utility", "budget"), default="privacy",
                        help="privacy: the attacks (operating/); utility: the training runs (operating_utility.jsonl); "
                             "budget: the budget curves of the cells that could protect (operating_budget.jsonl.gz)")
    parser.add_argument("--status", action="store_true", help="print how many cells are done and stop")
    parser.add_argument("--point", action="append", default=[], metavar="NAME",
                        help='only this point ("init, B=4, FedSGD", or "gray28: init, B=4, FedSGD"; repeatable): '
                             "workers on disjoint points can run side by side")
    parser.add_argument("--dataset", choices=("fashion-mnist", "cifar10"), default="fashion-mnist",
                        help="utility: the training set (cifar10 where you have it: operating_utility_cifar10.jsonl)")
    parser.add_argument("--data-root", default=None, help="utility: where the data set is (default: dlg_utils')")
    args = parser.parse_args(argv)
    study, path = (quick_study() if args.quick else Study()), Path(args.out) / "operating"
    if args.point:
        try:
            study = study.only(args.point)
        except ValueError as e:
            parser.error(str(e))
    if args.status:
        print(study_progress(study, path).to_string(index=False))
        return
    over, start = start_slice(args), time.perf_counter()
    if args.part == "utility":
        quick = dict(run=FedRun(epochs=0.02, evaluations=1), seeds=(0, 1), train_subset=3000, test_subset=500)
        name = "operating_utility.jsonl" if args.dataset == "fashion-mnist" else f"operating_utility_{args.dataset}.jsonl"
        rows = run_utility(study, Path(args.out) / name, over=over, dataset=args.dataset, root=args.data_root,
                           **(quick if args.quick else {}))
    elif args.part == "budget":
        quick = dict(budgets=(20, 40))  # the curves of quick_study's points
        rows = run_curves(study, Path(args.out) / "operating_budget.jsonl.gz", over=over, **(quick if args.quick else {}))
    else:
        rows = run_study(study, path, over=over)
    print(f"{len(rows)} rows; done in {time.perf_counter() - start:.0f} s"
          + (" (budget reached: re-run to continue)" if over() else ""))


if __name__ == "__main__":
    main()
