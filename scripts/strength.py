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
from dlg_utils.strength import PLAN, run_domains


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/strength.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", choices=[*PLAN, "all"], default="all")
    slice_arguments(parser, "strength.jsonl")
    args = parser.parse_args(argv)
    over, start = start_slice(args), time.perf_counter()
    rows = run_domains(list(PLAN) if args.domain == "all" else [args.domain], Path(args.out) / "strength.jsonl",
                       quick=args.quick, over=over)
    print(f"{len(rows)} rows")
    print(f"done in {time.perf_counter() - start:.0f} s" + (" (budget reached: re-run to continue)" if over() else ""))


if __name__ == "__main__":
    main()
