"""Typed trials, keys that cover every setting, storage that resumes, and old files refused."""
import gzip
import time
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dlg_utils.experiments as ex
from dlg_utils.experiments import (AttackTrial, DatasetTargets, Execution, RowOptions, attack_keys, attack_sweep,
                                   expand_histories, sweep)
from dlg_utils.storage import OldFormatError, compact, load_rows
from dlg_utils.models import get_model

QUIET = Execution(progress=False)


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


def test_a_gzip_store_resumes_after_a_torn_member_and_compacts(tmp_path):
    """A ``.gz`` store appends one gzip member per row; a crash mid-row leaves a torn member,
    which is dropped (not glued to the next row); ``compact`` packs it into one member."""
    path, calls = tmp_path / "rows.jsonl.gz", []
    run = lambda t: calls.append(t["seed"]) or {"value": t["seed"] ** 2}
    trials = [{"seed": s} for s in range(4)]
    sweep(trials[:3], run, path)
    with open(path, "ab") as f:
        f.write(gzip.compress(b'{"key": "x", "value": 1}\n')[:-12])  # killed while writing a row
    assert [r["seed"] for r in load_rows(path)] == [0, 1, 2]
    df = sweep(trials, run, path)
    assert calls == [0, 1, 2, 3] and df["value"].tolist() == [0, 1, 4, 9]
    size = path.stat().st_size
    compact(path)
    assert path.stat().st_size < size and [r["seed"] for r in load_rows(path)] == [0, 1, 2, 3]
    packed = path.read_bytes()
    time.sleep(1.1)  # a header with a time in it would differ now
    compact(path)  # the same rows, the same bytes: an unchanged store shows no change to git
    assert path.read_bytes() == packed
    assert sweep(trials, run, path)["value"].tolist() == [0, 1, 4, 9] and len(calls) == 4


def test_sweep_context_is_part_of_the_key(tmp_path):
    """Settings shared by every trial go in ``context``: a changed one computes new rows beside
    the old ones in the same file."""
    path, calls = tmp_path / "rows.jsonl", []
    run = lambda t: calls.append(t) or {"value": 1}
    sweep([{"seed": 0}], run, path, context={"epochs": 1})
    sweep([{"seed": 0}], run, path, context={"epochs": 1})
    rows = sweep([{"seed": 0}], run, path, context={"epochs": 2})
    assert len(calls) == 2 and len(load_rows(path)) == 2
    assert rows["config"].iloc[0]["context"] == {"epochs": 2}


def test_attack_row_stores_its_full_configuration(lenet, samples):
    rows = attack_sweep([AttackTrial(5, 1, "sparsity:0.4", "idlg", settings={"iterations": 2})], lenet, samples,
                        execution=QUIET)
    row = rows.iloc[0]
    assert row["true_label"] == samples[5][1] and row["iterations_run"] == 2 and row["label_correct"]
    assert len(row["history"]) == 3 and {"mse", "psnr", "ssim", "grad_distance"} <= set(row.index)
    config = row["config"]
    assert config["attack"]["iterations"] == 2 and config["attack"]["label"] == "idlg"
    assert config["trial"]["defense"] == "sparsity:0.4" and config["model"]["class"] == "LeNet"
    assert config["data"]["label"] == samples[5][1]
    json.dumps(row.to_dict(), default=str)  # storable as one JSON line
    h = expand_histories(rows)
    assert len(h) == 3 and set(h["defense"]) == {"sparsity:0.4"}


def test_changed_iterations_compute_fresh_rows_side_by_side(lenet, samples, tmp_path, monkeypatch):
    """The trap of the old key (the trial's fields alone): a sweep re-run with other iterations
    returned the stored rows. Now the iterations are in the key: fresh rows, both kept."""
    path = tmp_path / "rows.jsonl"
    trial = lambda its: AttackTrial(0, 0, "none", settings={"iterations": its})
    three = attack_sweep([trial(3)], lenet, samples, path, execution=QUIET)
    four = attack_sweep([trial(4)], lenet, samples, path, execution=QUIET)
    assert three["iterations_run"].item() == 3 and four["iterations_run"].item() == 4
    assert len(load_rows(path)) == 2 and three["key"].item() != four["key"].item()
    batches = []
    real = ex.dlg_batch
    monkeypatch.setattr(ex, "dlg_batch", lambda *a, **kw: batches.append(1) or real(*a, **kw))
    again = attack_sweep([trial(3), trial(4)], lenet, samples, path, execution=QUIET)
    assert batches == [] and again["iterations_run"].tolist() == [3, 4]  # both stored: nothing runs


def test_key_covers_model_weights_data_attack_and_row_options(lenet, samples):
    """Each thing a result depends on moves the key: the weights, the model's mode, the image,
    the attack's settings, the label source, what the row keeps."""
    base = AttackTrial(0, 0, "uniform:16", "idlg", settings={"iterations": 3})
    key = lambda trial=base, model=lenet, data=samples, rows=RowOptions(): attack_keys(
        [trial], model, DatasetTargets(data), rows=rows)[0][0]
    other = get_model("lenet", in_channels=3, num_classes=100, image_size=32)
    shifted = [(x.flip(-1), y) for x, y in (samples[i] for i in range(len(samples)))]
    variants = [key(),
                key(model=other),
                key(data=shifted),
                key(AttackTrial(0, 0, "uniform:16", "idlg", settings={"iterations": 3, "label_source": "bias"})),
                key(AttackTrial(0, 0, "uniform:16", "idlg", settings={"iterations": 3, "max_iter": 5})),
                key(AttackTrial(0, 0, "uniform:8", "idlg", settings={"iterations": 3})),
                key(AttackTrial(0, 1, "uniform:16", "idlg", settings={"iterations": 3})),
                key(rows=RowOptions(keep_history=False)),
                key(model=lenet.eval())]
    lenet.train()
    assert len(set(variants)) == len(variants)
    assert key() == variants[0]  # and the same settings give the same key


def test_attack_sweep_batches_saves_each_trial_and_resumes(lenet, samples, tmp_path, monkeypatch):
    batches = []
    real = ex.dlg_batch

    def counting(model, targets, **kw):
        batches.append(len(targets))
        return real(model, targets, **kw)

    monkeypatch.setattr(ex, "dlg_batch", counting)
    path = tmp_path / "attacks.jsonl"
    trials = [AttackTrial(i, s, d, "idlg" if (i, s, d) == (0, 0, "uniform:16") else "dlg", settings={"iterations": 3})
              for i in (0, 12) for s in (0, 1) for d in ("none", "uniform:16")]
    df = attack_sweep(trials, lenet, samples, path, execution=Execution(chunk_size=3, progress=False))
    assert batches == [8] and len(load_rows(path)) == 8
    assert df[["image", "seed", "defense", "attack"]].to_dict("records") == [
        {"image": t.image, "seed": t.seed, "defense": t.defense, "attack": t.attack} for t in trials]
    assert df["label_correct"].iloc[1] and (df["iterations_run"] == 3).all()
    # lose two finished trials (an interruption): only those run again
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:6]) + "\n")
    again = attack_sweep(trials, lenet, samples, path, execution=QUIET)
    assert batches == [8, 2] and len(load_rows(path)) == 8
    kept = {json.loads(line)["key"] for line in lines[:6]}
    before, after = df.set_index("key"), again.set_index("key")
    assert set(after.index) == set(before.index)
    assert (after.loc[list(kept), "grad_distance"] == before.loc[list(kept), "grad_distance"]).all()


def test_old_format_files_are_refused_with_a_clear_message(lenet, samples, tmp_path):
    path = tmp_path / "old.jsonl"
    trial = {"image": 0, "seed": 0, "defense": "none"}
    path.write_text(json.dumps({**trial, "grad_distance": 1.0, "trial": json.dumps(trial, sort_keys=True)}) + "\n")
    for run in (lambda: attack_sweep([AttackTrial(0)], lenet, samples, path, execution=QUIET),
                lambda: sweep([trial], lambda t: {}, path)):
        with pytest.raises(OldFormatError, match="old key format.*migrate_results.py"):
            run()
    assert len(load_rows(path)) == 1  # untouched


def test_migration_keys_plain_sweep_rows_by_their_trial(tmp_path):
    """A plain sweep's old row (keyed by its trial dict) gets exactly the key a new sweep of the
    same trial looks for, so the migrated file resumes."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("migrate", Path(__file__).parents[1] / "scripts" / "migrate_results.py")
    migrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migrate)
    trial = {"model": "lenet", "defense": "none", "seed": 0, "epochs": 8, "subset": None, "config": {"a": (1, 2)}}
    old = [{**trial, "value": 3, "trial": json.dumps(trial, sort_keys=True, default=str)}]
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in migrate.migrate_rows(old, None, "runs.jsonl")))
    rows = sweep([trial], lambda t: pytest.fail("a migrated row must be found"), path)
    assert rows["value"].tolist() == [3]


def test_bad_trials_give_clear_errors(lenet, samples):
    with pytest.raises(ValueError, match="image 999 is out of range; the data set has 32 images"):
        attack_sweep([AttackTrial(999)], lenet, samples, execution=QUIET)
    with pytest.raises(ValueError, match="unknown defense spec"):
        AttackTrial(0, 0, "uniform16")
    with pytest.raises(ValueError, match="names model 'resnet'"):
        attack_sweep([AttackTrial(0, model="resnet")], {"lenet": lenet}, samples, execution=QUIET)
    with pytest.raises(ValueError, match="iterations must be an integer >= 0, got -3"):
        attack_sweep([AttackTrial(0, settings={"iterations": -3})], lenet, samples, execution=QUIET)
    with pytest.raises(TypeError, match="unknown attack settings"):
        attack_sweep([AttackTrial(0, settings={"iteration": 3})], lenet, samples, execution=QUIET)
    with pytest.raises(TypeError, match="AttackTrial"):
        attack_sweep([{"image": 0, "seed": 0}], lenet, samples, execution=QUIET)


def test_per_trial_models_run_in_one_batch_with_the_same_results(samples, tmp_path, monkeypatch):
    """Trials of different models (one architecture) in one batch of per-trial weights give
    what one batch per model gives."""
    torch.manual_seed(50)
    models = {f"m{k}": get_model("lenet", in_channels=3, num_classes=100, image_size=32).double() for k in range(2)}
    double = [(x.double(), y) for x, y in (samples[i] for i in range(len(samples)))]
    trials = [AttackTrial(i, s, "none", model=m, settings={"iterations": 1}) for m in models for i in (0, 12)
              for s in (0,)]
    batches = []
    real = ex.dlg_batch
    monkeypatch.setattr(ex, "dlg_batch", lambda model, targets, **kw: batches.append(len(targets)) or real(model, targets, **kw))
    apart = attack_sweep(trials, models, double, tmp_path / "a.jsonl", execution=QUIET)
    together = attack_sweep(trials, models, double, tmp_path / "b.jsonl",
                            execution=Execution(per_trial_models=True, progress=False))
    assert batches == [2, 2, 4]
    assert np.allclose(apart["grad_distance"], together["grad_distance"], rtol=1e-6)


def test_row_options_keep_history_images_and_snapshots(lenet, samples):
    trials = [AttackTrial(0, s, "none", settings={"iterations": 4, "snapshot_every": 2}) for s in (0, 1)]
    rows = attack_sweep(trials, lenet, samples, rows=RowOptions(keep_history=(0, 2), keep_image=(1,),
                                                                keep_snapshots=(2,)), execution=QUIET)
    assert [h["iteration"] for h in rows["history"].iloc[0]] == [0, 2, 4]  # and the last
    assert rows["image_u8"].isna().tolist() == [True, False]  # the image of dummy seed 1 only
    assert ex.row_image(rows.iloc[1]).shape == (1, 3, 32, 32)
    assert list(rows["snapshots"].iloc[0]) == [2]


def test_expand_histories_takes_any_record_column():
    runs = pd.DataFrame([{"defense": "none", "curve": [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.7}]},
                         {"defense": "uniform:16", "curve": [{"epoch": 1, "acc": 0.4}]}])
    tidy = expand_histories(runs, keep=["defense"], column="curve")
    assert tidy.to_dict("records") == [{"epoch": 1, "acc": 0.5, "defense": "none"},
                                       {"epoch": 2, "acc": 0.7, "defense": "none"},
                                       {"epoch": 1, "acc": 0.4, "defense": "uniform:16"}]
