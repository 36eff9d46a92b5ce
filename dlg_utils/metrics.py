"""Image metrics on images in [0, 1] (N x C x H x W or C x H x W), one value per image (the
success criteria built on them are in :mod:`~dlg_utils.stats`)."""
from __future__ import annotations

import torch
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


def image_table(images: torch.Tensor, truths: torch.Tensor) -> list[dict[str, float]]:
    """Per trial, the mean of each metric over the trial's images: ``images`` and ``truths``
    are T x N x C x H x W (or T x C x H x W); images are clamped to [0, 1] first."""
    if images.dim() == 4:
        images, truths = images[:, None], truths[:, None]
    if images.shape != truths.shape:
        raise ValueError(f"images differ in shape: {tuple(images.shape)} vs {tuple(truths.shape)}")
    T, N = images.shape[:2]
    x, y = images.detach().clamp(0, 1).flatten(0, 1), truths.detach().flatten(0, 1)
    values = {name: fn(x, y).view(T, N).mean(1).tolist() for name, fn in METRICS.items()}
    return [{name: v[t] for name, v in values.items()} for t in range(T)]


def image_metrics(image: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """mse, l1, psnr and ssim of one image (C x H x W or N x C x H x W, averaged over N)
    against the truth, the image clamped to [0, 1] first."""
    return image_table(image[None], truth[None])[0]
