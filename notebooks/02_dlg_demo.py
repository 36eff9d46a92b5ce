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
# # 2. Deep Leakage from Gradients on one image (seed 000 Fig. 1)
#
# The attack of Zhu et al. (2019) against the DLG LeNet (4 convolutions, uniform init in
# [-0.5, 0.5]): a dummy image and label drawn from N(0, 1) are optimised with L-BFGS (lr 1,
# history 100, 20 evaluations per step) until their gradient matches the shared one. Seed 000
# runs it for 100 iterations, the DLG paper for 300. Several dummy seeds run together in the
# batched engine, because the outcome depends on the seed (seed 002).

# %%
import torch, pandas as pd, matplotlib.pyplot as plt
from dlg_utils.notebook import start
QUICK = start()  # DLG_QUICK=1 (or CI) shrinks the run; committed outputs are full runs

# %%
from dlg_utils.attack import idlg_label, target_gradients
from dlg_utils.data import load_dataset
from dlg_utils.models import get_model
from dlg_utils.attack import dlg_batch
from dlg_utils.plotting import reconstruction_grid, save_figure
from dlg_utils.stats import IMAGE_THRESHOLD, recovered

IMAGE, MODEL_SEED = 0, 0
ITERATIONS = 30 if QUICK else 300
SEEDS = list(range(2 if QUICK else 8))
data = load_dataset("samples")
torch.manual_seed(MODEL_SEED)
model = get_model("lenet", in_channels=3, num_classes=100, image_size=32)
x, y = data[IMAGE]
grads = target_gradients(model, x[None], torch.tensor([y]))

# %% [markdown]
# iDLG reads the label off the sign of the last layer's gradient (checked by nbval):

# %%
# NBVAL_CHECK_OUTPUT
print(f"true label {y} ({data.classes[y]}), iDLG label {idlg_label(grads)}")

# %%
results = dlg_batch(model, [grads] * len(SEEDS), image_shape=x[None].shape, num_classes=100,
                    iterations=ITERATIONS, seeds=SEEDS, ground_truths=x[None])
table = pd.DataFrame([{"seed": r.seed, "final grad distance": r.final["grad_distance"], "image MSE": r.final["mse"],
                       "PSNR": r.final["psnr"], "SSIM": r.final["ssim"], "DLG label": int(r.label[0]),
                       "converged at": r.converged_at, "recovered": recovered(r.final["mse"], "mse")}
                      for r in results])
table.style.format({"final grad distance": "{:.2e}", "image MSE": "{:.2e}", "PSNR": "{:.1f}", "SSIM": "{:.4f}"})

# %%
step = max(1, ITERATIONS // 10)
its = list(range(0, ITERATIONS + 1, step))
title = (f"DLG on LeNet, embedded image {IMAGE} ({data.classes[y]}), {ITERATIONS} L-BFGS iterations, "
         f"dummy seeds {SEEDS[0]}-{SEEDS[-1]} (one row each)")
fig = reconstruction_grid([(f"seed {r.seed}", r) for r in results], truth=x, iterations=its, title=title,
                          path="fig1_dlg_demo_grid.png")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for r in results:
    axes[0].semilogy(r.history["iteration"], r.history["grad_distance"], lw=1, label=f"seed {r.seed}")
    axes[1].semilogy(r.history["iteration"], r.history["mse"], lw=1)
axes[0].axhline(1e-4, color="k", ls=":", lw=1, label="1e-4 (seed 002)")
axes[1].axhline(IMAGE_THRESHOLD, color="k", ls=":", lw=1)
axes[0].set(xlabel="iteration", ylabel="gradient distance"), axes[1].set(xlabel="iteration", ylabel="image MSE")
axes[0].legend(fontsize=7, ncol=2)
fig.suptitle(f"DLG loss and image error per iteration, LeNet, embedded image {IMAGE}, {len(SEEDS)} seeds", fontsize=10)
fig.tight_layout()
save_figure(fig, "fig1_dlg_demo_curves.png");

# %%
from IPython.display import Markdown
ok, stalled = table[table["recovered"]], table[~table["recovered"]]
at = ok["converged at"].astype(float)
labels_right = int((table["DLG label"] == y).sum())
recovered_text = (f"{len(ok)} of the {len(table)} seeds recover the photo (image MSE {ok['image MSE'].min():.0e} to "
                  f"{ok['image MSE'].max():.0e}, PSNR {ok['PSNR'].min():.0f} to {ok['PSNR'].max():.0f} dB, SSIM "
                  f"{ok['SSIM'].min():.3f} or more), their gradient distance falling below seed 002's 1e-4 at "
                  f"iterations {at.min():.0f} to {at.max():.0f}" if len(ok) else "no seed recovers the photo")
stalled_text = "; ".join(f"Seed {r['seed']} stalls at a gradient distance of {r['final grad distance']:.2g} "
                         f"with an image MSE of {r['image MSE']:.2f}" for _, r in stalled.iterrows())
Markdown(f"""**What to see.** Seed 000's Fig. 1 shows the attack turning noise into the training image.
In this run ({ITERATIONS} iterations, {len(SEEDS)} dummy seeds) {recovered_text}, and {labels_right} of the
{len(table)} learned DLG labels are right; iDLG's analytic one is {'right' if idlg_label(grads) == y else 'wrong'}.
{stalled_text + ':' if len(stalled) else 'No seed stalls here, but'} the failure mode seed 002 counts (it reports
a 0.68 success rate for LeNet on CIFAR-100), so a single run per image says little about leakage. On LeNet the
image error falls together with the gradient distance, as seed 002 reports for LeNet (and not for ResNet-18).""")

# %%
# what the text above says, checked on this run (quick mode: too few iterations to recover, so the
# recovery itself is checked only in the full run; the attack must still make progress)
assert idlg_label(grads) == y, f"iDLG's label {idlg_label(grads)} is not the true label {y}"
assert labels_right >= len(table) / 2, f"DLG learned the right label in only {labels_right} of {len(table)} seeds"
for r in results:
    h = r.history
    start, end = h["grad_distance"].iloc[0], h["grad_distance"].iloc[-1]
    assert end < start / 100, f"seed {r.seed}: the gradient distance only fell from {start:.3g} to {end:.3g}"
    assert h["mse"].iloc[-1] < h["mse"].iloc[0], f"seed {r.seed}: the image error did not fall"
    together = h["grad_distance"].corr(h["mse"], method="spearman")
    assert together > 0.5, f"seed {r.seed}: image error and gradient distance do not fall together (rho {together:.2f})"
if not QUICK:
    assert len(ok) >= 1, "no dummy seed recovers the photo in the full run"
    assert (ok["SSIM"] > 0.9).all() and (ok["image MSE"] < IMAGE_THRESHOLD).all(), f"a 'recovered' seed is blurred: {ok}"
    assert ok["converged at"].notna().all() and (ok["DLG label"] == y).all(), \
        f"a recovered seed did not converge or learned the wrong label: {ok}"
