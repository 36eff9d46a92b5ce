"""Build dlg_utils/samples/samples.npz: the small embedded image set that ships with the package.

12 colour 32x32 photos cropped from scikit-image's bundled images and 20 Fashion-MNIST test
images (the first two of each class), padded to 32x32 and repeated to 3 channels.
Run once (needs scikit-image and /usr/share/datasets/fashion-mnist); see SOURCES.md.
"""
import gzip
from pathlib import Path

import numpy as np
import skimage.data
from skimage.transform import resize

FASHION = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parents[1] / "dlg_utils" / "samples" / "samples.npz"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
# (skimage function, class name, crop as (top, left, size) or None for the central square)
PHOTOS = [
    ("astronaut", "astronaut", (30, 150, 220)), ("astronaut", "astronaut", None),
    ("chelsea", "cat", (40, 120, 200)), ("chelsea", "cat", None),
    ("coffee", "coffee", (20, 130, 340)), ("coffee", "coffee", None),
    ("rocket", "rocket", (100, 250, 200)), ("rocket", "rocket", None),
    ("hubble_deep_field", "galaxies", (0, 0, 300)), ("hubble_deep_field", "galaxies", (500, 600, 300)),
    ("immunohistochemistry", "tissue", None), ("retina", "retina", None),
]


def photo(fn: str, crop) -> np.ndarray:
    img = getattr(skimage.data, fn)()[..., :3]
    h, w = img.shape[:2]
    top, left, size = crop or ((h - min(h, w)) // 2, (w - min(h, w)) // 2, min(h, w))
    patch = img[top:top + size, left:left + size]
    return (resize(patch, (32, 32), anti_aliasing=True) * 255).round().astype(np.uint8)


def fashion(per_class: int = 2):
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    picked = [i for c in range(10) for i in np.flatnonzero(labels == c)[:per_class]]
    padded = np.pad(images[picked], ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1), labels[picked], picked


def main():
    photo_classes = list(dict.fromkeys(name for _, name, _ in PHOTOS))
    classes = photo_classes + FASHION_CLASSES
    images = [photo(fn, crop) for fn, _, crop in PHOTOS]
    labels = [photo_classes.index(name) for _, name, _ in PHOTOS]
    sources = [f"scikit-image data.{fn}() crop {crop}" for fn, _, crop in PHOTOS]
    f_images, f_labels, f_index = fashion()
    images += list(f_images)
    labels += [len(photo_classes) + int(c) for c in f_labels]
    sources += [f"Fashion-MNIST t10k index {i}" for i in f_index]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, images=np.stack(images), labels=np.array(labels, np.int64),
                        classes=np.array(classes), sources=np.array(sources))
    print(f"wrote {OUT}: {len(images)} images, {len(classes)} classes")


if __name__ == "__main__":
    main()
