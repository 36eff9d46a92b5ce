import pytest
import torch

from dlg_utils.data import FASHION_MNIST_DEBIAN, load_dataset, num_classes, to_tensors


def test_samples_are_real_images_in_unit_range(samples):
    assert len(samples) == 32 and num_classes(samples) == 17
    x, y = to_tensors(samples)
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert int(y.max()) < 17 and len(set(y.tolist())) == 17
    assert float(x.std(dim=(1, 2, 3)).min()) > 0.05  # no blank images
    assert len(samples.sources) == 32


def test_photos32_are_64_and_more_distinct_colour_images():
    """The frontier's colour images: at least 64, all different from each other and from the
    photos of ``samples`` (the pilot's), in colour, with their sources."""
    photos, samples = load_dataset("photos32"), load_dataset("samples")
    x, y = to_tensors(photos)
    assert len(photos) >= 64 and x.shape[1:] == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    flat = {t.numpy().tobytes() for t in x}
    assert len(flat) == len(photos)
    assert not flat & {t.numpy().tobytes() for t in to_tensors(samples)[0]}
    assert float((x[:, 0] - x[:, 2]).abs().mean()) > 0.05  # colour, not grey
    assert num_classes(photos) == len(set(y.tolist())) == 7 and len(photos.sources) == len(photos)


def test_fashion_mnist_loads_offline(tmp_path):
    assert FASHION_MNIST_DEBIAN.exists(), "install it with: apt-get install -y dataset-fashion-mnist"
    train = load_dataset("fashion-mnist", root=tmp_path)
    test = load_dataset("fashion-mnist", train=False, root=tmp_path)
    assert (len(train), len(test)) == (60000, 10000)
    x, y = train[0]
    assert x.shape == (1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1 and y == 9


def test_fashion_mnist_gz_files_copied_into_a_root_load(tmp_path, monkeypatch):
    """The GPU machine has no Debian package: the gz files travel in a folder given as root."""
    import shutil
    import dlg_utils.data as data
    for gz in FASHION_MNIST_DEBIAN.glob("*-ubyte.gz"):
        shutil.copy(gz, tmp_path / gz.name)
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN", tmp_path / "not-here")
    test = load_dataset("fashion-mnist", train=False, root=tmp_path)
    assert len(test) == 10000 and test[0][0].shape == (1, 28, 28)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist"])
def test_missing_data_set_says_where_and_how(tmp_path, name):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, root=tmp_path, download=False)
    assert str(tmp_path) in str(e.value) and f"python -m dlg_utils.data {name} --root {tmp_path}" in str(e.value)


def test_names_ignore_case_and_the_cli_runs_without_warnings():
    import subprocess
    import sys
    assert len(load_dataset("Fashion-MNIST", train=False)) == 10000
    out = subprocess.run([sys.executable, "-W", "error", "-m", "dlg_utils.data", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "usage: python -m dlg_utils.data" in out.stdout and not out.stderr


def test_cifar_loader_reads_the_torchvision_format(tmp_path, monkeypatch):
    """A tiny CIFAR-10 in the on-disk format torchvision reads, built here (no download)."""
    import pickle
    import numpy as np
    import torchvision

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # md5 sums are those of the real files; this test checks our loading path, not the download
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    ds = load_dataset("cifar10", root=tmp_path)
    x, y = ds[0]
    assert len(ds) == 20 and x.shape == (3, 32, 32) and 0 <= float(x.min()) <= float(x.max()) <= 1 and y == 0


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("imagenet")
