"""The catalogue of attacks: every attack is an :class:`AttackConfig`, a name of
:data:`ATTACKS`, or the defense-aware attacker chosen per defense from :data:`ADAPTIVE`.

This module only says what an attack is (its settings, its name, whether it can be compiled);
:mod:`~dlg_utils.engine` runs it, and :mod:`~dlg_utils.attack` is the entry point
(:func:`~dlg_utils.attack.dlg`, :func:`~dlg_utils.attack.dlg_batch`) that also decides each
trial's label (:func:`~dlg_utils.attack.initial_label`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Mapping

from .defenses import Defense, defense_from_spec
from .lbfgs import LINE_SEARCHES
from .objectives import DISTANCES
from .stats import GRAD_THRESHOLD
from .storage import ADDED

OPTIMIZERS = ("lbfgs", "adam")
LABELS = ("learn", "idlg")
LABEL_SOURCES = ("weight", "bias")
LABEL_COUNTS = ("bias-corrected", "wainakh-simple")
SPACES = ("pixel", "normalized")
# The data normalisations of Inverting Gradients' code (inversefed/consts.py), by channel count:
# CIFAR-10's for colour images, MNIST's for grey ones; (mean per channel, std per channel)
AUTHORS_MOMENTS = {3: ((0.4914672374725342, 0.4822617471218109, 0.4467701315879822),
                       (0.24703224003314972, 0.24348513782024384, 0.26158785820007324)),
                   1: ((0.13066373765468597,), (0.30810782313346863,))}


@dataclass(frozen=True)
class AttackConfig:
    """Every setting of one attack (the same for all trials of a batch).

    distance: a key of :data:`~dlg_utils.objectives.DISTANCES`; ``masked`` ignores the entries
    the target does not have (zeros); ``straight_through`` passes the dummy gradient through
    the trial's defense first (identity backward: BPDA). optimizer: ``"lbfgs"`` (DLG:
    ``torch.optim.LBFGS`` with lr, history_size, max_iter, tolerances, line_search_fn) or
    ``"adam"`` (Inverting Gradients: lr, ``signed`` steps, step size times ``decay`` at each
    fraction ``decay_at`` of the run). ``boxed`` keeps the image in [0, 1]; ``tv`` weighs the
    total-variation prior. ``space``: where the dummy lives. ``"pixel"``: the image itself,
    started from N(0, 1) (DLG; a box clamps the start). ``"normalized"``: z = (image - mean) /
    std per channel, as Inverting Gradients' code optimises inside the network's normalisation:
    z starts from N(0, 1) unclamped, the box is [0, 1] in pixels, the step size and the TV are
    in z; ``moments`` (mean per channel, std per channel), () for the authors' constants
    (:data:`AUTHORS_MOMENTS`). ``restarts`` runs each trial from that many dummies and keeps the
    one with the lowest final distance. label: ``"learn"`` (DLG's soft dummy labels) or
    ``"idlg"`` (read from the update: one image by :func:`~dlg_utils.attack.idlg_label` with
    ``label_source``, a batch by counting, :func:`~dlg_utils.attack.count_labels` with
    ``label_count``) for trials given no labels. Records: a history row every
    ``record_every`` iterations (and the last), snapshots every ``snapshot_every`` and at
    ``snapshot_at``; ``converged`` once the distance is below ``grad_threshold``
    (``stop_when_converged`` ends the trial there).

    ``redraw_defense`` replays seed 000's code, which applies the defense inside the L-BFGS
    closure: every evaluation matches a fresh draw of the trial's defense applied to the true
    gradient (the target's ``source``, from the trial's generator), not the one gradient a
    client shared. Stochastic rounding then moves the target at every call; deterministic
    defenses give the same target each time. Off by default: a real attacker sees one draw.
    """

    name: str = field(default="dlg", compare=False)
    distance: str = "l2"
    masked: bool = False
    straight_through: bool = False
    optimizer: str = "lbfgs"
    iterations: int = 300
    lr: float = 1.0
    history_size: int = 100
    max_iter: int = 20
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    line_search_fn: str | None = None
    signed: bool = False
    decay_at: tuple[float, ...] = ()
    decay: float = 0.1
    boxed: bool = False
    tv: float = 0.0
    restarts: int = 1
    label: str = field(default="learn", compare=False)
    label_source: str = "weight"
    label_count: str = field(default="bias-corrected", metadata=ADDED)
    space: str = field(default="pixel", metadata=ADDED)
    moments: tuple = field(default=(), metadata=ADDED)
    record_every: int = 1
    snapshot_every: int = 10
    snapshot_at: tuple[int, ...] = ()
    grad_threshold: float = GRAD_THRESHOLD
    stop_when_converged: bool = False
    redraw_defense: bool = False

    @property
    def compilable(self) -> bool:
        """Whether the engine can evaluate this attack as one torch.compile'd graph of all its
        trials: not when each trial's defense is applied in Python (``straight_through``,
        ``redraw_defense``). The one rule; such attacks run eager under ``compile=True``."""
        return not (self.straight_through or self.redraw_defense)

    def __post_init__(self):
        checks = [("distance", self.distance in DISTANCES, f"one of {sorted(DISTANCES)}"),
                  ("optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
                  ("line_search_fn", self.line_search_fn in LINE_SEARCHES, f"one of {LINE_SEARCHES}"),
                  ("label", self.label in LABELS, f"one of {LABELS}"),
                  ("label_source", self.label_source in LABEL_SOURCES, f"one of {LABEL_SOURCES}"),
                  ("label_count", self.label_count in LABEL_COUNTS, f"one of {LABEL_COUNTS}"),
                  ("space", self.space in SPACES, f"one of {SPACES}"),
                  ("moments", self.moments == () or (len(self.moments) == 2 and len(self.moments[0]) ==
                                                     len(self.moments[1]) and min(self.moments[1]) > 0),
                   "() or (means, stds) per channel, stds > 0"),
                  ("iterations", _count(self.iterations, 0), "an integer >= 0"),
                  ("restarts", _count(self.restarts, 1), "an integer >= 1"),
                  ("record_every", _count(self.record_every, 1), "an integer >= 1"),
                  ("max_iter", _count(self.max_iter, 1), "an integer >= 1"),
                  ("history_size", _count(self.history_size, 1), "an integer >= 1"),
                  ("lr", self.lr > 0, "> 0"),
                  ("tv", self.tv >= 0, ">= 0"),
                  ("decay_at", all(0 < f < 1 for f in self.decay_at), "fractions in (0, 1)")]
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"attack {self.name!r}: {name} must be {need}, got {getattr(self, name)!r}")
        object.__setattr__(self, "decay_at", tuple(self.decay_at))
        object.__setattr__(self, "moments", tuple(tuple(float(v) for v in m) for m in self.moments))
        object.__setattr__(self, "snapshot_at", tuple(int(k) for k in self.snapshot_at))


def _count(value, least: int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and int(value) == value >= least


ATTACKS: dict[str, AttackConfig] = {
    # DLG (Zhu et al. 2019): L2 distance, L-BFGS lr 1, history 100, 20 evaluations per step
    "dlg": AttackConfig("dlg"),
    # iDLG (Zhao et al. 2020): DLG with the label read from the gradient
    "idlg": AttackConfig("idlg", label="idlg"),
    # Inverting Gradients (Geiping et al. 2020) as its authors run it (invertinggradients,
    # reconstruct_image.py: max_iterations=24_000, init "randn", lr 0.1, signed Adam, boxed, tv
    # 1e-4, cost "sim", one restart by default, scoring by the final loss): 1 - cosine similarity
    # of all layers; signed Adam with step 0.1 decayed by 10 at 3/8, 5/8 and 7/8 of 24,000
    # iterations; the dummy in the network's normalisation (z ~ N(0, 1), box [0, 1] in pixels
    # applied after each step, TV on z); the iDLG label for one image. Differences: a batch's
    # labels are counted (breaching's default, bias-corrected) where the authors learn soft
    # labels; our models take pixels, so the normalisation is only the attack's parametrisation;
    # the step decays at floor(24,000 * 3/8) = 9,000, 15,000 and 21,000 where the authors'
    # iters // 2.667, // 1.6, // 1.142 give 8,998, 15,000 and 21,015.
    "ig": AttackConfig("ig", distance="cosine", optimizer="adam", iterations=24_000, lr=0.1, signed=True,
                       decay_at=(3 / 8, 5 / 8, 7 / 8), boxed=True, tv=1e-4, label="idlg", record_every=20,
                       snapshot_every=1000, space="normalized"),
}

# The defense-aware attacker (Kerckhoffs: it knows the defense and its parameters), per kind of
# defense ("*": any other). It keeps Inverting Gradients' machinery (signed Adam, TV prior, box,
# the label read from the update) and changes what is matched. Chosen by the pilot of notebook 9
# (results/frontier_pilot.jsonl: 4 images of samples-gray28, dummy seed 0, 1,000 iterations, IG
# in pixel units as the frontier then ran it; median SSIM, LeNet / LeNet-5):
#   candidate                                   uniform:8  uniform:16 stochastic:8 sparsity:0.9  mixed
#   IG as it is (cosine)                        .29/.19    .60/.31    .29/.18      .02/.11       .94/.94
#   box distance ("interval"), L-BFGS (iDLG)    .35/.10    .51/.12    .11/.07      .56/.15       .82/.21
#   box distance, IG machinery                  .81/.80    .86/.82    .51/.57      .43/.89       .85/.90
#   BPDA: the dummy gradient through the same   .26/.45    .77/.76    .16/.26      .82/.89       .92/.94
#     defense, identity backward; IG machinery
#   masked cosine (kept entries only), IG       .29/.19    .60/.31    .29/.18      .65/.88       .96/.94
# A quantizer (uniform, stochastic, half, per-layer int8/int16) reveals a box of true gradients
# (each entry within a step of what was sent): matching the box, zero inside it, is the best
# candidate against every coarse grid; BPDA matches one point of the box and fails when the
# step is coarse. Against mixed int8/int16, whose grid is fine, the box adds nothing (.85/.90
# against IG's .94/.94): the frontier takes each trial's best attack, so there IG's result
# stands. Against a sparsifier BPDA is best (it also makes the dummy's own small entries vanish).
# Against noise the attacker matches by the form of the noise's likelihood with the image prior:
# Gaussian noise (and DP-SGD, whose clipping the attacker applies to its own dummy: it is in
# the case) by the squared distance, Laplacian noise by the absolute one, each relative to the
# target's size so that IG's TV weight keeps its meaning. Not calibrated to the noise's known
# scale (a MAP attacker would weigh the distance by 1 / (2 sigma^2) against the prior): a
# simplification, the TV weight stays IG's. "none": the plain IG.
def adaptive_table(ig: AttackConfig) -> dict[str, AttackConfig]:
    """The defense-aware attacker built on ``ig`` (see the comment above), per defense kind."""
    box = replace(ig, name="adaptive", distance="interval")
    gaussian = replace(ig, name="adaptive", distance="interval")  # no box: ||d - t||^2 / ||t||^2
    return {**{kind: box for kind in ("uniform", "stochastic", "half", "mixed", "int8", "int16")},
            "sparsity": replace(ig, name="adaptive", straight_through=True),
            "gaussian": gaussian, "dp": gaussian,  # relative noise has the same kind (Defense.kind)
            "laplacian": replace(ig, name="adaptive", distance="l1-rel"),
            "*": replace(ig, name="adaptive")}


ADAPTIVE: dict[str, AttackConfig] = adaptive_table(ATTACKS["ig"])


def defense_kind(defense: Defense | str | None, dp: bool = False) -> str:
    """The kind an adaptive table is looked up by: the defense's family, or ``"dp"`` for an
    otherwise undefended update trained with DP-SGD."""
    kind = defense_from_spec(defense).kind
    return "dp" if dp and kind == "none" else kind


def attack_config(attack: str | AttackConfig | Mapping[str, AttackConfig] = "dlg",
                  defense: Defense | str | None = None, dp: bool = False, **overrides) -> AttackConfig:
    """The configuration of ``attack`` (a name of :data:`ATTACKS`, ``"adaptive"``, a config, or
    a table kind -> config like :data:`ADAPTIVE`, with ``"*"`` for other kinds) against
    ``defense`` (``dp``: the update was trained with DP-SGD), with ``overrides`` (fields of
    :class:`AttackConfig`) applied."""
    if attack == "adaptive":
        attack = ADAPTIVE
    if isinstance(attack, AttackConfig):
        config = attack
    elif isinstance(attack, Mapping):
        kind = defense_kind(defense, dp)
        config = attack[kind] if kind in attack else attack["*"]
    elif attack in ATTACKS:
        config = ATTACKS[attack]
    else:
        raise ValueError(f"unknown attack {attack!r}; choose one of {sorted(ATTACKS) + ['adaptive']}")
    unknown = set(overrides) - {f.name for f in fields(AttackConfig)}
    if unknown:
        raise TypeError(f"unknown attack settings {sorted(unknown)}")
    return replace(config, **overrides) if overrides else config
