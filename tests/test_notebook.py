"""The notebooks' shared first cell and helpers (dlg_utils.notebook)."""
from dlg_utils.notebook import present, start


def test_start_reports_quick_mode(monkeypatch, capsys):
    monkeypatch.setenv("DLG_QUICK", "1")
    assert start() is True and capsys.readouterr().out == "quick mode: True\n"
    monkeypatch.setenv("DLG_QUICK", "0")
    assert start() is False and capsys.readouterr().out == "quick mode: False\n"


def test_present_says_whether_a_data_set_is_here(monkeypatch, tmp_path):
    monkeypatch.setenv("DLG_DATA", str(tmp_path))
    monkeypatch.setenv("DLG_DOWNLOAD", "0")
    assert present("samples")
    assert not present("cifar10")  # not in the empty data folder, and never downloaded
