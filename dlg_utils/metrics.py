"""Image metrics on images in [0, 1] (N x C x H x W or C x H x W), one value per image (the
success criteria built on them are in :mod:`~dlg_utils.stats`). LPIPS is scored only where
torchvision's ImageNet AlexNet weights are already on disk (:func:`lpips_available`)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure


def _batch(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() == 3:
        a, b = a[None], b[None]
    return a.detach().float(), b.detach().float()


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image."""
    a, b = _batch(a, b)
    return ((a - b) ** 2).flatten(1).mean(1)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image (seed 000's "L1 loss")."""
    a, b = _batch(a, b)
    return (a - b).abs().flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1; +inf for identical images."""
    return -10 * torch.log10(mse(a, b))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity (torchmetrics: 11x11 Gaussian window, sigma 1.5, data range 1)."""
    a, b = _batch(a, b)
    return structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")


METRICS = {"mse": mse, "l1": l1, "psnr": psnr, "ssim": ssim}
LPIPS_SIZE = 64  # images smaller than this are resized to it for AlexNet (torch-fidelity's LPIPS does too)


def lpips_weights() -> Path:
    """Where LPIPS's backbone weights must be: torchvision's ImageNet AlexNet checkpoint in
    torch hub's cache (``$TORCH_HOME/hub/checkpoints``). Nothing here downloads them."""
    from torchvision.models import AlexNet_Weights
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(AlexNet_Weights.IMAGENET1K_V1.url).name


def lpips_available() -> bool:
    """Whether :func:`lpips` can run: its backbone weights are on disk."""
    return lpips_weights().is_file()


@lru_cache(maxsize=2)
def _lpips_net(weights: str) -> torch.nn.Module:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).net.eval()


def lpips(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS distance per image (Zhang et al. 2018; AlexNet with torchmetrics' learned heads, the
    LPIPS authors' default; 0 for identical images, lower is closer). Grey images are repeated
    to three channels and images under 64 px resized bilinearly to 64, as AlexNet's pooling needs."""
    weights = lpips_weights()
    if not weights.is_file():
        raise FileNotFoundError(f"LPIPS needs torchvision's ImageNet AlexNet weights at {weights}, which are not "
                                "downloaded here: copy that file from a machine with internet access, or score "
                                "without LPIPS")
    a, b = _batch(a, b)
    if a.shape[1] not in (1, 3):
        raise ValueError(f"LPIPS scores grey or RGB images, got {a.shape[1]} channels")
    x = torch.cat([a, b]).cpu().clamp(0, 1).expand(-1, 3, -1, -1)
    if min(x.shape[-2:]) < LPIPS_SIZE:
        x = F.interpolate(x, size=(LPIPS_SIZE, LPIPS_SIZE), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return _lpips_net(str(weights))(x[:len(a)], x[len(a):], normalize=True).flatten().to(a.device)


def metric_functions() -> dict:
    """The metrics scored here: :data:`METRICS`, and ``lpips`` where its weights are present."""
    return METRICS | ({"lpips": lpips} if lpips_available() else {})


def image_table(images: torch.Tensor, truths: torch.Tensor, metrics: dict | None = None) -> list[dict[str, float]]:
    """Per trial, the mean of each metric over the trial's images: ``images`` and ``truths``
    are T x N x C x H x W (or T x C x H x W); images are clamped to [0, 1] first. ``metrics``:
    name -> function, by default :data:`METRICS` (the cheap ones: an attack's history records
    them every few iterations, and LPIPS's AlexNet there would cost more than the attack's step)."""
    if images.dim() == 4:
        images, truths = images[:, None], truths[:, None]
    if images.shape != truths.shape:
        raise ValueError(f"images differ in shape: {tuple(images.shape)} vs {tuple(truths.shape)}")
    T, N = images.shape[:2]
    x, y = images.detach().clamp(0, 1).flatten(0, 1), truths.detach().flatten(0, 1)
    values = {name: fn(x, y).view(T, N).mean(1).tolist() for name, fn in (metrics or METRICS).items()}
    return [{name: v[t] for name, v in values.items()} for t in range(T)]


def image_metrics(image: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """The metrics of :func:`metric_functions` of one image (C x H x W or N x C x H x W, averaged over N)
    against the truth, the image clamped to [0, 1] first."""
    return image_table(image[None], truth[None], metric_functions())[0]


def score_batch(images: torch.Tensor, truths: torch.Tensor, labels=None, true_labels=None) -> list[dict]:
    """Per true image, the reconstruction matched to it and their metrics: the optimal one-to-one
    matching of the N reconstructions to the N true images (scipy's ``linear_sum_assignment`` on
    the pairwise MSE of the clamped images; breaching matches by LPIPS, whose weights may be
    absent). Each row: ``slot`` (the true image's position), ``match`` (the reconstruction's),
    the metrics of :func:`metric_functions`, and, given the labels, ``label`` / ``true_label`` of the pair."""
    from scipy.optimize import linear_sum_assignment
    if images.dim() == 3:
        images, truths = images[None], truths[None]
    if images.shape != truths.shape:
        raise ValueError(f"reconstructions {tuple(images.shape)} and true images {tuple(truths.shape)} differ in shape")
    x, y = images.detach().float().clamp(0, 1).cpu(), truths.detach().float().cpu()
    cost = ((y[:, None] - x[None]) ** 2).flatten(2).mean(2)  # [true, reconstruction]
    rows, cols = linear_sum_assignment(cost.numpy())
    matched = x[torch.as_tensor(cols)]
    values = {name: fn(matched, y).tolist() for name, fn in metric_functions().items()}
    out = []
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        row = {"slot": r, "match": c, **{name: v[i] for name, v in values.items()}}
        if labels is not None and true_labels is not None:
            row["label"], row["true_label"] = int(labels[c]), int(true_labels[r])
        out.append(row)
    return out


def label_count_accuracy(labels, true_labels) -> float:
    """The fraction of a batch's labels found, as multisets: |found ∩ true| / N (a count of
    labels has no order)."""
    from collections import Counter
    found, true = Counter(int(v) for v in labels), Counter(int(v) for v in true_labels)
    if sum(true.values()) == 0:
        raise ValueError("no true labels")
    return sum((found & true).values()) / sum(true.values())
