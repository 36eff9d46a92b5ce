"""Data sets as float image tensors in [0, 1] (C x H x W) with integer labels.

``samples`` ships inside the package and needs nothing; Fashion-MNIST loads offline from
Debian's ``dataset-fashion-mnist``; CIFAR-10/100 and MNIST load through torchvision from
``root`` (default ``$DLG_DATA`` or ``~/.cache/dlg_utils/data``) where you have them.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
import torchvision
from torchvision import transforms

SAMPLES_FILE = Path(__file__).resolve().parent / "samples" / "samples.npz"
PHOTOS_FILE = SAMPLES_FILE.with_name("photos32.npz")
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100,
               "mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}
NAMES = ("samples", "samples-gray28", "photos32", *TORCHVISION)


class SampleImages(Dataset):
    """An embedded set (see SOURCES.md): ``samples`` (12 colour photos and 20 Fashion-MNIST
    images, all 3x32x32) or ``photos32`` (70 distinct 3x32x32 crops of scikit-image's 7 bundled
    colour photos, one class per photo)."""

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

    def grayscale(self, size: int = 28) -> "SampleImages":
        """The same images as 1 x ``size`` x ``size`` grayscale, the input of a Fashion-MNIST
        model: the Fashion-MNIST ones exactly as in the data set (their zero padding removed,
        for ``size`` 28), the photos as luminance (ITU-R 601) resized with anti-aliasing.
        Labels are Fashion-MNIST's 10 classes: a garment keeps its class, a photo is given
        class (photo index // 2), a label a client could train it with (what an attack needs)."""
        out = copy.copy(self)
        luma = (self.images * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
        resized = F.interpolate(luma, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        pad = (self.images.shape[-1] - size) // 2
        fashion = torch.tensor(["Fashion-MNIST" in s for s in self.sources])
        if size == self.images.shape[-1] - 2 * pad:
            cropped = self.images[:, :1, pad:pad + size, pad:pad + size]
            resized = torch.where(fashion[:, None, None, None], cropped, resized)
        out.images = resized.clamp(0, 1)
        first = self.classes.index("T-shirt/top")
        out.targets = torch.where(fashion, self.targets - first, torch.arange(len(self.targets)) // 2 % first)
        out.classes = self.classes[first:]
        return out


def default_root() -> Path:
    return Path(os.environ.get("DLG_DATA", "~/.cache/dlg_utils/data")).expanduser()


def get_command(name: str, root: str | Path | None = None) -> str:
    """The one command that gets data set ``name`` onto this machine (into ``root`` if given)."""
    download = f"python -m dlg_utils.data {name}" + (f" --root {root}" if root is not None else "")
    if name == "fashion-mnist":
        return f"apt-get install -y dataset-fashion-mnist  (or, with a network: {download})"
    return f"{download}  (needs a network)"


def _stage_fashion_mnist(root: Path, source: Path) -> None:
    """Unpack Fashion-MNIST's gz files found in ``source`` (Debian's folder, or gz files
    copied into ``root`` itself) where torchvision's loader looks (no network)."""
    raw = root / "FashionMNIST" / "raw"
    for gz in sorted(source.glob("*-ubyte.gz")):
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
    The embedded sets (``samples``, ``samples-gray28``, ``photos32``) have a single split and
    ignore ``train``. Fashion-MNIST's four ``*-ubyte.gz``
    files (Debian's package, or copied into ``root``) are unpacked into ``root`` on first use.
    """
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key == "samples":
        return SampleImages()
    if key == "samples-gray28":
        return SampleImages().grayscale(28)
    if key == "photos32":
        return SampleImages(PHOTOS_FILE)
    if key not in TORCHVISION:
        raise ValueError(f"unknown data set {name!r}; choose one of {NAMES}")
    name = key
    given = root
    root = Path(root).expanduser() if root is not None else default_root()
    if download is None:
        download = os.environ.get("DLG_DOWNLOAD", "0") == "1"
    if name == "fashion-mnist":
        for source in (FASHION_MNIST_DEBIAN, root):
            if source.is_dir():
                _stage_fashion_mnist(root, source)
    try:
        return TORCHVISION[name](str(root), train=train, download=download,
                                 transform=transforms.ToTensor())
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted..."
        where = f"{root}" + (f" and {FASHION_MNIST_DEBIAN}" if name == "fashion-mnist" else "")
        raise FileNotFoundError(f"data set {name!r} not found in {where}. "
                                f"Get it with: {get_command(name, given)}") from e


def to_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole data set as (N x C x H x W float images in [0, 1], N integer labels), read in
    one go: training then indexes tensors (on any device) instead of running a DataLoader.
    torchvision's MNIST-family and CIFAR sets (with ``ToTensor``), the embedded samples and
    Subsets of them are read from their arrays; any other data set item by item."""
    if isinstance(dataset, Subset):
        images, labels = to_tensors(dataset.dataset)
        idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return images[idx], labels[idx]
    if isinstance(dataset, SampleImages):
        return dataset.images, dataset.targets.long()
    plain = isinstance(getattr(dataset, "transform", None), transforms.ToTensor)
    if plain and isinstance(dataset, torchvision.datasets.MNIST):
        return dataset.data.float().div(255).unsqueeze(1), torch.as_tensor(dataset.targets).long()
    if plain and isinstance(dataset, torchvision.datasets.CIFAR10):
        return (torch.from_numpy(dataset.data).permute(0, 3, 1, 2).float().div(255),
                torch.as_tensor(dataset.targets).long())
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise ValueError("data set is empty")
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def num_classes(dataset: Dataset) -> int:
    return len(dataset.classes)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dlg_utils.data", description="Download a data set with torchvision (needs a network).")
    parser.add_argument("name", choices=list(TORCHVISION))
    parser.add_argument("--root", default=None, help="where to put it (default $DLG_DATA or ~/.cache/dlg_utils/data)")
    args = parser.parse_args()
    for train in (True, False):
        ds = load_dataset(args.name, train=train, root=args.root, download=True)
        print(f"{args.name} {'train' if train else 'test'}: {len(ds)} images")


if __name__ == "__main__":
    main()
