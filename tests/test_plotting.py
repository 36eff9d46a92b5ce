import numpy as np
import pandas as pd
import pytest
import torch

from dlg_utils.engine import AttackResult
from dlg_utils.plotting import leak_grid, metric_curves, reconstruction_grid


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


# --- every figure reads on its own ------------------------------------------------------------------

def assert_readable(fig):
    """A title; every data panel labels both axes; a legend has a title and no entry whose line
    is hidden by an identical one (same data, drawn on the same panel)."""
    import matplotlib.lines as mlines
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert fig._suptitle is not None or any(ax.get_title() for ax in fig.axes), "no title"
    for legend in fig.legends:
        assert legend.get_title().get_text() and all(t.get_text() for t in legend.get_texts())
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert ax.get_ylabel() or ax.get_xlabel(), "an unlabelled colour bar"
            continue
        if ax.images:  # an image cell: a grid labels its rows and columns instead
            continue
        if ax.lines or ax.collections:  # an axis shared with a labelled neighbour is labelled once
            ylabel = ax.get_ylabel() or any(a.get_ylabel() for a in ax.get_shared_y_axes().get_siblings(ax))
            assert ax.get_xlabel() and ylabel, f"unlabelled axes in {ax.get_title()!r}"
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            ticks = [t.get_window_extent(renderer) for t in labels  # a rotated label's box is wider than its text
                     if t.get_text() and t.get_visible() and t.get_rotation() % 180 in (0, 90)]
            assert not any(a.overlaps(b) for i, a in enumerate(ticks) for b in ticks[i + 1:]), "tick labels overlap"
        legend = ax.get_legend()
        if legend is None:
            continue
        assert legend.get_title().get_text(), "a legend without a title"
        labels = [t.get_text() for t in legend.get_texts()]
        assert all(labels) and len(set(labels)) == len(labels)
        drawn = {}
        for line in ax.lines:
            if isinstance(line, mlines.Line2D) and not line.get_label().startswith("_") and len(line.get_xdata()):
                drawn[line.get_label()] = (tuple(map(float, line.get_xdata())), tuple(map(float, line.get_ydata())))
        seen = {}
        for label, data in drawn.items():
            assert data not in seen, f"legend entries {seen.get(data)!r} and {label!r} draw the same line"
            seen[data] = label


def test_every_figure_function_labels_what_it_shows():
    import numpy as np
    from dlg_utils.plotting import best_reconstructions, frontier_plot, threshold_plot
    h = pd.concat([fake(10).history.assign(defense=d, seed=s) for d in "xy" for s in range(3)])
    figures = [metric_curves(h, "l1", "defense", title="t"),
               reconstruction_grid([("a", fake(11))], truth=torch.rand(3, 8, 8), title="t")]
    table = pd.DataFrame([{"model": m, "defense": d, "bits": b, "drop": 0.001 * b, "drop low": 0, "drop high": 0.1,
                           "median ssim": s, "median ssim low": s - 0.1, "median ssim high": s + 0.1}
                          for m in ("a", "b") for d, b, s in [("none", 32, 0.9), ("uniform:8", 3.1, 0.4)]])
    figures.append(frontier_plot(table, title="t"))
    curve = pd.DataFrame([{"model": "a", "defense": d, "threshold": t, "recovered": max(0, 1 - t - k)}
                          for k, d in enumerate(("none", "uniform:8")) for t in np.linspace(0.1, 0.9, 5)])
    figures.append(threshold_plot(curve, title="t"))
    figures.append(best_reconstructions({"none": [torch.rand(1, 8, 8)] * 2}, [torch.rand(1, 8, 8)] * 2,
                                        {"none": ["ig 0.9", "ig 0.8"]}, title="t"))
    for fig in figures:
        assert_readable(fig)


def operating_table(defenses: int = 20) -> pd.DataFrame:
    """A made-up notebook-9 frontier table: two points, one with ``defenses`` rows."""
    rng = np.random.default_rng(0)
    rows = []
    for point, n in (("init, B=1, FedSGD", defenses), ("init, B=1, FedSGD, DP eps=8", 1)):
        for k in range(n):
            v, d = rng.uniform(0, 1), rng.normal(0, 0.02)
            rows.append({"domain": "gray28", "point": point, "defense": "none" if k == 0 else f"uniform:{k + 1}",
                         "images": 64, "seeds": 3, "holds": k == 2, "drop": 0.0 if k == 0 else d,
                         "drop low": d - 0.01, "drop high": d + 0.01, "adjusted low": d - 0.5, "adjusted high": d + 0.5,
                         **{f"{c} {s}": v + o for c in ("ssim", "psnr", "mse")
                            for s, o in (("recovered", 0), ("low", -0.05), ("high", 0.05))}})
    return pd.DataFrame(rows)


def test_operating_figures_read_on_their_own():
    from dlg_utils.plotting import operating_frontier_plot, operating_plot
    table = operating_table()
    frontier = operating_frontier_plot(table, title="t")
    assert_readable(frontier)
    privacy = operating_plot(table, criteria=["ssim", "psnr", "mse"], title="t",
                             unsaturated=[("gray28", "init, B=1, FedSGD, DP eps=8", "none"),
                                          ("gray28", "init, B=1, FedSGD", "uniform:2")])
    assert_readable(privacy)
    titles = [ax.get_title() for ax in privacy.axes if ax.get_title()]
    assert ["not protected" in t for t in titles] == [False, True], titles  # a panel of open cells says so
    grey = {t.get_text(): t.get_fontstyle() for t in privacy.axes[0].get_xticklabels()}
    assert grey["uniform:2"] == "italic" and grey["uniform:3"] == "normal"  # one open cell among others: its label
    assert "limit 10%" in [t.get_text() for t in privacy.legends[0].get_texts()]
    names = {t.get_text() for ax in frontier.axes for t in ax.get_yticklabels()}
    assert set(table["defense"].replace("none", "DP eps=8")) <= names | {"none"}, "a defense without its row"
    held = [t for ax in frontier.axes for t in ax.get_yticklabels() if t.get_text() == "uniform:3"]
    assert held and held[0].get_fontweight() == "bold", "a defense that holds is not marked"
    with pytest.raises(ValueError, match="no cell"):
        operating_frontier_plot(table.iloc[:0], title="t")


def test_the_readability_check_catches_overlapping_labels():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 1))
    ax.plot(range(30), range(30))
    ax.set(xlabel="x", ylabel="y", title="t")
    ax.set_yticks(range(30), [f"defense {k}" for k in range(30)])
    with pytest.raises(AssertionError, match="overlap"):
        assert_readable(fig)


def test_the_readability_check_catches_a_hidden_line():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    for name in ("base", "int8"):
        ax.plot([1, 2, 3], [0.5, 0.6, 0.7], label=name)
    ax.set(xlabel="round", ylabel="accuracy", title="t")
    ax.legend(title="method")
    with pytest.raises(AssertionError, match="same line"):
        assert_readable(fig)


def test_leak_grid_reads_snapshots_with_int_or_json_keys(tmp_path):
    snaps = {0: torch.rand(1, 8, 8).tolist(), 5: torch.rand(1, 8, 8).tolist()}
    rows = pd.DataFrame({"attack": ["plain", "sent"],
                         "snapshots": [snaps, {str(k): v for k, v in snaps.items()}]})  # fresh / read back
    assert leak_grid(rows, torch.rand(1, 8, 8), "t", tmp_path / "l.png") is None
    assert (tmp_path / "l.png").stat().st_size > 1000



def test_fl_method_label_names_dp_with_its_epsilon():
    from dlg_utils.plotting import fl_method_label
    curve = pd.DataFrame({"round": [0, 1, 2], "epsilon-max": [None, 0.5, 0.987]})
    assert fl_method_label("dp", curve, 1e-5) == "dp (epsilon 0.99 spent, delta 1e-05)"
    assert fl_method_label("mixed", curve, 1e-5) == "mixed"
    assert fl_method_label("dp", curve.drop(columns="epsilon-max"), 1e-5) == "dp"
