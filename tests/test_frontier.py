"""The frontier's summaries on small hand-made tables, where every number is known."""
import numpy as np
import pandas as pd
import pytest

from dlg_utils import frontier as fr


def attack_rows() -> pd.DataFrame:
    """Two defenses x 2 images x 2 seeds x 2 attacks; SSIMs chosen so the best is known."""
    rows = []
    ssim = {  # (defense, image, seed) -> (dlg, ig)
        ("none", 0, 0): (0.9, 0.8), ("none", 0, 1): (0.2, 0.95), ("none", 1, 0): (0.6, 0.1), ("none", 1, 1): (0.7, 0.3),
        ("uniform:8", 0, 0): (0.1, 0.2), ("uniform:8", 0, 1): (np.nan, 0.3), ("uniform:8", 1, 0): (0.4, 0.6),
        ("uniform:8", 1, 1): (0.0, 0.1)}
    for (d, i, s), values in ssim.items():
        for a, v in zip(("dlg", "ig"), values):
            rows.append({"model": "m", "defense": d, "image": i, "seed": s, "attack": a, "ssim": v,
                         "psnr": 10 + 20 * np.nan_to_num(v)})
    return pd.DataFrame(rows)


def test_best_of_attacks_and_privacy_summary():
    best = fr.best_of_attacks(attack_rows())
    assert len(best) == 8
    got = best.set_index(["defense", "image", "seed"])
    assert got.loc[("none", 0, 1), "best_attack"] == "ig" and got.loc[("none", 0, 1), "ssim"] == 0.95
    assert got.loc[("uniform:8", 0, 1), "best_attack"] == "ig"  # a diverged (NaN) attack never wins
    s = fr.privacy_summary(best, threshold=0.5, resamples=500).set_index("defense")
    # best SSIMs: none (0.9, 0.95, 0.6, 0.7) -> 4/4 recovered; uniform:8 (0.2, 0.3, 0.6, 0.1) -> 1/4
    assert s.loc["none", "recovered"] == 1.0 and s.loc["uniform:8", "recovered"] == 0.25
    assert s.loc["none", "median ssim"] == pytest.approx(0.8) and s.loc["uniform:8", "median ssim"] == 0.25
    assert s.loc["none", "recovered low"] == s.loc["none", "recovered high"] == 1.0
    # resampling images: image 0 gives 0/2, image 1 gives 1/2 -> the interval spans [0, 0.5]
    assert s.loc["uniform:8", "recovered low"] == 0.0 and s.loc["uniform:8", "recovered high"] == 0.5
    assert s.loc["uniform:8", "strongest attack"] == "ig" and (s["trials"] == 4).all() and (s["images"] == 2).all()
    curve = fr.threshold_curve(best, [0.05, 0.5, 0.99]).set_index(["defense", "threshold"])["recovered"]
    assert curve[("uniform:8", 0.05)] == 1.0 and curve[("uniform:8", 0.5)] == 0.25 and curve[("none", 0.99)] == 0


def test_utility_summary_pairs_the_drop_by_seed():
    acc = {"none": [0.80, 0.90, 0.85], "uniform:8": [0.70, 0.80, 0.75]}  # exactly 0.10 lower, seed by seed
    runs = pd.DataFrame([{"model": "m", "defense": d, "seed": s, "curve": [{"epoch": 1, "test_accuracy": a}]}
                         for d, values in acc.items() for s, a in enumerate(values)])
    u = fr.utility_summary(runs).set_index("defense")
    assert u.loc["uniform:8", "drop"] == pytest.approx(0.10)
    assert u.loc["uniform:8", "drop low"] == pytest.approx(0.10) == u.loc["uniform:8", "drop high"]  # paired: no spread
    assert u.loc["none", "drop"] == 0 and u.loc["uniform:8", "accuracy"] == pytest.approx(0.75)
    assert u.loc["uniform:8", "accuracy low"] < 0.75 < u.loc["uniform:8", "accuracy high"]  # unpaired: spread


def test_trials_skip_the_adaptive_attacker_where_it_is_a_plain_one():
    setup = fr.Setup(models=("lenet",), defenses=("none", "uniform:8", "gaussian:0.01"), images=(0,), seeds=(0, 1))
    trials = fr.privacy_trials(setup, "lenet")
    adaptive = {t.defense for t in trials if t.attack == "adaptive"}
    assert adaptive == {"uniform:8"} and len(trials) == 3 * 2 * 3 + 2
    assert {t.settings["iterations"] for t in trials if t.attack == "ig"} == {setup.iterations["ig"]}
    assert {t.config().iterations for t in trials if t.attack == "adaptive"} == {setup.iterations["adaptive"]}
    assert {t.config().label_source for t in trials} == {fr.MODELS["lenet"].label_source}


def test_bits_count_the_ranges():
    model = fr.MODELS["lenet"].build(0)
    n = sum(p.numel() for p in model.parameters())
    tensors = len(list(model.parameters()))
    assert fr.bits_per_parameter("none", model) == 32
    assert fr.bits_per_parameter("uniform:16", model) == pytest.approx(4 + 2 * 32 * tensors / n)
    assert fr.bits_per_parameter("half", model) == 16


@pytest.mark.slow
def test_the_script_runs_every_part_in_quick_mode_and_resumes(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("frontier_script", Path(__file__).parents[1] / "scripts" / "frontier.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--quick", "--out", str(tmp_path), "--defenses", "none,uniform:8", "--threads", "1"]
    script.main(args)
    lines = {p.name: p.read_text().count("\n") for p in tmp_path.glob("*.jsonl")}
    # pilot: 5 candidates x 5 defenses x 4 images; privacy: 2 images x 1 seed x (4 + 3) attacks; utility: 2 x 2 runs
    assert lines == {"frontier_pilot.jsonl": 100, "frontier_privacy.jsonl": 14, "frontier_utility.jsonl": 4}
    script.main(args)  # everything is stored: nothing runs again
    assert {p.name: p.read_text().count("\n") for p in tmp_path.glob("*.jsonl")} == lines
    with pytest.raises(SystemExit):
        script.main(["--models", "vgg"])
    assert "unknown model" in capsys.readouterr().err


def test_frontier_table_keeps_the_study_order_and_every_defense():
    bits = pd.DataFrame({"model": ["m"] * 3, "defense": ["none", "uniform:8", "gaussian:0.1"], "bits": [32, 3, 32]})
    privacy = pd.DataFrame({"model": ["m", "m"], "defense": ["uniform:8", "none"], "recovered": [0.25, 1.0]})
    utility = pd.DataFrame({"model": ["m"] * 3, "defense": ["gaussian:0.1", "none", "uniform:8"], "drop": [0.04, 0, 0]})
    t = fr.frontier_table(privacy, utility, bits)
    assert t["defense"].tolist() == ["none", "uniform:8", "gaussian:0.1"] and t.columns[:3].tolist() == bits.columns.tolist()
    assert t["recovered"].tolist()[:2] == [1.0, 0.25] and np.isnan(t["recovered"].iloc[2])  # not attacked: no privacy
    assert t["drop"].tolist() == [0, 0, 0.04]


@pytest.mark.parametrize("seed", [0, 3])
def test_model_specs_build_the_weights_of_the_classes(seed):
    """ModelSpec.build goes through get_model; the weights are those the classes drew after the same seed."""
    import torch
    from dlg_utils.models import LeNet, LeNet5, init_uniform_, resnet18
    old = {"lenet": lambda c, k, s: init_uniform_(LeNet(c, k, s)), "lenet5": lambda c, k, s: LeNet5(c, k, s),
           "resnet18": lambda c, k, s: resnet18(k, c)}
    for name, build in old.items():
        for shape in [(1, 10, 28), (3, 100, 32)]:
            torch.manual_seed(seed)
            a = build(*shape).state_dict()
            b = fr.MODELS[name].build(seed, *shape).state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (name, shape)


def claims_frontier() -> pd.DataFrame:
    """One model, five defenses; intervals chosen on both sides of the limits and across them."""
    rows = [  # defense, recovered (low, high), drop (low, high)
        ("uniform:16", (0.0, 0.05), (-0.002, 0.008)),     # protects, free
        ("stochastic:16", (0.0, 0.25), (-0.002, 0.008)),  # privacy straddles 10%
        ("mixed", (0.5, 0.9), (0.0, 0.004)),              # does not protect, free
        ("gaussian:0.1", (0.0, 0.0), (0.02, 0.05)),       # protects at a cost
        ("half", (0.8, 1.0), (-0.01, 0.03)),              # leaks; accuracy straddles 1 point
        ("sparsity:0.2", (np.nan, np.nan), (0.0, 0.001))]  # not attacked
    return pd.DataFrame([{"model": "m", "defense": d, "bits": 32, "recovered": sum(r) / 2, "recovered low": r[0],
                          "recovered high": r[1], "median ssim": 0.3, "strongest attack": "ig", "drop": sum(a) / 2,
                          "drop low": a[0], "drop high": a[1]} for d, r, a in rows])


def test_defense_verdicts_and_protecting():
    judged = fr.defense_verdicts(claims_frontier()).set_index("defense")
    assert judged["protects"].tolist() == [True, None, False, True, False, None]
    assert judged["free"].tolist() == [True, True, True, False, None, True]
    assert fr.protecting(claims_frontier())["defense"].tolist() == ["uniform:16", "gaussian:0.1"]
    assert fr.protecting(claims_frontier(), free=True)["defense"].tolist() == ["uniform:16"]
    assert (fr.PROTECTS, fr.FREE_DROP) == (0.10, 0.01)


def test_claims_table_reads_each_claim_against_its_intervals():
    t = fr.claims_table(claims_frontier()).set_index("defense")
    assert t.index.tolist() == [c.defense for c in fr.CLAIMS]  # the claims' order; sparsity has no claim
    assert t.loc["uniform:16", "verdict"] == "holds"
    assert t.loc["stochastic:16", "verdict"] == "not settled on privacy (the interval straddles the limit)"
    assert t.loc["mixed", "verdict"] == "fails on privacy"
    assert t.loc["gaussian:0.1", "verdict"] == "holds"  # DLG: noise that stops DLG costs accuracy
    assert t.loc["half", "verdict"] == "holds"  # leaks, as DLG said; the claim says nothing of accuracy
    assert (t["who"] == pd.Series({c.defense: c.who for c in fr.CLAIMS})).all() and (t["model"] == "m").all()
    assert t.loc["mixed", "recovered high"] == 0.9 and t.loc["mixed", "strongest attack"] == "ig"
    both = fr.Claim("x", "mixed", "protects for free", True, False)
    assert fr.claims_table(claims_frontier(), [both]).iloc[0]["verdict"] == "fails on privacy and accuracy"
    assert fr.claims_table(claims_frontier(), [fr.Claim("x", "none", "", True, True)]).empty  # not in the table
    half = fr.CLAIMS[-1]  # an accuracy not measured is said as such, not as an interval that straddles
    assert fr.claim_verdict(False, None, half, unmeasured=("accuracy",)) == "holds"  # a privacy-only claim
    assert fr.claim_verdict(True, None, half, unmeasured=("accuracy",)) == "fails on privacy"
    free = fr.Claim("x", "mixed", "protects for free", True, True)  # an accuracy not measured is said as such
    assert fr.claim_verdict(True, None, free, unmeasured=("accuracy",)) == "holds on privacy; accuracy not measured yet"


def test_paper_strength_cells_pick_the_first_image_seed_and_the_papers_defenses():
    """The grid's cells: the stored images of the first image seed, the defenses of
    PAPER_STRENGTH in that order (others left out), captioned by the best attack and its SSIM."""
    import base64
    import torch
    from dlg_utils.experiments import row_image
    setup = fr.Setup(images=(3, 1, 2), image_seeds=(1,))
    rows = []
    for d in ("sparsity:0.2", "uniform:8", "none"):  # uniform:8 is not a paper's strength
        for i in (1, 2, 3):
            for s in (0, 1):
                pixels = np.full((1, 2, 2), 10 * i + s, dtype=np.uint8)
                rows.append({"model": "m", "defense": d, "image": i, "seed": s, "best_attack": "ig",
                             "ssim": i / 10 + s / 100, "image_shape": [1, 2, 2],
                             "image_u8": base64.b64encode(pixels.tobytes()).decode("ascii")})
    best = pd.DataFrame(rows)
    images = [(torch.full((1, 2, 2), float(k)), 0) for k in range(4)]
    recon, truths, caps = fr.paper_strength_cells(best, images, setup, "m", columns=2)
    assert list(recon) == ["none", "sparsity:0.2"] == list(caps)  # PAPER_STRENGTH's order
    assert [float(t[0, 0, 0]) for t in truths] == [3.0, 1.0]  # the first 2 images of the setup
    assert [round(float(r[0, 0, 0]) * 255) for r in recon["none"]] == [31, 11]  # seed 1's images
    assert caps["none"] == ["ig 0.31", "ig 0.11"]
    assert torch.equal(recon["sparsity:0.2"][0], row_image(best.iloc[5]))  # sparsity:0.2, image 3, seed 1
    with pytest.raises(ValueError, match="images \\[3\\]"):
        fr.paper_strength_cells(best[best["image"] != 3], images, setup, "m")
