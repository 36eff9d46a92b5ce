"""The frontier at operating points (dlg_utils.operating): the grid's cells and trials, the
verdicts read from exact intervals under three criteria, the cost to breach, an end-to-end cell
that recovers images, resuming, and the utility trials."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from dlg_utils.cases import DPSGD
from dlg_utils.operating import (ALL_DEFENSES, DOMAINS, PAPER_FIRST, POINTS, Domain, Point, Study, cell_table,
                                 cell_trials, domain_model, full_study, quick_study, run_study, setting_name, study_progress, utility_trials)
from dlg_utils.experiments import trial_cost
import dlg_utils.operating as op
from dlg_utils.stats import clopper_pearson


def test_points_build_their_cases():
    assert Point().case().describe() == "B=1, FedSGD"
    dp = Point(epsilon=8.0).case("uniform:16")
    assert dp.dp == DPSGD.at_epsilon(8.0, examples=4000, batch_size=1, epochs=20) and dp.defense == "uniform:16"
    assert Point(batch_size=4, local_steps=5).case().local_steps == 5
    assert setting_name(Point("trained", epsilon=1.0)) == "B=1, FedSGD, DP eps=1"


def test_cells_run_the_papers_strengths_first_and_cover_the_grid():
    cells = Study().cells()
    first = [d for dom, p, d in cells if dom == "gray28" and p == POINTS[0]]
    assert first[:8] == list(PAPER_FIRST[:8]) and len(first) == 20 and len(set(first)) == 20
    assert {p.name for _, p, _ in cells} >= {"init, B=1, FedSGD", "trained, B=1, FedSGD", "middle, B=1, FedSGD",
                                             "init, B=4, FedSGD", "init, B=16, FedSGD", "init, B=4, E=5",
                                             "init, B=1, FedSGD, DP eps=8", "init, B=1, FedSGD, DP eps=1"}
    assert {dom for dom, _, _ in cells} == {"gray28", "photos32"}
    assert all(len(DOMAINS[d].images) >= 64 for d in DOMAINS)


def test_cell_trials_batch_the_images_and_add_the_adaptive_attacker_where_it_knows_something():
    study = Study()
    trials = cell_trials(study, "gray28", Point(batch_size=4), "uniform:16")
    assert {t.attack for t in trials} == {"idlg", "ig", "adaptive"} and len(trials) == 3 * 16
    assert trials[0].image == (0, 1, 2, 3) and trials[0].case.defense == "uniform:16"
    assert trials[0].tags == {"domain": "gray28", "point": "init, B=4, FedSGD", "state": "init"}
    assert {t.attack for t in cell_trials(study, "gray28", Point(), "none")} == {"idlg", "ig"}
    assert "adaptive" in {t.attack for t in cell_trials(study, "gray28", Point(epsilon=8.0), "none")}
    ig = [t for t in cell_trials(study, "photos32", Point(), "none") if t.attack == "ig"]
    assert ig[0].config().iterations == 4000 and ig[0].config().space == "normalized"
    with pytest.raises(ValueError, match="no model state"):
        cell_trials(study, "photos32", Point("trained"), "none")
    with pytest.raises(ValueError, match="batches of 3"):
        cell_trials(study, "gray28", Point(batch_size=3), "none")


def fake_rows(recovered: dict, images=64, cost=2.0, attack="ig", domain="gray28", point="init, B=1, FedSGD"):
    """Rows of one attack per image: ``recovered[defense]`` images with SSIM 0.9 / PSNR 30 /
    MSE 1e-4, the rest with SSIM 0.1 / PSNR 10 / MSE 0.1."""
    out = []
    for defense, k in recovered.items():
        for i in range(images):
            good = i < k
            out.append({"domain": domain, "point": point, "defense": defense, "image": i, "seed": 0,
                        "attack": attack, "ssim": 0.9 if good else 0.1, "psnr": 30.0 if good else 10.0,
                        "mse": 1e-4 if good else 0.1, "seconds": 99.0, "cost_seconds": cost})
    return pd.DataFrame(out)


# a study whose 1x28x28 budget curve was measured for the fake defenses, as strength.PLAN's for
# none and uniform:16
MEASURED = Study(domains={**DOMAINS, "gray28": replace(DOMAINS["gray28"], measured_defenses=("none", *"abcd"))})


def test_cell_table_reads_verdicts_from_exact_intervals():
    table = cell_table(fake_rows({"none": 64, "a": 0, "b": 6, "c": 20}), MEASURED).set_index("defense")
    assert table.loc["a", "verdict"] == "protects" and table.loc["a", "ssim high"] == pytest.approx(clopper_pearson(0, 64)[1])
    assert table.loc["none", "verdict"] == "leaks" and table.loc["c", "verdict"] == "leaks"
    assert table.loc["b", "verdict"] == "open"  # 6 / 64: the interval straddles 10%
    assert table.loc["c", "seconds per recovered image"] == pytest.approx(64 * 2.0 / 20)
    assert np.isinf(table.loc["a", "seconds per recovered image"])
    # an unsaturated budget never protects
    unsat = cell_table(fake_rows({"a": 0}, domain="photos32")).set_index("defense")
    assert unsat.loc["a", "verdict"] == "open" and not DOMAINS["photos32"].saturated
    # nor does a budget measured at one image on the untrained model protect a batch or a trained model
    for point in ("init, B=16, FedSGD", "init, B=4, E=5", "trained, B=1, FedSGD", "init, B=1, FedSGD, DP eps=8"):
        assert cell_table(fake_rows({"a": 0}, point=point), MEASURED).loc[0, "verdict"] == "open", point
    # nor one measured for other defenses (strength.PLAN: none and uniform:16)
    assert cell_table(fake_rows({"a": 0})).loc[0, "verdict"] == "open"
    assert cell_table(fake_rows({"uniform:16": 0})).loc[0, "verdict"] == "protects"
    assert DOMAINS["gray28"].saturated_at(Point()) and not DOMAINS["gray28"].saturated_at(Point(batch_size=4))
    assert not DOMAINS["gray28"].saturated_at(Point(), "gaussian:0.1")
    assert not DOMAINS["gray28"].saturated_at(Point(epsilon=8.0), "none")
    gpu = full_study().domains
    assert gpu["photos32"].saturated_at(Point(batch_size=16)) and not gpu["gray28-resnet18"].saturated_at(Point())
    # a rate above the limit but not above the criterion's chance level (a guess without the
    # update meets 30% of the images) shows no leakage: open, not leaks
    chance = {("gray28", "ssim"): 0.30}
    judged = cell_table(fake_rows({"c": 20}), MEASURED, chance=chance).set_index("defense")
    assert table.loc["c", "ssim low"] < 0.30 and judged.loc["c", "ssim verdict"] == "open"
    # given chance levels, a criterion without one (LPIPS tabled where its weights are absent) is
    # never "leaks"; without any, the limit alone decides
    assert judged.loc["c", "psnr verdict"] == "open" and table.loc["c", "psnr verdict"] == "leaks"
    judged = cell_table(fake_rows({"c": 20}), MEASURED, chance=chance | {("gray28", "psnr"): 0.0}).set_index("defense")
    assert judged.loc["c", "psnr verdict"] == "leaks"


def fake_curve(recovered: dict, point="init, B=1, FedSGD", defense="gaussian:0.1"):
    """A budget curve's rows: at each budget, each attack of :func:`op.curve_trials` on each
    curve image; ``recovered[budget]`` of the images recovered there (by Inverting Gradients)."""
    out = []
    for b, k in recovered.items():
        for attack in ("ig", "adaptive") if defense != "none" or "DP" in point else ("ig",):
            rows = fake_rows({defense: k if attack == "ig" else 0}, images=4, point=point, attack=attack)
            out.append(rows.assign(budget=b, image=list(op.CURVE_IMAGES["gray28"])))
    return pd.concat(out, ignore_index=True)


def test_a_budget_curve_lets_a_cell_protect_only_where_a_longer_attack_finds_nothing_more():
    cells = fake_rows({"gaussian:0.1": 0})
    assert cell_table(cells).loc[0, "verdict"] == "open"  # no curve measured for noise
    flat = fake_curve({1000: 0, 4000: 0, 24_000: 0})
    assert op.flat_curves(flat, Study()) == {("gray28", "init, B=1, FedSGD", "gaussian:0.1")}
    judged = cell_table(cells, curves=flat).iloc[0]
    assert judged["verdict"] == "protects" and judged["budget saturated"]
    rising = fake_curve({1000: 0, 4000: 1, 24_000: 2})  # 24,000 iterations recover 2 of 4 images
    assert op.flat_curves(rising, Study()) == frozenset() and cell_table(cells, curves=rising).loc[0, "verdict"] == "open"
    short = fake_curve({1000: 0, 4000: 0})  # not measured up to the authors' budget
    assert op.flat_curves(short, Study()) == frozenset()
    torn = flat[~((flat["budget"] == 24_000) & (flat["attack"] == "adaptive"))]  # one attacker still running
    assert op.flat_curves(torn, Study()) == frozenset()
    climbing = flat.copy()  # nothing crosses a threshold, but 24,000 iterations bring one image closer
    climbing.loc[(climbing["budget"] == 24_000) & (climbing["image"] == 19) & (climbing["attack"] == "ig"), "ssim"] = 0.4
    assert op.flat_curves(climbing, Study()) == frozenset()
    assert op.flat_curves(flat.assign(seed=1), Study()) == frozenset()  # another dummy seed's curve
    other = fake_curve({1000: 0, 24_000: 0}, defense="gaussian-rel:1")  # another defense's curve
    assert cell_table(cells, curves=other).loc[0, "verdict"] == "open"
    table = op.curve_table(rising).set_index("budget")
    assert table.loc[24_000, "ssim recovered"] == 2 and table.loc[1000, "images"] == 4


def test_curve_trials_run_the_adam_attackers_on_unscored_images():
    study = Study()
    trials = op.curve_trials(study, "gray28", Point(epsilon=8.0), "none", 4000)
    assert {t.attack for t in trials} == {"ig", "adaptive"} and len(trials) == 2 * len(op.CURVE_IMAGES["gray28"])
    assert all(t.settings["iterations"] == 4000 and t.tags["budget"] == 4000 for t in trials)
    assert not set(op.CURVE_IMAGES["gray28"]) & set(DOMAINS["gray28"].images)
    assert all(study.point(d, name) is not None for d, name, _ in op.CURVES)
    assert max(op.CURVE_BUDGETS) == 24_000 and DOMAINS["gray28"].iterations in op.CURVE_BUDGETS


def test_cell_table_lists_cells_in_the_grid_order():
    rows = pd.concat([fake_rows({"gaussian:0.1": 0}, point="init, B=4, FedSGD"), fake_rows({"mixed": 3, "none": 64}),
                      fake_rows({"none": 0}, point="init, B=1, FedSGD, DP eps=8")])
    order = [(d, p.name, f) for d, p, f in Study().cells()]
    listed = list(zip(*(cell_table(rows)[c] for c in ("domain", "point", "defense"))))
    assert listed == sorted(listed, key=order.index) and listed[0] == ("gray28", "init, B=1, FedSGD", "none")
    assert op.domain_label("gray28") == "Fashion-MNIST 1x28x28" and op.domain_label("other") == "other"


def test_a_verdict_that_changes_with_the_criterion_is_marked():
    rows = fake_rows({"d": 64})
    rows.loc[rows.index, "mse"] = 0.05  # SSIM and PSNR say recovered, image MSE says not
    table = cell_table(rows, MEASURED).set_index("defense")
    assert table.loc["d", "ssim verdict"] == "leaks" and table.loc["d", "mse verdict"] == "protects"
    assert table.loc["d", "verdict"] == "depends on the criterion"


def test_only_finished_cells_are_judged():
    study = Study(grid=(("gray28", Point(defenses=("none", "uniform:16"))),),
                  domains={"gray28": Domain("fashion-mnist", images=(0, 1))})
    full = fake_rows({"none": 2}, images=2, attack="idlg")
    full = pd.concat([full, full.assign(attack="ig")])  # none: DLG and IG on both images
    part = fake_rows({"uniform:16": 2}, images=2, attack="idlg")  # uniform:16: its IG and adaptive still to run
    kept = op.complete_cells(pd.concat([full, part]), study)
    assert set(kept["defense"]) == {"none"} and len(kept) == 4
    stale = fake_rows({"none": 1}, images=1, attack="ig").assign(image=7)  # an image the study no longer scores
    kept = op.complete_cells(pd.concat([full, part, stale]), study)
    assert set(kept["defense"]) == {"none"} and len(kept) == 4 and 7 not in set(kept["image"])


def test_each_criterion_reads_each_images_best_attack_under_it():
    """IG wins on SSIM, DLG makes the closer copy: the image counts under PSNR and MSE too."""
    ig = fake_rows({"none": 0}, images=1, attack="ig").assign(ssim=0.9, psnr=20.0, mse=1e-2)
    dlg = fake_rows({"none": 0}, images=1, attack="idlg").assign(ssim=0.6, psnr=40.0, mse=1e-4)
    row = cell_table(pd.concat([ig, dlg])).iloc[0]
    assert row["ssim recovered"] == row["psnr recovered"] == row["mse recovered"] == 1.0
    assert row["strongest attack"] == "ig" and row["median ssim"] == 0.9


def test_no_scored_image_is_one_a_pilot_saw():
    """The attacker and its budget were chosen on embedded samples: none may be scored."""
    from dlg_utils.data import SampleImages
    from dlg_utils.frontier import PILOT_IMAGES as ATTACKER_PILOT
    from dlg_utils.strength import PILOT_IMAGES as BUDGET_PILOT
    samples = SampleImages()
    study = Study()
    for domain in ("gray28", "photos32"):
        data = op.domain_data(domain, study)
        scored = torch.stack([data[i][0] for i in study.domains[domain].images])
        size = scored.shape[-1]
        for k in (*ATTACKER_PILOT, *BUDGET_PILOT):
            pilot = samples[k][0]
            if size == 28:  # the embedded samples are 32x32 with the garment padded by 2 pixels
                pilot = pilot[:1, 2:30, 2:30]
            gap = (scored - pilot.expand_as(scored[0])).abs().flatten(1).max(1).values.min()
            assert gap > 0.05, f"embedded sample {k} is scored in {domain}"
    assert len(set(study.domains["gray28"].images)) == 64


def test_trial_cost_prefers_the_trials_share():
    rows = pd.DataFrame({"seconds": [10.0, 10.0], "cost_seconds": [2.5, np.nan]})
    assert trial_cost(rows).tolist() == [2.5, 10.0]


def test_a_cell_recovers_undefended_images_and_resumes(tmp_path, monkeypatch):
    study = Study(grid=(("gray28", Point(defenses=("none",))),),
                  domains={"gray28": Domain("fashion-mnist", images=(0, 1, 2, 3), iterations=30)}, dlg_iterations=60)
    path = tmp_path / "operating"
    rows = run_study(study, path)
    table = cell_table(rows, study).set_index("defense")
    assert table.loc["none", "ssim recovered"] >= 0.75  # DLG on the untrained LeNet's single-image gradient
    assert study_progress(study, path)[["cells", "done"]].values.tolist() == [[1, 1]]
    import dlg_utils.experiments as ex
    monkeypatch.setattr(ex, "dlg_batch", lambda *a, **k: pytest.fail("a stored trial ran again"))
    again = run_study(study, path)
    assert len(again) == len(rows) == 8


def test_the_gpu_grid_adds_every_defense_the_authors_budget_and_resnet18():
    study = full_study()
    assert study.domains["photos32"].iterations == 24_000 and study.domains["photos32"].saturated
    names = {(d, p.name) for d, p in study.grid}
    assert ("photos32-resnet18", "init, B=4, FedSGD") in names and ("photos32", "init, B=4, E=5") in names
    assert all(set(p.defenses) == set(ALL_DEFENSES) for _, p in study.grid if not p.epsilon)
    named = lambda cells: {(d, p.name, x) for d, p, x in cells if d == "gray28"}
    assert named(Study().cells()) <= named(study.cells())  # the CPU cells (their keys) carry over
    data = [(torch.zeros(3, 32, 32), 0)]

    class Photos(list):
        classes = list("abcdefg")
    net = domain_model(study.domains["photos32-resnet18"], "init", Photos(data))
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ValueError, match="only at its initialisation"):
        domain_model(study.domains["photos32"], "trained", Photos(data))


def test_quick_study_covers_both_domains():
    cells = quick_study().cells()
    assert {d for d, _, _ in cells} == {"gray28", "photos32"}


def test_utility_trials_share_a_setting_across_model_states():
    trials = utility_trials(Study(more_seeds={}))
    settings = {t["setting"] for t in trials}
    assert settings == {"B=1, FedSGD", "B=1, FedSGD, DP eps=8", "B=1, FedSGD, DP eps=1", "B=4, FedSGD",
                        "B=16, FedSGD", "B=4, E=5"}
    first = [(t["setting"], t["defense"]) for t in trials[:15:3]]  # every seed of a run before the next
    assert first == [("B=1, FedSGD", "none"), ("B=1, FedSGD, DP eps=8", "none"), ("B=1, FedSGD, DP eps=1", "none"),
                     *(("B=1, FedSGD", d) for d in op.NEAR_FRONTIER)]
    assert [t["seed"] for t in trials[:6]] == [0, 1, 2, 0, 1, 2]
    assert len({tuple(t.values()) for t in trials}) == len(trials)
    # what verdicts need comes first in every setting (DP-SGD's runs among it), the rest after
    needed = [t["defense"] in ("none", *op.NEAR_FRONTIER, *op.PAPER_STRENGTH, *op.RELATIVE_NOISE) for t in trials]
    assert needed == sorted(needed, reverse=True)
    assert {t["setting"] for t in trials[:needed.count(True)]} == settings


def test_more_seeds_come_last_seed_by_seed_where_a_cost_must_settle():
    usual = utility_trials(Study(more_seeds={}))
    more = {"B=1, FedSGD": (("none", "gaussian-rel:1"), (3, 4)), "B=2, FedSGD": (("none",), (3,))}
    trials = utility_trials(Study(more_seeds=more))
    assert trials[:len(usual)] == usual  # a setting the study lacks adds nothing
    assert [(t["setting"], t["defense"], t["seed"]) for t in trials[len(usual):]] == [
        ("B=1, FedSGD", "none", 3), ("B=1, FedSGD", "gaussian-rel:1", 3),
        ("B=1, FedSGD", "none", 4), ("B=1, FedSGD", "gaussian-rel:1", 4)]
    assert trials[-1]["batch_size"] == 1 and trials[-1]["epsilon"] == 0.0
    assert len(utility_trials(Study())) == len(usual) + 27 and utility_trials(quick_study()) == \
        utility_trials(replace(quick_study(), more_seeds={}))


def test_dp_sgd_is_judged_against_training_without_it():
    """A DP setting's undefended run is DP-SGD itself: its drop is against plain training in
    the same setting, paired by seed, never against itself."""
    runs = pd.DataFrame([{"setting": s, "defense": "none", "seed": k, "accuracy": a + 0.01 * k}
                         for s, a in (("B=1, FedSGD", 0.80), ("B=1, FedSGD, DP eps=8", 0.70)) for k in range(3)])
    table = op.utility_table(runs).set_index(["setting", "defense"])
    assert table.loc[("B=1, FedSGD", "DP eps=8"), "drop"] == pytest.approx(0.10)
    assert table.loc[("B=1, FedSGD", "none"), "drop"] == 0
    cells = fake_rows({"none": 0}).assign(point="init, B=1, FedSGD, DP eps=8")
    curve = fake_curve({1000: 0, 24_000: 0}, point="init, B=1, FedSGD, DP eps=8", defense="none")
    framed = op.frontier_cells(cell_table(cells, curves=curve), op.utility_table(runs))
    assert framed["verdict"].iloc[0] == "protects"
    assert framed["drop"].iloc[0] == pytest.approx(0.10) and not framed["holds"].iloc[0]  # protects, but costs 10 points
    assert framed["defense"].iloc[0] == "none" and op.against_plain("B=4, E=5", "none") == ("B=4, E=5", "none")


def test_utility_trains_on_cifar10_where_the_user_has_it(tmp_path, monkeypatch):
    """The 3x32x32 points' accuracy cost from CIFAR-10: a tiny CIFAR-10 in torchvision's on-disk
    format, built here (no download), trained through the same runs as Fashion-MNIST."""
    import pickle

    import torchvision

    from dlg_utils.fedsim import FedRun
    from dlg_utils.operating import run_utility
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (30, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, 30).tolist()}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    study = Study(grid=(("gray28", Point(defenses=("none",))),))
    path = tmp_path / "u.jsonl"
    rows = run_utility(study, path, run=FedRun(clients=3, epochs=0.1, evaluations=1), seeds=(0,), dataset="cifar10",
                       root=tmp_path)
    assert len(rows) == 1 and 0 <= rows["accuracy"].iloc[0] <= 1
    assert rows["config"].iloc[0]["context"]["dataset"] == "cifar10"  # keyed apart from Fashion-MNIST's runs


def test_lpips_joins_the_verdicts_in_the_cells_that_hold_it():
    plain = fake_rows({"a": 0})
    scored = fake_rows({"b": 64}).assign(lpips=0.05)  # a cell attacked where LPIPS's weights were present
    table = cell_table(pd.concat([plain, scored]), MEASURED).set_index("defense")
    assert table.loc["b", "lpips verdict"] == "leaks" and table.loc["b", "verdict"] == "leaks"
    assert pd.isna(table.loc["a", "lpips verdict"]) and table.loc["a", "verdict"] == "protects"
    assert "LPIPS < 0.2" in op.headline(table.reset_index().loc[lambda t: t["defense"] == "b"], "gray28",
                                        "init, B=1, FedSGD")
    assert "LPIPS" not in op.headline(table.reset_index(), "gray28", "init, B=1, FedSGD")


def test_a_study_on_some_of_its_points():
    study = Study()
    both = study.only(["init, B=1, FedSGD"])  # the seeds' point in every domain
    assert [(d, p.name) for d, p in both.grid] == [("gray28", "init, B=1, FedSGD"), ("photos32", "init, B=1, FedSGD")]
    one = study.only(["photos32: init, B=1, FedSGD", "init, B=16, FedSGD"])
    assert [(d, p.name) for d, p in one.grid] == [("photos32", "init, B=1, FedSGD"), ("gray28", "init, B=16, FedSGD")]
    assert set(one.cells()) <= set(study.cells()) and one.domains == study.domains
    with pytest.raises(ValueError, match="no point named"):
        study.only(["init, B=3, FedSGD"])
