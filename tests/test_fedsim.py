"""Federated training simulated at an operating point (dlg_utils.fedsim): FedSGD and FedAvg
arithmetic against torch.optim.SGD, the defense and DP-SGD on every client's update, bad input;
and the paired accuracy comparisons with Holm's correction."""
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dlg_utils.cases import DPSGD, Case
from dlg_utils.fedsim import FedRun, paired_drops, train_federated
from dlg_utils.models import get_model
from dlg_utils.stats import holm


def lenet(seed=0):
    torch.manual_seed(seed)
    return get_model("lenet", in_channels=1, num_classes=4, image_size=12)


def data(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=g), torch.arange(n) % 4


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def shards(n, clients, seed):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.tensor_split(order, clients)


def test_fedsgd_round_is_one_sgd_step_on_all_clients_images():
    x, y = data(6)
    model, reference = lenet(), lenet()
    train_federated(model, Case(batch_size=2, local_lr=0.1), (x, y), (x, y),
                    FedRun(clients=3, epochs=1, server_momentum=0.0, evaluations=1))  # 6 images: one round
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    F.cross_entropy(reference(x), y).backward()  # equal client batches: the mean of the clients' means
    opt.step()
    for a, b in zip(weights(model), weights(reference)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fedavg_round_averages_the_clients_local_sgd():
    x, y = data(4)
    model = lenet()
    case = Case(batch_size=2, local_steps=3, local_lr=0.05, local_momentum=0.9)
    train_federated(model, case, (x, y), (x, y), FedRun(clients=2, epochs=1, server_momentum=0.0, evaluations=1, seed=3))
    locals_ = []
    for shard in shards(4, 2, 3):
        client = lenet()
        opt = torch.optim.SGD(client.parameters(), lr=0.05, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(client(x[shard]), y[shard]).backward()
            opt.step()
        locals_.append(weights(client))
    for a, *bs in zip(weights(model), *locals_):
        torch.testing.assert_close(a, torch.stack(bs).mean(0), rtol=1e-4, atol=1e-6)


def test_the_defense_and_dp_change_what_the_server_adds():
    x, y = data(8)
    runs = {}
    for name, case in {"none": Case(batch_size=2), "uniform:4": Case(batch_size=2, defense="uniform:4"),
                       "dp": Case(batch_size=2, dp=DPSGD(1.0, 1.0))}.items():
        model = lenet()
        train_federated(model, case, (x, y), (x, y), FedRun(clients=2, epochs=1, evaluations=1))
        runs[name] = weights(model)
    for other in ("uniform:4", "dp"):
        assert any(not torch.allclose(a, b) for a, b in zip(runs["none"], runs[other]))


def test_one_step_dp_noise_has_the_calibrated_scale():
    """Clip 1e-6 leaves the update almost only noise: its std per entry is sigma * clip / B."""
    x, y = data(8)
    model = lenet()
    start = weights(model)
    case = Case(batch_size=4, local_lr=1.0, dp=DPSGD(1e-6, 2.0))
    train_federated(model, case, (x, y), (x, y), FedRun(clients=2, epochs=1, server_momentum=0.0, evaluations=1))
    step = torch.cat([(a - b).flatten() for a, b in zip(start, weights(model))])
    expected = 2.0 * 1e-6 / 4 / 2 ** 0.5  # the mean of two clients' independent noise
    assert abs(float(step.std()) / expected - 1) < 0.05


def test_bad_input_is_refused():
    x, y = data(3)
    with pytest.raises(ValueError, match="cannot give"):
        train_federated(lenet(), Case(batch_size=2), (x, y), (x, y), FedRun(clients=2))
    with pytest.raises(ValueError, match="epochs > 0"):
        FedRun(epochs=0)


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


def test_paired_drops_reads_cost_with_the_family_wide_interval():
    acc = pd.DataFrame([{"setting": "s", "defense": d, "seed": s, "accuracy": a}
                        for d, accs in {"none": [0.80, 0.82, 0.81], "cheap": [0.80, 0.82, 0.81],
                                        "costly": [0.60, 0.63, 0.61], "noisy": [0.70, 0.85, 0.80]}.items()
                        for s, a in enumerate(accs)])
    table = paired_drops(acc, ["setting"]).set_index("defense")
    assert table.loc["costly", "cost verdict"] == "costs" and table.loc["costly", "drop"] == pytest.approx(0.1967, abs=1e-3)
    assert table.loc["cheap", "cost verdict"] == "free"
    assert table.loc["noisy", "cost verdict"] == "open"
    assert table.loc["costly", "adjusted high"] > table.loc["costly", "drop high"]  # Bonferroni widens
    assert table.loc["none", "cost verdict"] == "baseline"


def test_paired_drops_keep_intervals_to_the_accuracies_possible():
    """One of three seeds at chance: the t-intervals would reach past 0% and 100% accuracy."""
    acc = pd.DataFrame([{"setting": "s", "defense": d, "seed": s, "accuracy": a}
                        for d, accs in {"none": [0.80, 0.82, 0.81], "diverged": [0.80, 0.10, 0.81]}.items()
                        for s, a in enumerate(accs)])
    r = paired_drops(acc, ["setting"]).set_index("defense").loc["diverged"]
    assert r["accuracy low"] == 0.0 and r["accuracy high"] <= 1.0 and r["accuracy"] == pytest.approx(0.57)
    assert r["drop low"] >= 0.81 - 1 and r["drop high"] == pytest.approx(0.81) and r["adjusted high"] == pytest.approx(0.81)
    assert r["drop low"] <= r["drop"] <= r["drop high"] and r["cost verdict"] == "open"
