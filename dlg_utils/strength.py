"""How strong our attackers are, measured before they judge a defense.

Two studies on pilot images (:data:`PILOT_IMAGES`: embedded samples 1, 5, 9 and 13) that the
frontier at operating points does not score (it scores Fashion-MNIST test images and crops of
scikit-image's photos; the committed frontier scored image 9's grey version):

- the budget curve: success of Inverting Gradients as its authors run it (and of the
  defense-aware attacker built on it) against its iteration budget, 1,000, 4,000 and 24,000
  (the authors' ``reconstruct_image.py``), each budget a run of its own (the step size decays
  at fixed fractions of the run); it shows where the attack saturates on these models;
- the pilot at 3x32x32: which defense-aware attacker works through 16-level quantization on
  the seeds' input size, with the box distance under L-BFGS and under IG's machinery,
  restarts, a stronger image prior, BPDA and longer budgets.

Both attack DLG's LeNet at its initialisation (the frontier's attacked model), dummy seed 0.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd

from .attacks import ADAPTIVE, ATTACKS, AttackConfig
from .data import load_dataset
from .experiments import AttackTrial, DatasetTargets, Execution, RowOptions, run_attacks
from .frontier import Setup, attacked_model

# embedded samples 1, 5, 9 and 13 (three photos and a garment): the images the adaptive
# attacker was last tried on (issue 23)
PILOT_IMAGES = (1, 5, 9, 13)
BUDGETS = (1000, 4000, 24_000)
_BOX = replace(ADAPTIVE["uniform"], name="box-ig")
CANDIDATES: dict[str, AttackConfig] = {
    "ig": ATTACKS["ig"],
    "box-ig": _BOX,  # the catalogue's adaptive attacker against quantizers
    "box-ig-tv0.01": replace(_BOX, name="box-ig-tv0.01", tv=1e-2),  # a 100x stronger TV prior
    "box-ig-4restarts": replace(_BOX, name="box-ig-4restarts", restarts=4),
    "bpda-ig": replace(ATTACKS["ig"], name="bpda-ig", straight_through=True),
    "box-lbfgs": replace(ATTACKS["idlg"], name="box-lbfgs", distance="interval"),
    "idlg": ATTACKS["idlg"],  # the control: DLG's L-BFGS on the plain L2 distance, label from the gradient
}
# (candidate, defense, budgets) of each domain's study
PLAN = {
    # box-ig against no defense: IG's machinery on the relative squared distance (no box to match)
    "samples": [("ig", "none", BUDGETS), ("ig", "uniform:16", BUDGETS), ("box-ig", "uniform:16", BUDGETS),
                ("box-ig", "none", BUDGETS),
                ("box-ig-tv0.01", "uniform:16", (4000,)), ("box-ig-4restarts", "uniform:16", (4000,)),
                ("bpda-ig", "uniform:16", (4000,)), ("box-lbfgs", "uniform:16", (300, 1000)),
                ("idlg", "none", (300,)), ("idlg", "uniform:16", (300,))],
    "samples-gray28": [("ig", "none", BUDGETS), ("ig", "uniform:16", BUDGETS), ("box-ig", "uniform:16", BUDGETS)],
}

ROWS = RowOptions(keep_history=False, keep_image=True)  # what a row keeps: metrics and the 8-bit reconstruction


def quick_plan() -> dict:
    """:data:`PLAN` at budgets of 20 and 40 iterations (a smoke run, CI)."""
    return {d: [(a, df, (20, 40)) for a, df, _ in steps] for d, steps in PLAN.items()}


def strength_trials(domain: str, images=PILOT_IMAGES, plan: dict | None = None) -> list[AttackTrial]:
    """Every (candidate, defense, budget, image) of ``domain``'s plan, dummy seed 0, the label
    read from the gradient (LeNet's last weight: non-negative features)."""
    plan = (plan or PLAN)[domain]
    return [AttackTrial(int(i), 0, d, a, "lenet", {"iterations": int(b)}, {"budget": int(b), "domain": domain})
            for a, d, budgets in plan for b in budgets for i in images]


def run_strength(domain: str, data, model, path: str | Path | None, images=PILOT_IMAGES, plan: dict | None = None,
                 over: Callable[[], bool] = lambda: False, progress: bool | None = None) -> pd.DataFrame:
    """Run ``domain``'s trials, cheapest budget first, each row (with its 8-bit reconstruction)
    stored at ``path`` as it finishes; ``over()`` is asked between budgets (a time budget) and
    stops the study there. Returns the rows stored so far of the trials run."""
    trials = strength_trials(domain, images, plan)
    frames = []
    for budget in sorted({t.settings["iterations"] for t in trials}):
        if over():
            break
        part = [t for t in trials if t.settings["iterations"] == budget]
        frames.append(run_attacks(part, {"lenet": model}, DatasetTargets(data), path, configs=CANDIDATES,
                                  rows=ROWS,
                                  execution=Execution(progress=progress, chunk_size=16)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def pilot_model(data) -> "torch.nn.Module":
    """The attacked model: DLG's LeNet at the frontier's initialisation, for ``data``'s images and
    classes (:func:`~dlg_utils.frontier.attacked_model`)."""
    return attacked_model(Setup(), "lenet", data)


def run_domains(domains, path: str | Path | None, quick: bool = False, over: Callable[[], bool] = lambda: False,
                progress: bool | None = None) -> pd.DataFrame:
    """:func:`run_strength` on each of ``domains`` (names of :data:`PLAN`) with its pilot model;
    ``quick``: :func:`quick_plan` on pilot images 1 and 5."""
    frames = []
    for domain in domains:
        data = load_dataset(domain)
        frames.append(run_strength(domain, data, pilot_model(data), path, images=(1, 5) if quick else PILOT_IMAGES,
                                   plan=quick_plan() if quick else PLAN, over=over, progress=progress))
    return pd.concat(frames, ignore_index=True)


def budget_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, attack, defense, budget): images, median / min / max SSIM and PSNR, and the
    share of images with SSIM >= 0.5."""
    g = rows.groupby(["domain", "attack", "defense", "budget"])
    out = g.agg(images=("ssim", "size"), **{"median ssim": ("ssim", "median"), "min ssim": ("ssim", "min"),
                                            "max ssim": ("ssim", "max"), "median psnr": ("psnr", "median")})
    out["ssim >= 0.5"] = g["ssim"].apply(lambda s: float((s >= 0.5).mean()))
    return out.reset_index()


def consistent_but_wrong(rows: pd.DataFrame, attack: str = "box-lbfgs", tolerance: float = 1e-5) -> pd.DataFrame:
    """The box attacker's runs that ended inside the box (final box distance below
    ``tolerance``: a dummy whose gradient is as consistent with what was shared as the true
    image's), with their SSIM: where it is low, the quantized gradient does not single out the
    image, whatever the optimiser."""
    part = rows[rows["attack"] == attack]
    return part[part["grad_distance"] < tolerance][["domain", "image", "defense", "budget", "grad_distance", "ssim",
                                                     "psnr"]].reset_index(drop=True)


def saturation(table: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, attack, defense) with two budgets or more (:func:`budget_table`): the median
    SSIM at the largest budget, the gain over the budget before it, and those budgets; a gain
    under 0.05 is called saturated (the curve is flat there)."""
    out = []
    for (domain, attack, defense), g in table.groupby(["domain", "attack", "defense"]):
        g = g.sort_values("budget")
        if len(g) < 2:
            continue
        last, before = g.iloc[-1], g.iloc[-2]
        gain = float(last["median ssim"] - before["median ssim"])
        out.append({"domain": domain, "attack": attack, "defense": defense, "from": int(before["budget"]),
                    "to": int(last["budget"]), "median ssim": float(last["median ssim"]), "gain": gain,
                    "saturated": gain < 0.05})
    return pd.DataFrame(out)
