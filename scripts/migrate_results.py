"""Rewrite the project's results files from the old key format to the new one.

The old format keyed a row by its trial's fields alone (``"trial"``: the trial dict as JSON),
which missed every setting passed beside the trial (the iterations, the label source, the
model's weights...). The new format stores ``key`` (SHA-256 of the full configuration) and
``config`` (that configuration), and refuses old rows. This script gives each old row the key
of the trial the study defines today, after checking that the study's settings match what
the row recorded (its iterations, and its attack where the row has one); a row that matches
no trial of the study, or two rows of one trial, stop the script with an error and write
nothing.

    python scripts/migrate_results.py            # every old-format file under results/
    python scripts/migrate_results.py --check    # say what would change, write nothing

Plain sweeps (training runs) keyed by their trial dict keep that dict as the whole key
(``sweep(..., context=None)``), so their rows migrate as they are.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from dlg_utils.config import RESULTS_DIR
from dlg_utils.experiments import AttackTrial, DatasetTargets, attack_keys
from dlg_utils.storage import canonical, config_key, load_rows

Mapping = dict[str, tuple[str, dict, int]]  # old trial JSON -> (key, config, iterations)


def old_key(fields: dict) -> str:
    """The old format's key: the trial's fields as sorted JSON."""
    return json.dumps(fields, sort_keys=True, default=str)


def _mapping(trials: list[AttackTrial], models, targets, old_fields: Callable[[AttackTrial], dict],
             **kwargs) -> Mapping:
    keyed = attack_keys(trials, models, targets, **kwargs)
    return {old_key(old_fields(t)): (key, config, attack.iterations) for t, (key, config, attack) in zip(trials, keyed)}


def frontier_mapping(pilot: bool) -> Mapping:
    """Notebook 9's privacy (or pilot) trials of the committed setting (``frontier.Setup()``),
    every defense on every model (an earlier run attacked LeNet-5 under all 17: its rows are
    kept, keyed as the same study runs them)."""
    import dataclasses

    from dlg_utils import frontier as fr
    from dlg_utils.data import load_dataset
    setup, data = dataclasses.replace(fr.Setup(), attacked={}), load_dataset("samples-gray28")
    fields = lambda t: {"model": t.model, "defense": t.defense, "image": t.image, "seed": t.seed, "attack": t.attack,
                        "iterations": t.settings["iterations"]}
    out: Mapping = {}
    for name in setup.models:
        model = {name: fr.attacked_model(setup, name, data)}
        if pilot:
            out |= _mapping(fr.pilot_trials(setup, name), model, DatasetTargets(data), fields,
                            configs=fr.PILOT_CANDIDATES, rows=fr.pilot_rows())
        else:
            out |= _mapping(fr.privacy_trials(setup, name), model, DatasetTargets(data), fields,
                            rows=fr.privacy_rows(setup))
    return out


def table1_mapping(iterations: int) -> Mapping:
    """Notebook 6's original-design trials (its full setting: images 2 and 25, 10 seeds)."""
    from dlg_utils import table1
    from dlg_utils.data import load_dataset
    from dlg_utils.models import get_model
    data = load_dataset("samples")
    torch.manual_seed(table1.MODEL_SEED)
    fixed = get_model("lenet", in_channels=3, num_classes=100, image_size=32)
    seeds = range(10)
    models = table1.original_models(seeds, fixed)
    trials = table1.original_trials(table1.METHODS, table1.ORIGINAL_IMAGES, seeds, iterations)
    fields = lambda t: {"design": t.tags["design"], "defense": t.defense, "image": t.image, "seed": t.seed,
                        "model": t.model}
    return _mapping(trials, models, DatasetTargets(data), fields, rows=table1.history_rows(iterations))


ATTACK_FILES: dict[str, Callable[[], Mapping]] = {
    "frontier_privacy.jsonl": lambda: frontier_mapping(pilot=False),
    "frontier_pilot.jsonl": lambda: frontier_mapping(pilot=True),
    "table1_original_100.jsonl": lambda: table1_mapping(100),
}


def migrate_rows(rows: list[dict], mapping: Mapping | None, name: str) -> list[dict]:
    """The rows in the new format: attack rows through ``mapping``, plain sweep rows (``mapping``
    None) keyed by their trial dict with no context."""
    out, seen = [], set()
    for n, row in enumerate(rows):
        if "key" in row:
            out.append(row)
            continue
        old = row.pop("trial")
        if mapping is None:
            config = {"trial": canonical(json.loads(old)), "context": None}
            key = config_key(config)
        else:
            if old not in mapping:
                raise SystemExit(f"{name}, row {n}: trial {old} is not a trial of the study today; nothing written")
            key, config, iterations = mapping[old]
            if row.get("iterations", iterations) != iterations or row.get("iterations_run", iterations) > iterations:
                raise SystemExit(f"{name}, row {n}: recorded {row.get('iterations')} iterations, the study says "
                                 f"{iterations}; nothing written")
            if row.get("attack", config["trial"]["attack"]) != config["trial"]["attack"]:
                raise SystemExit(f"{name}, row {n}: attack {row.get('attack')} != {config['trial']['attack']}")
            row["iterations"] = iterations
        if key in seen:
            raise SystemExit(f"{name}, row {n}: a second row of trial {old}; nothing written")
        seen.add(key)
        out.append({**row, "key": key, "config": canonical(config)})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/migrate_results.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default=str(RESULTS_DIR), help="where the results files are (default results/)")
    parser.add_argument("--check", action="store_true", help="say what would change; write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for path in sorted(Path(args.folder).glob("*.jsonl")):
        rows = load_rows(path)
        old = sum("key" not in r for r in rows)
        if not old:
            print(f"{path.name}: {len(rows)} rows, already in the new format")
            continue
        mapping = ATTACK_FILES[path.name]() if path.name in ATTACK_FILES else None
        new = migrate_rows(rows, mapping, path.name)
        print(f"{path.name}: {old} of {len(rows)} rows {'would be ' if args.check else ''}migrated"
              + ("" if mapping is None else " (attack trials: keys of the study's trials today)"))
        if not args.check:
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in new))
            os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
