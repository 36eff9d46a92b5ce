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
# # 1. Gradient quantization, illustrated
#
# What the defenses of seed 000 (uniform quantization, stochastic rounding, sparsification) and
# seed 001 (mixed int8/int16 TensorFlow quantization) do to a **real gradient**: the gradient of
# the DLG LeNet (4 convolutions, DLG's uniform init) on one embedded photo. Each defense works on
# one tensor (layer) at a time, on that tensor's own [min, max] grid.

# %%
import torch, pandas as pd, matplotlib.pyplot as plt
from dlg_utils.notebook import start
QUICK = start()  # DLG_QUICK=1 (or CI) shrinks the run; committed outputs are full runs

# %%
from dlg_utils.attack import target_gradients
from dlg_utils.data import load_dataset
from dlg_utils.models import get_model
from dlg_utils.defenses import (UniformQuantization, StochasticRounding, Sparsification,
                                MixedPrecision, level_errors, stochastic_average_error)
from dlg_utils.quantization import quantize, quantize_dequantize, mode_errors, MODES
from dlg_utils.plotting import save_figure

IMAGE, MODEL_SEED = 0, 0
data = load_dataset("samples")
torch.manual_seed(MODEL_SEED)
model = get_model("lenet", in_channels=3, num_classes=100, image_size=32)
x, y = data[IMAGE]
grads = target_gradients(model, x[None], torch.tensor([y]))
names = [n for n, _ in model.named_parameters()]
layer = names.index("body.2.weight")  # the second convolution's weights
g = grads[layer]
print(f"{names[layer]}: {g.numel()} entries, min {g.min():.3e}, max {g.max():.3e}")

# %% [markdown]
# A fixed tensor through each quantizer (checked by nbval: these values must not change).

# %%
# NBVAL_CHECK_OUTPUT
t = torch.tensor([-1.0, -0.62, -0.2, 0.0, 0.13, 0.5, 0.77, 1.0])
rows = {"input": t.tolist(),
        "uniform:5": UniformQuantization(5)([t])[0].tolist(),
        "sparsity:0.5": Sparsification(0.5)([t])[0].tolist()}
for dtype, mode in [("qint8", "MIN_COMBINED"), ("qint8", "SCALED"), ("quint8", "MIN_FIRST")]:
    q, lo, hi = quantize(t, -1, 1, dtype, mode)
    rows[f"{dtype}/{mode} q"] = q.tolist()
pd.DataFrame(rows).T.round(4)

# %% [markdown]
# ## Histograms of one layer's gradient under each defense

# %%
gen = torch.Generator().manual_seed(0)
variants = {"original": g, "uniform:16": UniformQuantization(16)([g])[0],
            "stochastic:16": StochasticRounding(16)([g], gen)[0], "sparsity:0.2": Sparsification(0.2)([g])[0],
            "int8 SCALED": quantize_dequantize(g, "qint8", "SCALED")}
fig, axes = plt.subplots(1, len(variants), figsize=(16, 2.8), sharey=True)
bins = torch.linspace(float(g.min()), float(g.max()), 80)
for ax, (name, v) in zip(axes, variants.items()):
    ax.hist(v.flatten().numpy(), bins=bins.numpy(), color="C0")
    ax.set_title(f"{name}: {v.unique().numel()} values", fontsize=9)
    ax.set_yscale("log")
fig.suptitle(f"Gradient of LeNet {names[layer]} on embedded image {IMAGE} (1 image, DLG uniform init)", fontsize=10)
fig.tight_layout()
save_figure(fig, "quantization_histograms.png");

# %% [markdown]
# ## Error against the number of levels, and stochastic rounding's lack of bias
#
# Uniform quantization's error per entry is at most half a step, (max - min) / (2 (levels - 1));
# stochastic rounding's is up to a whole step but **zero on average**: averaging n independent
# draws converges to the true gradient as 1/sqrt(n), while uniform rounding keeps its bias.

# %%
levels = [4, 8, 16, 32, 64, 120, 240, 1024]
draws = 8 if QUICK else 64
err = level_errors(g, levels, draws)
fig, ax = plt.subplots(figsize=(6, 3.6))
for col in err.columns[1:]:
    ax.loglog(err["levels"], err[col], marker="o", label=col)
ax.set_xlabel("levels"), ax.set_ylabel("|error| per entry"), ax.legend(fontsize=7)
ax.set_title(f"LeNet {names[layer]} gradient: error vs levels ({draws} stochastic draws)", fontsize=9)
save_figure(fig, "quantization_error_vs_levels.png")
err.round(8)

# %%
# the claims of the text above, checked on the numbers just computed
assert (err["uniform max |err|"] <= err["half step"] * (1 + 1e-5)).all(), \
    f"uniform quantization is off by more than half a step: {err[['levels', 'uniform max |err|', 'half step']]}"
for col in ("uniform mean |err|", "stochastic mean |err|", f"stochastic, mean of {draws} draws"):
    assert err[col].is_monotonic_decreasing, f"{col} does not fall with more levels: {err[col].tolist()}"
shrink = err["uniform mean |err|"].iloc[0] / err["uniform mean |err|"].iloc[-1]
assert shrink > 0.5 * levels[-1] / levels[0], \
    f"the error does not shrink as 1/levels: {levels[0]} -> {levels[-1]} levels divides it by only {shrink:.0f}"
assert (err[f"stochastic, mean of {draws} draws"] < err["stochastic mean |err|"]).all(), \
    "averaging stochastic roundings does not reduce the error"

# %%
n = 2000 if not QUICK else 200
L = 16
curve = stochastic_average_error(g, L, n, at=(1, 4, 16, 64, 256, 1024), seed=1)
uniform_bias = float((UniformQuantization(L)([g])[0] - g).abs().mean())
fig, ax = plt.subplots(figsize=(5, 3.3))
ax.loglog(curve["draws"], curve["mean |avg - g|"], "o-", label="stochastic:16, running mean")
ax.axhline(uniform_bias, color="C3", ls="--", label="uniform:16 (deterministic)")
ax.loglog(curve["draws"], curve["mean |avg - g|"].iloc[0] / curve["draws"] ** 0.5, ":", color="gray", label="1/sqrt(n)")
ax.set_xlabel("draws averaged"), ax.legend(fontsize=8)
ax.set_title(f"Stochastic rounding is unbiased (LeNet {names[layer]}, {n} draws)", fontsize=9)
save_figure(fig, "stochastic_rounding_unbiased.png")
curve

# %%
one_draw, averaged = curve["mean |avg - g|"].iloc[0], curve["mean |avg - g|"].iloc[-1]
assert averaged < 2 * one_draw / n ** 0.5, \
    f"the running mean of {n} draws ({averaged:.2e}) does not follow 1/sqrt(n) from one draw's {one_draw:.2e}"
assert averaged < uniform_bias / 5, \
    f"stochastic rounding looks biased: mean of {n} draws {averaged:.2e} vs uniform's bias {uniform_bias:.2e}"

# %% [markdown]
# ## Seed 001's int8 / int16 TensorFlow modes on the whole gradient
#
# Every layer quantized over its own range with each mode and dequantized with the same mode
# (what the server does), and with a different mode (seed 001 Fig. 4's mismatch). TF widens each
# range to contain 0 and to be at least 0.01 wide; gradients much smaller than that lose
# precision (see the relative error of the small bias gradients).

# %%
modes = mode_errors(grads, ("qint8", "qint16"))
modes.round(4)

# %%
mixed = MixedPrecision("default")
policy = mixed.layers(len(grads))
out = mixed(grads)
pd.DataFrame([{"tensor": n, "dtype": p.dtype, "mode": p.mode, "max |g|": float(t.abs().max()),
               "relative error": float((o - t).norm() / t.norm())}
              for n, p, t, o in zip(names, policy, grads, out)]).round(5)

# %%
from IPython.display import Markdown
int8_right = [modes.loc[("qint8", m), m] for m in MODES]
int16_right = [modes.loc[("qint16", m), m] for m in MODES]
as_scaled = [modes.loc[(d, m), "SCALED"] for d in ("qint8", "qint16") for m in ("MIN_COMBINED", "MIN_FIRST")]
swapped = [modes.loc[("qint8", a), b] for a, b in [("MIN_COMBINED", "MIN_FIRST"), ("MIN_FIRST", "MIN_COMBINED")]]
scaled = modes.xs("SCALED", level="quantize")
scaled_exact = bool((scaled.sub(scaled["SCALED"], axis=0).abs() < 1e-6).all().all())
peaks = [float(t.abs().max()) for t in grads]
Markdown(f"""**What to see.** The histograms show uniform quantization collapsing the gradient onto 16
values and sparsification carving out the entries nearest zero, while int8 keeps almost the
whole shape ({variants['int8 SCALED'].unique().numel()} distinct values). The error shrinks as 1/levels for both
rounding schemes; stochastic rounding makes larger single errors but averages to the true gradient (the
running mean follows 1/sqrt(n) down to {curve['mean |avg - g|'].iloc[-1]:.1e} after {n} draws), while uniform
rounding stays biased ({uniform_bias:.1e} per entry at {L} levels) however many gradients are averaged.

The mode table qualifies seed 001's Fig. 4 claim that a wrong dequantization mode ruins the
gradient: dequantizing a MIN_COMBINED or MIN_FIRST tensor as SCALED costs about
{sum(as_scaled) / len(as_scaled):.0%} relative error, but MIN_COMBINED and MIN_FIRST are interchangeable (at most
{max(swapped):.1%} at int8), and a SCALED tensor dequantizes {'exactly' if scaled_exact else 'almost exactly'}
with MIN_COMBINED or MIN_FIRST, because SCALED's adjusted range makes the three formulas coincide. With
the right mode int8 costs {min(int8_right):.1%} to {max(int8_right):.1%} of the gradient's norm and int16
{max(int16_right):.3%} or less; TF's 0.01 minimum range does not bite here, since these gradients reach
{min(peaks):.1f} to {max(peaks):.1f}.""")

# %%
# the mode table's claims, as stated above
assert min(as_scaled) > 0.3, f"a MIN_* tensor read as SCALED costs only {min(as_scaled):.1%}: not the large error stated"
assert max(swapped) < 0.02, f"MIN_COMBINED and MIN_FIRST are not interchangeable at int8: {max(swapped):.1%}"
assert scaled_exact, f"a SCALED tensor does not dequantize alike under every mode: {scaled}"
assert max(int8_right) < 0.02 and max(int16_right) < 1e-3, \
    f"the right mode costs more than stated: int8 {max(int8_right):.2%}, int16 {max(int16_right):.4%}"
assert min(peaks) > 0.01, f"a gradient tensor peaks at {min(peaks):.3g}, inside TF's 0.01 minimum range"
