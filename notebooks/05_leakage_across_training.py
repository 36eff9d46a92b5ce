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
# # 5. Leakage across training (seed 000 Fig. 6, 7, appendix C)
#
# DLG claims the attack works at any point of training; seed 000 (appendix C) attacks its model
# right after initialisation and after 5 training steps, finds the reconstruction fails after
# training, and conjectures that a model near convergence leaks less. Here the DLG LeNet is
# trained on real data with checkpoints at four stages (initialisation, 5 SGD steps, the middle
# and the end of training) and every stage is attacked, with and without a defense, over
# several training images and dummy seeds, so that the claim can be tested rather than shown
# on one run.
#
# The attacked model and its images are those of the training data set (default
# **Fashion-MNIST** at 1x28x28, offline; `DLG_DATASET=cifar10` or `cifar100` switches to the
# paper's setting when present). The sigmoid LeNet is trained with SGD, momentum 0.9, weight
# decay 5e-4, batch 128, but **lr 0.01**: with seed 000's lr 0.1 (set for ResNet-18) it stays at
# chance accuracy (measured: 10% test accuracy after 2 epochs; 81% with lr 0.01). The LeNet
# checkpoints are small and committed in `checkpoints/`; delete them to train again.

# %%
import os
import torch, pandas as pd, matplotlib.pyplot as plt
from dlg_utils.notebook import start
QUICK = start()  # DLG_QUICK=1 (or CI) shrinks the run; committed outputs are full runs

# %%
from torch.utils.data import Subset
from dlg_utils.attack import target_gradients
from dlg_utils.cases import mean_gradient_norm
from dlg_utils.data import load_dataset
from dlg_utils.models import get_model
from dlg_utils.attack import dlg_batch
from dlg_utils.training import TrainConfig, train, load_checkpoint
from dlg_utils.experiments import AttackTrial, attack_sweep, expand_histories
from dlg_utils.plotting import reconstruction_grid, metric_curves, save_figure
from dlg_utils.config import CHECKPOINTS_DIR, RESULTS_DIR, output_path
from dlg_utils.stats import IMAGE_THRESHOLD

DATASET = os.environ.get("DLG_DATASET", "fashion-mnist")
EPOCHS = 2 if QUICK else 10
TRAIN_SUBSET = 1024 if QUICK else None  # None: the whole training set
LR = 0.01
STAGES = ["start", "step5", "middle", "converged"]  # step5: seed 000's "after 5 iterations"
DEFENSES = ["none", "uniform:120", "sparsity:0.2"]   # both still leak at initialisation (notebook 3)
IMAGES = list(range(2 if QUICK else 4))             # the first training images
SEEDS = list(range(2 if QUICK else 4))
ITERATIONS = 20 if QUICK else 300
train_full, test_full = load_dataset(DATASET), load_dataset(DATASET, train=False)
x0, _ = train_full[0]
channels, size, classes = x0.shape[0], x0.shape[-1], len(train_full.classes)
run_name = f"lenet_{DATASET}" + ("_quick" if QUICK else "")
paths = {s: CHECKPOINTS_DIR / f"{run_name}_{s}.pt" for s in STAGES}
if not all(p.exists() for p in paths.values()):
    torch.manual_seed(0)
    model = get_model("lenet", in_channels=channels, num_classes=classes, image_size=size)  # DLG's init: the attack's usual target
    train_set = train_full if TRAIN_SUBSET is None else Subset(train_full, range(TRAIN_SUBSET))
    train(model, train_set, test_full, TrainConfig(epochs=EPOCHS, lr=LR, checkpoint_dir=CHECKPOINTS_DIR,
                                                   run_name=run_name, dataset_name=DATASET, checkpoint_steps=[5]))
models, meta = {}, {}
for stage, path in paths.items():
    models[stage], meta[stage] = load_checkpoint(path)
stages = pd.DataFrame(meta).T[["epoch", "step", "test_loss", "test_accuracy"]]
# the mean norm of the shared (undefended) gradient over the attacked images
stages["gradient norm"] = [mean_gradient_norm(models[s], train_full, IMAGES) for s in STAGES]
stages

# %%
from IPython.display import Markdown
acc, norm = stages["test_accuracy"].astype(float), stages["gradient norm"]
Markdown(f"""The four stages: test accuracy {acc['start']:.2f} at initialisation and {acc['step5']:.2f} after 5 steps,
{acc['middle']:.2f} at epoch {meta['middle']['epoch']} and {acc['converged']:.2f} at epoch
{meta['converged']['epoch']}; the mean norm of the shared gradient falls from {norm['start']:.1f} to
{norm['step5']:.1f}, {norm['middle']:.1f} and {norm['converged']:.1f}.""")

# %%
assert norm.is_monotonic_decreasing and norm["converged"] < norm["start"], \
    f"the shared gradient's norm does not fall with training: {norm.round(2).tolist()}"
assert acc["converged"] > acc["start"] + (0.5 if not QUICK else 0.05), \
    f"training does not raise test accuracy enough: {acc['start']:.2f} -> {acc['converged']:.2f}"

# %%
trials = [AttackTrial(i, k, d, "dlg", s, {"iterations": ITERATIONS})
          for s in STAGES for d in DEFENSES for i in IMAGES for k in SEEDS]
# iDLG (label extracted, not learned) without a defense: does leakage fall, or only DLG's label search?
trials += [AttackTrial(i, k, "none", "idlg", s, {"iterations": ITERATIONS})
           for s in STAGES for i in IMAGES for k in SEEDS]
rows = attack_sweep(trials, models, train_full, output_path(f"leakage_across_training_{DATASET}.jsonl", RESULTS_DIR))
rows["case"] = rows["defense"].where(rows["attack"] == "dlg", "none, iDLG")  # the key of the tables below
rows["attack, defense"] = ("DLG, " + rows["defense"]).where(rows["attack"] == "dlg", "iDLG, none")
history = expand_histories(rows, keep=["image", "seed", "attack, defense", "model"]).rename(columns={"model": "stage"})
setting = (f"DLG LeNet trained on {DATASET}, {ITERATIONS} iterations, {len(IMAGES)} training images x "
           f"{len(SEEDS)} dummy seeds per curve")
print(f"{len(trials)} attacks: {setting}")

# %%
fig, axes = plt.subplots(1, len(STAGES), figsize=(4.2 * len(STAGES), 3.6), sharey=True)
for ax, stage in zip(axes, STAGES):
    acc = meta[stage]["test_accuracy"]
    metric_curves(history[history["stage"] == stage], "l1", "attack, defense", ax=ax,
                  title=f"{stage} (test accuracy {acc:.2f})")
    ax.set_ylabel("L1 error of the reconstruction")
    if ax is not axes[-1]:
        ax.get_legend().remove()
axes[-1].legend(title="attack, defense", fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.suptitle(f"Fig. 6/7: L1 of the reconstruction per iteration at four training stages - {setting}, "
             "mean and 95% band", fontsize=10)
fig.tight_layout()
save_figure(fig, "fig6_fig7_l1_across_training.png");

# %%
# the first dummy seed that recovers image IMAGES[0] from the untrained model, so that the rows show
# what training changes, not an unlucky seed
at_start = rows[(rows["model"] == "start") & (rows["case"] == "none") & (rows["image"] == IMAGES[0])]
ok = at_start[at_start["mse"] < IMAGE_THRESHOLD]
SEED = int(ok["seed"].min()) if len(ok) else SEEDS[0]
x, y = train_full[IMAGES[0]]
grads = [target_gradients(models[s], x[None], torch.tensor([y])) for s in STAGES]
its = sorted({0, 5, 10, 20, 50, 100, 200, ITERATIONS} & set(range(ITERATIONS + 1)))
shown = dlg_batch([models[s] for s in STAGES], grads, image_shape=x[None].shape, num_classes=classes,
                  iterations=ITERATIONS, seeds=SEED, ground_truths=x[None], snapshot_at=its)
reconstruction_grid([(f"{s} ({meta[s]['test_accuracy']:.2f})", r) for s, r in zip(STAGES, shown)], truth=x,
                    iterations=its, title=f"Fig. 6: DLG on the LeNet at four training stages (test accuracy), "
                    f"no defense, {DATASET} training image {IMAGES[0]}, dummy seed {SEED}, {ITERATIONS} iterations",
                    path="fig6_reconstructions_across_training.png");

# %%
rows["recovered"] = rows["mse"] < IMAGE_THRESHOLD
summary = rows.groupby(["model", "case"], sort=False).agg(
    recovered=("recovered", "mean"), mse=("mse", "mean"), ssim=("ssim", "mean"),
    grad_distance=("grad_distance", "median"), label_correct=("label_correct", "mean"), trials=("seed", "size"))
summary.index = summary.index.set_names(["stage", "attack (DLG unless iDLG)"])
summary.join(stages[["test_accuracy", "gradient norm"]], on="stage").round(4)

# %%
from IPython.display import Markdown
n = len(IMAGES) * len(SEEDS)
recovered = lambda stage, case: int(rows[(rows["model"] == stage) & (rows["case"] == case)]["recovered"].sum())
counts = lambda attack: ", ".join(str(recovered(s, attack)) for s in STAGES)
dlg = rows[rows["attack"] == "dlg"].groupby(["model", "case"], sort=False)
label_right = dlg["label_correct"].mean()
before, after = label_right.loc[["start", "step5"]], label_right.loc[["middle", "converged"]]
distance = rows.groupby(["model", "case"], sort=False)["grad_distance"].median()
Markdown(f"""**What to see** (this run: the DLG LeNet trained on {len(train_full) if TRAIN_SUBSET is None else TRAIN_SUBSET:,}
{DATASET} images for {EPOCHS} epochs; {len(IMAGES)} training images x {len(SEEDS)} dummy seeds = {n} attacks per
cell, {ITERATIONS} iterations, {len(trials)} attacks in all).

- **Leakage falls as training goes on**, as seed 000 conjectures: DLG without a defense recovers the image (MSE
  below {IMAGE_THRESHOLD}) in {counts('none')} of {n} attacks at initialisation, after 5 steps, at the middle and
  at the end of training; iDLG (the true label extracted from the gradient) in {counts('none, iDLG')}. With
  uniform 120 levels: {counts('uniform:120')}; with 20% sparsity: {counts('sparsity:0.2')}.
- **It does not stop**: with the label known, {recovered('middle', 'none, iDLG')} and
  {recovered('converged', 'none, iDLG')} of {n} attacks on the half- and fully trained model still return the
  training image pixel for pixel. Much of DLG's drop is its label search: its learned label is right in
  {before.min():.0%}-{before.max():.0%} of the attacks before training and in {after.min():.0%}-{after.max():.0%}
  after, and its median final gradient distance on the trained models is {distance[('middle', 'none')]:.0f}
  (middle) and {distance[('converged', 'none')]:.0f} (end), against {distance[('middle', 'none, iDLG')]:.2g} and
  {distance[('converged', 'none, iDLG')]:.2g} for iDLG.
- **Seed 000's appendix C** reports that the attack fails after 5 training iterations. Not here: 5 SGD steps
  (lr {LR}) leave the model at test accuracy {meta['step5']['test_accuracy']:.2f} and the leakage nearly intact
  ({recovered('step5', 'none')} of {n} DLG, {recovered('step5', 'none, iDLG')} of {n} iDLG). Seed 000 does not
  give the learning rate of those 5 iterations (ResNet-18 used 0.1), so larger steps may explain its result; on
  this evidence the claim that early training stops DLG does not hold, the weaker claim that trained models leak
  less does.

With {n} attacks per cell each count has a wide interval (plus or minus about {1.96 * (n / 4) ** 0.5:.0f}). The
reconstructions (Fig. 6) show the same: the untrained and 5-step models give the image back within 10
iterations, the trained ones converge to a saturated pattern.""")

# %%
# the claims above, on this run's counts. In quick mode the model is barely trained (2 epochs on
# 1,024 images), so that leakage falls with training is checked only in the full run; that iDLG
# still recovers the image at every stage, and its label, hold in both.
idlg = rows[rows["case"] == "none, iDLG"]
assert idlg["label_correct"].all(), "iDLG's extracted label is wrong in some attack"
assert recovered("start", "none, iDLG") == recovered("step5", "none, iDLG") == n, \
    "iDLG does not recover every image from the untrained or the 5-step model"
assert recovered("middle", "none, iDLG") >= 1 and recovered("converged", "none, iDLG") >= 1, \
    "iDLG recovers nothing from the trained models: leakage stops, against the text"
assert recovered("step5", "none") >= 1, "DLG recovers nothing after 5 steps (seed 000's appendix C would hold)"
if not QUICK:
    early = recovered("start", "none") + recovered("step5", "none")
    late = recovered("middle", "none") + recovered("converged", "none")
    assert early > 2 * late, f"DLG's leakage does not fall with training: {early} early vs {late} late of {2 * n}"
    assert recovered("middle", "none, iDLG") < n and recovered("converged", "none, iDLG") < n, \
        "iDLG recovers everything from the trained models too"
    assert before.min() > after.max(), f"DLG's learned label is not worse after training: {before.tolist()} vs {after.tolist()}"
