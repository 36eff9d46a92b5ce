import math

import pytest
import torch
from skimage.metrics import structural_similarity

from dlg_utils.metrics import (image_metrics, image_table, l1, lpips, lpips_available, lpips_weights, metric_functions,
                               mse, psnr, ssim)
from dlg_utils.stats import scored_criteria


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



@pytest.fixture(scope="module")
def fake_lpips_weights(tmp_path_factory):
    """A randomly initialised AlexNet saved where torchvision keeps the ImageNet one: LPIPS's code
    path runs as it would where the real weights are present (its values are not LPIPS's)."""
    import torchvision
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        path = lpips_weights()
        path.parent.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet().state_dict(), path)
        yield path


def test_lpips_without_its_weights_is_a_clear_error_and_left_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    x = torch.rand(2, 1, 28, 28)
    assert not lpips_available() and "lpips" not in metric_functions()
    with pytest.raises(FileNotFoundError, match="not downloaded here"):
        lpips(x, x)
    assert "lpips" not in image_metrics(x[0], x[0]) and "lpips" not in image_table(x[None], x[None])[0]
    assert scored_criteria() == ["ssim", "psnr", "mse"]


def test_lpips_is_torchmetrics_on_inputs_in_0_1_at_64_px(fake_lpips_weights):
    """The convention pinned: torchmetrics' LPIPS with ``normalize=True`` (inputs in [0, 1]) on the
    weights file, grey images repeated to RGB and small ones resized bilinearly to 64 px by hand."""
    import torch.nn.functional as F
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    ref = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True, reduction="none").eval()
    saved = torch.load(fake_lpips_weights)["features.0.weight"]
    assert torch.equal(ref.net.net.slice1[0].weight, saved)  # the file's weights, not a fresh draw
    torch.manual_seed(2)
    big = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    grey = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    def by_hand(x):
        return F.interpolate(x.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(lpips(*big), ref(*big).flatten(), atol=1e-5)
        assert torch.allclose(lpips(*grey), ref(by_hand(grey[0]), by_hand(grey[1])).flatten(), atol=1e-5)


def test_lpips_where_its_weights_are_present(fake_lpips_weights):
    torch.manual_seed(1)
    for x in (torch.rand(3, 1, 28, 28), torch.rand(3, 3, 32, 32)):  # grey and colour, both under 64 px
        y = torch.rand_like(x)
        d = lpips(x, y)
        assert d.shape == (3,) and (d > 0).all()
        assert torch.allclose(lpips(x, x), torch.zeros(3), atol=1e-6)
        assert torch.allclose(lpips(y, x), d, atol=1e-6)  # symmetric
        assert torch.allclose(lpips(x[1], y[1]), d[1:2], atol=1e-5)  # per image: the batch does not matter
        assert lpips(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1)).max() < d.min()  # a small change, closer
    with pytest.raises(ValueError, match="grey or RGB"):
        lpips(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))
    x = torch.rand(2, 3, 32, 32)
    assert "lpips" not in image_table(x[None], x[None])[0]  # an attack's history: the cheap metrics only
    row = image_metrics(x, x)
    assert row["lpips"] == pytest.approx(0, abs=1e-6) and scored_criteria() == ["ssim", "psnr", "mse", "lpips"]
    from dlg_utils.rero import prior_baseline
    base = prior_baseline(x, [0, 1], "lpips")  # each image is a guess: it meets itself at LPIPS 0
    assert base.low >= 0.5 and math.isnan(base.high)
