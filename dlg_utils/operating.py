"""The frontier at operating points: every defense judged on the updates deployments share.

An operating point is one setting of what a client computes (:class:`Point`): the model state
(DLG's LeNet at the start, the middle and the end of one training run), the batch size B behind
one update, FedAvg's local steps E and DP-SGD at a privacy budget epsilon. Each point is
attacked in two input domains (:data:`DOMAINS`): 64 Fashion-MNIST test images (1x28x28) and 64
colour crops of scikit-image's photos (``photos32``, 3x32x32). Every (domain, point, defense) is
one cell: its 64 images in consecutive batches of B, each batch attacked by DLG with the labels
read from the update, Inverting Gradients as its authors run it and the defense-aware attacker
(:data:`~dlg_utils.attacks.ADAPTIVE`), one dummy seed. An image is recovered when its best
attack meets the criterion (SSIM, PSNR and image MSE side by side); rates carry exact
(Clopper-Pearson) intervals over the images, and a defense protects at a point only when the
upper bound is at most 10% and the attack's budget is shown saturated there, for that defense
(a measured budget curve: :data:`CURVES`).

The adaptive attacker was chosen on images the study does not score (the pilots of
:mod:`~dlg_utils.frontier` and :mod:`~dlg_utils.strength`: embedded samples). The primary grid
(:data:`POINTS`) varies one factor at a time around the seeds' point (untrained, B = 1, FedSGD);
see docs/frontier.md for why.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from torch import nn

from .cases import DPSGD, Case
from .config import CHECKPOINTS_DIR
from .experiments import AttackTrial, Execution, RowOptions, attack_sweep, per_image, trial_cost
from .fedsim import FedRun
from .frontier import DEFENSES, MODELS, PAPER_STRENGTH, best_of_attacks
from .stats import CRITERIA, clopper_pearson, recovered, recovered_images, scored_criteria
from .storage import canonical, compact, load_rows
from .training import load_checkpoint

# relative noise: the noise's scale is this fraction of each tensor's RMS (docs/defenses.md)
RELATIVE_NOISE = ("gaussian-rel:0.1", "gaussian-rel:1", "laplacian-rel:0.1")
ALL_DEFENSES = (*DEFENSES, *RELATIVE_NOISE)
# the papers' strengths first: the cells every claim needs
PAPER_FIRST = (*PAPER_STRENGTH, *RELATIVE_NOISE, *(d for d in DEFENSES if d not in PAPER_STRENGTH))
# the defenses near the frontier at the seeds' point (notebook 9: gaussian:0.1 protects under every
# criterion, stochastic:8 is open under SSIM and recovers nothing under PSNR and MSE): their
# accuracy decides whether anything holds, so their training runs go first
NEAR_FRONTIER = ("gaussian:0.1", "stochastic:8")
LOCAL_LR = 0.05  # FedAvg's local step size (notebook 8's Flower clients)
# DP-SGD's calibration: a client of seed 001 (60,000 / 15 = 4,000 images) training 20 rounds of
# one local epoch in batches of B, sample-level (epsilon, 1e-5)-DP, clip 1 (notebook 8's setting)
DP_EXAMPLES, DP_EPOCHS, DP_DELTA, DP_CLIP = 4000, 20, 1e-5, 1.0
# the model states: checkpoints of one centralised training run of DLG's LeNet on Fashion-MNIST (notebook 5;
# test accuracy 10%, 83.0% and 84.3%)
STATES = {"init": "lenet_fashion-mnist_start.pt", "middle": "lenet_fashion-mnist_middle.pt",
          "trained": "lenet_fashion-mnist_converged.pt"}
ROWS = RowOptions(keep_history=False, keep_image=True)  # metrics and the 8-bit reconstruction
LIMIT = 0.10  # a defense protects where the upper 95% bound of the rate recovered is at most this


@dataclass(frozen=True)
class Point:
    """One operating point: the model ``state`` (a key of :data:`STATES`), the batch size B
    behind one update, FedAvg's ``local_steps`` E (1: FedSGD) and DP-SGD at ``epsilon`` (0: none;
    calibrated by the accountant, :data:`DP_EXAMPLES`). ``defenses``: the ones attacked here."""

    state: str = "init"
    batch_size: int = 1
    local_steps: int = 1
    epsilon: float = 0.0
    defenses: Sequence[str] = ALL_DEFENSES

    @property
    def name(self) -> str:
        parts = [self.state, f"B={self.batch_size}", "FedSGD" if self.local_steps == 1 else f"E={self.local_steps}"]
        return ", ".join(parts + ([f"DP eps={self.epsilon:g}"] if self.epsilon else []))

    def case(self, defense: str = "none") -> Case:
        """What a client of this point computes, sharing its update through ``defense``."""
        dp = (DPSGD.at_epsilon(self.epsilon, examples=DP_EXAMPLES, batch_size=self.batch_size, epochs=DP_EPOCHS,
                               clip=DP_CLIP, delta=DP_DELTA) if self.epsilon else None)
        return Case(batch_size=self.batch_size, local_steps=self.local_steps, local_lr=LOCAL_LR, dp=dp, defense=defense)


@dataclass(frozen=True)
class Domain:
    """One input domain: the data set attacked (``dataset``, its test split where it has one),
    the images scored, the attacked architecture (``model``: DLG's LeNet, whose 1x28x28
    states are checkpoints of one training run; other models and domains are attacked at their
    initialisation), the iterations of the Adam attackers (Inverting Gradients and the adaptive
    one) and whether that budget can carry a "protects" verdict (``saturated``: a measured
    budget curve is flat there, :mod:`~dlg_utils.strength`, or it is the authors' 24,000).
    ``measured_at``: the (model state, B, E) where that curve was measured (without DP-SGD),
    the only points where it carries the verdict (a batch or a trained model is a harder
    problem, whose budget the curve says nothing of); None: every point (the authors' budget);
    ``measured_defenses``: the defenses it was measured for (the others get their own curves:
    :data:`CURVES`)."""

    dataset: str
    images: Sequence[int] = tuple(range(64))
    iterations: int = 1000
    saturated: bool = True
    states: Sequence[str] = ("init", "middle", "trained")
    model: str = "lenet"
    measured_at: tuple[str, int, int] | None = ("init", 1, 1)
    measured_defenses: Sequence[str] = ("none", "uniform:16")  # strength.PLAN's curves at 1x28x28

    def saturated_at(self, point: "Point", defense: str | None = None) -> bool:
        """Whether this domain's budget can carry a "protects" verdict at ``point`` for
        ``defense`` (None: for some defense): the curve was measured there, without DP-SGD,
        for that defense (another defense can need a longer attack), or the budget is the authors'."""
        if not self.saturated or self.measured_at is None:
            return self.saturated
        return ((point.state, point.batch_size, point.local_steps) == self.measured_at and not point.epsilon
                and (defense is None or defense in self.measured_defenses))


# The scored Fashion-MNIST test images: the first 64, less 19 and 27, which are embedded samples 12
# and 13, seen by the pilots that chose the attacker and its budget (frontier.PILOT_IMAGES:
# samples 0, 4, 8, 12; strength.PILOT_IMAGES: 1, 5, 9, 13). Test images 64 and 65 take their
# places, so that every batch without them stays as it was.
GRAY28_IMAGES = tuple({19: 64, 27: 65}.get(i, i) for i in range(64))
DOMAINS = {"gray28": Domain("fashion-mnist", images=GRAY28_IMAGES, iterations=1000, saturated=True),
           # no colour training set here: only the untrained model (CIFAR would give trained states);
           # the budget curve still rises at 24,000 at 3x32x32: 4,000 carries no "protects"
           "photos32": Domain("photos32", iterations=4000, saturated=False, states=("init",))}
DLG_ITERATIONS = 300  # L-BFGS, stopping once the gradient distance is below 1e-4

# The primary grid: one factor at a time around the seeds' point (untrained, B=1, FedSGD), each
# cell costing what it must (all defenses where defenses decide; DP-SGD alone at its points).
POINTS = (Point("init"),
          Point("init", epsilon=8.0, defenses=("none",)), Point("init", epsilon=1.0, defenses=("none",)),
          Point("trained"), Point("init", batch_size=4),
          Point("middle", defenses=(*PAPER_STRENGTH, *RELATIVE_NOISE)),
          Point("init", batch_size=16, defenses=PAPER_STRENGTH),
          Point("init", batch_size=4, local_steps=5, defenses=PAPER_STRENGTH))
PHOTO_POINTS = (Point("init", defenses=(*PAPER_STRENGTH, *RELATIVE_NOISE)),)
# the order the cells run in: the seeds' point at 1x28x28; DP-SGD at epsilon 8 and 1 (one cell
# each); the seeds' point at 3x32x32 (the seeds' claims are about 3x32x32 images there, 11-25
# minutes a cell); then the other 1x28x28 points
GRID = (("gray28", POINTS[0]), *(("gray28", p) for p in POINTS[1:3]), *(("photos32", p) for p in PHOTO_POINTS),
        *(("gray28", p) for p in POINTS[3:]))


# Where a cell protects at a point whose budget is saturated, its accuracy cost decides whether it
# holds: more training seeds there. With 3, gaussian-rel:1's Bonferroni drop interval is about
# +-11 points; notebook 9 gives the seeds that would settle it at the spread measured. Seed-major, so that
# a run cut short leaves every defense paired with the baseline on the same seeds.
MORE_SEEDS = {"B=1, FedSGD": (("none", "gaussian-rel:1", "gaussian:0.1"), tuple(range(3, 12)))}


@dataclass(frozen=True)
class Study:
    """Which cells run, in order: every (domain, point) of ``grid``, the papers' strengths
    first within a point; ``more_seeds``: setting -> (defenses, seeds) trained beyond the
    usual seeds (None: :data:`MORE_SEEDS` for the project's grid, none for another grid)."""

    grid: Sequence[tuple[str, Point]] = GRID
    domains: dict = field(default_factory=lambda: dict(DOMAINS))
    dlg_iterations: int = DLG_ITERATIONS
    seed: int = 0
    more_seeds: dict | None = None

    def extra_seeds(self) -> dict:
        """The training runs beyond the usual seeds: setting -> (defenses, seeds)."""
        return self.more_seeds if self.more_seeds is not None else dict(MORE_SEEDS) if self.grid == GRID else {}

    def cells(self) -> list[tuple[str, Point, str]]:
        """(domain, point, defense) of every cell, in the order they run."""
        order = {d: k for k, d in enumerate(PAPER_FIRST)}
        return [(domain, point, d) for domain, point in self.grid
                for d in sorted(point.defenses, key=lambda d: order.get(d, len(order)))]

    def only(self, names: Sequence[str]) -> "Study":
        """The study on some of its points: each name a point's name (every domain's point of that
        name) or ``"domain: name"``, as ``--status`` lists them. Workers on disjoint points write
        disjoint stores, so they can run side by side."""
        labels = [(d, p, f"{d}: {p.name}") for d, p in self.grid]
        unknown = [n for n in names if not any(n in (p.name, label) for _, p, label in labels)]
        if unknown:
            raise ValueError(f"no point named {unknown} in the study; its points: {[label for *_, label in labels]}")
        return replace(self, grid=tuple((d, p) for d, p, label in labels if p.name in names or label in names),
                       more_seeds=self.extra_seeds())

    def point(self, domain: str, name: str) -> Point | None:
        """``domain``'s point named ``name`` (as rows store it), None where the study has none."""
        return next((p for d, p in self.grid if d == domain and p.name == name), None)

    def saturated_at(self, domain: str, name: str, defense: str | None = None, flat=frozenset()) -> bool:
        """Whether a "protects" verdict can be read at ``domain``'s point ``name`` for ``defense``
        (:meth:`Domain.saturated_at`, or (domain, name, defense) in ``flat``: a budget curve
        of :func:`flat_curves`)."""
        point = self.point(domain, name)
        return point is not None and domain in self.domains and (
            self.domains[domain].saturated_at(point, defense) or (domain, name, defense) in flat)

    def utility_points(self) -> list[Point]:
        """The points whose training setting is measured: those of the Fashion-MNIST LeNet."""
        return [p for d, p in self.grid if self.domains[d].dataset == "fashion-mnist" and self.domains[d].model == "lenet"]


def quick_study() -> Study:
    """A minute-scale version (CI): 4 images, four points (one of DP-SGD), three defenses, 20 iterations."""
    few = {k: replace(d, images=(0, 1, 2, 3), iterations=20) for k, d in DOMAINS.items()}
    return Study(grid=(("gray28", Point("init", defenses=("none", "uniform:16", "gaussian-rel:1"))),
                       ("gray28", Point("init", epsilon=8.0, defenses=("none",))),
                       ("gray28", Point("init", batch_size=2, defenses=("none",))),
                       ("photos32", Point("init", defenses=("none",)))), domains=few, dlg_iterations=20)


def full_study() -> Study:
    """The GPU grid (``scripts/full_scale.py --studies operating``): every point with every
    defense at 1x28x28 and at 3x32x32, the 3x32x32 attacks at the authors' 24,000 iterations
    (so a "protects" can be read there), and torchvision's ResNet-18 at its initialisation
    beside LeNet at the seeds' point and at B = 4."""
    domains = {**DOMAINS, "photos32": replace(DOMAINS["photos32"], iterations=24_000, saturated=True, measured_at=None),
               # no budget curve of ResNet-18 at 1x28x28: its "protects" is not read
               "gray28-resnet18": Domain("fashion-mnist", states=("init",), model="resnet18", saturated=False),
               "photos32-resnet18": Domain("photos32", iterations=24_000, states=("init",), model="resnet18",
                                           measured_at=None)}
    every = lambda p: replace(p, defenses=ALL_DEFENSES) if not p.epsilon else p
    grid = [("gray28", every(p)) for p in POINTS] + [("photos32", every(p)) for p in POINTS if p.state == "init"]
    grid += [(d, Point("init", batch_size=B)) for d in ("gray28-resnet18", "photos32-resnet18") for B in (1, 4)]
    return Study(grid=tuple(grid), domains=domains, more_seeds=MORE_SEEDS)


def cell_trials(study: Study, domain: str, point: Point, defense: str) -> list[AttackTrial]:
    """The trials of one cell: the domain's images in consecutive batches of B, each attacked by
    DLG (labels read from the update), Inverting Gradients and, where there is a defense to
    know, the adaptive attacker; the trial's model is named "DOMAIN/STATE"."""
    spec, case = study.domains[domain], point.case(defense)
    if point.state not in spec.states:
        raise ValueError(f"domain {domain!r} has no model state {point.state!r} (it has {list(spec.states)})")
    if len(spec.images) % point.batch_size:
        raise ValueError(f"{len(spec.images)} images do not split into batches of {point.batch_size}")
    attacks = [("idlg", {"iterations": study.dlg_iterations, "stop_when_converged": True}),
               ("ig", {"iterations": spec.iterations})]
    if defense != "none" or point.epsilon:
        attacks.append(("adaptive", {"iterations": spec.iterations}))
    B, images = point.batch_size, [int(i) for i in spec.images]
    batches = [tuple(images[k:k + B]) if B > 1 else images[k] for k in range(0, len(images), B)]
    tags = {"domain": domain, "point": point.name, "state": point.state}
    return [AttackTrial(b, study.seed, attack=a, model=f"{domain}/{point.state}", settings=s, tags=tags, case=case)
            for a, s in attacks for b in batches]


def domain_data(domain: str, study: Study | None = None):
    """The attacked images of ``domain`` (the test split of Fashion-MNIST)."""
    from .data import load_dataset
    name = (study or Study()).domains[domain].dataset
    return load_dataset(name, train=False) if name == "fashion-mnist" else load_dataset(name)


def domain_model(spec: Domain, state: str, data, folder: Path = CHECKPOINTS_DIR) -> nn.Module:
    """The attacked model of a domain in eval mode: DLG's LeNet on Fashion-MNIST is the
    checkpoint of ``state``; any other (domain, model) is its architecture at its
    initialisation (seed 0) for the data's shape and classes."""
    if spec.dataset == "fashion-mnist" and spec.model == "lenet":
        if state not in STATES:
            raise ValueError(f"unknown model state {state!r}; choose from {sorted(STATES)}")
        model, meta = load_checkpoint(folder / STATES[state])
        model.test_accuracy = float(meta.get("test_accuracy", float("nan")))
        return model.eval()
    if state != "init":
        raise ValueError(f"{spec.model} on {spec.dataset} is attacked only at its initialisation (no checkpoints)")
    x0 = data[0][0]
    model = MODELS[spec.model].build(0, x0.shape[0], len(data.classes), x0.shape[-1]).eval()
    model.test_accuracy = float("nan")
    return model


def point_path(folder: str | Path, domain: str, point: Point) -> Path:
    """The store of one (domain, point) in ``folder``: a gzip JSON-lines file (a point's 20
    cells hold about 4,000 rows with their reconstructions: ~12 MB as text, ~3 MB packed)."""
    return Path(folder) / f"{domain}--{re.sub(r'[^A-Za-z0-9.]+', '-', point.name).strip('-')}.jsonl.gz"


def load_study(folder: str | Path) -> pd.DataFrame:
    """Every row stored in ``folder`` (:func:`run_study`'s stores, one per point)."""
    files = sorted(Path(folder).glob("*.jsonl.gz"))
    return pd.DataFrame([r for f in files for r in load_rows(f)])


def run_study(study: Study, folder: str | Path | None, over: Callable[[], bool] = lambda: False,
              progress: bool | None = None, chunk_size: int = 64, device: str = "cpu") -> pd.DataFrame:
    """Attack every cell of ``study`` in order on ``device``, each row stored as it finishes in
    its point's store in ``folder`` (:func:`point_path`; None: in memory), the store compacted
    after each cell; ``over()`` is asked between cells (a slice's time budget). Returns the rows
    of the cells run."""
    frames, data, models = [], {}, {}
    for domain, point, defense in study.cells():
        if over():
            break
        if domain not in data:
            data[domain] = domain_data(domain, study)
        name = f"{domain}/{point.state}"
        if name not in models:
            models[name] = domain_model(study.domains[domain], point.state, data[domain]).to(device)
        path = None if folder is None else point_path(folder, domain, point)
        frames.append(attack_sweep(cell_trials(study, domain, point, defense), {name: models[name]}, data[domain],
                                   path, rows=ROWS, execution=Execution(chunk_size=chunk_size, progress=progress)))
        if path is not None:
            compact(path)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- budget curves where a cell could protect -----------------------------------------------

# The images a budget curve is measured on: Fashion-MNIST test images the study does not score
# (19 and 27, which the pilots saw, and the next two after the scored ones).
CURVE_IMAGES = {"gray28": (19, 27, 66, 67)}
CURVE_BUDGETS = (1000, 4000, 24_000)  # the study's budget, 4x, and the authors' 24,000
# The cells at the measured point (init, B = 1; DP-SGD's too) that recover at most 10% under some
# criterion but whose defense no strength curve measured (strength.PLAN has none and uniform:16
# only): each gets its own curve, those that protect under SSIM first. Elsewhere (batches, local
# steps, trained models, 3x32x32) a cell below the limit stays open.
CURVES = (("gray28", "init, B=1, FedSGD", ("gaussian-rel:1", "gaussian:0.1")),
          ("gray28", "init, B=1, FedSGD, DP eps=8", ("none",)),
          ("gray28", "init, B=1, FedSGD, DP eps=1", ("none",)),
          ("gray28", "init, B=1, FedSGD", ("stochastic:16", "gaussian:0.01", "laplacian:0.01")),
          ("gray28", "init, B=1, FedSGD", ("gaussian-rel:0.1", "laplacian-rel:0.1", "stochastic:8")),
          ("gray28", "init, B=1, FedSGD", ("uniform:8", "uniform:20", "sparsity:0.9")))


def curve_trials(study: Study, domain: str, point: Point, defense: str, budget: int) -> list[AttackTrial]:
    """One budget of one cell's curve: its Adam attackers (Inverting Gradients, and the adaptive
    one where there is a defense to know) at ``budget`` iterations on :data:`CURVE_IMAGES`."""
    spec = replace(study.domains[domain], images=CURVE_IMAGES[domain], iterations=int(budget))
    trials = cell_trials(replace(study, domains={**study.domains, domain: spec}), domain, point, defense)
    return [replace(t, tags={**t.tags, "budget": int(budget)}) for t in trials if t.attack != "idlg"]


def study_curves(study: Study, curves=CURVES) -> list[tuple[str, str, tuple[str, ...]]]:
    """The entries of ``curves`` on ``study``'s points, each with the defenses its point attacks."""
    out = []
    for domain, name, defenses in curves:
        point = study.point(domain, name)
        mine = tuple(d for d in defenses if point is not None and d in point.defenses)
        if mine:
            out.append((domain, name, mine))
    return out


def run_curves(study: Study, path: str | Path | None, curves=None, budgets=CURVE_BUDGETS,
               over: Callable[[], bool] = lambda: False, progress: bool | None = None,
               device: str = "cpu") -> pd.DataFrame:
    """Measure each curve of ``curves`` ((domain, point name, defenses) of ``study``; None: its
    :func:`study_curves`) in order on ``device``, cheapest budget first, the defenses of one
    entry at one budget in one sweep (the engine batches them), each row stored in ``path`` as
    it finishes; ``over()`` is asked between sweeps. Returns the rows of the sweeps run."""
    frames, data, models = [], {}, {}
    for domain, name, defenses in study_curves(study) if curves is None else curves:
        point = study.point(domain, name)
        if point is None:
            raise ValueError(f"the study has no point {domain}: {name}")
        if domain not in data:
            data[domain] = domain_data(domain, study)
        model = f"{domain}/{point.state}"
        if model not in models:
            models[model] = domain_model(study.domains[domain], point.state, data[domain]).to(device)
        for budget in sorted(budgets):
            if over():
                break
            trials = [t for d in defenses for t in curve_trials(study, domain, point, d, budget)]
            frames.append(attack_sweep(trials, {model: models[model]}, data[domain], path, rows=ROWS,
                                       execution=Execution(progress=progress)))
    if path is not None:
        compact(path)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# How much an image's best SSIM / PSNR may rise from the study's budget to 24,000 iterations on a
# flat curve: four images rarely cross a threshold, so the scores themselves must not climb either.
FLAT_RISE = {"ssim": 0.05, "psnr": 1.0}


def curve_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, point, defense, budget): images, the median SSIM of each image's best
    attack, and under each criterion the images recovered (best attack per criterion)."""
    rows, out = per_image(rows), []
    for (domain, point, defense, budget), g in rows.groupby(["domain", "point", "defense", "budget"], sort=True):
        best = best_of_attacks(g, keys=("image",))
        row = {"domain": domain, "point": point, "defense": defense, "budget": int(budget),
               "images": len(best), "median ssim": float(best["ssim"].median())}
        row |= {f"{name} recovered": int(recovered_images(g, name).sum()) for name in scored_criteria(g)}
        out.append(row)
    return pd.DataFrame(out)


def flat_curves(rows: pd.DataFrame | None, study: Study) -> frozenset:
    """The (domain, point, defense) whose curve is flat: every trial of it (the study's dummy
    seed) stored at the domain's budget and at the largest of :data:`CURVE_BUDGETS`; under no
    criterion more images recovered at the largest than at the domain's; and no image's best
    SSIM or PSNR up by more than :data:`FLAT_RISE` (a longer attack finds nothing more:
    "protects" can be read there)."""
    if rows is None or rows.empty:
        return frozenset()
    top, flat = max(CURVE_BUDGETS), set()
    rows = per_image(rows[rows["seed"] == study.seed])  # curve_table passes these as they are
    if rows.empty:
        return frozenset()
    for (domain, name, defense), g in rows.groupby(["domain", "point", "defense"]):
        point = study.point(domain, name)
        if point is None or domain not in CURVE_IMAGES:
            continue
        at = study.domains[domain].iterations
        done = {(int(b), int(i), a) for b, i, a in zip(g["budget"], g["image"], g["attack"])}
        planned = {(b, int(t.image), t.attack) for b in (at, top) for t in curve_trials(study, domain, point, defense, b)}
        if not planned <= done:
            continue
        table = curve_table(g).set_index("budget")
        best = {b: g[g["budget"] == b].groupby("image")[list(FLAT_RISE)].max() for b in (at, top)}
        rise = best[top] - best[at]
        if (all(table.loc[top, c] <= table.loc[at, c] for c in table.columns if c.endswith(" recovered"))
                and all((rise[k] <= limit).all() for k, limit in FLAT_RISE.items())):
            flat.add((domain, name, defense))
    return frozenset(flat)


# --- what the rows say ------------------------------------------------------------------------

def complete_cells(rows: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The rows of the cells of ``study`` whose every trial is stored (a cell still running
    would otherwise be judged on some of its images or attacks)."""
    if rows.empty:
        return rows
    points = {(d, p.name): p for d, p in study.grid}
    keep = []
    for (domain, point, defense), g in rows.groupby(["domain", "point", "defense"], sort=False):
        if (domain, point) in points and defense in points[(domain, point)].defenses:
            expected = {(t.image, t.attack, t.seed) for t in cell_trials(study, domain, points[(domain, point)], defense)}
            g = g[[(tuple(i) if isinstance(i, list) else int(i), a, int(s)) in expected  # a row of an image no
                   for i, a, s in zip(g["image"], g["attack"], g["seed"])]]             # longer scored stays out
            keep.append(g if len(g) == len(expected) else g.iloc[:0])
    return pd.concat(keep) if keep else rows.iloc[:0]


def cell_table(rows: pd.DataFrame, study: Study | None = None, limit: float = LIMIT,
               chance: dict[tuple[str, str], float] | None = None, curves: pd.DataFrame | None = None
               ) -> pd.DataFrame:
    """Per (domain, point, defense): images, and under each criterion the rows hold
    (:func:`~dlg_utils.stats.scored_criteria`) the share recovered (an image is recovered when its
    best attack under that criterion meets it), its exact 95% interval and the verdict
    ("protects": upper bound <= ``limit`` with a budget saturated in that cell,
    :meth:`Study.saturated_at`, or by its budget curve in ``curves``, :func:`flat_curves`:
    the column "budget saturated"; "leaks": lower bound above
    ``limit`` and above the criterion's chance level in the domain, ``chance[(domain, criterion)]``
    (the ``low`` of :func:`baselines`), the share a guess made without the update meets; else "open";
    given ``chance``, a criterion it lacks for a domain is never "leaks": its chance level is unknown);
    whether the verdict depends on the criterion; the median SSIM; the attack that won most
    images; and the cost to breach (attack seconds per recovered image, SSIM)."""
    study = study or Study()
    floor = (lambda key: 0.0) if chance is None else (lambda key: chance.get(key, math.inf))
    images = per_image(rows)
    best = best_of_attacks(images, keys=("domain", "point", "defense", "image"))
    cost = rows.assign(_cost=trial_cost(rows)).groupby(["domain", "point", "defense"])["_cost"].sum()
    tried = {key: g for key, g in images.groupby(["domain", "point", "defense"], sort=False)}
    out, flat = [], flat_curves(curves, study)
    for (domain, point, defense), g in best.groupby(["domain", "point", "defense"], sort=False):
        saturated = study.saturated_at(domain, point, defense, flat)
        every = tried[(domain, point, defense)]  # each image's every attack: its best under each criterion
        row = {"domain": domain, "point": point, "defense": defense, "images": len(g), "budget saturated": saturated}
        verdicts = []
        for name in scored_criteria(g):  # LPIPS only in cells scored where its weights were
            k = int(recovered_images(every, name).sum())
            lo, hi = clopper_pearson(k, len(g))
            v = ("protects" if hi <= limit and saturated else
                 "leaks" if lo > max(limit, floor((domain, name))) else "open")
            row |= {f"{name} recovered": k / len(g), f"{name} low": lo, f"{name} high": hi, f"{name} verdict": v}
            verdicts.append(v)
        k_ssim = int(recovered(g, "ssim").sum())  # the best attack is the best by SSIM
        row |= {"verdict": verdicts[0] if len(set(verdicts)) == 1 else "depends on the criterion",
                "median ssim": float(g["ssim"].median()), "strongest attack": g["best_attack"].value_counts().idxmax(),
                "attack seconds": float(cost[(domain, point, defense)]),
                "seconds per recovered image": float(cost[(domain, point, defense)]) / k_ssim if k_ssim else np.inf}
        out.append(row)
    order = {(d, p.name, defense): k for k, (d, p, defense) in enumerate(study.cells())}  # the grid's order
    return pd.DataFrame(sorted(out, key=lambda r: order.get((r["domain"], r["point"], r["defense"]), len(order))))


def study_progress(study: Study, folder: str | Path) -> pd.DataFrame:
    """Per point of ``study``: cells done (every trial stored in ``folder``) of cells planned.
    Reads keys only: nothing runs."""
    from .experiments import attack_keys, DatasetTargets
    data, models, out, stores = {}, {}, {}, {}
    for domain, point, defense in study.cells():
        path = point_path(folder, domain, point)
        if path not in stores:
            stores[path] = {r["key"] for r in load_rows(path)}
        store = stores[path]
        if domain not in data:
            data[domain] = domain_data(domain, study)
        name = f"{domain}/{point.state}"
        if name not in models:
            models[name] = domain_model(study.domains[domain], point.state, data[domain])
        keys = attack_keys(cell_trials(study, domain, point, defense), {name: models[name]},
                           DatasetTargets(data[domain]), rows=ROWS)
        done = all(k in store for k, _, _ in keys)
        entry = out.setdefault((domain, point.name), {"domain": domain, "point": point.name, "cells": 0, "done": 0})
        entry["cells"] += 1
        entry["done"] += done
    return pd.DataFrame(list(out.values()))


# --- theory beside the measurement: DP-SGD's reconstruction bounds ----------------------------

def domain_images(domain: str, study: Study | None = None):
    """The scored images of ``domain`` (N x C x H x W) and their labels."""
    import torch
    study = study or Study()
    data = domain_data(domain, study)
    items = [data[int(i)] for i in study.domains[domain].images]
    return torch.stack([x for x, _ in items]), [int(y) for _, y in items]


def baselines(study: Study) -> dict:
    """Per (domain, criterion): the prior's baseline (:class:`~dlg_utils.rero.Baseline`, kappa):
    the share of the domain's scored images that the best guess made without any update meets
    (``low``), and for PSNR and MSE a proven upper end (``high``); for SSIM a lower estimate only.
    A rate at or below it shows no leakage: :func:`cell_table` takes its ``low`` as the chance
    level."""
    from .rero import prior_baseline
    out = {}
    for domain in dict.fromkeys(d for d, _ in study.grid):
        x, y = domain_images(domain, study)
        out |= {(domain, name): prior_baseline(x, y, name) for name in scored_criteria()}
    return out


def dp_schedule(point: Point) -> tuple[float, int]:
    """(sample rate, steps) of the training a DP point's noise was calibrated for."""
    return DPSGD.schedule(examples=DP_EXAMPLES, batch_size=point.batch_size, epochs=DP_EPOCHS)


THEORY_COLUMNS = ["domain", "point", "epsilon", "noise", "criterion", "kappa", "kappa proven", "kappa guess",
                  "bound one step", "bound whole training", "bound whole training RDP", "informed recovered",
                  "informed low", "informed high", "informed identified", "inversion attack", "inversion recovered",
                  "inversion low", "inversion high"]


def dp_theory(study: Study, rows: pd.DataFrame, base: dict | None = None) -> pd.DataFrame:
    """Per DP-SGD point of ``study`` (B = 1, FedSGD: the one-step bound's setting) and criterion:
    the accountant's noise multiplier; the prior's baseline kappa (uniform over the scored images,
    :func:`baselines`: its proven upper end where there is one, else its lower estimate and
    ``kappa proven`` false); the published bounds on any attack's success at that kappa (one step,
    the update our attackers are handed, and the whole training at its epsilon: Hayes et al.
    2023; the whole training from the accountant's RDP curve: Balle et al. 2022, looser); the
    informed attack's share; and the strongest single gradient-inversion attack's share in the
    point's finished cell (``rows``: one guess per image, as the bounds count; NaN where the
    cell has not finished), each with its exact 95% interval."""
    from . import rero
    out, base = [], base if base is not None else baselines(study)
    for domain, point in study.grid:
        if not point.epsilon or point.batch_size != 1 or point.local_steps != 1:
            continue
        x, y = domain_images(domain, study)
        case = point.case()
        names = [n for n in CRITERIA if (domain, n) in base]
        kappas = [b.high if np.isfinite(b.high) else b.low for b in (base[(domain, n)] for n in names)]
        bounds = rero.dp_sgd_bounds(kappas, case.dp.noise, *dp_schedule(point))
        spec = study.domains[domain]
        informed = rero.informed_attack(domain_model(spec, point.state, domain_data(domain, study)), case, x, y,
                                        seed=study.seed)
        mine = rows[(rows["domain"] == domain) & (rows["point"] == point.name) & (rows["defense"] == "none")] \
            if len(rows) else rows
        attacks = per_image(mine) if len(mine) else mine
        for c, name in enumerate(names):
            b, kappa = base[(domain, name)], kappas[c]
            k = int(recovered(informed, name).sum())
            lo, hi = clopper_pearson(k, len(informed))
            row = {"domain": domain, "point": point.name, "epsilon": point.epsilon, "noise": case.dp.noise,
                   "criterion": name, "kappa": kappa, "kappa proven": bool(np.isfinite(b.high)), "kappa guess": b.guess,
                   **{key: values[c] for key, values in bounds.items()},
                   "informed recovered": k / len(informed), "informed low": lo, "informed high": hi,
                   "informed identified": float(informed["identified"].mean())}
            if len(attacks) and name in scored_criteria(attacks):
                hits = attacks.assign(_hit=recovered(attacks, name)).groupby("attack")["_hit"].agg(["sum", "count"])
                best = hits["sum"].idxmax()
                k, n = int(hits.loc[best, "sum"]), int(hits.loc[best, "count"])
                lo, hi = clopper_pearson(k, n)
                row |= {"inversion attack": best, "inversion recovered": k / n, "inversion low": lo, "inversion high": hi}
            out.append(row)
    return pd.DataFrame(out, columns=THEORY_COLUMNS)


def dp_bound_curves(study: Study, theory: pd.DataFrame, epsilons: Sequence[float] = (0.25, 0.5, 1, 2, 4, 8, 16)
                    ) -> pd.DataFrame:
    """The bounds of :func:`dp_theory` over a range of epsilons (the noise recalibrated at
    each: more epsilon, less noise, a larger bound), per domain and criterion at the kappa
    ``theory`` used."""
    from . import rero
    columns = ["domain", "criterion", "epsilon", "noise", "kappa", "bound one step", "bound whole training",
               "bound whole training RDP"]
    out, noise = [], {}
    for (domain, point_name), t in theory.groupby(["domain", "point"], sort=False):
        point = next(p for d, p in study.grid if d == domain and p.name == point_name)
        for eps in epsilons:
            p = replace(point, epsilon=float(eps))
            if (p.batch_size, eps) not in noise:
                noise[(p.batch_size, eps)] = p.case().dp.noise
            sigma = noise[(p.batch_size, eps)]
            bounds = rero.dp_sgd_bounds(list(t["kappa"]), sigma, *dp_schedule(p))
            for c, (_, r) in enumerate(t.iterrows()):
                out.append({"domain": domain, "criterion": r["criterion"], "epsilon": float(eps), "noise": sigma,
                            "kappa": r["kappa"], **{key: values[c] for key, values in bounds.items()}})
    keys = ["domain", "criterion", "epsilon"]
    return pd.DataFrame(out, columns=columns).drop_duplicates(keys).sort_values(keys, ignore_index=True)


# --- utility at the same points ---------------------------------------------------------------

UTILITY_RUN = FedRun(clients=15, epochs=2.0, server_momentum=0.9)
UTILITY_SEEDS = (0, 1, 2)


def setting_name(point: Point) -> str:
    """The training setting of a point (its name without the model state: every state of one
    training run shares it)."""
    return point.name.split(", ", 1)[1]


def utility_trials(study: Study, seeds: Sequence[int] = UTILITY_SEEDS) -> list[dict]:
    """One training run per (setting, defense, seed) of the 1x28x28 points, in two passes over
    the settings (the study's order): first what verdicts need, then the other strengths. In a
    setting: undefended training, DP-SGD (a defense of the setting without it,
    :func:`against_plain`), the defenses near the frontier, the papers' strengths and relative
    noise; every seed of a defense before the next defense. Then the study's ``more_seeds``,
    seed by seed."""
    first = ("none", *NEAR_FRONTIER, *PAPER_STRENGTH, *RELATIVE_NOISE)
    order = {d: k for k, d in enumerate(dict.fromkeys((*first, *PAPER_FIRST)))}
    out, seen = [], set()
    for point in study.utility_points():
        for defense in point.defenses:
            for seed in seeds:
                trial = {"setting": setting_name(point), "batch_size": point.batch_size,
                         "local_steps": point.local_steps, "epsilon": point.epsilon, "defense": defense,
                         "seed": int(seed)}
                if tuple(trial.values()) not in seen:
                    seen.add(tuple(trial.values()))
                    out.append(trial)
    settings = list(dict.fromkeys(against_plain(t["setting"], "none")[0] for t in out))
    runs = list(dict.fromkeys((t["setting"], t["defense"]) for t in out))

    def rank(t: dict) -> tuple:
        plain, compared = against_plain(t["setting"], t["defense"])
        kind = 0 if compared == "none" else 1 if compared.startswith("DP ") else 2 + order.get(t["defense"], len(order))
        return t["defense"] not in first, settings.index(plain), kind, runs.index((t["setting"], t["defense"])), t["seed"]

    points = {setting_name(p): p for p in study.utility_points()}
    more = [{"setting": name, "batch_size": points[name].batch_size, "local_steps": points[name].local_steps,
             "epsilon": points[name].epsilon, "defense": d, "seed": int(seed)}
            for name, (defenses, extra) in study.extra_seeds().items() if name in points
            for seed in extra for d in defenses]
    return sorted(out, key=rank) + [t for t in more if tuple(t.values()) not in seen]


def run_utility(study: Study, path: str | Path | None, run: FedRun = UTILITY_RUN, seeds: Sequence[int] = UTILITY_SEEDS,
                over: Callable[[], bool] = lambda: False, train_subset: int | None = None,
                test_subset: int | None = None, progress: bool | None = None, device: str = "cpu",
                dataset: str = "fashion-mnist", root: str | Path | None = None) -> pd.DataFrame:
    """Train DLG's LeNet by simulated FedAvg (:func:`~dlg_utils.fedsim.train_federated`) in
    every (setting, defense, seed) of :func:`utility_trials` on ``device``, each run stored at
    ``path`` as it finishes (``over()`` asked between runs). ``dataset``: the training and test
    set, Fashion-MNIST (the 1x28x28 points; here utility comes from it) or, where the user has
    it (``root``), CIFAR-10: the accuracy cost for the 3x32x32 points, keyed apart."""
    from dataclasses import replace as _replace

    from .data import load_dataset, num_classes, to_tensors
    from .experiments import sweep
    from .fedsim import utility_row
    train_set = load_dataset(dataset, root=root)
    classes = num_classes(train_set)
    train, test = to_tensors(train_set), to_tensors(load_dataset(dataset, train=False, root=root))
    train = tuple(t[:train_subset] for t in train) if train_subset else train
    test = tuple(t[:test_subset] for t in test) if test_subset else test
    channels, size = train[0].shape[1], train[0].shape[-1]
    train, test = tuple(t.to(device) for t in train), tuple(t.to(device) for t in test)
    context = {"model": "lenet", "dataset": dataset, "run": {k: v for k, v in canonical(run).items() if k != "seed"},
               "local_lr": LOCAL_LR, "dp": [DP_EXAMPLES, DP_EPOCHS, DP_DELTA, DP_CLIP],
               "train_subset": train_subset, "test_subset": test_subset}
    frames = []
    for trial in utility_trials(study, seeds):
        if over():
            break
        point = Point(batch_size=trial["batch_size"], local_steps=trial["local_steps"], epsilon=trial["epsilon"])
        model = MODELS["lenet"].build(trial["seed"], channels, classes, size).to(device)
        fed = _replace(run, seed=trial["seed"])
        frames.append(sweep([trial], lambda t: utility_row(fed, point.case(t["defense"]), train, test, model), path,
                            context=context, progress=False))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def against_plain(setting: str, defense: str) -> tuple[str, str]:
    """Where a training run is compared: DP-SGD is a defense, so a DP setting's runs join the
    same setting without DP as defense "DP eps=X" (its own undefended run would otherwise be
    its baseline, a drop of zero by construction)."""
    plain, dp, epsilon = setting.partition(", DP ")
    if not dp:
        return setting, defense
    return plain, f"DP {epsilon}" if defense == "none" else f"DP {epsilon} + {defense}"


DOMAIN_LABELS = {"gray28": "Fashion-MNIST 1x28x28", "photos32": "photo crops 3x32x32"}


def domain_label(domain: str) -> str:
    """What a figure calls ``domain``: its data and input size."""
    return DOMAIN_LABELS.get(domain, domain)


def defense_label(point: str, defense: str) -> str:
    """How a cell's defense reads: a DP point's undefended cell is DP-SGD itself ("DP eps=8")."""
    return against_plain(point, defense)[1]


def _compared(frame: pd.DataFrame) -> pd.DataFrame:
    pairs = [against_plain(s, d) for s, d in zip(frame["setting"], frame["defense"])]
    return frame.assign(setting=[p[0] for p in pairs], defense=[p[1] for p in pairs])


def utility_table(runs: pd.DataFrame, limit: float = 0.01) -> pd.DataFrame:
    """Per (setting, defense): seeds, mean final accuracy, the drop against undefended training
    in the same setting paired by seed (95% t-interval, and the Bonferroni interval over the
    setting's defenses), Holm's p-value of "no drop" and the cost verdict ("free": the
    corrected interval at most ``limit``; :func:`~dlg_utils.fedsim.paired_drops`). DP-SGD's
    runs count as a defense of the setting without DP (:func:`against_plain`)."""
    from .fedsim import paired_drops
    return paired_drops(_compared(runs[["setting", "defense", "seed", "accuracy"]]), ["setting"], limit=limit)


def frontier_cells(cells: pd.DataFrame, utility: pd.DataFrame) -> pd.DataFrame:
    """:func:`cell_table` with each cell's utility (:func:`utility_table`) in the training
    setting of its point (the 3x32x32 cells take the Fashion-MNIST setting's: no colour
    training set here; a DP point's, DP-SGD against training without it), and ``holds``:
    protects (SSIM verdict) and free."""
    keys = _compared(cells.assign(setting=cells["point"].str.split(", ", n=1).str[1]))[["setting", "defense"]]
    merged = cells.assign(setting=keys["setting"].to_numpy(), _defense=keys["defense"].to_numpy()).merge(
        utility.rename(columns={"defense": "_defense"}), on=["setting", "_defense"], how="left").drop(columns="_defense")
    return merged.assign(holds=(merged["ssim verdict"] == "protects") & (merged["cost verdict"] == "free"))


def claims_at(table: pd.DataFrame, domain: str, point: str, claims=None) -> pd.DataFrame:
    """Every claim of :data:`~dlg_utils.frontier.CLAIMS` judged at one point of
    :func:`frontier_cells` under each criterion: protects (True, False or None: open), free
    (likewise, from the cost verdict) and the claim's verdict
    (:func:`~dlg_utils.frontier.claim_verdict`), plus whether it depends on the criterion."""
    from .frontier import CLAIMS, claim_verdict
    read = {"protects": True, "leaks": False}
    mine = table[(table["domain"] == domain) & (table["point"] == point)].set_index("defense")
    out = []
    for c in claims or CLAIMS:
        if c.defense not in mine.index:
            continue
        r = mine.loc[c.defense]
        free = {"free": True, "costs": False}.get(r.get("cost verdict"))
        row = {"who": c.who, "defense": c.defense, "said": c.said, "domain": domain, "point": point,
               "recovered (SSIM)": r["ssim recovered"], "ssim low": r["ssim low"], "ssim high": r["ssim high"],
               "drop": r.get("drop", np.nan), "cost verdict": r.get("cost verdict")}
        unmeasured = ("accuracy",) if pd.isna(r.get("drop", np.nan)) else ()
        verdicts = {name: claim_verdict(read.get(r[f"{name} verdict"]), free, c, unmeasured) for name in CRITERIA
                    if isinstance(r.get(f"{name} verdict"), str)}
        row |= {f"{name} claim": v for name, v in verdicts.items()}
        row["verdict"] = verdicts["ssim"] if len(set(verdicts.values())) == 1 else "depends on the criterion"
        out.append(row)
    return pd.DataFrame(out)


def headline(table: pd.DataFrame, domain: str, point: str, defenses: Sequence[str] | None = None) -> str:
    """The README's table for one point of :func:`frontier_cells`: per defense (of ``defenses``
    if given, in the table's order), the share of images recovered under each criterion with
    its exact 95% interval, the verdict, the accuracy drop in the point's setting (Bonferroni
    interval) and the cost to breach (LPIPS only where every row holds it)."""
    mine = table[(table["domain"] == domain) & (table["point"] == point)]
    if defenses is not None:
        mine = mine[mine["defense"].isin(defenses)]
    criteria = [n for n in CRITERIA if f"{n} recovered" in mine and mine[f"{n} recovered"].notna().all()]
    pct = lambda r, n: f"{r[f'{n} recovered']:.0%} [{r[f'{n} low']:.0%}, {r[f'{n} high']:.0%}]"
    def drop(r) -> str:
        if "drop" not in r or pd.isna(r["drop"]):
            return "not run"
        if pd.isna(r["adjusted high"]):
            return f"{100 * r['drop']:+.2f} ({int(r['seeds'])} seed: no interval)"
        return f"{100 * r['drop']:+.2f} [{100 * r['adjusted low']:+.1f}, {100 * r['adjusted high']:+.1f}]"
    lines = ["| " + " | ".join(["defense", *(CRITERIA[n].describe() for n in criteria), "verdict", "drop (points)",
                                "s per image"]) + " |",
             "|" + "---|" * (len(criteria) + 4)]
    for _, r in mine.iterrows():
        cost = r["seconds per recovered image"]
        lines.append("| " + " | ".join([r["defense"], *(pct(r, n) for n in criteria), r["verdict"], drop(r),
                                        "-" if np.isinf(cost) else f"{cost:.1f}"]) + " |")
    return "\n".join(lines)
