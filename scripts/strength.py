"""How strong the attackers are (dlg_utils.strength): Inverting Gradients' success against its
budget (1k, 4k, 24k iterations) and the pilot of the defense-aware attacker at 3x32x32, on the
pilot images. Resumable: each finished trial is one JSON line in results/strength.jsonl.

    python scripts/strength.py --budget-s 540          # a slice of about 9 minutes; re-run to go on
    python scripts/strength.py --domain samples-gray28
    python scripts/strength.py --quick --out /tmp/strength   # a smoke run (40 and 80 iterations)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from dlg_utils.config import slice_arguments, start_slice
from dlg_utils.data import load_dataset
from dlg_utils.frontier import MODELS
from dlg_utils.strength import PILOT_IMAGES, PLAN, quick_plan, run_strength


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/strength.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", choices=[*PLAN, "all"], default="all")
    slice_arguments(parser, "strength.jsonl")
    args = parser.parse_args(argv)
    over, start = start_slice(args), time.perf_counter()
    for domain in (PLAN if args.domain == "all" else [args.domain]):
        data = load_dataset(domain)
        x0 = data[0][0]
        model = MODELS["lenet"].build(0, x0.shape[0], len(data.classes), x0.shape[-1]).eval()
        rows = run_strength(domain, data, model, Path(args.out) / "strength.jsonl",
                            images=(1, 5) if args.quick else PILOT_IMAGES, plan=quick_plan() if args.quick else PLAN,
                            over=over)
        print(f"{domain}: {len(rows)} rows")
    print(f"done in {time.perf_counter() - start:.0f} s" + (" (budget reached: re-run to continue)" if over() else ""))


if __name__ == "__main__":
    main()
