import math

import pytest
import torch
from skimage.metrics import structural_similarity

from dlg_utils.metrics import image_metrics, image_table, l1, mse, psnr, ssim


def test_known_values():
    a, b = torch.zeros(3, 8, 8), torch.full((3, 8, 8), 0.5)
    assert float(mse(a, b)[0]) == 0.25 and float(l1(a, b)[0]) == 0.5
    assert float(psnr(a, b)[0]) == pytest.approx(10 * math.log10(4))
    assert math.isinf(float(psnr(a, a)[0])) and float(ssim(b, b)[0]) == pytest.approx(1.0)


def test_ssim_agrees_with_scikit_image():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 32, 32, generator=g)
    b = (a + 0.1 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)
    ref = structural_similarity(a.numpy(), b.numpy(), channel_axis=0, data_range=1.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert float(ssim(a, b)[0]) == pytest.approx(ref, abs=5e-3)  # border handling differs slightly


def test_batched_and_clamped():
    a = torch.rand(4, 1, 16, 16)
    assert mse(a, a).shape == (4,)
    m = image_metrics(a[0] * 3 - 1, a[0].clamp(0, 1))  # image clamped to [0, 1] first
    assert 0 <= m["mse"] <= 1
    with pytest.raises(ValueError):
        mse(a, a[:2])
    table = image_table(a.view(2, 2, 1, 16, 16), a.flip(0).view(2, 2, 1, 16, 16))  # 2 trials of 2 images
    assert len(table) == 2 and table[0]["mse"] == pytest.approx(float(mse(a[:2], a.flip(0)[:2]).mean()))

