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
#   middle and end of one training run on Fashion-MNIST), the batch size B behind one update
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
#   stronger attack only recovers more). The curve says nothing of batches, local steps or
#   trained models, harder problems than one image: there too a cell that recovers nothing is
#   **open**, not protected.
# - **Verdicts**: exact (Clopper-Pearson) 95% intervals over images; a defense **protects**
#   where the upper bound is at most 10% under a budget saturated at its point, **leaks** where the lower
#   bound is above 10%, and is **open** otherwise; three criteria side by side (four where LPIPS's
#   weights are present).
# - **Utility**: federated training of the same LeNet in each point's setting (15 clients, B
#   images per client and round, E local steps, DP-SGD, the defense on every update), simulated
#   in one process (`dlg_utils.fedsim`), 3 seeds, drops paired by seed with Holm's and
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
rows = op.complete_cells(op.load_study(OUT / "operating"), STUDY)  # finished cells only
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
points = pd.DataFrame([{"point": p.name, "domain": d, "model state": p.state, "B": p.batch_size,
                        "E": p.local_steps, "DP noise multiplier": p.case().dp.noise if p.epsilon else 0.0,
                        "defenses": len(p.defenses)}
                       for d, p in STUDY.grid])
points

# %% [markdown]
# ## Privacy at each point
#
# One panel per point: the share of its images recovered under each defense, with exact 95%
# intervals, under SSIM ≥ 0.5 (the structure is recognisable), PSNR ≥ 25 dB (close pixel
# agreement) and image MSE < 1e-3 (PSNR ≥ 30 dB: a near-exact copy). The dashed line is the 10%
# limit a protecting defense's whole interval must stay under. A fourth criterion, LPIPS < 0.2
# (AlexNet; a learned perceptual distance, 0 for the same image), is scored where torchvision's
# ImageNet AlexNet weights are on disk when the attacks run. No paper fixes a threshold for it;
# 0.2 is our choice, and its chance level below shows how lenient it is.

# %%
base = op.baselines(STUDY)  # the prior's baseline per domain and criterion: what a guess without the update meets
cells = op.cell_table(rows, STUDY, chance={k: b.low for k, b in base.items()})
SCORED = [n for n in CRITERIA if f"{n} recovered" in cells]  # LPIPS only where its weights were present
print("criteria:", ", ".join(CRITERIA[n].describe() for n in SCORED),
      "" if "lpips" in SCORED else f"| LPIPS not scored: no weights at {lpips_weights()} when the cells ran")
domains = {d: STUDY.domains[d] for d in cells["domain"].unique()}
unsaturated = [(d, p) for d, p in zip(cells["domain"], cells["point"]) if not STUDY.saturated_at(d, p)]
fig = operating_plot(cells, criteria=SCORED, unsaturated=unsaturated, title=(
    "Images recovered by the best of DLG / Inverting Gradients / the defense-aware attacker, DLG's LeNet, "
    + "; ".join(f"{d}: {len(s.images)} images, {s.iterations} Adam iterations" for d, s in domains.items())
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
    saturated = [STUDY.saturated_at(d, p) for d, p in zip(cells["domain"], cells["point"])]
    assert not (protects & ~pd.Series(saturated, index=cells.index)).any(), \
        "a 'protects' verdict read under a budget not saturated at its point"
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
        "Left: images recovered (best attack, SSIM ≥ 0.5, exact 95% interval; shaded: at most 10%). Right: the "
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
# The defenses the papers proposed (at their strengths) and the relative noise; the other
# strengths are in the tables above.

# %%
from dlg_utils.frontier import PAPER_STRENGTH
README_DEFENSES = (*PAPER_STRENGTH, *op.RELATIVE_NOISE)
for d in ("gray28", "photos32"):
    if ((table["domain"] == d) & (table["point"] == "init, B=1, FedSGD")).any():
        display(Markdown(f"**{d}, init, B=1, FedSGD** (drop: points of accuracy in that setting, Bonferroni "
                         "interval; s per image: attack seconds per image recovered under SSIM)\n\n"
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
        f"DP-SGD, {domain}: {len(spec.images)} {spec.dataset} images, DLG's LeNet ({', '.join(t['point'].unique())}); "
        f"noise calibrated for a client of {op.DP_EXAMPLES:,} images, {op.DP_EPOCHS} epochs. Published bounds on any "
        "one-guess reconstruction and the measured shares, exact 95% intervals" + (" [QUICK RUN]" if QUICK else "")))
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
# test that.

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
    r0 = undefended.loc["init, B=1, FedSGD"] if "init, B=1, FedSGD" in undefended.index else None
    lines.append(
        "- **Menon et al., \"DLG fails after training\"** (1x28x28, no defense): recovered (SSIM) "
        + "; ".join(f"{p.split(',')[0]} {undefended.loc[p, 'ssim recovered']:.0%} [{undefended.loc[p, 'ssim low']:.0%}, "
                    f"{undefended.loc[p, 'ssim high']:.0%}]" for p in ([*(["init, B=1, FedSGD"] if r0 is not None else []),
                                                                          *trained]))
        + f" of {int(undefended['images'].max())} images"
        + (": **refuted** at these checkpoints, training does not stop the attack on one image"
           if all(undefended.loc[p, "ssim verdict"] == "leaks" for p in trained) else
           ": **not refuted** here: a trained model's update leaks less" ))
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
    + " "
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
seeds_point = table[table["point"] == "init, B=1, FedSGD"]
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
            assert seeds.loc[d, "ssim verdict"] == "leaks" and seeds.loc[d, "mse verdict"] == "protects", d
