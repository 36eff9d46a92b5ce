import pandas as pd
import pytest
import torch

from dlg_utils.attack import AttackResult
from dlg_utils.plotting import metric_curves, reconstruction_grid


def fake(n):
    return AttackResult(image=torch.rand(1, 3, 8, 8), label=torch.tensor([0]),
                        history=pd.DataFrame({"iteration": range(n), "l1": torch.rand(n).tolist()}),
                        snapshots={i: torch.rand(1, 3, 8, 8) for i in range(0, n, 5)})


def test_reconstruction_grid(tmp_path):
    fig = reconstruction_grid([("a", fake(11)), ("b", fake(6))], truth=torch.rand(3, 8, 8),
                              title="t", path=tmp_path / "g.png")
    assert len(fig.axes) == 2 * 4 and (tmp_path / "g.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        reconstruction_grid([])


def test_metric_curves(tmp_path):
    h = pd.concat([fake(10).history.assign(defense=d, seed=s) for d in "xy" for s in range(3)])
    fig = metric_curves(h, "l1", "defense", path=tmp_path / "c.png")
    assert (tmp_path / "c.png").exists() and len(fig.axes[0].lines) >= 2
    with pytest.raises(ValueError, match="column"):
        metric_curves(h, "psnr")


def test_output_path_keeps_quick_runs_apart(tmp_path, monkeypatch):
    from dlg_utils.config import output_path
    monkeypatch.setenv("DLG_QUICK", "1")
    assert output_path("a.csv", tmp_path) == tmp_path / "quick" / "a.csv"
    monkeypatch.setenv("DLG_QUICK", "0")
    assert output_path("a.csv", tmp_path) == tmp_path / "a.csv"
    assert output_path(tmp_path / "x" / "b.png") == tmp_path / "x" / "b.png"
    assert (tmp_path / "x").is_dir() and (tmp_path / "quick").is_dir()
