"""Build the embedded image sets that ship with the package (see dlg_utils/samples/SOURCES.md):

- dlg_utils/samples/samples.npz: 12 colour 32x32 photos cropped from scikit-image's bundled
  images and 20 Fashion-MNIST test images (the first two of each class), padded to 32x32 and
  repeated to 3 channels;
- dlg_utils/samples/photos32.npz: 70 distinct 32x32 colour crops, 10 from each of scikit-image's
  7 bundled photos (the colour images the frontier at operating points scores).

Run once (needs scikit-image and /usr/share/datasets/fashion-mnist).
"""
import gzip
from pathlib import Path

import numpy as np
import skimage.data
from skimage.transform import resize

FASHION = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parents[1] / "dlg_utils" / "samples" / "samples.npz"
PHOTOS32 = OUT.with_name("photos32.npz")
# (skimage function, class name) of photos32, one class per photo
PHOTO_SOURCES = [("astronaut", "astronaut"), ("chelsea", "cat"), ("coffee", "coffee"), ("rocket", "rocket"),
                 ("hubble_deep_field", "galaxies"), ("immunohistochemistry", "tissue"), ("retina", "retina")]
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


def crops(fn: str, per_photo: int = 10, short_side: int = 128) -> tuple[list[np.ndarray], list[str]]:
    """``per_photo`` 32x32 crops of one photo: the photo resized (anti-aliased) to ``short_side``
    pixels on its short side, cut into a grid of non-overlapping 32x32 tiles, the tiles with
    the most texture (standard deviation of their pixels) kept, in grid order."""
    img = getattr(skimage.data, fn)()[..., :3]
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    small = (resize(img, (round(h * scale), round(w * scale)), anti_aliasing=True) * 255).round().astype(np.uint8)
    tiles = [(r, c) for r in range(0, small.shape[0] - 31, 32) for c in range(0, small.shape[1] - 31, 32)]
    texture = [small[r:r + 32, c:c + 32].std() for r, c in tiles]
    kept = sorted(sorted(range(len(tiles)), key=lambda i: -texture[i])[:per_photo])
    return ([small[tiles[i][0]:tiles[i][0] + 32, tiles[i][1]:tiles[i][1] + 32] for i in kept],
            [f"scikit-image data.{fn}() resized to short side {short_side}, tile at {tiles[i]}" for i in kept])


def photos32() -> None:
    images, labels, sources = [], [], []
    for k, (fn, _) in enumerate(PHOTO_SOURCES):
        tiles, where = crops(fn)
        images += tiles
        labels += [k] * len(tiles)
        sources += where
    np.savez_compressed(PHOTOS32, images=np.stack(images), labels=np.array(labels, np.int64),
                        classes=np.array([name for _, name in PHOTO_SOURCES]), sources=np.array(sources))
    print(f"wrote {PHOTOS32}: {len(images)} images, {len(PHOTO_SOURCES)} classes")


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
    photos32()


if __name__ == "__main__":
    import sys
    photos32() if sys.argv[1:] == ["--photos32"] else main()
