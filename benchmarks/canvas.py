"""The drawing primitives of the generated ground-truth sets: the marks, the seeded random streams, the Fashion-MNIST
garments and how things are pasted onto a canvas. `generate.py` (the ``cluttered`` / ``part`` sets and the dataset
writer) and `known_answer.py` (the ``garments`` / ``marks`` / ``stripes`` sets) both draw with them."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from training.build_fashion_mnist_subset import load_fashion_mnist_idx

VARIANTS = ("cluttered", "part", "garments", "marks", "stripes", "orientation")
# The known-answer sets of the ground-truth benchmark (`benchmarks/known_answer.py`, issue 22); "cluttered" and "part"
# have shortcuts (a model-free readout finds their answer) and stay for the suite's cluttered dataset.
KNOWN_ANSWER = ("garments", "marks", "stripes", "orientation")
SPLITS = ("train", "test")
_SPLIT_CODE = {"train": 0, "test": 1}
_VARIANT_CODE = {"cluttered": 0, "part": 1, "garments": 2, "marks": 3, "stripes": 4, "orientation": 5}


def _glyphs() -> dict[str, np.ndarray]:
    """7×7 binary marks. The first five are the classes of the ``part`` variant; the last two only appear as decoys."""
    g = {}
    z = lambda: np.zeros((7, 7), bool)  # noqa: E731
    a = z()
    a[3, :] = True
    a[:, 3] = True
    g["plus"] = a
    a = z()
    np.fill_diagonal(a, True)
    a[np.arange(7), 6 - np.arange(7)] = True
    g["cross"] = a
    a = z()
    a[0, :] = a[-1, :] = a[:, 0] = a[:, -1] = True
    g["ring"] = a
    a = z()
    for r in range(7):
        a[r, 3 - r // 2 : 4 + r // 2] = True
    g["triangle"] = a
    a = z()
    a[:, 0] = a[:, -1] = True
    a[3, :] = True
    g["H"] = a
    a = z()
    a[1:6, 1:6] = True
    g["block"] = a  # (decoy)
    a = z()
    a[0, :] = True
    a[:, 0] = True
    g["corner"] = a  # (decoy)
    return g


GLYPHS = _glyphs()
PART_CLASSES = ["plus", "cross", "ring", "triangle", "H"]
DECOYS = ["block", "corner"]


@lru_cache(maxsize=2)
def _garments(split: str, source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Fashion-MNIST split the split's samples draw from: train samples from the 60k training images, test samples
    from the 10k test images (so the ground-truth test set shares no garment with its training set)."""
    return load_fashion_mnist_idx("train" if split == "train" else "test", source)


def _rng(seed: int, split: str, index: int, variant: str) -> np.random.Generator:
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index), _VARIANT_CODE[variant]])


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def _paste_max(canvas: np.ndarray, patch: np.ndarray, y: int, x: int) -> None:
    """Overlay by maximum (what a bright object on a black background looks like when another lies under it)."""
    h, w = patch.shape
    region = canvas[y : y + h, x : x + w]
    np.maximum(region, patch[: region.shape[0], : region.shape[1]], out=region)


def _tight_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _stroke(canvas: np.ndarray, rng: np.random.Generator, avoid: list[int]) -> None:
    """A thin straight noise stroke of random length/angle/brightness outside the ``avoid`` box."""
    size = canvas.shape[0]
    for _ in range(20):
        y0, x0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(6, 16)
        t = np.linspace(0, length, int(length * 2))
        ys, xs = (y0 + t * np.sin(angle)).astype(int), (x0 + t * np.cos(angle)).astype(int)
        ok = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
        ys, xs = ys[ok], xs[ok]
        inside = (xs >= avoid[0]) & (xs < avoid[2]) & (ys >= avoid[1]) & (ys < avoid[3])
        if len(ys) and not inside.any():
            canvas[ys, xs] = np.maximum(canvas[ys, xs], int(rng.uniform(80, 200)))
            return


def _place_outside(rng, size: int, h: int, w: int, avoid: list[int]) -> tuple[int, int] | None:
    for _ in range(30):
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        if x + w <= avoid[0] or x >= avoid[2] or y + h <= avoid[1] or y >= avoid[3]:
            return y, x
    return None


def _garment(rng, split: str, source, size: int) -> tuple[np.ndarray, int, int]:
    images, labels = _garments(split, source)
    gid = int(rng.integers(0, len(images)))
    return _resize(images[gid], size), int(labels[gid]), gid
