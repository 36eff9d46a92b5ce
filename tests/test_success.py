import pandas as pd
import pytest
import torch

from dlg_utils.success import label_survival, succeeded, success_table, threshold_sensitivity


def rows():
    # image 0: 3 of 4 seeds succeed (at 10, 20, 30); image 1: 1 of 4 (at 50); image 1 seed 3 converges
    # in gradient distance but its image does not (seed 002's ResNet case): not a success
    data = [(0, 0, 10, 1e-5), (0, 1, 20, 2e-4), (0, 2, 30, 5e-4), (0, 3, None, 0.3),
            (1, 0, 50, 1e-6), (1, 1, None, 0.2), (1, 2, None, 0.4), (1, 3, 40, 0.05)]
    return pd.DataFrame(data, columns=["image", "seed", "converged_at", "mse"]).assign(model="lenet")


def test_success_needs_both_convergence_and_image():
    assert succeeded(rows()).tolist() == [True, True, True, False, True, False, False, False]
    with pytest.raises(ValueError, match="mse"):
        succeeded(rows().drop(columns="mse"))


def test_success_rate_is_the_mean_over_images_of_per_image_rates():
    t = success_table(rows(), by=["model"]).iloc[0]
    assert t["images"] == 2 and t["trials"] == 8
    assert t["success rate"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert t["worst image"] == 0.25 and t["best image"] == 0.75
    assert t["mean iteration at convergence"] == pytest.approx((20 + 50) / 2)  # per-image means, then mean
    assert t["rate low"] <= t["success rate"] <= t["rate high"]
    assert 0.25 <= t["rate low"] and t["rate high"] <= 0.75


def test_threshold_sensitivity_is_monotone():
    s = threshold_sensitivity(rows(), [1e-5, 1e-4, 1e-3, 0.1])
    assert s["success rate"].is_monotonic_increasing
    assert s["success rate"].tolist() == pytest.approx([1 / 8, 2 / 8, 4 / 8, 5 / 8])


def test_label_survival_draws_random_defenses_and_finds_the_undefended_label():
    import torch
    from dlg_utils.data import load_dataset
    from dlg_utils.models import get_model
    torch.manual_seed(0)
    model = get_model("lenet", in_channels=3, num_classes=100, image_size=32)
    found = label_survival({"lenet": model}, load_dataset("samples"), [0, 1], ["none", "stochastic:16", "uniform:4"],
                           draws=2)
    assert list(found.columns) == ["model", "image", "defense", "draw", "right"]
    assert found.groupby("defense", sort=False).size().to_dict() == {"none": 2, "stochastic:16": 4, "uniform:4": 2}
    assert found[found["defense"] == "none"]["right"].all()  # iDLG reads an undefended LeNet's label exactly



def test_success_study_trials_paths_and_completeness(tmp_path, samples):
    import json
    from dlg_utils.experiments import DatasetTargets, attack_keys
    from dlg_utils.success import SUCCESS_ROWS, SuccessStudy
    study = SuccessStudy(images=2, lenet_seeds=3, resnet_depths=(18,), resnet_seeds=1)
    lenet, resnets = study.trials(32)
    assert len(lenet) == 2 * 2 * 3 and len(resnets) == 1 * 2 * 2 * 1
    assert {t.image for t in lenet} == set(study.image_indices(32)) and len(study.image_indices(32)) == 2
    assert {t.attack for t in lenet} == {"dlg", "idlg"} and all(t.settings["max_iter"] == 20 for t in resnets)
    models = study.models()
    lenet_path, resnet_path = study.paths(tmp_path)
    assert not study.complete(samples, tmp_path, models) and not list(tmp_path.iterdir())  # checking writes nothing
    rows = lambda trials: "".join(json.dumps({"key": k, "config": c}) + "\n" for k, c, _ in attack_keys(
        trials, models, DatasetTargets(samples), rows=SUCCESS_ROWS))
    lenet_path.write_text(rows(lenet))
    assert not study.complete(samples, tmp_path, models)
    resnet_path.write_text(rows(resnets))
    assert study.complete(samples, tmp_path, models)
    other = SuccessStudy(images=2, lenet_seeds=3, resnet_depths=(18,), resnet_seeds=1, iterations=7)
    assert not other.complete(samples, tmp_path, models)  # other iterations: other keys


def test_success_study_models_are_the_seeded_classes():
    """SuccessStudy builds by name; the weights are those of the classes after the same seed."""
    import torch
    from dlg_utils.models import LeNet, init_uniform_, resnet
    from dlg_utils.success import SuccessStudy
    models = SuccessStudy(resnet_depths=(18,)).models()
    torch.manual_seed(0)
    old = {"lenet": init_uniform_(LeNet(3, 100, 32))}
    torch.manual_seed(0)
    old["resnet18"] = resnet(18, 100)
    assert models.keys() == old.keys() and not models["resnet18"].training
    for name, model in models.items():
        a, b = model.state_dict(), old[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_dlg_and_idlg_run_both_attacks_on_each_model_from_one_seed(lenet, samples):
    from dlg_utils.attack import dlg_batch
    from dlg_utils.attack import target_gradients
    from dlg_utils.success import dlg_and_idlg
    x, y = samples[0]
    runs = dlg_and_idlg({"LeNet": (lenet, 3, 5)}, x, y, seed=2, num_classes=100)
    assert list(runs) == ["LeNet DLG", "LeNet iDLG"]
    assert int(runs["LeNet iDLG"].label[0]) == y  # iDLG: the true label, given
    assert [r.seed for r in runs.values()] == [2, 2] and len(runs["LeNet DLG"].history) == 4  # iterations 0-3
    g = target_gradients(lenet, x[None], torch.tensor([y]))
    by_hand = dlg_batch(lenet, [g, g], image_shape=x[None].shape, num_classes=100, iterations=3, labels=[None, y],
                        seeds=2, ground_truths=x[None], max_iter=5)
    for got, want in zip(runs.values(), by_hand):
        assert torch.equal(got.image, want.image) and got.final["grad_distance"] == want.final["grad_distance"]
