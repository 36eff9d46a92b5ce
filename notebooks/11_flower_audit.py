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
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11. Audit a Flower run: the server attacks what its clients send
#
# Notebooks 8 and 10 attack a client's update rebuilt offline. Here the attacks run **inside a
# live Flower run** (Flower's simulation engine): `run_federated(..., audit=AuditConfig(...))`
# wraps the server's strategy in `dlg_utils.audit.AuditedStrategy`, which, in each audited round
# and before aggregating, takes a sample of the replies as the server received them (after the
# clients' Mods: the quantization codec, DP-SGD's noise), builds each client's case from the
# train config the server sent and the examples the client reports, and attacks it with the
# project's ensemble. The clients add `TrainedSamplesMod` (audit mode only), which names the
# samples each one trained on: the operator scores every reconstruction against the true
# images; the attack never sees them (docs/audit.md).
#
# - **Setting**: seed 001's (notebook 8): Fashion-MNIST, LeNet-5, FedAvg over 15 clients, 20
#   rounds, SGD lr 0.05 with momentum 0.9, batch 32, one local epoch; methods base FL, mixed
#   int8/int16 precision (seed 001) and DP-SGD (epsilon 1, delta 1e-5, batch 128, lr 0.1).
# - **One difference, on purpose: each client holds 4 images, not 4,000.** No attack
#   reconstructs 4,000 images from one update (the auditor skips a client with more than
#   `max_images` = 16 and says so); with 4 images and batch 32, a client's round is one SGD
#   step on its 4 images, the setting in which an attacker has a chance. The 60 training images
#   also make the runs' test accuracy far below notebook 8's.
# - **Audit**: clients 0 and 1 in rounds 1, 2, 5, 10 and 20; iDLG (300 L-BFGS iterations),
#   Inverting Gradients and the defense-aware attacker (2,000 signed-Adam iterations each, a
#   twelfth of the authors' 24,000: on these images the budget curve of notebook 10 is flat
#   beyond 1,000); an image counts as recovered at PSNR >= 25 dB by its best attack.
# - **Local steps**: base FL in round 1 with 1, 4, 5 and 8 local steps (batch 4 for one epoch
#   or five; batch 1 for one epoch or two), Inverting Gradients only.
# - **A model that trains**: base FL for 300 rounds in which every client trains on 4 fresh
#   images of its 4,000 each round (`FLConfig.round_examples`), audited from round 1 to 300.

# %%
import pandas as pd
from dataclasses import replace
from IPython.display import Markdown, display
from dlg_utils.notebook import results_folder, start
QUICK = start()  # DLG_QUICK=1 (or CI) shrinks the run; committed outputs are full runs

# %%
from dlg_utils.audit import (AuditConfig, audit_report, audited_run, image_rows, load_audit, round_images,
                             round_table)
from dlg_utils.experiments import expand_histories, sweep
from dlg_utils.federated import FLConfig, method_setup
from dlg_utils.plotting import audit_plot, audit_training_plot, best_reconstructions, save_figure

OUT = results_folder(QUICK)  # results/, or a temporary folder in quick mode
METHODS = ["base", "mixed", "dp"]
CFG = FLConfig(num_clients=2 if QUICK else 15, rounds=2 if QUICK else 20, local_epochs=1, batch_size=32, lr=0.05,
               momentum=0.9, client_examples=1 if QUICK else 4, test_examples=256 if QUICK else 0)
AUDIT = AuditConfig(path=str(OUT / "flower_audit.jsonl"), attacks=("ig",) if QUICK else ("idlg", "ig", "adaptive"),
                    iterations=300, ig_iterations=20 if QUICK else 2000, clients=1 if QUICK else 2,
                    rounds=(1, 2) if QUICK else (1, 2, 5, 10, 20))
STEPS = {"1 step: batch 4, 1 epoch": dict(batch_size=4, local_epochs=1),
         "4 steps: batch 1, 1 epoch": dict(batch_size=1, local_epochs=1),
         "5 steps: batch 4, 5 epochs": dict(batch_size=4, local_epochs=5),
         "8 steps: batch 1, 2 epochs": dict(batch_size=1, local_epochs=2)}
if QUICK:
    STEPS = {"2 steps: batch 1, 2 epochs": dict(batch_size=1, local_epochs=2)}
print(CFG)
print(AUDIT)

# %% [markdown]
# ## The audited runs
#
# Each run is stored once it finishes (`results/flower_audit_runs.jsonl`: its history) and every
# audited client and round as it is attacked (`results/flower_audit.jsonl`: the case, every
# attack's reconstruction, the scores): an interrupted notebook resumes.

# %%
runs = sweep([{"method": m, "run": m} for m in METHODS], lambda t: audited_run(t, CFG, AUDIT),
             OUT / "flower_audit_runs.jsonl", context={"config": CFG, "audit": AUDIT.settings()},
             desc="audited runs")
curves = expand_histories(runs, keep=["method"], column="history")
rows = load_audit(AUDIT.path)
rows = rows[rows["run"].isin(METHODS)].reset_index(drop=True)
table = rows.pivot_table(index="round", columns="run", values=["psnr", "ssim", "recovered"], aggfunc="mean")
accuracy = curves.pivot(index="round", columns="method", values="test_accuracy")
display(accuracy.loc[[r for r in accuracy.index if r in (0, *AUDIT.rounds)]].round(3))
table.round(2)

# %%
dp_cfg = method_setup("dp", CFG)[0]
print(rows.groupby("run")[["case", "defense", "dp_noise", "images"]].first().to_string())
print(f"CPU seconds per audited update: {rows.groupby('run')['seconds'].mean().round(1).to_dict()}")
TITLE = (f"Fashion-MNIST, LeNet-5, {CFG.num_clients} clients of {CFG.client_examples} images, {CFG.rounds} rounds; "
         f"clients {', '.join(map(str, sorted(rows['client'].unique())))} audited in rounds "
         f"{', '.join(map(str, AUDIT.rounds))} by {' + '.join(AUDIT.attacks)} "
         f"({AUDIT.iterations} L-BFGS / {AUDIT.ig_iterations:,} Adam it.), best attack per image")
fig = audit_plot(rows, f"Leakage over rounds: {TITLE}")
save_figure(fig, "audit_leakage_over_rounds.png");

# %%
truths, recons, captions = round_images(rows, AUDIT.rounds[0])
fig = best_reconstructions(recons, truths, captions,
                           title=f"Round {AUDIT.rounds[0]}: the audited clients' images (top) and each run's best "
                                 f"reconstruction of each, with its attack and PSNR\n{TITLE}")
save_figure(fig, "audit_gallery.png");

# %% [markdown]
# ## Does leakage fall as local steps grow?
#
# Base FL, round 1 (the model at its initialisation), clients 0 and 1 of the same 4 images: the
# update after 1, 4, 5 or 8 local SGD steps, attacked by Inverting Gradients alone (the attack
# behind the base runs' best reconstructions: the table of best attacks below). With batch 1 the
# client's DataLoader shuffles the order of the images; one epoch is the case's steps in
# another order (matched scoring does not see the order of the dummy images, but the update is
# a little different), two epochs are reshuffled differently (docs/audit.md).

# %%
steps_audit = replace(AUDIT, attacks=("ig",), rounds=(1,))
step_cfg = replace(CFG, rounds=1)
step_runs = sweep([{"method": "base", "run": f"base, {name}", "config": options} for name, options in STEPS.items()],
                  lambda t: audited_run(t, step_cfg, steps_audit), OUT / "flower_audit_runs.jsonl",
                  context={"config": step_cfg, "audit": steps_audit.settings()}, desc="local steps")
step_rows = load_audit(AUDIT.path)
step_rows = step_rows[step_rows["run"].isin([f"base, {n}" for n in STEPS])]
per_image = image_rows(step_rows)
steps = per_image.groupby("run", sort=False).agg(local_steps=("local_steps", "first"), images=("psnr", "size"),
                                                 median_psnr=("psnr", "median"), median_ssim=("ssim", "median"),
                                                 recovered=("recovered", "mean"))
steps["CPU s per update"] = step_rows.groupby("run", sort=False)["seconds"].mean()
steps = steps.sort_values("local_steps")
steps.round(2)

# %%
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6.2, 3.4))
for k, (name, g) in enumerate(per_image.groupby("run", sort=False)):
    ax.scatter([g["local_steps"].iloc[0]] * len(g), g["psnr"], color=f"C{k}", label=name.removeprefix("base, "))
ax.axhline(25, color="gray", ls=":", lw=0.8)
ax.set(xlabel="local SGD steps before the update is sent", ylabel="PSNR of the best attack (dB)",
       title=f"Base FL, round 1: leakage against local steps\n{CFG.num_clients} clients of {CFG.client_examples} "
             f"images, clients {', '.join(map(str, sorted(per_image['client'].unique())))}, IG "
             f"{steps_audit.ig_iterations:,} it., one dot per image")
ax.legend(fontsize=7, loc="best")
fig.tight_layout()
save_figure(fig, "audit_local_steps.png");

# %% [markdown]
# ## Does leakage fall as training converges?
#
# The runs above train on 60 images and barely move the model (the table of accuracies), so
# they cannot say. Here base FL trains: with `round_examples=4` each client trains, every
# round, on the next 4 images of its 4,000 (a device that keeps seeing new data). Batch 32 is
# larger than 4, so each update is still one SGD step on 4 images, the case the attack knows,
# while the global model sees 60 new images a round. Four clients are audited at rounds 1 to
# 300 by the same ensemble as above; each image counts by its best attack, with exact 95%
# intervals over the 16 images of a round.

# %%
TRAIN_CFG = replace(CFG, client_examples=0, round_examples=1 if QUICK else 4, rounds=3 if QUICK else 300)
TRAIN_AUDIT = replace(AUDIT, rounds=(1, 3) if QUICK else (1, 25, 50, 100, 200, 300), clients=1 if QUICK else 4)
TRAIN_RUN = "base, fresh images every round"
train_runs = sweep([{"method": "base", "run": TRAIN_RUN}], lambda t: audited_run(t, TRAIN_CFG, TRAIN_AUDIT),
                   OUT / "flower_audit_runs.jsonl", context={"config": TRAIN_CFG, "audit": TRAIN_AUDIT.settings()},
                   desc="a run that trains")
train_curve = expand_histories(train_runs, keep=["method"], column="history")
train_rows = load_audit(AUDIT.path)
train_rows = train_rows[train_rows["run"] == TRAIN_RUN].reset_index(drop=True)
train_images = image_rows(train_rows)
by_round = round_table(train_rows).merge(train_curve[["round", "test_accuracy", "train-loss"]], on="round")
by_round.drop(columns="run").round(3)

# %%
TRAIN_TITLE = (f"Fashion-MNIST, LeNet-5, base FL, {TRAIN_CFG.num_clients} clients, {TRAIN_CFG.round_examples} fresh "
               f"images each a round (one SGD step, lr {TRAIN_CFG.lr:g}), {TRAIN_CFG.rounds} rounds; clients "
               f"{', '.join(map(str, sorted(train_images['client'].unique())))} audited by "
               f"{' + '.join(TRAIN_AUDIT.attacks)} ({TRAIN_AUDIT.iterations} L-BFGS / {TRAIN_AUDIT.ig_iterations:,} "
               "Adam it.), best attack per image")
fig = audit_training_plot(train_curve, train_images, f"Leakage as the model trains: {TRAIN_TITLE}")
save_figure(fig, "audit_over_training.png");

# %% [markdown]
# **Is the attack's budget enough for a trained model?** The 2,000 Adam iterations were chosen on
# untrained models (notebook 10's budget curve). The same run is trained again and audited in its
# last round only, by Inverting Gradients at three times the budget: if more iterations recovered
# much more, the fall above would be the attack's, not the model's.

# %%
CHECK_AUDIT = replace(TRAIN_AUDIT, attacks=("ig",), ig_iterations=40 if QUICK else 6000, rounds=(TRAIN_CFG.rounds,))
CHECK_RUN = f"{TRAIN_RUN}, IG {CHECK_AUDIT.ig_iterations:,} it."
check_runs = sweep([{"method": "base", "run": CHECK_RUN}], lambda t: audited_run(t, TRAIN_CFG, CHECK_AUDIT),
                   OUT / "flower_audit_runs.jsonl", context={"config": TRAIN_CFG, "audit": CHECK_AUDIT.settings()},
                   desc="budget check")
check_curve = expand_histories(check_runs, keep=["method"], column="history")
check_rows = load_audit(AUDIT.path)
check = image_rows(check_rows[check_rows["run"] == CHECK_RUN])
last_images = train_images[train_images["round"] == TRAIN_CFG.rounds]
budget = pd.DataFrame({f"{'+'.join(TRAIN_AUDIT.attacks)}, {TRAIN_AUDIT.ig_iterations:,} it. (best)": last_images.set_index("index")["psnr"],
                       f"ig, {CHECK_AUDIT.ig_iterations:,} it.": check.set_index("index")["psnr"]})
gain, above = budget.iloc[:, 1].median() - budget.iloc[:, 0].median(), (budget >= 25).sum()
print(f"round {TRAIN_CFG.rounds}, {len(budget)} images: median PSNR {budget.median().round(1).to_dict()}; images at "
      f">= 25 dB {(budget >= 25).sum().to_dict()}; the retrained run's test accuracy equals the first's in every round: "
      f"{check_curve['test_accuracy'].tolist() == train_curve['test_accuracy'].tolist()}")

# %%
import numpy as np
from scipy.stats import spearmanr
trend = spearmanr(train_images["round"], train_images["psnr"])
early, late = by_round.iloc[0], by_round.iloc[-1]
direction = ("falls" if trend.pvalue < 0.05 and trend.statistic < 0 else
             "rises" if trend.pvalue < 0.05 else "shows no significant trend (p >= 0.05)")
share = lambda r, c: f"{r[c]:.0f} of {r['images']:.0f} [{r[c + '_low']:.0%}, {r[c + '_high']:.0%}]"
train_verdict = (
    f"as the model trains from {early['test_accuracy']:.0%} to {late['test_accuracy']:.0%} test accuracy (the clients' "
    f"loss from {early['train-loss']:.2f} to {late['train-loss']:.2f}), leakage {direction}: Spearman's rho of PSNR "
    f"against the round {trend.statistic:.2f} (p = {trend.pvalue:.2g}, {len(train_images)} images); median PSNR "
    f"{early['median_psnr']:.1f} dB in round {early['round']:.0f}, {late['median_psnr']:.1f} dB in round "
    f"{late['round']:.0f}; recovered by PSNR >= 25 dB {share(early, 'psnr')} then {share(late, 'psnr')}, by SSIM >= 0.5 "
    f"{share(early, 'ssim')} then {share(late, 'ssim')}, by MSE < 1e-3 {share(early, 'mse')} then {share(late, 'mse')}. "
    f"Three times the attack's budget in round {TRAIN_CFG.rounds} moves the median PSNR by {gain:+.1f} dB "
    f"({budget.iloc[:, 0].median():.1f} dB with the ensemble at {TRAIN_AUDIT.ig_iterations:,} iterations, "
    f"{budget.iloc[:, 1].median():.1f} dB with IG at {CHECK_AUDIT.ig_iterations:,}) and the images at >= 25 dB from "
    f"{above.iloc[0]} to {above.iloc[1]} of {len(budget)}: " + (
        "the fall is the model's, not the attack's budget" if abs(gain) < 1 and above.iloc[1] <= above.iloc[0] else
        "the fall is the model's in the median, but more iterations still recover a few more images, so the late "
        "rounds' rates are lower bounds" if abs(gain) < 1 else
        "the budget limits the attack on the trained model: the late rounds' rates are lower bounds"))
Markdown(f"**As training converges (base FL, fresh images every round):** {train_verdict}.")

# %% [markdown]
# ## What the audit says
#
# The report below is `audit_report(rows)`: one paragraph per run, written from the rows.

# %%
Markdown(audit_report(rows))

# %%
images = image_rows(rows)
mean_psnr = rows.groupby(["run", "round"])["psnr"].mean().unstack("run")
first, last = AUDIT.rounds[0], AUDIT.rounds[-1]
rec = images.groupby("run")["recovered"].agg(["sum", "size"])
base_rows = rows[rows["run"] == "base"].merge(curves[curves["method"] == "base"][["round", "train-loss"]], on="round")
rho = spearmanr(base_rows["round"], base_rows["psnr"]).statistic
falls = mean_psnr.loc[last, "base"] < mean_psnr.loc[first, "base"] - 1
loss_first, loss_last = base_rows["train-loss"].iloc[0], base_rows["train-loss"].iloc[-1]
trained = loss_last < 0.8 * loss_first  # the clients' loss fell by a fifth: the model learned something
over_rounds = ("leakage falls as training converges" if falls and trained else
               "leakage does not fall (by more than 1 dB) as training converges" if trained else
               f"training barely moves the model in {CFG.rounds} rounds on {CFG.num_clients * CFG.client_examples} "
               "images, and leakage stays where it started. In the run that trains (fresh images every round, "
               f"{early['test_accuracy']:.0%} to {late['test_accuracy']:.0%} test accuracy) leakage {direction}: median "
               f"PSNR {early['median_psnr']:.1f} dB in round {early['round']:.0f}, {late['median_psnr']:.1f} dB in round "
               f"{late['round']:.0f} (the section above)")
one, most = steps.iloc[0], steps.iloc[-1]
steps_fall = most["median_psnr"] < one["median_psnr"] - 1
acc = accuracy.loc[CFG.rounds]
by_ssim = images.assign(ok=images["ssim"] >= 0.5).groupby("run")["ok"].sum()
median_ssim = images.groupby("run")["ssim"].median()
best_attack = images.groupby("run")["attack"].value_counts().unstack(fill_value=0)
display(best_attack.rename_axis(columns="best attack per image"))
Markdown(f"""**What leaked.** Base FL: {rec.loc['base', 'sum']} of {rec.loc['base', 'size']} audited images recovered
(PSNR >= 25 dB; {by_ssim['base']} by SSIM >= 0.5); mixed precision: {rec.loc['mixed', 'sum']} of
{rec.loc['mixed', 'size']} by PSNR, but {by_ssim['mixed']} by SSIM >= 0.5 (median SSIM {median_ssim['mixed']:.2f}
against base FL's {median_ssim['base']:.2f}): the quantized one-step update blurs the reconstructions without hiding
them; DP-SGD (epsilon {dp_cfg.dp_epsilon:g}, noise multiplier {rows.loc[rows['run'] == 'dp', 'dp_noise'].iloc[0]:.2f}):
{rec.loc['dp', 'sum']} of {rec.loc['dp', 'size']} (median SSIM {median_ssim['dp']:.2f}). Mean PSNR in round {first}:
base {mean_psnr.loc[first, 'base']:.1f} dB, mixed {mean_psnr.loc[first, 'mixed']:.1f} dB, DP-SGD
{mean_psnr.loc[first, 'dp']:.1f} dB.

**Over rounds (base FL).** The mean PSNR goes from {mean_psnr.loc[first, 'base']:.1f} dB in round {first} to
{mean_psnr.loc[last, 'base']:.1f} dB in round {last} (Spearman's rho of PSNR against the round over the audited
updates: {rho:.2f}), while the clients' training loss goes from {loss_first:.2f} to {loss_last:.2f} and the test
accuracy from {accuracy.loc[0, 'base']:.1%} to {acc['base']:.1%} (mixed {acc['mixed']:.1%}, DP-SGD {acc['dp']:.1%};
{CFG.num_clients * CFG.client_examples} training images in all, notebook 8 trains on 60,000): {over_rounds}.

**Local steps (base FL, round 1).** Median PSNR {one['median_psnr']:.1f} dB after {one['local_steps']:.0f} step,
{most['median_psnr']:.1f} dB after {most['local_steps']:.0f} steps ({most['recovered']:.0%} of the images recovered
against {one['recovered']:.0%}): leakage {'falls' if steps_fall else 'does not fall (by more than 1 dB)'} as local
steps grow.""" + ("" if len(steps) < 3 else f""" Per setting: """ + "; ".join(
    f"{name.removeprefix('base, ')}: {r['median_psnr']:.1f} dB" for name, r in steps.iterrows()) + """. What the
steps are matters: steps over the whole batch of 4 change the update little, steps over one image at a time mix the
images (and the client's shuffling departs from the case)."""))

# %%
# the claims above, checked on the rows (both modes); the full run's findings need the full run
assert set(rows["status"]) == {"attacked"}, rows["status"].value_counts()
assert len(rows) == len(METHODS) * len(AUDIT.rounds) * AUDIT.clients, len(rows)
assert rec.loc["dp", "sum"] == 0, "an image leaked through DP-SGD at epsilon 1"
if not QUICK:
    assert rec.loc["base", "sum"] > 0 and mean_psnr.loc[first, "base"] >= 25, mean_psnr.round(1).to_dict()
    assert rows.loc[rows["run"] == "dp", "dp_noise"].iloc[0] > 1
    # mixed precision: lower PSNR than base FL in every audited round, still recognisable by SSIM
    assert (mean_psnr["mixed"] < mean_psnr["base"] - 2).all() and median_ssim["mixed"] >= 0.5, median_ssim.to_dict()
    assert by_ssim["dp"] == 0 and images.loc[images["run"] == "dp", "psnr"].max() < 15
    full_batch = steps.loc["base, 5 steps: batch 4, 5 epochs", "median_psnr"]
    assert steps_fall and abs(full_batch - one["median_psnr"]) < 1, steps["median_psnr"].to_dict()
# the run that trains: every audited update attacked, fresh images in every audited round
assert set(train_rows["status"]) == {"attacked"} and len(train_rows) == len(TRAIN_AUDIT.rounds) * TRAIN_AUDIT.clients
seen = train_rows.groupby("client")["indices"].apply(lambda lists: sum(map(list, lists), []))
assert all(len(set(v)) == len(v) for v in seen), "a client trained on an image twice"
assert len(by_round) == len(TRAIN_AUDIT.rounds) and by_round["images"].eq(TRAIN_AUDIT.clients * TRAIN_CFG.round_examples).all()
assert check_curve["test_accuracy"].tolist() == train_curve["test_accuracy"].tolist()  # the same training again
assert set(check["index"]) == set(last_images["index"])  # the same images attacked
if not QUICK:
    assert late["test_accuracy"] > early["test_accuracy"] + 0.3, by_round["test_accuracy"].to_dict()  # it trained
