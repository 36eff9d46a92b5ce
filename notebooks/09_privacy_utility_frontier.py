# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 9. The privacy-utility frontier at operating points
#
# Which gradient defense stops leakage without hurting the model, **on the updates deployments
# share**? The first version of this notebook answered for one easy setting (an untrained
# LeNet, one 1x28x28 image per gradient, 16 images) with bootstrap intervals that could not
# carry a "protects" verdict, one lenient success threshold, and privacy and utility from
# different settings. This version judges every defense at **operating points**:
#
# - **Points** (`dlg_utils.operating.POINTS`): the model state (DLG's LeNet at the start,
#   middle and end of one centralised training run on Fashion-MNIST, notebook 5's checkpoints:
#   the grid table gives their accuracy; the utility side trains federated models apart from
#   them, in each point's setting), the batch size B behind one update
#   (1, 4, 16), FedAvg's local steps E (1, 5) and DP-SGD at epsilon 8 and 1 (the accountant's
#   noise for a client of 4,000 images training 20 epochs). The primary grid moves **one
#   factor at a time** away from the seeds' point (untrained, B = 1, FedSGD): each panel shows
#   what that factor does, at a cost 2 CPU cores can pay.
# - **Domains**: 64 Fashion-MNIST test images (1x28x28: the first 66 less the two the pilots saw,
#   below) and 64 distinct 32x32 colour crops of
#   scikit-image's photos (`photos32`, 3x32x32, the seeds' input size; untrained model only:
#   there is no colour training set here).
# - **Attacks**: each batch by DLG (L-BFGS, labels read from the update), Inverting Gradients as
#   its authors run it (normalised space, signed Adam, TV) and the defense-aware attacker; an
#   image is **recovered** when its best attack meets the criterion. The defense-aware attacker
#   and the budget were chosen on embedded samples this study does not score: two of them are
#   Fashion-MNIST test images 19 and 27, so test images 64 and 65 are scored in their places
#   (`operating.GRAY28_IMAGES`; a test checks no scored image is one a pilot saw).
# - **Budget**: 1,000 Adam iterations at 1x28x28, where the measured budget curve is flat
#   (notebook 10: the untrained LeNet, one image per update); 4,000 at 3x32x32, where it still
#   rises at 24,000, so no "protects" verdict is read there (a "leaks" verdict stands: a
#   stronger attack only recovers more). That curve was measured for no defense and uniform:16;
#   every other cell there (and at DP-SGD's points) that could protect gets its own (below).
#   It says nothing of
#   batches, local steps or trained models, harder problems than one image: there too a cell
#   that recovers nothing is **open**, not protected.
# - **Verdicts**: exact (Clopper-Pearson) 95% intervals over images; a defense **protects**
#   where the upper bound is at most 10% under a budget shown saturated for its defense at its point, **leaks** where the lower
#   bound is above 10%, and is **open** otherwise; three criteria side by side (four where LPIPS's
#   weights are present).
# - **Utility**: federated training of the same LeNet in each point's setting (15 clients, B
#   images per client and round, E local steps, DP-SGD, the defense on every update), simulated
#   in one process (`dlg_utils.fedsim`), 3 seeds (12 for the cells near the frontier,
#   `op.MORE_SEEDS`), drops paired by seed with Holm's and
#   Bonferroni's corrections over a setting's defenses.
# - **Theory** (`dlg_utils.rero`): at the DP points, the published upper bounds on any
#   reconstruction (Balle et al. 2022; Hayes et al. 2023) beside the measured rates, and the
#   bounds' own informed adversary, who knows the candidate images.
#
# Runs: `python scripts/operating.py` (privacy) and `python scripts/operating.py --part utility`,
# resumable in slices; this notebook only reads their rows (`results/operating/`, one gzip store
# per point, and `results/operating_utility.jsonl`) and says how much of the grid they cover.

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from dlg_utils import operating as op
from dlg_utils.config import quick_mode
from dlg_utils.fedsim import FedRun
from dlg_utils.notebook import results_folder
from dlg_utils.plotting import operating_frontier_plot, operating_plot, rero_plot, save_figure
from dlg_utils.metrics import lpips_weights
from dlg_utils.stats import CRITERIA
from dlg_utils.storage import load_rows

QUICK = quick_mode()  # DLG_QUICK=1 (or CI): a minute-scale run in a temporary folder
STUDY = op.quick_study() if QUICK else op.Study()
OUT = results_folder(QUICK)  # results/, or a temporary folder in quick mode
RUN = FedRun(epochs=0.02, evaluations=1) if QUICK else op.UTILITY_RUN  # the federated training behind utility
if QUICK:  # the full study runs in slices (scripts/operating.py); quick mode runs its small grid here
    op.run_study(STUDY, OUT / "operating", progress=False)
    op.run_utility(STUDY, OUT / "operating_utility.jsonl", run=RUN, seeds=(0, 1, 2), train_subset=3000, test_subset=500)
if QUICK:  # the budget curves of the cells that could protect, at 20 and 40 iterations
    op.run_curves(STUDY, OUT / "operating_budget.jsonl.gz", budgets=(20, 40), progress=False)
rows = op.complete_cells(op.load_study(OUT / "operating"), STUDY)  # finished cells only
budget_rows = pd.DataFrame(load_rows(OUT / "operating_budget.jsonl.gz"))  # python scripts/operating.py --part budget
runs = pd.DataFrame(load_rows(OUT / "operating_utility.jsonl"))
coverage = op.study_progress(STUDY, OUT / "operating")
planned_runs = {(t["setting"], t["defense"], t["seed"]) for t in op.utility_trials(STUDY, (0, 1, 2))}
stored_runs = {(r["setting"], r["defense"], r["seed"]) for _, r in runs.iterrows()} if len(runs) else set()
print("quick mode:", QUICK, "| results in", OUT)
coverage

# %%
done, planned = int(coverage["done"].sum()), int(coverage["cells"].sum())
display(Markdown(
    f"**Coverage.** {done} of {planned} privacy cells (each: one defense at one point, all its images and "
    f"attacks) and {len(stored_runs & planned_runs)} of {len(planned_runs)} training runs are stored"
    + (f" (and {len(stored_runs - planned_runs)} of defenses trained in a setting but not attacked there, shown in "
       "the utility table only)" if stored_runs - planned_runs else "")
    + ". Points with no finished cell are not shown below; a point's panel shows only its finished cells."))

# %% [markdown]
# ## The grid

# %%
def attacked_accuracy(domain: str, state: str) -> float:
    """The test accuracy of the model a point attacks (its checkpoint's; nan where none is stored)."""
    spec = STUDY.domains[domain]
    if spec.dataset != "fashion-mnist" or spec.model != "lenet":
        return float("nan")
    return op.domain_model(spec, state, None).test_accuracy


points = pd.DataFrame([{"point": p.name, "domain": op.domain_label(d), "model state": p.state,
                        "attacked model's accuracy": attacked_accuracy(d, p.state), "B": p.batch_size,
                        "E": p.local_steps, "DP noise multiplier": p.case().dp.noise if p.epsilon else 0.0,
                        "defenses": len(p.defenses)}
                       for d, p in STUDY.grid])
points.style.format({"attacked model's accuracy": "{:.1%}", "DP noise multiplier": "{:.3g}"}, na_rep="-")

# %% [markdown]
# ## Privacy at each point
#
# One panel per point: the share of its images recovered under each defense, with exact 95%
# intervals, under SSIM ≥ 0.5 (the structure is recognisable), PSNR ≥ 25 dB (close pixel
# agreement) and image MSE < 1e-3 (PSNR ≥ 30 dB: a near-exact copy). The dashed line is the 10%
# limit a protecting defense's whole interval must stay under. A fourth criterion, LPIPS < 0.2
# (AlexNet; a learned perceptual distance, 0 for the same image), is scored where torchvision's
# ImageNet AlexNet weights are on disk when the attacks run. No paper fixes a threshold for it;
# 0.2 is our choice; where it is scored, its chance level below shows how lenient it is.

# %%
base = op.baselines(STUDY)  # the prior's baseline per domain and criterion: what a guess without the update meets
cells = op.cell_table(rows, STUDY, chance={k: b.low for k, b in base.items()}, curves=budget_rows)
SCORED = [n for n in CRITERIA if f"{n} recovered" in cells]  # LPIPS only where its weights were present
print("criteria:", ", ".join(CRITERIA[n].describe() for n in SCORED),
      "" if "lpips" in SCORED else f"| LPIPS not scored: no weights at {lpips_weights()} when the cells ran")
domains = {d: STUDY.domains[d] for d in cells["domain"].unique()}
unsaturated = [(d, p, f) for d, p, f, ok in zip(cells["domain"], cells["point"], cells["defense"], cells["budget saturated"])
               if not ok]
fig = operating_plot(cells, criteria=SCORED, unsaturated=unsaturated, title=(
    "Images recovered by the best of DLG / Inverting Gradients / the defense-aware attacker, DLG's LeNet, "
    + "; ".join(f"{op.domain_label(d)}: {len(s.images)} images, {s.iterations:,} Adam iterations"
                for d, s in domains.items())
    + f" (DLG {STUDY.dlg_iterations} L-BFGS), one dummy seed; exact 95% intervals over images"
    + (" [QUICK RUN]" if QUICK else "")))
save_figure(fig, "operating_privacy.png");  # images/quick/ in quick mode

# %%
for name in SCORED:
    lo, v, hi = cells[f"{name} low"], cells[f"{name} recovered"], cells[f"{name} high"]
    assert (v.isna() | ((lo <= v + 1e-12) & (v <= hi + 1e-12))).all(), f"a rate outside its interval under {name}"
    protects = cells[f"{name} verdict"] == "protects"
    assert (cells.loc[protects, f"{name} high"] <= op.LIMIT).all(), "a protecting cell above the limit"
    assert (cells.loc[cells[f"{name} verdict"] == "leaks", f"{name} low"] > op.LIMIT).all()
    assert not (protects & ~cells["budget saturated"]).any(), "a 'protects' verdict read under a budget not saturated"
assert (cells["images"] == cells["domain"].map(lambda d: len(STUDY.domains[d].images))).all(), "a cell lacks images"

# %% [markdown]
# **Chance level.** A criterion can be met without any leakage: a guess made without the update
# (one of the images, a class's mean image, a flat grey) already meets it for some images. The
# table gives, per domain, the share of the scored images the best such guess meets (kappa, the
# baseline of the DP bounds below) and, for PSNR and MSE, a proven upper end (a guess close to k
# images puts them pairwise within twice the radius: k is at most the largest such clique); for
# SSIM, no metric, the share is a lower estimate. A "leaks" verdict needs its lower bound above
# both the limit and this level.

# %%
chance = pd.DataFrame([{"domain": d, "criterion": CRITERIA[c].describe(), "chance level": b.low,
                        "proven at most": b.high, "best guess": b.guess} for (d, c), b in base.items()])
chance.style.format({"chance level": "{:.1%}", "proven at most": "{:.1%}"}, na_rep="-").hide(axis="index")

# %%
verdicts = cells.pivot_table(index="defense", columns=["domain", "point"], values="verdict", aggfunc="first",
                             sort=False)
verdicts.fillna("")

# %%
depends = cells[cells["verdict"] == "depends on the criterion"]
display(Markdown(
    f"**Where the verdict depends on the criterion**: {len(depends)} of {len(cells)} cells. "
    + ("; ".join(f"{r['domain']} {r['point']}, {r['defense']}: SSIM {r['ssim recovered']:.0%}, "
                 f"PSNR {r['psnr recovered']:.0%}, MSE {r['mse recovered']:.0%}" for _, r in depends.iterrows())
       if len(depends) else "none")
    + ". SSIM ≥ 0.5 counts an image whose structure an observer recognises as leaked; the two pixel criteria "
    "count only close copies, so a defense that blurs or adds grain \"protects\" under them while the image "
    "remains recognisable."))

# %% [markdown]
# ## Is the budget saturated where a cell could protect?
#
# A cell that recovers nothing protects only if a longer attack would not recover more. The
# strength curve of notebook 10 shows 1,000 iterations saturated at 1x28x28 for no defense and
# uniform:16 only; noise and DP-SGD change the problem the attacker solves. So each cell whose
# "protects" rests on that budget gets its own curve (`op.CURVES`): its Adam attackers
# (Inverting Gradients and the defense-aware one) at 1,000, 4,000 and the authors' 24,000
# iterations, on four Fashion-MNIST test images the study does not score (`op.CURVE_IMAGES`).
# The curve is **flat** when, under every criterion, 24,000 iterations recover no more of them
# than 1,000; only then can the cell read "protects". A cell without a finished curve stays open.

# %%
curve = op.curve_table(budget_rows) if len(budget_rows) else pd.DataFrame()
flat = op.flat_curves(budget_rows, STUDY)
if len(curve):
    curve["flat"] = [(d, p, f) in flat for d, p, f in zip(curve["domain"], curve["point"], curve["defense"])]
    display(curve.style.format({"median ssim": "{:.3f}"}).hide(axis="index"))
candidates = cells[(cells[[f"{n} high" for n in SCORED]] <= op.LIMIT).any(axis=1)]  # could protect under a criterion
held, unheld = candidates[candidates["budget saturated"]], candidates[~candidates["budget saturated"]]
display(Markdown(
    f"**{len(candidates)} cells recover at most 10% (upper bound) under some criterion.** Their budget is saturated in "
    f"{len(held)}: " + ("; ".join(f"{r['domain']} {r['point']}, {r['defense']} ("
                                 + ("its flat curve" if (r["domain"], r["point"], r["defense"]) in flat else
                                    "the strength curve") + ")" for _, r in held.iterrows()) or "none")
    + f". In the other {len(unheld)} no curve shows it saturated, so they are open: "
    + ("; ".join(f"{d} {p} ({len(g)})" for (d, p), g in unheld.groupby(["domain", "point"], sort=False)) or "none")
    + "."))

# %% [markdown]
# ## Utility in each point's setting
#
# DP-SGD is a defense of the setting without it: its runs appear as "DP eps=..." beside the
# other defenses of "B=1, FedSGD" and are compared with that setting's undefended training.
# Every run trains 2 epochs; DP-SGD's runs keep the noise calibrated for the 20-epoch client, so
# they spend less than their epsilon and a longer run might recover some accuracy.

# %%
utility = op.utility_table(runs) if len(runs) else pd.DataFrame(columns=["setting", "defense"])
shown = utility.copy()
for c in ("accuracy", "accuracy low", "accuracy high", "drop", "drop low", "drop high", "adjusted low", "adjusted high"):
    if c in shown:
        shown[c] = 100 * shown[c]
shown.style.format(precision=2).hide(axis="index") if len(shown) else shown

# %%
if len(utility):
    tested = utility.dropna(subset=["p holm"])
    significant = tested[tested["p holm"] < 0.05]
    display(Markdown(
        "Accuracy in percent (95% t-interval over seeds), drops in points against undefended training in the same "
        "setting, paired by seed (95% t-intervals; the adjusted interval is Bonferroni's over the setting's "
        "defenses; \"seeds to settle\": how many seeds an open cost verdict would need at the drop's observed "
        f"mean and spread). {len(tested)} "
        f"comparisons have a p-value; {len(significant)} remain significant after Holm's correction: "
        + (", ".join(f"{r['setting']} {r['defense']} ({100 * r['drop']:+.2f} points, p = {r['p holm']:.3g})"
                     for _, r in significant.iterrows()) or "none") + "."))
    chance_runs = runs[runs["accuracy"] <= 0.11]  # 10 classes: a run at chance has diverged
    display(Markdown(
        "**Runs that ended at chance** (the model learned nothing: it diverged, or DP-SGD's noise drowned the "
        "signal; kept: a setting that can end there costs that accuracy, and its wide interval says so): "
        + ("; ".join(f"{r['setting']} {r['defense']} seed {int(r['seed'])} ({r['accuracy']:.1%})"
                     for _, r in chance_runs.iterrows()) or "none") + "."))
    assert (utility["accuracy"].between(0, 1)).all()
    assert (utility.loc[utility["defense"] == "none", "drop"].abs() < 1e-12).all()

# %%
# CIFAR-10 where the user has it: python scripts/operating.py --part utility --dataset cifar10 --data-root DIR
cifar = OUT / "operating_utility_cifar10.jsonl"
if cifar.exists() and load_rows(cifar):
    display(Markdown("**Utility on CIFAR-10** (the colour training set the 3x32x32 cells would take theirs from):"))
    display(op.utility_table(pd.DataFrame(load_rows(cifar))).style.format(precision=4).hide(axis="index"))
else:
    print(f"No CIFAR-10 training runs in {cifar}: here every drop comes from Fashion-MNIST (no CIFAR-10 on this "
          "machine); the 3x32x32 cells borrow the 1x28x28 setting's.")

# %% [markdown]
# ## The frontier per point
#
# Leakage beside the accuracy the defense costs in the same setting, one row per defense. A
# defense **holds** at a point when it protects (SSIM) and its corrected drop interval stays
# under one point: its whole row then sits in the two shaded bands.

# %%
table = op.frontier_cells(cells, utility)
with_utility = table.dropna(subset=["drop"])
if len(with_utility):
    fig = operating_frontier_plot(with_utility, title=(
        "Left: images recovered by the best of DLG / Inverting Gradients / the defense-aware attacker ("
        + ", ".join(f"{op.domain_label(d)} {s.iterations:,} Adam iterations" for d, s in domains.items())
        + f", DLG {STUDY.dlg_iterations} L-BFGS, one dummy seed; SSIM ≥ 0.5, exact 95% interval; shaded: at most 10%). Right: the "
        f"accuracy drop of federated training in the point's setting ({RUN.clients} clients, DLG's LeNet, "
        f"Fashion-MNIST, {RUN.epochs:g} epochs; mean of seeds, 95% t-interval orange, Bonferroni-corrected grey; "
        "shaded: at most one point). "
        "A defense in green holds"
        + (" [QUICK RUN]" if QUICK else "")))
    save_figure(fig, "operating_frontier.png")  # images/quick/ in quick mode
holds = table[table["holds"]]
display(Markdown(
    "Defenses that hold (protect and cost at most one point), per point: "
    + "; ".join(f"**{d} {p}**: " + (", ".join(g.loc[g["holds"], "defense"]) or "none")
                for (d, p), g in table.groupby(["domain", "point"], sort=False)) + "."))

# %% [markdown]
# ## The seeds' point in one table (the README's)
#
# The defenses the papers proposed (at their strengths), the relative noise and `gaussian:0.1`
# (DLG's variance 1e-2, where its claim about noise is judged); the other strengths are in the
# tables above.

# %%
from dlg_utils.frontier import PAPER_STRENGTH
README_DEFENSES = (*PAPER_STRENGTH, *op.RELATIVE_NOISE, "gaussian:0.1")  # and DLG's variance 1e-2 (its claim)
for d in ("gray28", "photos32"):
    if ((table["domain"] == d) & (table["point"] == "init, B=1, FedSGD")).any():
        display(Markdown(f"**{op.domain_label(d)}, init, B=1, FedSGD** (drop: points of accuracy in that setting, "
                         "Bonferroni interval" + (", from Fashion-MNIST's training: no colour training set here"
                                                  if STUDY.domains[d].dataset != "fashion-mnist" else "")
                         + "; s per image: attack seconds per image recovered under SSIM)\n\n"
                         + op.headline(table, d, "init, B=1, FedSGD", README_DEFENSES)))

# %% [markdown]
# ## Cost to breach
#
# The attacker's CPU seconds per image recovered (SSIM), all attacks of the cell counted: what a
# defense buys in the attacker's compute (infinite where nothing was recovered).

# %%
cost = cells.pivot_table(index="defense", columns=["domain", "point"], values="seconds per recovered image",
                         aggfunc="first", sort=False)
cost.style.format(precision=1)

# %% [markdown]
# ## Theory beside the measurement: DP-SGD
#
# What the published bounds allow any attack at the DP points, beside what the attacks did. Both
# bound the success of one guess over a prior (here: uniform over the 64 scored images) from
# above, starting from the prior's baseline kappa (the chance level above; where it has a proven
# upper end, that is used, otherwise the bound is an estimate):
#
# - **one step** (Hayes, Mahloujifar & Balle 2023): the blow-up of kappa for one Gaussian step of
#   noise multiplier sigma with the target in it, Phi(Phi^-1(kappa) + 1/sigma). This is the
#   update our attackers are handed: they know the step that holds the target, so the sampling
#   that the accountant's epsilon counts on does not protect it.
# - **whole training**: the bound at the point's epsilon, for an adversary who sees the whole
#   training but does not know which steps drew the target (a different threat model from ours):
#   Hayes et al.'s blow-up for the subsampled training, computed from the privacy loss
#   distribution Opacus's PRV accountant composes (their paper estimates it by Monte Carlo), and
#   the looser bound of Balle, Cherubin & Hayes 2022 from the accountant's RDP curve (dashed).
#
# Both bounds hold for **informed** adversaries: they know the prior and every other example
# (B = 1 here: there is none). Our gradient-inversion attackers know neither; each is one guess
# per image, and the figure shows the strongest of them alone. To measure in the bounds' threat
# model as well, the **informed attack** (the prior-aware adversary of Hayes et al.) gets each
# image's one-step update and answers the candidate whose noiseless update is nearest: the most
# likely one under Gaussian noise.

# %%
theory = op.dp_theory(STUDY, rows, base)
curves = op.dp_bound_curves(STUDY, theory)
for domain, t in theory.groupby("domain", sort=False):
    spec = STUDY.domains[domain]
    fig = rero_plot(curves[curves["domain"] == domain], t, title=(
        f"DP-SGD, {op.domain_label(domain)}: {len(spec.images)} images, one update each, DLG's LeNet "
        f"({', '.join(t['point'].unique())}); noise calibrated for a client of {op.DP_EXAMPLES:,} images, "
        f"{op.DP_EPOCHS} epochs. Published bounds on any one-guess reconstruction and the measured shares (gradient "
        f"inversion: best of DLG / IG / adaptive, {spec.iterations:,} Adam iterations, one dummy seed; the informed "
        "attack: one guess among the images), exact 95% intervals" + (" [QUICK RUN]" if QUICK else "")))
    save_figure(fig, "operating_dp_bounds.png" if domain == "gray28" else f"operating_dp_bounds_{domain}.png")
theory.drop(columns=["kappa guess"]).style.format(precision=3).hide(axis="index")

# %%
for _, r in theory.iterrows():
    assert r["kappa"] - 1e-3 <= r["bound whole training"] <= r["bound whole training RDP"] + 1e-3  # the tight one is tighter
    assert r["kappa"] <= r["bound one step"] <= 1
    assert r["informed low"] <= r["informed recovered"] <= r["informed high"]
pct = lambda r, key: f"{r[f'{key} recovered']:.0%} [{r[f'{key} low']:.0%}, {r[f'{key} high']:.0%}]"
lines = []
for (domain, point), g in theory.groupby(["domain", "point"], sort=False):
    g = g.set_index("criterion")
    psnr, ssim = g.loc["psnr"], g.loc["ssim"]
    lines.append(
        f"- **{domain}, {point}** (noise multiplier {psnr['noise']:.3g}): the one-step bound allows "
        f"{psnr['bound one step']:.0%} of images under PSNR (kappa {psnr['kappa']:.1%}) and "
        f"{ssim['bound one step']:.0%} under SSIM (kappa at least {ssim['kappa']:.1%}: an estimate); the whole-training "
        f"bound {psnr['bound whole training']:.1%} and {ssim['bound whole training']:.0%} (from RDP: "
        f"{psnr['bound whole training RDP']:.1%} and {ssim['bound whole training RDP']:.0%}). "
        + ("Its gradient-inversion cell has not finished. " if pd.isna(psnr["inversion recovered"]) else
           f"No gradient-inversion attack recovered an image under PSNR ({pct(psnr, 'inversion')}); under SSIM "
           f"the strongest recovered {ssim['inversion recovered']:.0%}. " if psnr["inversion recovered"] == 0 else
           f"The strongest gradient-inversion attack ({psnr['inversion attack']}) recovered {pct(psnr, 'inversion')} "
           f"under PSNR; under SSIM the strongest recovered {ssim['inversion recovered']:.0%}. ")
        + f"The informed attack identified {psnr['informed identified']:.0%} of the images: {pct(psnr, 'informed')} "
        f"under PSNR, {ssim['informed recovered']:.0%} under SSIM.")
proven = theory[theory["kappa proven"]]
measured = proven.dropna(subset=["inversion recovered"])
under = (proven["informed low"] <= proven["bound one step"]).all() and \
    (measured["inversion low"] <= measured["bound one step"]).all()
psnr_rows = measured[measured["criterion"] == "psnr"]
ahead = psnr_rows[psnr_rows["informed low"] > psnr_rows["inversion high"]]
behind = psnr_rows[psnr_rows["informed high"] < psnr_rows["inversion low"]]
short = (proven["informed high"] < proven["bound one step"]).all()
ssim_kappa = theory.loc[theory["criterion"] == "ssim", "kappa"]
display(Markdown("\n".join(lines) + ("" if theory.empty else (
    ("\n\nEvery measured share is consistent with its proven one-step bound (no interval lies above it). " if under
     else "\n\n**A measured interval lies above its proven one-step bound**: the bound or the measurement is wrong. ")
    + ("No gradient-inversion cell at a DP point has finished: nothing to compare yet. " if psnr_rows.empty else
       (f"At {', '.join(ahead['point'])} the informed attack recovers more than gradient inversion (PSNR, the "
        "intervals apart): DP-SGD's protection against our attackers is not protection against every adversary "
        "the bound speaks of. " if len(ahead) else "")
       + (f"At {', '.join(behind['point'])} gradient inversion recovers more than the informed attack (PSNR, the "
          "intervals apart). " if len(behind) else "")
       + ("" if len(ahead) + len(behind) == len(psnr_rows) else
          "The two attacks' intervals overlap at every point (PSNR). " if len(ahead) + len(behind) == 0 else
          "Elsewhere the two attacks' intervals overlap (PSNR). "))
    + ("The informed attack's whole interval stays below the one-step bound: the bound is a worst case over "
       "datasets and candidates, which these images do not reach. " if short else "")
    + f"Under SSIM a guess without the update already meets at least {ssim_kappa.max():.0%} of the images, so an "
    "SSIM rate near that says nothing about leakage."))))

# %% [markdown]
# ## The seeds' claims at their operating point
#
# Both seeds attack one image per gradient through a randomly initialised model, DLG's setting:
# Menon et al. (seed 000) CIFAR-10 images (3x32x32) through DLG's LeNet; Ovi et al. (seed 001,
# Figures 1-2) MNIST (1x28x28) and CIFAR-10 images, their federated training a LeNet-5 of 15
# clients. Here: the `photos32` point "init, B=1, FedSGD" (colour crops with one class per
# photo, 7 classes, where CIFAR-10 has 10; its accuracy from the Fashion-MNIST training in that
# setting) and the same point at 1x28x28 (Fashion-MNIST in MNIST's place), both through DLG's
# LeNet (Ovi et al.'s LeNet-5 is attacked in notebook 8). Menon et al. also say (their Appendix
# C) that DLG fails once the model has trained a few iterations: the middle and trained points
# test that. DLG's own claims (noise of variance 1e-2 stops it but costs accuracy; half
# precision does not protect) are judged where their defense was attacked: `gaussian:0.1` only
# at 1x28x28 (the CPU grid attacks the photos with the papers' strengths and relative noise).

# %%
claims = pd.concat([op.claims_at(table, d, "init, B=1, FedSGD") for d in ("photos32", "gray28")
                    if ((table["domain"] == d) & (table["point"] == "init, B=1, FedSGD")).any()], ignore_index=True)
claims

# %%
lines = [f"- **{r['who']}, {r['defense']}** (\"{r['said']}\"), {r['domain']}: **{r['verdict']}**; recovered "
         f"{r['recovered (SSIM)']:.0%} [{r['ssim low']:.0%}, {r['ssim high']:.0%}] (SSIM), claim under SSIM / PSNR / "
         f"MSE: {r['ssim claim']} / {r['psnr claim']} / {r['mse claim']}" for _, r in claims.iterrows()]
undefended = table[(table["domain"] == "gray28") & (table["defense"] == "none")].set_index("point")
trained = [p for p in ("middle, B=1, FedSGD", "trained, B=1, FedSGD") if p in undefended.index]
if trained:
    shown_points = [p for p in ("init, B=1, FedSGD", *trained) if p in undefended.index]
    said = {"leaks": "refuted", "protects": "holds", "open": "not settled"}  # the claim: the attack fails
    per_criterion = {n: {said.get(undefended.loc[p, f"{n} verdict"], "not scored") for p in trained} for n in SCORED}
    readings = {n: v.pop() if len(v) == 1 else "mixed" for n, v in per_criterion.items() if v != {"not scored"}}
    lines.append(
        "- **Menon et al., \"DLG fails after training\"** (1x28x28, no defense), recovered of "
        f"{int(undefended['images'].max())} images under "
        + " / ".join(CRITERIA[n].describe() for n in SCORED) + ": "
        + "; ".join(f"{p.split(',')[0]} " + " / ".join(f"{undefended.loc[p, f'{n} recovered']:.0%} "
                                                       f"[{undefended.loc[p, f'{n} low']:.0%}, {undefended.loc[p, f'{n} high']:.0%}]"
                                                       for n in SCORED) for p in shown_points)
        + ". Claim under " + ", ".join(f"{CRITERIA[n].describe()}: **{r}**" for n, r in readings.items())
        + (f" at the {' and '.join(p.split(',')[0] for p in trained)} checkpoints: training does not stop the attack "
              "on one image" if set(readings.values()) == {"refuted"}
           else ": the verdict depends on the criterion" if len(set(readings.values())) > 1 else "") + ".")
display(Markdown("\n".join(lines) if lines else "No claim's cell has run yet."))

# %% [markdown]
# ## How long it took

# %%
from dlg_utils.experiments import trial_cost

attack_hours = float(trial_cost(rows).sum()) / 3600 if len(rows) else 0.0
train_hours = float(runs["seconds"].sum()) / 3600 if len(runs) else 0.0
display(Markdown(f"The stored cells took {attack_hours:.1f} hours of attack compute and the training runs "
                 f"{train_hours:.1f} hours, each run on one thread of a 2-core CPU (two runs side by side)."))

# %% [markdown]
# ## What it says

# %%
def listing(frame: pd.DataFrame) -> str:
    return ", ".join(f"{op.defense_label(r['point'], r['defense'])} ({r['domain']} {r['point']})"
                     for _, r in frame.iterrows()) or "none"


protect_ssim = table[table["ssim verdict"] == "protects"]
dp_protects = [STUDY.point(d, p).epsilon for d, p in zip(protect_ssim["domain"], protect_ssim["point"])
               if STUDY.point(d, p).epsilon]
informed = theory[(theory["criterion"] == "psnr") & theory["epsilon"].isin(dp_protects)]
dp_note = (" DP-SGD's \"protects\" holds against attackers who do not know the candidate images; the informed "
           "attack, who does, recovers (PSNR) " + " and ".join(f"{pct(r, 'informed')} at epsilon {r['epsilon']:g}"
                                                            for _, r in informed.iterrows())
           + " from the same updates." if len(informed) else "")
display(Markdown(
    f"Of {len(table)} finished cells, {int((table['verdict'] == 'leaks').sum())} leak under every criterion scored, "
    f"{int((table['verdict'] == 'depends on the criterion').sum())} have a verdict that depends on the criterion, "
    f"{int((table['verdict'] == 'protects').sum())} protect under every one and {int((table['verdict'] == 'open').sum())} "
    f"{'is' if (table['verdict'] == 'open').sum() == 1 else 'are'} open. Protecting under SSIM (the strictest reading of privacy: nothing recognisable): {listing(protect_ssim)}. "
    f"Of these, free in accuracy (corrected interval within one point): {listing(protect_ssim[protect_ssim['holds']])}. "
    + (("Their costs: " + "; ".join(
        f"{op.defense_label(r['point'], r['defense'])} ({r['domain']} {r['point']}) {r['cost verdict']}, "
        f"{100 * r['drop']:+.2f} points [{100 * r['adjusted low']:+.1f}, {100 * r['adjusted high']:+.1f}] over "
        f"{int(r['seeds'])} seeds" + (f", about {r['seeds to settle']:.0f} seeds to settle"
                                      if r['cost verdict'] == 'open' and np.isfinite(r['seeds to settle']) else "")
        for _, r in protect_ssim.dropna(subset=["drop"]).iterrows())
        + ". An open cost is a measurement too short to tell, not a cost: \"no defense holds\" here means none is "
        "shown to hold.") if len(protect_ssim.dropna(subset=["drop"])) else "")
    + dp_note + " "
    f"This covers {done} of {planned} cells of the grid; the figures and verdicts above are of the finished cells only."))
no_dp = np.array([not STUDY.point(d, p).epsilon for d, p in zip(table["domain"], table["point"])], dtype=bool)
blind = table[no_dp & (table["defense"] == "none") & (table["ssim high"] <= op.LIMIT)]  # even the raw update resists
if len(blind):
    display(Markdown(
        "**Where the attackers fail without any defense**: "
        + "; ".join(f"{r['domain']} {r['point']} ({r['ssim recovered']:.0%} [{r['ssim low']:.0%}, {r['ssim high']:.0%}] "
                    f"recovered undefended, SSIM)" for _, r in blind.iterrows())
        + ". There the defenses' low rates say nothing about the defenses: the update itself resists these attackers "
        "at this budget, which the budget curve (one image, untrained model) does not show saturated. Their cells are "
        "open, not protected; a stronger attack (more iterations, breaching's batch priors) is what would settle them."))
seeds_point, fewer = table[table["point"] == "init, B=1, FedSGD"], []
both = seeds_point.pivot(index="defense", columns="domain", values="ssim recovered")
if {"gray28", "photos32"} <= set(both.columns) and both.dropna().size:
    pairs = "; ".join(f"{d} {r['gray28']:.0%} at 1x28x28, {r['photos32']:.0%} at 3x32x32" for d, r in both.dropna().iterrows())
    photos = seeds_point[seeds_point["domain"] == "photos32"].set_index("defense")
    quantizers = [d for d in photos.index if d.startswith(("uniform", "stochastic", "mixed"))]
    leaking = [d for d in quantizers if photos.loc[d, "ssim verdict"] == "leaks"]
    display(Markdown(
        f"**Input size: is \"every quantizer leaks\" true only of small grey images?** Recovered under SSIM at the "
        f"seeds' point: {pairs}. " + (
            f"At 3x32x32, with a budget ({STUDY.domains['photos32'].iterations:,} iterations) whose curve still "
            f"rises, {', '.join(leaking)} "
            f"{'leaks' if len(leaking) == 1 else 'leak'} under SSIM too: the quantizers' leak is not an artefact of "
            "small grey inputs." if leaking else
            "No quantizer finished at 3x32x32 leaks yet (these verdicts are lower bounds: the budget is not saturated)."
            if quantizers else "No quantizer's cell at 3x32x32 has finished yet.")))
    grey = seeds_point[seeds_point["domain"] == "gray28"].set_index("defense")
    fewer = [d for d in both.dropna().index if photos.loc[d, "ssim high"] < grey.loc[d, "ssim low"]]
    display(Markdown(
        "Recovered less at 3x32x32 than at 1x28x28 (SSIM, the intervals apart): "
        + (", ".join(f"{d} ({grey.loc[d, 'ssim recovered']:.0%} to {photos.loc[d, 'ssim recovered']:.0%})" for d in fewer)
           or "nothing")
        + (". With 3,072 unknowns a budget that is not saturated there recovers less"
           + (", undefended too" if "none" in fewer else "") + ": the 3x32x32 cells below the limit are open until "
           "the authors' budget runs (the GPU grid)." if fewer else ".")))
dp_psnr = theory[theory["criterion"] == "psnr"].dropna(subset=["inversion recovered"])
if len(dp_psnr):
    display(Markdown(
        "**DP-SGD against the bounds.** " + "; ".join(
            f"{r['domain']} at epsilon {r['epsilon']:g}: gradient inversion recovers {pct(r, 'inversion')} and the "
            f"informed attack {pct(r, 'informed')} (PSNR), where the one-step bound allows {r['bound one step']:.0%}"
            for _, r in dp_psnr.iterrows())
        + ". DP-SGD's verdicts above are against attackers who do not know the candidates; the informed attack "
        "and the bound say how much more an adversary with a short list could get from the same update."))
if not QUICK and ((table["domain"] == "gray28") & (table["point"] == "init, B=1, FedSGD")).any():
    seeds = table[(table["domain"] == "gray28") & (table["point"] == "init, B=1, FedSGD")].set_index("defense")
    assert seeds.loc["none", "verdict"] == "leaks", "the undefended single-image gradient does not leak"
    for d in ("uniform:16", "stochastic:16"):
        if d in seeds.index:  # the text above: recognisable (SSIM) but not a close copy (MSE)
            assert seeds.loc[d, "ssim verdict"] == "leaks" and seeds.loc[d, "mse high"] <= op.LIMIT, d

# %% [markdown]
# ## The README's headline
#
# The README quotes this block as it stands (`tests/test_docs.py` checks that it does): the
# seeds' point at 1x28x28, and the sentences that carry the verdicts above.

# %%
SEEDS_POINT = "init, B=1, FedSGD"


def at(domain: str, point: str, defense: str):
    """The frontier row of one cell (None where it has not finished)."""
    hit = table[(table["domain"] == domain) & (table["point"] == point) & (table["defense"] == defense)]
    return None if hit.empty else hit.iloc[0]


def rate(domain: str, point: str, defense: str, name: str = "ssim", interval: bool = False) -> str:
    r = at(domain, point, defense)
    if r is None:
        return "(not run)"
    return f"{r[f'{name} recovered']:.0%}" + (f" [{r[f'{name} low']:.0%}, {r[f'{name} high']:.0%}]" if interval else "")


def cost_of(r) -> str:
    """A cell's accuracy drop as the README says it."""
    if pd.isna(r.get("drop", np.nan)):
        return "accuracy not measured yet"
    settle = (f": about {r['seeds to settle']:.0f} seeds would settle it" if r["cost verdict"] == "open"
              and np.isfinite(r["seeds to settle"]) else "")
    word = {"free": "free", "costs": "a cost", "open": "open"}[r["cost verdict"]]
    return (f"accuracy drop {100 * r['drop']:+.2f} [{100 * r['adjusted low']:+.1f}, {100 * r['adjusted high']:+.1f}] "
            f"points over {int(r['seeds'])} seeds ({word}{settle})")


gray = STUDY.domains["gray28"]
seeds_cells = table[(table["domain"] == "gray28") & (table["point"] == SEEDS_POINT)]
readme = [f"At the seeds' operating point (DLG's untrained LeNet, one image per update, FedSGD), on "
          f"{len(gray.images)} Fashion-MNIST test images (1x28x28), the best of DLG, Inverting Gradients (its authors' "
          f"settings, {gray.iterations:,} iterations: the measured budget curve is flat there) and the defense-aware "
          "attacker, with exact 95% intervals over images (notebook 9; the papers' defenses at their strengths, "
          "relative noise and DLG's noise of variance 1e-2, `gaussian:0.1`; the other strengths there):", "",
          op.headline(table, "gray28", SEEDS_POINT, README_DEFENSES), ""]
safe = seeds_cells[seeds_cells["ssim verdict"] == "protects"]
assert QUICK or all(at("gray28", SEEDS_POINT, d)["ssim verdict"] == "leaks" for d in ("uniform:16", "mixed")
                    if at("gray28", SEEDS_POINT, d) is not None)
held_by_curve = [d for d in safe["defense"] if ("gray28", SEEDS_POINT, d) in flat]
text = ("Whether a defense protects depends on what counts as leaked. Under SSIM (the image is recognisable) "
        f"Menon et al.'s 16 levels leak {rate('gray28', SEEDS_POINT, 'uniform:16')} of the images and Ovi et al.'s "
        f"mixed int8/int16 {rate('gray28', SEEDS_POINT, 'mixed')}; ")
if len(safe):
    text += (("only " if len(safe) < 3 else "") + " and ".join(
                 f"`{d}` ({rate('gray28', SEEDS_POINT, d, interval=True)})" for d in safe["defense"])
             + (" protects" if len(safe) == 1 else " protect")
             + ((f" (their own budget curves, to {max(op.CURVE_BUDGETS):,} iterations, find no more)"
                 if len(held_by_curve) == len(safe) else
                 f" ({', '.join(held_by_curve)}: a budget curve to {max(op.CURVE_BUDGETS):,} iterations finds no more)")
                if held_by_curve else "") + ". "
             + "; ".join(f"`{r['defense']}`: {cost_of(r)}" for _, r in safe.iterrows()) + ". ")
else:
    text += "no defense is shown to protect. "
mse_low = seeds_cells[seeds_cells["mse high"] <= op.LIMIT]
mse_safe = mse_low[mse_low["mse verdict"] == "protects"]
text += (f"Under image MSE (a near-exact copy) {len(mse_low)} of {len(seeds_cells)} defenses recover at most 10%, "
         f"{len(mse_safe)} of them with a budget shown saturated (\"protects\"), the reconstructions of the 16-level "
         "quantizers and of noise recognisable but grainy; mixed int8/int16 and half "
         f"precision still give near-exact copies ({rate('gray28', SEEDS_POINT, 'mixed', 'mse')}, "
         f"{rate('gray28', SEEDS_POINT, 'half', 'mse')}). ")
photo = STUDY.domains["photos32"]
if at("photos32", SEEDS_POINT, "none") is not None:
    text += (f"On {len(photo.images)} colour photo crops (3x32x32, {photo.iterations:,} iterations, a budget whose "
             f"curve still rises) {rate('photos32', SEEDS_POINT, 'none')} leak undefended, "
             f"{rate('photos32', SEEDS_POINT, 'uniform:16')} through 16-level and "
             f"{rate('photos32', SEEDS_POINT, 'mixed')} through mixed quantization"
             + ("; fewer are recovered there than at 1x28x28 through " + ", ".join(
                 f"`{d}` ({grey.loc[d, 'ssim recovered']:.0%} to {photos.loc[d, 'ssim recovered']:.0%})"
                 for d in fewer if d != "none")
                + (f", as without a defense ({grey.loc['none', 'ssim recovered']:.0%} to "
                   f"{photos.loc['none', 'ssim recovered']:.0%})" if "none" in fewer else "")
                + ": open until the authors' budget runs there" if [d for d in fewer if d != "none"] else "") + ". ")
for _, r in theory[theory["criterion"] == "psnr"].dropna(subset=["inversion recovered"]).iterrows():
    cell = at(r["domain"], r["point"], "none")
    text += (f"DP-SGD at epsilon {r['epsilon']:g}: gradient inversion recovers "
             f"{cell['ssim recovered']:.0%} (SSIM, {cell['ssim verdict']}), at an {cost_of(cell)}; an informed attacker who knows the "
             f"{len(gray.images)} candidates recovers {pct(r, 'informed')} (PSNR) from the same update, under Hayes et "
             f"al.'s one-step bound ({r['bound one step']:.0%}). ")
if at("gray28", "trained, B=1, FedSGD", "none") is not None:
    text += (f"A trained LeNet still gives up {rate('gray28', 'trained, B=1, FedSGD', 'none', interval=True)} of the "
             "images undefended (SSIM; Menon et al. say DLG fails after training). ")
if len(blind):
    text += ("Where even the undefended update resists these attackers ("
             + ", ".join(f"{r['point']}: {r['ssim recovered']:.0%}" for _, r in blind.iterrows())
             + "), the cells are open, not protected. ")
text += (f"Coverage: {done} of {planned} cells and {len(stored_runs & planned_runs)} of {len(planned_runs)} training "
         "runs ([docs/operating.md](docs/operating.md)).")
readme_block = "\n".join(["<!-- notebook 9's headline -->", *readme, text, "<!-- end of notebook 9's headline -->"])
display(Markdown(readme_block))
