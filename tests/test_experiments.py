import numpy as np
import json

import pytest

from dlg_utils.experiments import attack_trial, expand_histories, load_rows, sweep


def test_sweep_resumes_without_redoing_or_losing_trials(tmp_path):
    path = tmp_path / "rows.jsonl"
    calls = []

    def run(t):
        calls.append(t["seed"])
        if t["seed"] == 3 and len(calls) < 10:
            raise KeyboardInterrupt  # an interruption in the middle of the sweep
        return {"value": t["seed"] ** 2}

    trials = [{"seed": s, "defense": "none"} for s in range(5)]
    with pytest.raises(KeyboardInterrupt):
        sweep(trials, run, path)
    assert [r["seed"] for r in load_rows(path)] == [0, 1, 2]
    with open(path, "a") as f:
        f.write('{"torn": ')  # a crash while writing leaves a partial line
    calls.extend([0] * 10)
    df = sweep(trials, run, path)
    assert calls[-2:] == [3, 4]  # only the unfinished trials ran again
    assert df["value"].tolist() == [0, 1, 4, 9, 16] and df["seed"].tolist() == list(range(5))
    with pytest.raises(ValueError, match="duplicates"):
        sweep(trials + trials[:1], run, path)


def test_attack_trial_row(lenet, samples, tmp_path):
    row, result = attack_trial(lenet, samples, image=5, seed=1, defense="sparsity:0.4", iterations=3)
    assert row["true_label"] == samples[5][1] and row["iterations_run"] == 3
    assert len(row["history"]) == 4 and {"mse", "psnr", "ssim", "grad_distance"} <= set(row)
    json.dumps(row)  # storable as one JSON line
    df = sweep([{"image": 5, "seed": 1, "defense": "sparsity:0.4"}],
               lambda t: attack_trial(lenet, samples, iterations=2, label_mode="idlg", **t)[0],
               tmp_path / "a.jsonl")
    h = expand_histories(df)
    assert len(h) == 3 and set(h["defense"]) == {"sparsity:0.4"} and df["label_correct"].all()


def test_attack_sweep_batches_saves_each_trial_and_resumes(lenet, samples, tmp_path, monkeypatch):
    import dlg_utils.experiments as ex

    batches = []
    real = ex.dlg_batch

    def counting(model, targets, **kw):
        batches.append(len(targets))
        return real(model, targets, **kw)

    monkeypatch.setattr(ex, "dlg_batch", counting)
    path = tmp_path / "attacks.jsonl"
    trials = [{"image": i, "seed": s, "defense": d} for i in (0, 12) for s in (0, 1) for d in ("none", "uniform:16")]
    trials[1]["label_mode"] = "idlg"
    df = ex.attack_sweep(trials, lenet, samples, path, iterations=3, chunk_size=3)
    assert batches == [8] and len(load_rows(path)) == 8
    assert df[["image", "seed", "defense"]].to_dict("records") == [
        {k: t[k] for k in ("image", "seed", "defense")} for t in trials]
    assert df["label_correct"].iloc[1] and (df["iterations_run"] == 3).all()
    # lose two finished trials (an interruption): only those run again
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:6]) + "\n")
    again = ex.attack_sweep(trials, lenet, samples, path, iterations=3)
    assert batches == [8, 2] and len(load_rows(path)) == 8
    kept = {json.loads(line)["trial"] for line in lines[:6]}
    before, after = df.set_index("trial"), again.set_index("trial")
    assert set(after.index) == set(before.index)
    assert (after.loc[list(kept), "grad_distance"] == before.loc[list(kept), "grad_distance"]).all()


def test_per_trial_models_run_in_one_batch_with_the_same_results(samples, tmp_path, monkeypatch):
    """Trials of different models (one architecture) in one batch of per-trial weights give
    what one batch per model gives."""
    import torch
    import dlg_utils.experiments as ex
    from dlg_utils import LeNet, init_uniform_
    torch.manual_seed(50)
    models = {f"m{k}": init_uniform_(LeNet(3, 100, 32)).double() for k in range(2)}
    double = [(x.double(), y) for x, y in (samples[i] for i in range(len(samples)))]
    trials = [{"image": i, "seed": s, "defense": "none", "model": m} for m in models for i in (0, 12) for s in (0,)]
    batches = []
    real = ex.dlg_batch
    monkeypatch.setattr(ex, "dlg_batch", lambda model, targets, **kw: batches.append(len(targets)) or real(model, targets, **kw))
    apart = ex.attack_sweep(trials, models, double, tmp_path / "a.jsonl", iterations=1)
    together = ex.attack_sweep(trials, models, double, tmp_path / "b.jsonl", iterations=1, per_trial_models=True)
    assert batches == [2, 2, 4]
    assert np.allclose(apart["grad_distance"], together["grad_distance"], rtol=1e-6)


def test_keep_history_at_chosen_iterations(lenet, samples):
    from dlg_utils.experiments import attack_sweep
    rows = attack_sweep([{"image": 0, "seed": 0, "defense": "none"}], lenet, samples, iterations=4, keep_history=[0, 2],
                        progress=False)
    assert [h["iteration"] for h in rows["history"].iloc[0]] == [0, 2, 4]  # and the last


def test_expand_histories_takes_any_record_column():
    import pandas as pd
    runs = pd.DataFrame([{"defense": "none", "curve": [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.7}]},
                         {"defense": "uniform:16", "curve": [{"epoch": 1, "acc": 0.4}]}])
    tidy = expand_histories(runs, keep=["defense"], column="curve")
    assert tidy.to_dict("records") == [{"epoch": 1, "acc": 0.5, "defense": "none"},
                                       {"epoch": 2, "acc": 0.7, "defense": "none"},
                                       {"epoch": 1, "acc": 0.4, "defense": "uniform:16"}]
