"""The privacy-utility frontier: every defense at every strength against the strongest attacks
we have, with the accuracy it costs and the bits it sends, on the same model.

Privacy: each trial (model, defense, image, dummy seed) is attacked by every attack
(:data:`~dlg_utils.attacks.ATTACKS` and the defense-aware ``"adaptive"``); the trial's leakage is
that of its best attack (highest SSIM). Utility: the same architecture trained under the same
defense on the full training set, several seeds. Cost: the bits of the message per parameter.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .defenses import defense_from_spec
from .attacks import ATTACKS, adaptive_table
from .experiments import AttackTrial, DatasetTargets, Execution, RowOptions, row_image, run_attacks, sweep
from .models import get_model, model_options
from .stats import bootstrap_ci, recovered, t_interval, verdict
from .training import TrainConfig, train

DEFENSES = ("none", "uniform:240", "uniform:40", "uniform:20", "uniform:16", "uniform:8", "stochastic:16",
            "stochastic:8", "sparsity:0.2", "sparsity:0.4", "sparsity:0.9", "gaussian:0.001", "gaussian:0.01",
            "gaussian:0.1", "laplacian:0.01", "half", "mixed")
# the strength at which a paper proposed or tested each defense: seed 000 (uniform and stochastic
# 16 levels, sparsity 0.2), DLG (noise 1e-2 and half precision), seed 001 (mixed int8/int16). DLG
# states its noise levels as variances; gaussian:0.01 takes 1e-2 as the std (docs/defenses.md)
PAPER_STRENGTH = ("none", "uniform:16", "stochastic:16", "sparsity:0.2", "gaussian:0.01", "laplacian:0.01", "half",
                  "mixed")
ATTACK_NAMES = ("dlg", "idlg", "ig", "adaptive")
NOISE = ("gaussian", "laplacian", "gaussian-rel", "laplacian-rel")
# The attackers of the committed frontier (results/frontier_*.jsonl, notebook 9), kept so that
# its stored rows keep their keys: Inverting Gradients in pixel units, its N(0, 1) start clamped
# to the box (about half the pixels start at 0), and the defense-aware attacker built on it.
# The catalogue's "ig" now runs as the authors do (space="normalized", 24,000 iterations); the
# frontier at operating points (issue 24) re-runs the study with it.
COMMITTED_IG = replace(ATTACKS["ig"], space="pixel", iterations=4000, snapshot_every=500)
COMMITTED_ATTACKS = {"ig": COMMITTED_IG, "adaptive": adaptive_table(COMMITTED_IG)}


@dataclass(frozen=True)
class ModelSpec:
    """One attacked and trained architecture: its registry name (:func:`~dlg_utils.models.get_model`
    builds it with its default initialisation: DLG's uniform one for ``"lenet"``), the learning
    rate it trains with (SGD, momentum 0.9, weight decay 5e-4, batch 128) and where iDLG reads
    the label (the last weight for non-negative features, the last bias otherwise)."""

    name: str
    lr: float
    label_source: str = "weight"
    note: str = ""

    def build(self, seed: int, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
        """The model for images of ``in_channels`` x ``image_size`` x ``image_size`` (a model
        without an ``image_size`` option takes any) and ``num_classes``, its weights drawn after
        ``torch.manual_seed(seed)``."""
        options = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        known = model_options(self.name)
        torch.manual_seed(seed)
        return get_model(self.name, **{k: v for k, v in options.items() if k in known})


MODELS = {
    "lenet": ModelSpec("lenet", 0.01, "weight", "DLG's LeNet (sigmoid, 4 convolutions) with DLG's uniform init; "
                       "lr 0.01: at seed 000's lr 0.1 it stays at chance for 5 epochs"),
    "lenet5": ModelSpec("lenet5", 0.1, "bias", "seed 001's LeNet-5 (tanh, average pooling), PyTorch's init; "
                        "seed 000's optimizer as it is"),
    "resnet18": ModelSpec("resnet18", 0.1, "bias", "torchvision's ResNet-18, seed 000's optimizer (GPU)"),
}


@dataclass
class Setup:
    """One frontier study: which models, defenses, images and seeds, and how long each attack
    and training runs. The defaults are the committed CPU run (notebook 9)."""

    models: Sequence[str] = ("lenet", "lenet5")
    defenses: Sequence[str] = DEFENSES
    images: Sequence[int] = (0, 2, 4, 6, 8, 9, 10, 11, 12, 14, 16, 18, 20, 22, 24, 26)
    seeds: Sequence[int] = (0, 1, 2)
    attacks: Sequence[str] = ATTACK_NAMES
    iterations: dict = field(default_factory=lambda: {"dlg": 100, "idlg": 300, "ig": 1000, "adaptive": 1000})
    image_seeds: Sequence[int] = (0,)  # rows of these dummy seeds keep their reconstruction
    train_seeds: Sequence[int] = (0, 1, 2)
    epochs: int = 8
    train_subset: int | None = None  # None: all training images
    test_subset: int | None = None
    model_seed: int = 0  # the attacked weights: the training start of this seed
    # per model, the defenses attacked when not all of ``defenses`` (the committed CPU run attacks
    # LeNet-5 at the papers' strengths only: its attacks cost 2-3x LeNet's)
    attacked: dict = field(default_factory=lambda: {"lenet5": PAPER_STRENGTH})

    def attacked_defenses(self, model: str) -> tuple[str, ...]:
        """The defenses of ``defenses`` that the privacy part attacks on ``model``."""
        only = self.attacked.get(model)
        return tuple(d for d in self.defenses if only is None or d in only)


def quick_setup() -> Setup:
    """A minute-scale version of :class:`Setup` (CI and smoke tests): one model, four defenses,
    two images, one seed, short attacks, one epoch on a few thousand images."""
    return Setup(models=("lenet",), defenses=("none", "uniform:8", "sparsity:0.9", "gaussian:0.01"), images=(0, 12),
                 seeds=(0,), iterations={"dlg": 5, "idlg": 5, "ig": 40, "adaptive": 40}, train_seeds=(0, 1), epochs=1,
                 train_subset=3000, test_subset=1000)


def attack_iterations(setup: Setup, attack: str) -> int:
    """The iterations ``attack`` runs in ``setup`` (the adaptive attacker runs as long as IG)."""
    its = setup.iterations.get(attack, setup.iterations.get("ig") if attack == "adaptive" else None)
    base = COMMITTED_ATTACKS.get("ig" if attack == "adaptive" else attack) or ATTACKS[attack]
    return int(its if its is not None else base.iterations)


def privacy_trials(setup: Setup, model: str) -> list[AttackTrial]:
    """Every (defense, image, seed, attack) of ``model``, each attack at its iterations with the
    model's label source. The adaptive attacker is skipped where it would be a plain one: no
    defense (nothing to know) and noise (nothing to undo; the best plain attack stands)."""
    plain = lambda d: defense_from_spec(d).kind in ("none", *NOISE)
    settings = lambda a: {"iterations": attack_iterations(setup, a), "label_source": MODELS[model].label_source}
    return [AttackTrial(int(i), int(s), d, a, model, settings(a))
            for d in setup.attacked_defenses(model) for i in setup.images for s in setup.seeds for a in setup.attacks
            if not (a == "adaptive" and plain(d))]


def attacked_model(setup: Setup, name: str, dataset) -> nn.Module:
    """The weights every privacy trial of ``name`` attacks: the training start of
    :attr:`Setup.model_seed`, built for ``dataset``'s images and classes, in eval mode."""
    x0 = dataset[0][0]
    return MODELS[name].build(setup.model_seed, x0.shape[0], len(dataset.classes), x0.shape[-1]).eval()


def privacy_rows(setup: Setup) -> RowOptions:
    """What a privacy row keeps: no history; the 8-bit reconstruction of the dummy seeds of
    :attr:`Setup.image_seeds`."""
    return RowOptions(keep_history=False, keep_image=tuple(setup.image_seeds))


def run_privacy(setup: Setup, dataset, path: str | Path | None, progress: bool | None = None,
                chunk_size: int = 48, executor: str = "local", resources: dict | None = None,
                compile: bool = False) -> pd.DataFrame:
    """Attack every privacy trial, each attack at its iterations, storing each row (and, for
    :attr:`Setup.image_seeds`, the 8-bit reconstruction) as it finishes. ``executor="ray"``
    runs each chunk of trials as a Ray task (:func:`~dlg_utils.experiments.run_attacks`);
    ``compile`` evaluates each chunk as one torch.compile'd graph (:func:`~dlg_utils.attack.dlg_batch`)."""
    run = Execution(chunk_size=chunk_size, progress=progress, executor=executor, resources=resources, compile=compile)
    frames = []
    for name in setup.models:
        model = attacked_model(setup, name, dataset)
        trials = privacy_trials(setup, name)
        for attack in setup.attacks:  # one attack at a time: each is its own computation
            frames.append(run_attacks([t for t in trials if t.attack == attack], {name: model},
                                      DatasetTargets(dataset), path, configs=COMMITTED_ATTACKS,
                                      rows=privacy_rows(setup), execution=run))
    return pd.concat(frames, ignore_index=True)


# The candidates the adaptive attacker was chosen from (attacks.ADAPTIVE), each with IG's
# iterations, against the defenses that have something to undo.
PILOT_DEFENSES = ("uniform:16", "uniform:8", "stochastic:8", "sparsity:0.9", "mixed")
PILOT_CANDIDATES = {
    "ig": COMMITTED_IG,
    "box-lbfgs": replace(ATTACKS["idlg"], name="box-lbfgs", distance="interval"),
    "box-ig": replace(COMMITTED_IG, name="box-ig", distance="interval"),
    "bpda-ig": replace(COMMITTED_IG, name="bpda-ig", straight_through=True),
    "masked-ig": replace(COMMITTED_IG, name="masked-ig", masked=True),
}


PILOT_IMAGES = (0, 4, 8, 12)  # the embedded samples the pilot that chose ADAPTIVE attacked


def pilot_trials(setup: Setup, model: str, images: Sequence[int] = PILOT_IMAGES) -> list[AttackTrial]:
    """Every candidate of :data:`PILOT_CANDIDATES` against every :data:`PILOT_DEFENSES` on
    ``images`` (dummy seed 0); Adam candidates run as long as IG, the L-BFGS one as iDLG."""
    its = lambda a: attack_iterations(setup, "ig" if PILOT_CANDIDATES[a].optimizer == "adam" else "idlg")
    return [AttackTrial(int(i), 0, d, a, model, {"label_source": MODELS[model].label_source, "iterations": its(a)})
            for d in PILOT_DEFENSES for i in images for a in PILOT_CANDIDATES]


def pilot_rows() -> RowOptions:
    """What a pilot row keeps: the final metrics only."""
    return RowOptions(keep_history=False)


def run_pilot(setup: Setup, dataset, path: str | Path | None, images: Sequence[int] = PILOT_IMAGES,
              progress: bool | None = None) -> pd.DataFrame:
    """The study behind :data:`~dlg_utils.attacks.ADAPTIVE` (:func:`pilot_trials`)."""
    frames = [run_attacks(pilot_trials(setup, name, images), {name: attacked_model(setup, name, dataset)},
                          DatasetTargets(dataset), path, configs=PILOT_CANDIDATES, rows=pilot_rows(),
                          execution=Execution(progress=progress))
              for name in setup.models]
    return pd.concat(frames, ignore_index=True)


def utility_trials(setup: Setup, dataset_name: str) -> list[dict]:
    return [{"model": m, "defense": d, "seed": int(s), "epochs": setup.epochs, "lr": MODELS[m].lr,
             "dataset": dataset_name, "train_subset": setup.train_subset, "test_subset": setup.test_subset}
            for m in setup.models for d in setup.defenses for s in setup.train_seeds]


def run_utility(setup: Setup, train_data, test_data, dataset_name: str, path: str | Path | None,
                device: str | torch.device = "cpu", progress: bool | None = None, executor: str = "local",
                resources: dict | None = None) -> pd.DataFrame:
    """Train every (model, defense, seed) (:func:`~dlg_utils.training.train`, SGD with the
    model's lr, momentum 0.9, weight decay 5e-4, batch 128) and store its per-epoch curve.
    ``executor="ray"``: each training run is one Ray task (``resources``, e.g. one GPU)."""
    from .data import to_tensors
    cache: dict = {}  # the tensors, made once per process: a Ray task gets the (compact) data sets, not floats

    def tensors() -> tuple:
        if not cache:
            train_t, test_t = to_tensors(train_data), to_tensors(test_data)
            cache["train"] = tuple(t[: setup.train_subset] for t in train_t) if setup.train_subset else train_t
            cache["test"] = tuple(t[: setup.test_subset] for t in test_t) if setup.test_subset else test_t
        return cache["train"], cache["test"]

    def run(trial: dict) -> dict:
        train_t, test_t = tensors()
        x0 = train_t[0][0]
        model = MODELS[trial["model"]].build(trial["seed"], x0.shape[0], int(train_t[1].max()) + 1, x0.shape[-1])
        start = time.perf_counter()
        curve = train(model.to(device), train_t, test_t, TrainConfig(
            epochs=trial["epochs"], defense=trial["defense"], lr=trial["lr"], seed=trial["seed"], progress=False))
        return {"curve": curve.to_dict("records"), "seconds": time.perf_counter() - start}

    return sweep(utility_trials(setup, dataset_name), run, path, progress=progress, desc="training runs",
                 executor=executor, resources=resources)


# --- summaries ----------------------------------------------------------------------------------

def bits_per_parameter(defense, model: nn.Module) -> float:
    """Bits of the shared message per model parameter, each tensor's range included."""
    shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
    return defense_from_spec(defense).bits(shapes) / sum(int(np.prod(s)) for s in shapes)


def best_of_attacks(rows: pd.DataFrame, keys: Sequence[str] = ("model", "defense", "image", "seed")) -> pd.DataFrame:
    """Per trial (``keys``: model, defense, image, seed), the row of the attack with the highest
    SSIM (a diverged attack counts as the lowest), with ``best_attack`` naming it."""
    keys = list(keys)
    scored = rows.assign(_score=rows["ssim"].fillna(-np.inf))
    best = scored.loc[scored.groupby(keys, sort=False)["_score"].idxmax()].drop(columns="_score")
    return best.rename(columns={"attack": "best_attack"}).reset_index(drop=True)


def paper_strength_cells(best: pd.DataFrame, images, setup: Setup, model: str, columns: int = 8
                         ) -> tuple[dict[str, list[torch.Tensor]], list[torch.Tensor], dict[str, list[str]]]:
    """What the grid of best reconstructions at each paper's strength shows for ``model``: the
    trials (:func:`best_of_attacks`) of the first of ``setup.image_seeds``, for every defense of
    :data:`PAPER_STRENGTH` that ``best`` holds, on the first ``columns`` of ``setup.images``.
    Returns (defense -> the stored reconstructions, the true images of ``images`` (a data set),
    defense -> captions "ATTACK SSIM"), the arguments of
    :func:`~dlg_utils.plotting.best_reconstructions`."""
    seed = setup.image_seeds[0]
    mine = best[(best["model"] == model) & (best["seed"] == seed)]
    shown = [d for d in PAPER_STRENGTH if d in set(mine["defense"])]
    cols = [int(i) for i in list(setup.images)[:columns]]
    have = {d: set(mine.loc[mine["defense"] == d, "image"]) for d in shown}
    missing = {d: [i for i in cols if i not in have[d]] for d in shown}
    missing = {d: m for d, m in missing.items() if m}
    if missing:
        raise ValueError(f"no {model} trial of dummy seed {seed} for " + "; ".join(f"{d}: images {m}" for d, m in missing.items()))
    pick = {d: mine[mine["defense"] == d].set_index("image").loc[cols] for d in shown}
    recon = {d: [row_image(r) for _, r in pick[d].iterrows()] for d in shown}
    caps = {d: [f"{r['best_attack']} {r['ssim']:.2f}" for _, r in pick[d].iterrows()] for d in shown}
    return recon, [images[i][0] for i in cols], caps


def _per_image(values: pd.Series, images: pd.Series) -> np.ndarray:
    """Values as an images x trials array (NaN-padded), the unit a bootstrap resamples."""
    groups = [v.to_numpy(float) for _, v in values.groupby(images)]
    width = max(len(g) for g in groups)
    return np.array([np.pad(g, (0, width - len(g)), constant_values=np.nan) for g in groups])


def privacy_summary(best: pd.DataFrame, threshold: float | None = None, level: float = 0.95,
                    resamples: int = 2000) -> pd.DataFrame:
    """Per (model, defense): the fraction of trials recovered (SSIM >= ``threshold``, by default
    the criterion's: :data:`~dlg_utils.stats.CRITERIA`) and the
    median PSNR and SSIM of the best attack, each with a bootstrap interval that resamples
    images (all of an image's seeds go together), and the attack that won most trials."""
    out = []
    for (model, defense), g in best.groupby(["model", "defense"], sort=False):
        row = {"model": model, "defense": defense, "images": g["image"].nunique(), "trials": len(g)}
        for name, values, stat in [("recovered", recovered(g, "ssim", threshold).astype(float), np.nanmean),
                                   ("median psnr", g["psnr"].clip(upper=100), np.nanmedian),
                                   ("median ssim", g["ssim"], np.nanmedian)]:
            row[name] = float(stat(values.to_numpy(float)))
            row[f"{name} low"], row[f"{name} high"] = bootstrap_ci(_per_image(values, g["image"]), level,
                                                                   resamples, statistic=stat)
        row["strongest attack"] = g["best_attack"].value_counts().idxmax()
        out.append(row)
    return pd.DataFrame(out)


def threshold_curve(best: pd.DataFrame, thresholds: Sequence[float]) -> pd.DataFrame:
    """The fraction recovered per (model, defense) at every SSIM threshold: is the reading robust
    to the choice?"""
    parts = [best.assign(recovered=recovered(best, "ssim", t)).groupby(["model", "defense"], sort=False)["recovered"]
             .mean().rename("recovered").reset_index().assign(threshold=t) for t in thresholds]
    return pd.concat(parts, ignore_index=True)


def final_accuracy(runs: pd.DataFrame) -> pd.DataFrame:
    """Each training run's last-epoch test accuracy: model, defense, seed, accuracy."""
    return pd.DataFrame([{"model": r["model"], "defense": r["defense"], "seed": r["seed"],
                          "accuracy": r["curve"][-1]["test_accuracy"]} for _, r in runs.iterrows()])


def utility_summary(runs: pd.DataFrame, baseline: str = "none", level: float = 0.95) -> pd.DataFrame:
    """Per (model, defense): mean final test accuracy over seeds and the accuracy drop against
    ``baseline`` training, each with a ``level`` t-interval; the drop is paired by seed (the same
    seed gives the same initial weights and batch order under every defense)."""
    acc = final_accuracy(runs)
    out = []
    for (model, defense), g in acc.groupby(["model", "defense"], sort=False):
        base = acc[(acc["model"] == model) & (acc["defense"] == baseline)].set_index("seed")["accuracy"]
        mine = g.set_index("seed")["accuracy"]
        paired = mine.index.intersection(base.index)
        mean, lo, hi = t_interval(mine.to_numpy(), level)
        drop, dlo, dhi = t_interval((base[paired] - mine[paired]).to_numpy(), level)
        out.append({"model": model, "defense": defense, "seeds": len(mine), "accuracy": mean, "accuracy low": lo,
                    "accuracy high": hi, "drop": drop, "drop low": dlo, "drop high": dhi})
    return pd.DataFrame(out)


def frontier_table(privacy: pd.DataFrame, utility: pd.DataFrame, bits: pd.DataFrame) -> pd.DataFrame:
    """Privacy, utility and cost side by side, one row per (model, defense), in the order of
    ``bits`` (models, then defenses, as the study lists them)."""
    table = bits.merge(privacy, on=["model", "defense"], how="left").merge(utility, on=["model", "defense"], how="left")
    return table[[*bits.columns, *(c for c in table.columns if c not in bits.columns)]]


# --- which claims hold ----------------------------------------------------------------------------

PROTECTS = 0.10   # a defense protects when at most this fraction of trials is recovered (its whole interval)
FREE_DROP = 0.01  # and is free when it costs at most this much test accuracy (the whole interval of the drop)


@dataclass(frozen=True)
class Claim:
    """A paper's claim about a defense: whether it protects and whether it costs no accuracy
    (``costless`` None: the claim says nothing of accuracy)."""

    who: str
    defense: str
    said: str
    protects: bool
    costless: bool | None


CLAIMS = (Claim("seed 000", "uniform:16", "protects without sacrificing accuracy", True, True),
          Claim("seed 000", "stochastic:16", "protects without sacrificing accuracy", True, True),
          Claim("seed 001", "mixed", "protects, cuts communication, keeps accuracy", True, True),
          # DLG (Zhu et al. 2019, Sec. 5): noise "larger than 1e-2" (a variance: gaussian:0.1, docs/defenses.md)
          # prevents the leak, "but the accuracy drops significantly"; half precision "fails to protect"
          Claim("DLG", "gaussian:0.1", "noise of variance 1e-2 stops DLG but costs accuracy", True, False),
          Claim("DLG", "half", "half precision does not protect", False, None))


def defense_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`frontier_table` with two columns read from its 95% intervals
    (:func:`~dlg_utils.stats.verdict`): ``protects`` (at most :data:`PROTECTS` of the trials
    recovered) and ``free`` (an accuracy drop of at most :data:`FREE_DROP`), each True, False,
    or None where the interval straddles the limit or is missing (a defense not attacked)."""
    read = lambda low, high, limit: pd.Series([verdict(lo, hi, limit) for lo, hi in zip(table[low], table[high])],
                                              index=table.index, dtype=object)
    return table.assign(protects=read("recovered low", "recovered high", PROTECTS),
                        free=read("drop low", "drop high", FREE_DROP))


def claim_verdict(protects: bool | None, free: bool | None, claim: Claim, unmeasured: Sequence[str] = ()) -> str:
    """``"holds"``, ``"fails on privacy"`` (or accuracy, or both) or ``"not settled on ..."``:
    ``claim`` read against a defense's verdicts (:func:`defense_verdicts`). ``unmeasured``
    names the parts ("privacy", "accuracy") with no measurement yet, as against an interval
    that straddles the limit."""
    seen = {"privacy": (claim.protects, protects), **({} if claim.costless is None else
                                                       {"accuracy": (claim.costless, free)})}
    wrong = [k for k, (said, found) in seen.items() if found is not None and said != found]
    if wrong:
        return "fails on " + " and ".join(wrong)
    straddles = [k for k, (_, found) in seen.items() if found is None and k not in unmeasured]
    missing = [k for k, (_, found) in seen.items() if found is None and k in unmeasured]
    if not missing:
        return "holds" if not straddles else f"not settled on {' and '.join(straddles)} (the interval straddles the limit)"
    held = [k for k, (_, found) in seen.items() if found is not None]
    return "; ".join(([f"holds on {' and '.join(held)}"] if held else []) + (
        [f"not settled on {' and '.join(straddles)} (the interval straddles the limit)"] if straddles else []) +
        [f"{' and '.join(missing)} not measured yet"])


def claims_table(table: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """Every claim on every model of ``table`` (:func:`frontier_table`) that has its defense:
    model, who, defense, said, verdict (:func:`claim_verdict`), and the rows' numbers."""
    judged = defense_verdicts(table)
    out = []
    for model in judged["model"].unique():
        mine = judged[judged["model"] == model].set_index("defense")
        for c in claims:
            if c.defense in mine.index:
                r = mine.loc[c.defense]
                out.append({"model": model, "who": c.who, "defense": c.defense, "said": c.said,
                            "verdict": claim_verdict(r["protects"], r["free"], c),
                            **{k: r[k] for k in ("recovered", "recovered low", "recovered high", "median ssim",
                                                 "strongest attack", "drop", "drop low", "drop high")}})
    return pd.DataFrame(out)


def protecting(table: pd.DataFrame, free: bool = False) -> pd.DataFrame:
    """The rows of :func:`defense_verdicts` whose defense protects and, with ``free``, also costs
    at most :data:`FREE_DROP` of accuracy (each read from its whole interval)."""
    judged = defense_verdicts(table)
    keep = judged["protects"].eq(True) & (judged["free"].eq(True) if free else True)
    return judged[keep]
