"""The committed results files load in the current key format, and every trial the notebooks
ask of them is found under its full key: a full re-run reads them and recomputes nothing."""
import json
from pathlib import Path

import pytest
import torch

from dlg_utils import frontier as fr
from dlg_utils.config import RESULTS_DIR
from dlg_utils.data import load_dataset
from dlg_utils.experiments import DatasetTargets, attack_keys
from dlg_utils.storage import RowStore, canonical, config_key, load_rows

FILES = sorted([*RESULTS_DIR.glob("*.jsonl"), *RESULTS_DIR.glob("*.jsonl.gz"), *RESULTS_DIR.glob("operating/*.jsonl.gz")])


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(RESULTS_DIR)) for p in FILES])
def test_committed_file_is_in_the_current_format(path):
    store = RowStore(path)  # raises on an old-format row
    lines = (len(load_rows(path)) if path.suffix == ".gz" else  # every line a row, no two rows under one key
             sum(1 for line in path.read_text().splitlines() if line.strip()))
    assert len(store.rows) == lines
    for row in store.rows.values():  # each row's key is the hash of the configuration it stores
        assert config_key(row["config"]) == row["key"]


def test_frontier_trials_are_all_found():
    setup, data = fr.Setup(), load_dataset("samples-gray28")
    privacy, pilot = RowStore(RESULTS_DIR / "frontier_privacy.jsonl"), RowStore(RESULTS_DIR / "frontier_pilot.jsonl")
    for name in setup.models:
        model = {name: fr.attacked_model(setup, name, data)}
        for store, trials, kw in ((privacy, fr.privacy_trials(setup, name), dict(rows=fr.privacy_rows(setup),
                                                                               configs=fr.COMMITTED_ATTACKS)),
                                  (pilot, fr.pilot_trials(setup, name), dict(rows=fr.pilot_rows(),
                                                                            configs=fr.PILOT_CANDIDATES))):
            keys = [k for k, _, _ in attack_keys(trials, model, DatasetTargets(data), **kw)]
            assert all(k in store for k in keys), f"{name}: {sum(k not in store for k in keys)} trials missing"
    utility = RowStore(RESULTS_DIR / "frontier_utility.jsonl")
    keys = [config_key({"trial": canonical(t), "context": None}) for t in fr.utility_trials(setup, "fashion-mnist")]
    assert all(k in utility for k in keys)


def test_table1_original_trials_are_all_found():
    from dlg_utils import table1
    from dlg_utils.models import get_model
    torch.manual_seed(table1.MODEL_SEED)
    fixed = get_model("lenet", in_channels=3, num_classes=100, image_size=32)
    seeds = range(10)
    trials = table1.original_trials(table1.METHODS, table1.ORIGINAL_IMAGES, seeds, 100)
    keys = attack_keys(trials, table1.original_models(seeds, fixed), DatasetTargets(load_dataset("samples")),
                       rows=table1.history_rows(100))
    store = RowStore(RESULTS_DIR / "table1_original_100.jsonl")
    assert all(k in store for k, _, _ in keys)


def test_deployment_trials_are_all_found():
    """Notebook 10's study (results/deployment.jsonl): every trial under its key."""
    from dlg_utils import deployment as dp
    study = dp.Study()
    keys = attack_keys(dp.study_trials(study), dp.study_models(study.states),
                       DatasetTargets(load_dataset("fashion-mnist", train=False)), rows=dp.ROWS)
    store = RowStore(RESULTS_DIR / "deployment.jsonl")
    missing = sum(k not in store for k, _, _ in keys)
    assert missing == 0, f"{missing} of {len(keys)} trials missing"


@pytest.mark.parametrize("domain", ["samples", "samples-gray28"])
def test_strength_trials_are_all_found(domain):
    """Notebook 10's budget curve and pilot (results/strength.jsonl): every trial under its key."""
    from dlg_utils import strength as st
    data = load_dataset(domain)
    keys = attack_keys(st.strength_trials(domain), {"lenet": st.pilot_model(data)}, DatasetTargets(data), configs=st.CANDIDATES,
                       rows=st.ROWS)
    store = RowStore(RESULTS_DIR / "strength.jsonl")
    missing = sum(k not in store for k, _, _ in keys)
    assert missing == 0, f"{missing} of {len(keys)} trials missing"


@pytest.mark.parametrize("name", ["fl_table1.jsonl", "flower_audit_runs.jsonl", "flower_audit.jsonl"])
def test_stored_federated_configs_keep_their_form(name):
    """Notebooks 8 and 11 key their runs (and the auditor its rows) on an :class:`FLConfig`; a
    field added to it since must not enter those keys at its default, or every run re-runs."""
    from dlg_utils.federated import FLConfig

    def configs(value):  # every stored FLConfig: a mapping with FLConfig's fields
        if isinstance(value, dict):
            if {"num_clients", "rounds", "local_epochs"} <= set(value):
                yield value
            else:
                for v in value.values():
                    yield from configs(v)
    found = [c for row in RowStore(RESULTS_DIR / name).rows.values() for c in configs(row["config"])]
    assert found
    for config in found:
        assert canonical(FLConfig(**config)) == config
