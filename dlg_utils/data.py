"""Data sets as float image tensors in [0, 1] (C x H x W) with integer labels.

``samples`` ships inside the package and needs nothing; Fashion-MNIST loads offline from
Debian's ``dataset-fashion-mnist``; CIFAR-10/100 and MNIST load through torchvision from
``root`` (default ``$DLG_DATA`` or ``~/.cache/dlg_utils/data``) where you have them.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
import torchvision
from torchvision import transforms

SAMPLES_FILE = Path(__file__).resolve().parent / "samples" / "samples.npz"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100,
               "mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}
NAMES = ("samples", *TORCHVISION)


class SampleImages(Dataset):
    """The embedded set: 12 colour photos and 20 Fashion-MNIST images, all 3x32x32 (see SOURCES.md)."""

    def __init__(self, path: Path = SAMPLES_FILE):
        with np.load(path) as f:
            self.images = torch.from_numpy(f["images"]).permute(0, 3, 1, 2).float() / 255
            self.targets = torch.from_numpy(f["labels"])
            self.classes = [str(c) for c in f["classes"]]
            self.sources = [str(s) for s in f["sources"]]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


def default_root() -> Path:
    return Path(os.environ.get("DLG_DATA", "~/.cache/dlg_utils/data")).expanduser()


def get_command(name: str) -> str:
    """The one command that gets data set ``name`` onto this machine."""
    if name == "fashion-mnist":
        return "apt-get install -y dataset-fashion-mnist  (or, with a network: python -m dlg_utils.data fashion-mnist)"
    return f"python -m dlg_utils.data {name}  (needs a network)"


def _stage_fashion_mnist(root: Path) -> None:
    """Unpack Debian's Fashion-MNIST gz files where torchvision's loader looks (no network)."""
    raw = root / "FashionMNIST" / "raw"
    for gz in sorted(FASHION_MNIST_DEBIAN.glob("*-ubyte.gz")):
        target = raw / gz.name[:-3]
        if not target.exists():
            raw.mkdir(parents=True, exist_ok=True)
            with gzip.open(gz) as src, open(target.with_suffix(".tmp"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            target.with_suffix(".tmp").rename(target)


def load_dataset(name: str, train: bool = True, root: str | Path | None = None,
                 download: bool | None = None) -> Dataset:
    """Load ``name`` (one of :data:`NAMES`) as a Dataset of (float image in [0, 1], int label).

    ``download=None`` downloads only when ``DLG_DOWNLOAD=1``; a missing data set raises
    ``FileNotFoundError`` naming where it looked and the command that gets it.
    ``samples`` has a single split and ignores ``train``.
    """
    if name == "samples":
        return SampleImages()
    if name not in TORCHVISION:
        raise ValueError(f"unknown data set {name!r}; choose one of {NAMES}")
    root = Path(root).expanduser() if root is not None else default_root()
    if download is None:
        download = os.environ.get("DLG_DOWNLOAD", "0") == "1"
    if name == "fashion-mnist" and FASHION_MNIST_DEBIAN.exists():
        _stage_fashion_mnist(root)
    try:
        return TORCHVISION[name](str(root), train=train, download=download,
                                 transform=transforms.ToTensor())
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted..."
        where = f"{root}" + (f" and {FASHION_MNIST_DEBIAN}" if name == "fashion-mnist" else "")
        raise FileNotFoundError(f"data set {name!r} not found in {where}. "
                                f"Get it with: {get_command(name)}") from e


def stack(dataset: Dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels at ``indices`` as one batch: (N x C x H x W, N)."""
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def num_classes(dataset: Dataset) -> int:
    return len(dataset.classes)


def main() -> None:
    parser = argparse.ArgumentParser(description="Download a data set with torchvision (needs a network).")
    parser.add_argument("name", choices=list(TORCHVISION))
    parser.add_argument("--root", default=None, help="where to put it (default $DLG_DATA or ~/.cache/dlg_utils/data)")
    args = parser.parse_args()
    for train in (True, False):
        ds = load_dataset(args.name, train=train, root=args.root, download=True)
        print(f"{args.name} {'train' if train else 'test'}: {len(ds)} images")


if __name__ == "__main__":
    main()
