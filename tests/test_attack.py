"""End-to-end: DLG must reconstruct a real embedded image; quantization must stop it."""
import pytest
import torch

from dlg_utils.attack import dlg, gradient_distance
from dlg_utils.attack import idlg_label, target_gradients
from dlg_utils.defenses import UniformQuantization
from dlg_utils.stats import GRAD_THRESHOLD
from dlg_utils.models import LeNet, init_uniform_


def one(samples, i):
    x, y = samples[i]
    return x[None], torch.tensor([y])


@pytest.fixture(scope="module")
def undefended(lenet, samples):
    x, y = one(samples, 0)
    grads = target_gradients(lenet, x, y)
    return x, y, dlg(lenet, grads, image_shape=x.shape, num_classes=100, iterations=300, seed=0, ground_truth=x)


@pytest.mark.slow
def test_dlg_reconstructs_a_real_image(undefended):
    x, y, r = undefended
    assert float(r.final["mse"]) < 1e-3
    assert float(((r.image.clamp(0, 1) - x) ** 2).mean()) < 1e-3
    assert int(r.label[0]) == int(y[0])  # DLG's learned soft label lands on the true class
    assert not r.diverged


@pytest.mark.slow
def test_dlg_history_and_convergence(undefended):
    x, _, r = undefended
    h = r.history
    assert list(h.columns) == ["iteration", "grad_distance", "mse", "l1", "psnr", "ssim"]
    assert h["iteration"].tolist() == list(range(301))
    assert h["grad_distance"].iloc[-1] < h["grad_distance"].iloc[0] / 1e4
    assert r.converged and h.loc[r.converged_at, "grad_distance"] < GRAD_THRESHOLD
    assert (h.loc[: r.converged_at - 1, "grad_distance"] >= GRAD_THRESHOLD).all()
    assert set(range(0, 301, 10)) <= set(r.snapshots)
    assert all(s.min() >= 0 and s.max() <= 1 for s in r.snapshots.values())


@pytest.mark.slow
def test_uniform_quantization_stops_the_attack(lenet, samples):
    x, y = one(samples, 0)
    grads = target_gradients(lenet, x, y, UniformQuantization(16))
    r = dlg(lenet, grads, image_shape=x.shape, num_classes=100, iterations=300, seed=0, ground_truth=x)
    assert float(r.final["mse"]) > 0.05  # the undefended attack reaches < 1e-3
    assert float(r.final["ssim"]) < 0.5


def test_idlg_recovers_every_label(lenet, samples):
    assert len(samples) >= 20
    for i in range(len(samples)):
        x, y = one(samples, i)
        assert idlg_label(target_gradients(lenet, x, y)) == int(y[0])
    # also with the 3-convolution LeNet of the original code, and a different init
    torch.manual_seed(1)
    other = init_uniform_(LeNet(3, 100, 32, convs=3))
    for i in range(0, len(samples), 3):
        x, y = one(samples, i)
        assert idlg_label(target_gradients(other, x, y)) == int(y[0])


def test_idlg_mode_and_determinism(lenet, samples):
    x, y = one(samples, 14)
    grads = target_gradients(lenet, x, y)
    a = dlg(lenet, grads, image_shape=x.shape[1:], num_classes=100, iterations=8, label="idlg", seed=3)
    b = dlg(lenet, grads, image_shape=x.shape[1:], num_classes=100, iterations=8, label=int(y[0]), seed=3)
    c = dlg(lenet, grads, image_shape=x.shape[1:], num_classes=100, iterations=8, label=int(y[0]), seed=4)
    assert int(a.label[0]) == int(y[0])
    assert torch.equal(a.image, b.image) and a.history.equals(b.history)
    assert not torch.equal(a.image, c.image)
    assert "mse" not in a.history.columns  # no ground truth, no image metrics


def test_gradient_distance_is_zero_at_the_truth(lenet, samples):
    x, y = one(samples, 3)
    grads = target_gradients(lenet, x, y)
    assert float(gradient_distance(target_gradients(lenet, x, y), grads)) == 0.0


class FlakyLeNet(LeNet):
    """Returns NaN from its 40th forward pass on: a stand-in for an attack that blows up."""

    calls = 0

    def forward(self, x):
        FlakyLeNet.calls += 1
        out = super().forward(x)
        return out * float("nan") if FlakyLeNet.calls >= 40 else out


def test_divergence_is_caught_and_the_last_finite_image_kept(samples):
    torch.manual_seed(0)
    model = init_uniform_(FlakyLeNet())
    x, y = one(samples, 0)
    grads = target_gradients(model, x, y)
    r = dlg(model, grads, image_shape=x.shape, num_classes=100, iterations=50, seed=0, ground_truth=x)
    assert r.diverged and not r.converged
    assert 0 < len(r.history) < 51
    assert torch.isfinite(r.image).all() and r.history["grad_distance"].notna().all()


def test_bad_input(lenet, samples):
    x, y = one(samples, 0)
    grads = target_gradients(lenet, x, y)
    with pytest.raises(ValueError, match="do not match"):
        dlg(lenet, grads[:-1], image_shape=x.shape, num_classes=100, iterations=1)
    with pytest.raises(ValueError, match="NaN"):
        dlg(lenet, [g * float("nan") for g in grads], image_shape=x.shape, num_classes=100, iterations=1)
    with pytest.raises(ValueError, match="labels"):
        target_gradients(lenet, x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="batch"):
        target_gradients(lenet, x[0], y)


def test_bad_arguments_name_themselves_in_one_line(lenet, samples):
    """What a new user met: a wrong image_shape or num_classes crashed deep inside torch, a NaN
    ground truth gave silent NaN metrics, iterations=-3 printed a 600-character repr."""
    x, y = one(samples, 0)
    grads = target_gradients(lenet, x, y)
    run = lambda **kw: dlg(lenet, grads, **{"image_shape": x.shape, "num_classes": 100, "iterations": 1, **kw})
    with pytest.raises(ValueError, match=r"image_shape \(1, 3, 28, 28\) does not fit the model"):
        run(image_shape=(1, 3, 28, 28))
    with pytest.raises(ValueError, match="image_shape must be N x C x H x W"):
        run(image_shape=(3, 32))
    with pytest.raises(ValueError, match=r"num_classes=10 but the model outputs \(100,\) values per image"):
        run(num_classes=10)
    with pytest.raises(ValueError, match="ground_truth must be 3072 finite values.*NaN"):
        run(ground_truth=x * float("nan"))
    with pytest.raises(ValueError, match="label") as error:
        run(label=[1, 2])
    with pytest.raises(ValueError) as error:
        run(iterations=-3)
    assert str(error.value) == "attack 'dlg': iterations must be an integer >= 0, got -3"
