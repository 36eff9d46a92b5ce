"""Inverting Gradients and the defense-aware attacker: the batched Adam against torch's, the
straight-through quantizer, the boxes defenses reveal, and end-to-end reconstructions."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dlg_utils.adam import BatchedAdam
from dlg_utils.attack import dlg, dlg_batch
from dlg_utils.cases import shared_gradient
from dlg_utils.defenses import (GaussianNoise, HalfPrecision, MixedPrecision, NoDefense, Sparsification,
                                StochasticRounding, UniformQuantization, defense_from_spec)
from dataclasses import replace
from dlg_utils.attacks import ATTACKS, attack_config
from dlg_utils.models import LeNet, LeNet5, init_uniform_
from dlg_utils.objectives import DISTANCES, Targets, masked, straight_through, total_variation


def test_batched_adam_equals_torch_adam_with_multistep_decay_trial_by_trial():
    T, n, steps = 4, 6, 40
    g = torch.Generator().manual_seed(0)
    A = torch.randn(T, n, n, generator=g, dtype=torch.float64)
    A = A @ A.mT + torch.eye(n, dtype=torch.float64)
    b = torch.randn(T, n, generator=g, dtype=torch.float64)
    x0 = torch.randn(T, n, generator=g, dtype=torch.float64)
    milestones = [15, 25, 35]
    for signed, box in [(False, None), (True, (-0.3, 0.4))]:
        opt = BatchedAdam(x0, lr=0.05, milestones=milestones, signed=signed, box=box)
        for _ in range(steps):
            grad = torch.einsum("tij,tj->ti", A, opt.x) - b
            opt.tick(torch.zeros(T), grad, torch.ones(T, dtype=torch.bool))
        for t in range(T):
            x = x0[t].clone()
            if box:
                x.clamp_(*box)
            x.requires_grad_(True)
            ref = torch.optim.Adam([x], lr=0.05)
            sched = torch.optim.lr_scheduler.MultiStepLR(ref, milestones, gamma=0.1)
            for _ in range(steps):
                ref.zero_grad()
                (0.5 * x @ A[t] @ x - b[t] @ x).backward()
                if signed:
                    x.grad.sign_()
                ref.step()
                sched.step()
                if box:
                    with torch.no_grad():
                        x.clamp_(*box)
            assert torch.allclose(opt.x[t], x.detach(), rtol=1e-10, atol=1e-12), (signed, t)


def test_straight_through_forward_is_the_defense_and_backward_the_identity():
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True),
             torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)]
    for defense in [UniformQuantization(8), MixedPrecision("default"), Sparsification(0.5), HalfPrecision()]:
        out = straight_through(defense, grads)
        expected = defense([t.detach() for t in grads])
        assert all(torch.equal(o.detach(), e) for o, e in zip(out, expected)), defense.name
        weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in grads]
        back = torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), grads)
        assert all(torch.equal(b, w) for b, w in zip(back, weights)), defense.name


def test_sparsity_matching_ignores_pruned_entries():
    g = torch.Generator().manual_seed(2)
    truth = [torch.randn(1, 40, generator=g), torch.randn(1, 8, generator=g)]
    shared = Sparsification(0.75).share([t[0] for t in truth])
    target = [s[None] for s in shared.grads]
    low, high = [b[0][None] for b in shared.bounds], [b[1][None] for b in shared.bounds]
    targets = Targets(target, low, high)
    dummy = [torch.randn(1, 40, generator=g), torch.randn(1, 8, generator=g)]
    pruned = [t == 0 for t in target]
    assert all(p.sum() == int(0.75 * p.numel()) for p in pruned)
    # any change at pruned entries leaves the masked distances unchanged ...
    moved = [d + 5.0 * p * torch.randn(d.shape, generator=g) for d, p in zip(dummy, pruned)]
    for name in ("l2", "cosine"):
        before = DISTANCES[name](masked(dummy, targets), targets)
        after = DISTANCES[name](masked(moved, targets), targets)
        assert torch.allclose(before, after), name
    # ... and the box leaves pruned entries free up to the smallest kept magnitude, exact elsewhere
    assert float(DISTANCES["interval"](truth, targets)) == 0.0
    limit = min(float(t[t != 0].abs().min()) for t in target)
    inside = [t + 0.99 * limit * p * torch.sign(torch.randn(t.shape, generator=g)) for t, p in zip(target, pruned)]
    assert float(DISTANCES["interval"](inside, targets)) == 0.0


@pytest.mark.parametrize("spec", ["none", "uniform:240", "uniform:16", "uniform:3", "stochastic:16", "stochastic:2",
                                  "sparsity:0.2", "sparsity:0.9", "half", "mixed", "mixed:random:3", "int8", "int16"])
@settings(max_examples=25, deadline=None)
@given(scale=st.sampled_from([1e-5, 1e-3, 0.1, 3.0]), seed=st.integers(0, 2 ** 16))
def test_the_true_gradient_lies_in_the_box_a_defense_reveals(spec, scale, seed):
    g = torch.Generator().manual_seed(seed)
    grads = [scale * torch.randn(6, 5, generator=g), scale * torch.randn(5, generator=g) + scale,
             torch.full((4,), scale)]  # a constant tensor too
    shared = defense_from_spec(spec).share(grads, torch.Generator().manual_seed(seed))
    assert shared.bounds is not None and len(shared.bounds) == len(grads)
    for t, q, (lo, hi) in zip(grads, shared.grads, shared.bounds):
        assert (lo <= t).all() and (t <= hi).all(), (spec, (t - lo).min(), (hi - t).min())
        assert (lo <= q).all() and (q <= hi).all()
    assert GaussianNoise(0.1).share(grads, g).bounds is None  # noise leaves no box


def test_bits_per_message():
    shapes = [(10, 20), (20,)]  # 220 entries in 2 tensors
    assert NoDefense().bits(shapes) == 220 * 32
    assert UniformQuantization(16).bits(shapes) == 220 * 4 + 2 * 64
    assert UniformQuantization(240).bits(shapes) == 220 * 8 + 2 * 64
    assert StochasticRounding(8).bits(shapes) == 220 * 3 + 2 * 64
    assert HalfPrecision().bits(shapes) == 220 * 16
    assert GaussianNoise(0.1).bits(shapes) == 220 * 32
    # 90% pruned: 20 of 200 and 2 of 20 kept, positions as a bitmap (smaller than indices here)
    assert Sparsification(0.9).bits(shapes) == (20 * 32 + min(200, 20 * 8)) + (2 * 32 + min(20, 2 * 5))
    policy = MixedPrecision("default").layers(2)  # int16 first and last layer
    assert MixedPrecision("default").bits(shapes) == sum(
        n * (16 if p.dtype == "qint16" else 8) + 64 for n, p in zip((200, 20), policy))


def test_attack_names_and_settings_are_checked():
    with pytest.raises(ValueError, match=r"dlg.*idlg.*ig.*adaptive"):
        attack_config("inverting")
    with pytest.raises(ValueError, match="valid:.*uniform:LEVELS"):
        defense_from_spec("quantize:16")
    with pytest.raises(ValueError, match="levels must be an integer, got '16.5'"):
        defense_from_spec("uniform:16.5")
    with pytest.raises(ValueError, match="distance"):
        attack_config("dlg", distance="wasserstein")
    with pytest.raises(TypeError, match="unknown attack settings"):
        attack_config("ig", step_size=0.1)
    assert attack_config("adaptive", "uniform:16").distance == "interval"
    assert attack_config("adaptive", "sparsity:0.4").straight_through
    # against noise: the noise's likelihood (squared distance relative to the target, no box:
    # Gaussian noise and DP-SGD; absolute distance: Laplacian), with IG's machinery and prior
    for spec, distance in (("gaussian:0.01", "interval"), ("gaussian-rel:0.1", "interval"),
                           ("laplacian:0.01", "l1-rel"), ("laplacian-rel:0.1", "l1-rel")):  # -rel: the same kind
        assert attack_config("adaptive", spec) == replace(ATTACKS["ig"], name="adaptive", distance=distance)
    assert attack_config("adaptive", "none", dp=True).distance == "interval"
    assert attack_config("adaptive", "none") == replace(ATTACKS["ig"], name="adaptive")  # nothing to know: IG
    # Inverting Gradients at its authors' budget and in their units (reconstruct_image.py)
    ig = ATTACKS["ig"]
    assert (ig.iterations, ig.space, ig.lr, ig.tv, ig.signed, ig.boxed) == (24_000, "normalized", 0.1, 1e-4, True, True)
    assert attack_config("ig", iterations=10).iterations == 10


@pytest.fixture(scope="module")
def gray():
    from dlg_utils.data import load_dataset
    return load_dataset("samples-gray28")


def test_inverting_gradients_reconstructs_an_image_in_few_iterations(gray):
    torch.manual_seed(0)
    model = LeNet5(1, 10, 28)
    x, y = gray[12]
    grads = shared_gradient(model, x[None], torch.tensor([y]))
    plain = dlg(model, grads, image_shape=x[None].shape, num_classes=10, attack="idlg", iterations=60,
                ground_truth=x[None], label_source="bias", progress=False)
    r = dlg(model, grads, image_shape=x[None].shape, num_classes=10, attack="ig", iterations=400,
            ground_truth=x[None], label_source="bias", progress=False)
    assert int(r.label[0]) == y and r.attack == "ig"
    assert r.final["ssim"] > 0.8 and r.final["ssim"] > plain.final["ssim"] + 0.2
    assert 0 <= float(r.image.min()) and float(r.image.max()) <= 1  # boxed
    assert r.history["iteration"].iloc[-1] == 400 and (r.history["iteration"] % 20 == 0).all()


def test_adaptive_attack_beats_the_plain_one_through_quantization(gray):
    torch.manual_seed(0)
    model = init_uniform_(LeNet(1, 10, 28))
    x, y = gray[4]
    shared = shared_gradient(model, x[None], torch.tensor([y]), "uniform:8")
    plain, adaptive = dlg_batch(model, [shared, shared], image_shape=x[None].shape, num_classes=10,
                                attack=["ig", "adaptive"], iterations=300, ground_truths=x[None], progress=False)
    assert adaptive.attack == "adaptive" and plain.attack == "ig"
    assert adaptive.final["ssim"] > 0.7 and adaptive.final["ssim"] > plain.final["ssim"] + 0.2


def test_restarts_keep_the_best_and_a_nan_trial_leaves_the_others_alone(gray):
    torch.manual_seed(0)
    model = init_uniform_(LeNet(1, 10, 28))
    x, y = gray[12]
    grads = shared_gradient(model, x[None], torch.tensor([y]))
    one = dlg(model, grads, image_shape=x[None].shape, num_classes=10, attack="ig", iterations=30, seed=5,
              progress=False)
    three = dlg(model, grads, image_shape=x[None].shape, num_classes=10, attack="ig", iterations=30, seed=5,
                restarts=3, progress=False)
    alone = [dlg(model, grads, image_shape=x[None].shape, num_classes=10, attack="ig", iterations=30, seed=5,
                 restarts=1, progress=False, **{}) for _ in range(1)]
    assert torch.equal(one.image, alone[0].image)  # restart 0 is the single run
    assert float(three.final["grad_distance"]) <= float(one.final["grad_distance"])
    broken = LeNet(1, 10, 28)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.fc.weight.fill_(math.inf)
    results = dlg_batch([model, broken, model], [grads, grads, grads], image_shape=x[None].shape, num_classes=10,
                        attack="ig", iterations=20, seeds=[1, 2, 3], progress=False)
    clean = dlg_batch([model, model], [grads, grads], image_shape=x[None].shape, num_classes=10, attack="ig",
                      iterations=20, seeds=[1, 3], progress=False)
    assert results[1].diverged and not results[0].diverged and not results[2].diverged
    for a, b in zip([results[0], results[2]], clean):
        assert torch.allclose(a.image, b.image, atol=1e-5)


def test_total_variation_of_known_images():
    flat = torch.full((2, 1, 1, 4, 4), 0.3)
    steps = flat.clone()
    steps[1, ..., :, 2:] = 1.0  # one vertical edge of height 0.7 across 4 of 12 horizontal pairs
    tv = total_variation(steps)
    assert float(tv[0]) == 0.0 and float(tv[1]) == pytest.approx(0.7 * 4 / 12)
