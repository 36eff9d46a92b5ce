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
# # 8. Mixed-precision quantized federated learning on Flower (seed 001)
#
# Seed 001 (Ovi, Dey, Roy, Gangopadhyay) trains LeNet-5 with FedAvg over 15 clients and sends
# every model update quantized layer by layer, int8 or int16 with a TensorFlow quantization mode
# per layer; the server dequantizes, averages, and sends the averaged update back quantized
# (Algorithm 1, steps 11, 13, 23, 25). It claims three things: accuracy close to plain FL and far
# above differential privacy (Table 1), no gradient leakage from the quantized update (Fig. 1-4,
# and an attacker would have to try m^L mode combinations), and 4x less traffic (174 kB to 44 kB).
#
# Here the federated runs go through **Flower 1.41** and its simulation engine: the clients'
# `ClientApp` is wrapped in `dlg_utils.federated.QuantizedUpdateMod` and the server runs
# `QuantizedFedAvg`; the same two objects serve a multi-process Flower deployment (README).
# Data: Fashion-MNIST (offline), plus MNIST and CIFAR-10 where present; an IID split into
# 15 equal shares. Model: LeNet-5 (tanh, average pooling; 44,426 parameters, 174 kB in float32,
# seed 001's figure).

# %%
import torch, pandas as pd, matplotlib.pyplot as plt
from dlg_utils.notebook import start
QUICK = start()  # DLG_QUICK=1 (or CI) shrinks the run; committed outputs are full runs

# %%
import numpy as np
from dlg_utils.data import load_dataset, num_classes
from dlg_utils.experiments import sweep, expand_histories
from dlg_utils.codec import decoding_errors, min_combined_worst_case, raw_bytes, upload_bytes
from dlg_utils.federated import FLConfig, client_data, dataset_options, dp_noise_multiplier, method_setup, table1_run
from dlg_utils.fl_leakage import leakage_sweep, one_step_update
from dlg_utils.models import get_model
from dlg_utils.notebook import present
from dlg_utils.quantization import MODES
from dlg_utils.plotting import fl_method_label, save_figure, leak_grid
from dlg_utils.config import RESULTS_DIR, output_path

DATASETS = ["fashion-mnist"] + ([] if QUICK else [d for d in ("mnist", "cifar10") if present(d)])
METHODS = ["base", "dp", "mixed", "int8", "int16", "mixed-wrong-mode"]
CFG = FLConfig(num_clients=2 if QUICK else 15, rounds=1 if QUICK else 20, local_epochs=1, batch_size=32,
               lr=0.05, momentum=0.9, client_examples=128 if QUICK else 0, test_examples=256 if QUICK else 0)
PAPER = {"mnist": {"base": 97.05, "dp": 89.94, "mixed": 96.67},
         "fashion-mnist": {"base": 86.8, "dp": 79.49, "mixed": 85.22},
         "cifar10": {"base": 60.04, "dp": 38.39, "mixed": 58.9}}
print(DATASETS, CFG)


# %% [markdown]
# ## Table 1: accuracy of base FL, FL with differential privacy, mixed-precision FL
#
# Every run: FedAvg, all clients every round, one local epoch of SGD (lr 0.05, momentum 0.9,
# batch 32) per round, the global model evaluated on the whole test set after every round. The
# DP baseline is **sample-level DP-SGD on every client** (Opacus: per-sample clipping to norm 1,
# Gaussian noise, Poisson sampling, RDP accountant) with the noise calibrated so the whole run
# spends epsilon = 1 at delta = 1e-5 on each client's data; the clients' data sets are disjoint,
# so the guarantee holds for every training example. DP-SGD takes a larger batch (128) and a
# larger step (lr 0.1), which suit it better than the plain runs' 32 and 0.05. Beside seed 001's methods: one precision
# for every layer (int8, int16), and the mixed policy with a server that dequantizes with the
# wrong modes (Fig. 4). Each finished run is stored at once (`results/fl_table1.jsonl`).

# %%
runs = sweep([{"dataset": d, "method": m, "config": CFG} for d in DATASETS for m in METHODS],
             lambda trial: table1_run(trial, CFG),
             output_path("fl_table1.jsonl", RESULTS_DIR), desc="federated runs")
curves = expand_histories(runs, keep=["dataset", "method"], column="history")
last = curves[curves["round"] == CFG.rounds].set_index(["dataset", "method"])
table = pd.DataFrame({
    "accuracy %": 100 * last["test_accuracy"],
    "best round %": 100 * curves.groupby(["dataset", "method"])["test_accuracy"].max(),
    "paper %": pd.Series({(d, m): v for d, ms in PAPER.items() for m, v in ms.items()}),
    "epsilon spent": last.get("epsilon-max"),
    "upload kB / round": last["up_bytes"] / 1000, "download kB / round": last["down_bytes"] / 1000,
    "wall s": runs.set_index(["dataset", "method"])["wall_seconds"]}).loc[last.index]
table.round(2)

# %%
dp_cfg = method_setup("dp", CFG)[0]
n = len(client_data(dp_cfg, 0))
sigma = dp_noise_multiplier(dp_cfg, n)
print(f"DP-SGD per client: {n} examples, batch {dp_cfg.batch_size} (sample rate {dp_cfg.batch_size / n:.4f}), "
      f"lr {dp_cfg.lr}, {dp_cfg.rounds * dp_cfg.local_epochs * int(np.ceil(n / dp_cfg.batch_size))} steps over the run, "
      f"noise multiplier {sigma:.3f}, clipping norm {dp_cfg.dp_clip}, delta {dp_cfg.dp_delta}")
dp = curves[curves["method"] == "dp"]
print("epsilon spent after each round (RDP accountant, largest over clients):",
      dp["epsilon-max"].dropna().round(3).tolist())

# %%
from matplotlib.ticker import MaxNLocator

# base, mixed, int8 and int16 end within a fraction of a point of each other, so on one scale their
# lines lie on top of each other: the left panel draws every method with its own marker and dashes,
# the right one only the quantized methods' difference from base FL, on a scale that separates them
styles = ["-", "--", "-.", ":", (0, (5, 1)), (0, (1, 1))]
QUANTIZED = ("mixed", "int8", "int16")
fig, axes = plt.subplots(len(DATASETS), 2, figsize=(13, 3.9 * len(DATASETS)), squeeze=False)
for row, (dataset, d) in zip(axes, curves.groupby("dataset", sort=False)):
    base_acc = d[d["method"] == "base"].set_index("round")["test_accuracy"]
    for k, (method, m) in enumerate(d.groupby("method", sort=False)):
        style = dict(marker="os^vDx"[k % 6], ms=4, ls=styles[k % 6], color=f"C{k}", label=fl_method_label(method, m, dp_cfg.dp_delta))
        row[0].plot(m["round"], 100 * m["test_accuracy"], **style)
        if method in QUANTIZED:
            row[1].plot(m["round"], 100 * (m.set_index("round")["test_accuracy"] - base_acc).values, **style)
    row[1].axhline(0, color=f"C{list(d['method'].unique()).index('base')}", lw=1, label="base FL")
    row[0].set(xlabel="round", ylabel="test accuracy %", title=f"{dataset}: test accuracy after each round")
    same = [q for q in QUANTIZED if (d[d["method"] == q].set_index("round")["test_accuracy"] == base_acc).all()]
    row[1].set(xlabel="round", ylabel="accuracy minus base FL's (points)",
               title=f"{dataset}: {', '.join(QUANTIZED)} minus base FL, same round"
                     + (f"\n({' and '.join(same)} equal{'s' if len(same) == 1 else ''} base FL in every round: "
                        "the line at 0)" if same else ""))
    for ax in row:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    row[0].legend(fontsize=8, title="method", loc="lower right")
    row[1].legend(fontsize=8, title="method", loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.suptitle(f"Table 1 runs: LeNet-5, FedAvg, {CFG.num_clients} clients, {CFG.rounds} rounds of 1 local epoch, "
             "1 run per method", fontsize=10)
fig.tight_layout()
save_figure(fig, "seed001_table1_accuracy_per_round.png")

# %% [markdown]
# ## Communication cost
#
# Bytes of one client's upload, measured as Flower serializes the message (protobuf payload:
# the arrays in numpy's format and, for the quantized ones, the ranges), for a real LeNet-5
# update under each precision; beside it what the simulations above measured per round.

# %%
torch.manual_seed(CFG.seed)
model = get_model("lenet5", **dataset_options(CFG))  # the global model of round 1
data = client_data(CFG, 0)
x, y = data[0]
update = one_step_update(model, x[None], torch.tensor([y]), CFG.lr)
params = sum(v.size for v in update.values())
cost = pd.DataFrame({"upload bytes": {p or "float32": upload_bytes(update, p) for p in (None, "int16", "mixed", "int8")}})
cost["vs float32"] = cost["upload bytes"].iloc[0] / cost["upload bytes"]
measured = last.xs("fashion-mnist")[["up_bytes", "down_bytes"]] / CFG.num_clients
print(f"LeNet-5: {params} parameters = {4 * params} bytes in float32, {params} in int8 "
      f"(seed 001: 174 kB -> 44 kB)")
display(cost)
measured.rename(columns={"up_bytes": "upload bytes / client / round", "down_bytes": "download bytes / client / round"})

# %% [markdown]
# ## Fig. 1-4: the gradient leakage attack on what a client sends
#
# The attack needs a single-image gradient, so the client here holds one training image and
# takes one SGD step (lr 0.05) from the round-1 global model: its update is -0.05 x gradient.
# The attacker (an eavesdropper or the server) runs DLG (L-BFGS, DLG's L2 gradient distance,
# 450 iterations as in seed 001; the label read from the last bias gradient, iDLG's rule for a
# tanh network) on what it can get (`ATTACK_VIEWS`):
#
# - **plain**: base FL's float32 update (Fig. 1 and 2, top);
# - **sent**: the mixed-precision update as it travels, its integers read as numbers (Fig. 1 and 2, bottom);
# - **server**: dequantized with the right modes, as the server does (Fig. 3);
# - **wrong-mode**: dequantized with a wrong mode for every tensor (Fig. 4);
# - **guess**: dequantized with MIN_COMBINED for every tensor, from the ranges in the message;
# - **sent, correlation**: the sent integers again, matched with a per-layer correlation
#   distance (1 - Pearson r per tensor) that is blind to each tensor's scale and offset, so it
#   needs neither the ranges nor the modes.

# %%
ATTACK_IMAGES = range(2 if QUICK else 8)
ITERATIONS = 20 if QUICK else 450
leaks = leakage_sweep(model, data, ATTACK_IMAGES, "mixed", CFG.lr, iterations=ITERATIONS,
                      path=output_path("fl_leakage_fashion-mnist.jsonl", RESULTS_DIR))
leaks["attack"] = leaks["view"] + np.where(leaks["distance"] == "correlation", ", correlation", "")
order = ["plain", "sent", "server", "wrong-mode", "guess", "sent, correlation"]
summary = leaks.groupby("attack").agg(trials=("mse", "size"), median_mse=("mse", "median"),
                                      median_psnr=("psnr", "median"), median_ssim=("ssim", "median"),
                                      label_right=("label_correct", "mean")).loc[order]
summary.round(4)


# %%
VIEWS = ("rows, what the attacker matches: plain = the float32 update (no quantization); sent = the int8/int16 "
         "integers as sent; server = dequantized with the right modes, as the server does; wrong-mode = dequantized "
         "with a wrong mode per tensor; guess = every tensor decoded as MIN_COMBINED from the ranges in the message; "
         "sent, correlation = the sent integers matched by 1 - Pearson r per tensor (needs neither ranges nor modes)")
one = leaks[(leaks["image"] == 0)].set_index("attack").loc[order].reset_index()
leak_grid(one, data[0][0], f"Fig. 1, 3, 4: DLG on a client's one-step update, LeNet-5 at init, fashion-mnist image 0, "
          f"{ITERATIONS} iterations, 1 trial per row (dummy seed {int(one['seed'].iloc[0])}; "
          f"{leaks['image'].nunique()} images in the table above)", "seed001_fig1_fig3_fig4_leakage_fashion-mnist.png",
          caption=VIEWS)

# %% [markdown]
# Fig. 2 repeats it on colour images: CIFAR-10 when present, otherwise the embedded colour
# photos (3 x 32 x 32), with LeNet-5 built for that input.

# %%
colour_name = "cifar10" if present("cifar10") else "samples"
colour = load_dataset(colour_name, train=True)
torch.manual_seed(CFG.seed)
colour_model = get_model("lenet5", in_channels=3, num_classes=num_classes(colour), image_size=32)
colour_leaks = leakage_sweep(colour_model, colour, range(1 if QUICK else 4), "mixed", CFG.lr,
                             iterations=ITERATIONS, path=output_path(f"fl_leakage_{colour_name}.jsonl", RESULTS_DIR))
colour_leaks["attack"] = colour_leaks["view"] + np.where(colour_leaks["distance"] == "correlation", ", correlation", "")
display(colour_leaks.groupby("attack").agg(trials=("mse", "size"), median_mse=("mse", "median"),
                                           median_psnr=("psnr", "median")).loc[order].round(4))
one = colour_leaks[colour_leaks["image"] == 0].set_index("attack").loc[order].reset_index()
leak_grid(one, colour[0][0], f"Fig. 2: the same attacks on a colour image ({colour_name} image 0), LeNet-5 3x32x32 "
          f"at init, {ITERATIONS} iterations, 1 trial per row", f"seed001_fig2_leakage_{colour_name}.png", caption=VIEWS)

# %% [markdown]
# ## The attacker's search space: must an attacker try m^L mode combinations?
#
# Seed 001 argues that an attacker who knows the ranges must try all m^L assignments of the m = 3
# modes to the L quantized tensors (3^10 = 59,049 for LeNet-5). The ranges travel in the
# message, so take that attacker, and measure per tensor how far each decoding is from the true
# update (relative L2 error).

# %%
errors = decoding_errors(update, "mixed")
display(errors.round(5))
POLICIES = range(50)  # random mode/precision policies: does decoding everything as MIN_COMBINED still work?
worst = min_combined_worst_case(update, POLICIES)
print(f"over {len(POLICIES)} random policies, decoding every tensor as MIN_COMBINED is off from the right decoding by "
      f"at most {worst * 255:.3f} int8 steps (of the tensor's range / 255)")

# %%
# the search-space claims of the text below, on the error table and the worst case just computed
own = errors.apply(lambda r: r[f"error decoded as {r['mode']}"], axis=1)
scaled_rows, min_rows = errors[errors["mode"] == "SCALED"], errors[errors["mode"] != "SCALED"]
cols = [f"error decoded as {m}" for m in MODES]
assert (scaled_rows[cols].sub(scaled_rows[cols[0]], axis=0).abs() < 1e-6).all().all(), \
    f"a SCALED tensor decodes differently under some mode: {scaled_rows}"
assert (min_rows["error decoded as SCALED"] > 2 * own[min_rows.index]).all() \
    and min_rows["error decoded as SCALED"].max() > 0.5, f"reading a MIN_* tensor as SCALED does not go wrong: {min_rows}"
assert (own < 0.1).all(), f"a tensor decoded with its own mode is off by {own.max():.1%}"
assert worst * 255 < 1, f"decoding every tensor as MIN_COMBINED is off by {worst * 255:.2f} int8 steps, more than one"

# %% [markdown]
# ## What the measurements say
#
# One run per method on this project's machine (2 CPU cores, no GPU, part of the time shared
# with other jobs, so the wall times are upper bounds). The committed outputs of the cells below
# are from the committed run.

# %%
from IPython.display import Markdown
fm, fm_curves = last.xs("fashion-mnist"), curves[curves["dataset"] == "fashion-mnist"]
acc, paper = 100 * fm["test_accuracy"], PAPER["fashion-mnist"]
wrong = fm_curves[fm_curves["method"] == "mixed-wrong-mode"]
wrong_best = wrong.loc[wrong["test_accuracy"].idxmax()]
spent = fm.loc["dp", "epsilon-max"]
missing = [d for d in ("mnist", "cifar10") if d not in DATASETS]
Markdown(f"""Fashion-MNIST, {CFG.num_clients} clients of {n:,} images each, {CFG.rounds} rounds.
{' and '.join(missing) + (' are' if len(missing) > 1 else ' is') + ' not on this machine (or not in quick mode); the notebook adds them wherever they load.' if missing else ''}

**Table 1, Fashion-MNIST (final round, test accuracy).**

| method | ours | seed 001 |
|---|---|---|
| base FL | {acc['base']:.2f}% | {paper['base']}% |
| FL with DP, epsilon {dp_cfg.dp_epsilon:g}, delta {dp_cfg.dp_delta:g} | {acc['dp']:.2f}% (epsilon spent: {spent:.3f}) | {paper['dp']}% |
| mixed precision | {acc['mixed']:.2f}% | {paper['mixed']}% |

- Base FL: {acc['base']:.2f}% here, {paper['base']}% in seed 001.
- Mixed precision: {acc['mixed']:.2f}% against base FL's {acc['base']:.2f}% (int8 {acc['int8']:.2f}%, int16
  {acc['int16']:.2f}%). Seed 001 lost {paper['base'] - paper['mixed']:.1f} points.
- DP-SGD at epsilon {dp_cfg.dp_epsilon:g} costs {acc['base'] - acc['dp']:.0f} points (seed 001:
  {paper['base'] - paper['dp']:.0f}). Its setting: noise multiplier {sigma:.2f}, clipping norm {dp_cfg.dp_clip:g},
  batch {dp_cfg.batch_size} with Poisson sampling (rate {dp_cfg.batch_size / n:.3f}),
  {dp_cfg.rounds * dp_cfg.local_epochs * int(np.ceil(n / dp_cfg.batch_size))} steps per client. The RDP accountant
  reports {spent:.3f} spent. An earlier try with batch 32 and lr 0.05 reached 66.0%. Seed 001 does not say how its
  DP was set up.
- A server that dequantizes with the wrong modes reaches {100 * wrong_best['test_accuracy']:.1f}% at its best (round
  {wrong_best['round']:.0f}) and ends at {acc['mixed-wrong-mode']:.1f}%. Seed 001 says it "will largely impact the
  performance".""")

# %%
# Table 1's claims. Both modes: DP-SGD spends (nearly all of) the budget it was calibrated to and
# no more. The accuracies need the full run (quick mode: 1 round on 256 images, near chance).
assert 0.9 * dp_cfg.dp_epsilon < spent <= dp_cfg.dp_epsilon + 1e-6, \
    f"DP-SGD spent epsilon {spent:.3f} of the {dp_cfg.dp_epsilon:g} it was calibrated to"
assert acc.between(0, 100).all(), f"an accuracy outside [0, 100]%: {acc.to_dict()}"
if not QUICK:
    for m in ("mixed", "int8", "int16"):
        assert abs(acc[m] - acc["base"]) < 1, f"{m} ends {acc[m] - acc['base']:+.2f} points from base FL"
    assert acc["dp"] < acc["base"] - 5, f"DP-SGD at epsilon 1 costs only {acc['base'] - acc['dp']:.1f} points"
    assert acc["mixed-wrong-mode"] < acc["mixed"] - 10 < 100 * wrong_best["test_accuracy"], \
        f"the wrong-mode server does not end far below mixed precision ({acc['mixed-wrong-mode']:.1f}%)"

# %%
raw = {p: raw_bytes(update, None if p == "float32" else p) for p in cost.index}
overhead = cost["upload bytes"] - pd.Series(raw)
mixed_sent = measured.loc["mixed"]
Markdown(f"""**Communication.** A client's upload, as Flower serializes it:

| precision | bytes | smaller than float32 by |
|---|---|---|
""" + "\n".join(f"| {p} | {b:,} | {'-' if p == 'float32' else f'{r:.2f}x'} |"
                for p, b, r in zip(cost.index, cost["upload bytes"], cost["vs float32"])) + f"""

The simulations measured {mixed_sent['up_bytes']:,.0f} bytes up and {mixed_sent['down_bytes']:,.0f} down per client and round
with mixed precision: the global update sent back is as small. Seed 001's 174 kB and 44 kB are LeNet-5's raw
parameter bytes ({4 * params:,} and {params:,}). The messages add {overhead.min():,.0f} to {overhead.max():,.0f}
bytes to the raw integers or floats: numpy's array headers, the ranges and protobuf. The mixed policy also keeps the
first and last layers at int16.""")

# %%
up = cost["upload bytes"]
assert up["int8"] < up["mixed"] < up["int16"] < up["float32"] and 3.5 < up["float32"] / up["int8"] < 4, \
    f"the uploads do not shrink as stated: {up.to_dict()}"
assert abs(mixed_sent["up_bytes"] / up["mixed"] - 1) < 0.01, \
    f"the simulation's mixed upload ({mixed_sent['up_bytes']:,.0f}) is not the message measured here ({up['mixed']:,})"
assert 0 < overhead.min() and overhead.max() < 5000, f"the framing adds {overhead.min()} to {overhead.max()} bytes"
if not QUICK:  # round 1 sends the whole float32 model down; later rounds the quantized global update
    assert mixed_sent["down_bytes"] < 1.1 * mixed_sent["up_bytes"], "the global update sent back is not as small"

# %%
from dlg_utils.stats import IMAGE_THRESHOLD
mse = summary["median_mse"]
plain = leaks[leaks["attack"] == "plain"]
colour_plain = colour_leaks[colour_leaks["attack"] == "plain"]
features = colour_model.features[:3](colour[0][0][None]).numel()  # after the first convolution and pooling
Markdown(f"""**Leakage (Fig. 1, 3, 4).** {len(ATTACK_IMAGES)} images, one {ITERATIONS}-iteration attack each.

- **Plain update (Fig. 1, top):** median MSE {mse['plain']:.3f}, PSNR {summary.loc['plain', 'median_psnr']:.1f} dB, SSIM
  {summary.loc['plain', 'median_ssim']:.2f}. The gradient distance falls below 1e-4 by iteration
  {plain['converged_at'].min():.0f}-{plain['converged_at'].max():.0f}, but a checkerboard of pixel noise stays: LeNet-5's
  pooling leaves it unconstrained, and {int((plain['mse'] < IMAGE_THRESHOLD).sum())} of {len(plain)} trials get below an
  image MSE of {IMAGE_THRESHOLD}.
- **Sent integers (Fig. 1, bottom):** MSE {mse['sent']:.2f}, as seed 001 shows.
- **Dequantized on the server (Fig. 3):** MSE {mse['server']:.3f}, as in seed 001's Fig. 3.
- **Wrong modes (Fig. 4):** MSE {mse['wrong-mode']:.2f}.
- The label (iDLG, from the last bias gradient) is right in {'every view' if summary['label_right'].min() == 1 else
  f"{summary['label_right'].min():.0%} of the attacks of the worst view"}.

**The attacker's search space: the m^L argument does not hold.**

- The ranges travel in the message, and the mode barely matters once they are known:
  - A SCALED tensor's range is symmetric, so all three modes decode it the same.
  - MIN_COMBINED and MIN_FIRST decode each other's tensors to within a fraction of a step.
  - Only reading a MIN_* tensor as SCALED goes wrong (the error table above).
- So one guess, every tensor decoded as MIN_COMBINED, replaces the {len(MODES)}^{len(update)} =
  {len(MODES) ** len(update):,} combinations. Over {len(POLICIES)} random policies it lands within {worst * 255:.2f}
  int8 steps of the right decoding. DLG on it reaches a median MSE of {mse['guess']:.3f}, against {mse['server']:.3f}
  with the server's own decoding.
- Even with no ranges and no modes at all, matching the sent integers with a per-layer correlation distance reaches
  a median MSE of {mse['sent, correlation']:.3f}: every TF mode is an affine map per tensor.
- Mixed precision therefore protects only against an attacker who feeds the raw integers to DLG's L2 distance. Any
  attacker who reads the ranges in the message, or who matches up to scale, gets as much as the server's decoding.

**Fig. 2 (colour).** On {colour_name} with LeNet-5 built for 3 x 32 x 32, DLG reaches a median MSE of
{colour_plain['mse'].median():.2f} in {ITERATIONS} iterations even from the plain update
({int((colour_plain['mse'] < IMAGE_THRESHOLD).sum())} of {len(colour_plain)} below {IMAGE_THRESHOLD}), its gradient
distance below 1e-4 by iteration {colour_plain['converged_at'].max():.0f}: after the first convolution and pooling
LeNet-5 keeps {features:,} values of {colour[0][0].numel():,} pixels, so many images share the gradient. Seed 001's
CIFAR-10 recovery probably used a different network for the attack; it does not say which. DLG's own LeNet
(notebooks 2-7) has no pooling and recovers colour images.""")

# %%
# the leakage claims, in both modes: the raw integers and the wrong modes leak far less than the
# server's decoding; one MIN_COMBINED guess and the correlation distance leak about as much as it
assert mse["sent"] > 5 * mse["server"] and mse["wrong-mode"] > 5 * mse["server"], \
    f"the sent integers or the wrong modes leak as much as the server's decoding: {mse.round(4).to_dict()}"
assert mse["guess"] < 2 * mse["server"] and mse["sent, correlation"] < 2 * mse["server"], \
    f"the MIN_COMBINED guess or the correlation attack leaks much less than the server's decoding: {mse.round(4).to_dict()}"
assert summary["label_right"].min() == 1, f"iDLG's label is wrong in some view: {summary['label_right'].to_dict()}"
assert plain["converged_at"].notna().all(), "DLG's gradient distance does not fall below 1e-4 on the plain update"
assert colour_plain["mse"].median() > 0.05 and features < colour[0][0].numel(), \
    f"LeNet-5 recovers the colour image (median MSE {colour_plain['mse'].median():.3f}) or keeps every pixel"
