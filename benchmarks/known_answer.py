"""The known-answer sets of the ground-truth benchmark (issue 22): data whose decisive evidence cannot be found
without the class.

The first sets (`generate.py`'s ``cluttered`` and ``part``) had shortcuts: the decisive mark was the only
full-brightness shape on a dimmed garment, and the clutter never overlapped the garment, so "the brightest blob"
(no model) found the answer 98.5% of the time. Here every object -- the decisive one, the decoys, the garments and
the strokes -- draws its intensity from ONE distribution (`_level`), objects may overlap, and there are enough decoys
of the same size, brightness and contrast that a readout which does not know the class points at the answer about as
often as a random point does. `benchmarks/groundtruth_audit.py` checks that on every generated set before any
explanation method is scored.

Four sets (84×84 grey canvases, black background, Fashion-MNIST garments: MIT, © 2017 Zalando SE):

- ``garments``: one garment of a LABEL class (`GARMENT_CLASSES`) among 7-9 decoy garments of the other five
  Fashion-MNIST classes, all of one size range and intensity distribution, overlapping freely, plus noise strokes.
  Label: the labelled garment's class. Truth: its tight box and silhouette.
- ``marks``: the class is the shape of one small mark (`generate.PART_CLASSES`) among 6-8 decoy marks of shapes that
  are no class (`DECOY_MARKS`); every mark is drawn on a cleared square (so it stays visible over a garment) at an
  intensity from the shared distribution; a full-brightness garment and strokes of the same distribution lie under
  and around them. Truth: the decisive mark's box and pixels.
- ``stripes``: 4 classes, the ORIENTATION (0, 45, 90, 135 degrees) of a small striped patch at a random place; 4-6
  decoy patches (checkerboards, blurred noise, 2×2 block noise) of the same size, the same mean intensity (the
  garment's own mean intensity) and the same RMS contrast. Truth: the striped patch's box.
- ``orientation``: ``stripes`` made harder (every method found ``stripes``' only striped patch): 5-7 decoys, most of
  them striped too, at the orientations halfway between the classes' (`ORIENTATION_DECOYS`), the rest textures as in
  ``stripes``. Truth: the class-oriented patch's box.

Every renderer takes ``without_part=True`` and renders the same sample without the decisive object (the truth) and
nothing else changed.
"""

from __future__ import annotations

import numpy as np

# Labelled garments vs decoy garments: two halves of the Fashion-MNIST classes with the same mean edge content (the
# peak 7×7 Sobel density of an 18-px garment: 362 vs 359; a split by shape, trouser / dress / sandal / sneaker / bag,
# gave 389 vs 332 and let "the busiest spot" find the labelled garment).
GARMENT_CLASSES = [1, 2, 6, 8, 9]
DECOY_GARMENTS = [0, 3, 4, 5, 7]
STRIPE_CLASSES = ["0°", "45°", "90°", "135°"]
LEVEL_RANGE = (110, 255)  # every object's peak intensity


def _level(rng) -> int:
    return int(rng.integers(LEVEL_RANGE[0], LEVEL_RANGE[1] + 1))


def _scaled_garment(rng, images: np.ndarray, index: int, size: int) -> np.ndarray:
    """Garment `index` resized to `size` and scaled so its brightest pixel is a draw of the shared distribution."""
    from benchmarks.canvas import _resize

    g = _resize(images[index], size).astype(float)
    return (g * _level(rng) / max(g.max(), 1.0)).astype(np.uint8)


def _strokes(canvas, rng, n: int) -> None:
    """Thin straight strokes anywhere (over objects too), each at a level of the shared distribution."""
    size = canvas.shape[0]
    for _ in range(n):
        y0, x0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(6, 16)
        t = np.linspace(0, length, int(length * 2))
        ys, xs = (y0 + t * np.sin(angle)).astype(int), (x0 + t * np.cos(angle)).astype(int)
        ok = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
        canvas[ys[ok], xs[ok]] = np.maximum(canvas[ys[ok], xs[ok]], _level(rng))


def _spots(rng, canvas: int, m: int, n: int, gap: int = 2) -> list[tuple[int, int]]:
    """Up to `n` top-left corners of m×m squares that do not touch each other (`gap` px apart), anywhere on the
    canvas; the first is the decisive object's."""
    out = []
    for _ in range(40 * n):
        if len(out) == n:
            break
        y, x = int(rng.integers(0, canvas - m + 1)), int(rng.integers(0, canvas - m + 1))
        if all(abs(y - a) >= m + gap or abs(x - b) >= m + gap for a, b in out):
            out.append((y, x))
    return out


def render_garments(split: str, index: int, seed: int = 0, canvas: int = 84, source=None, without_part=False):
    """One ``garments`` sample: ``(image, label, box, mask, source_id)``; label indexes `GARMENT_CLASSES`."""
    from benchmarks.canvas import _garments, _paste_max, _rng, _tight_box

    rng = _rng(seed, split, index, "garments")
    images, labels = _garments(split, source)
    label = int(rng.integers(0, len(GARMENT_CLASSES)))
    pool = np.flatnonzero(labels == GARMENT_CLASSES[label])
    gid = int(pool[rng.integers(0, len(pool))])
    decoy_pool = np.flatnonzero(np.isin(labels, DECOY_GARMENTS))
    img = np.zeros((canvas, canvas), np.uint8)
    lo, hi = round(0.17 * canvas), round(0.26 * canvas)  # 14..22 px on 84
    size = int(rng.integers(lo, hi + 1))
    y, x = int(rng.integers(0, canvas - size + 1)), int(rng.integers(0, canvas - size + 1))
    target = _scaled_garment(rng, images, gid, size)
    mask = np.zeros((canvas, canvas), bool)
    mask[y : y + size, x : x + size] = target > 25
    n_decoys = int(rng.integers(7, 10))
    depth = int(rng.integers(0, n_decoys + 1))  # how many decoys are pasted before the labelled garment
    for k in range(n_decoys + 1):
        if k == depth:
            if not without_part:
                _paste_max(img, target, y, x)
            continue
        s = int(rng.integers(lo, hi + 1))
        d = _scaled_garment(rng, images, int(decoy_pool[rng.integers(0, len(decoy_pool))]), s)
        _paste_max(img, d, int(rng.integers(0, canvas - s + 1)), int(rng.integers(0, canvas - s + 1)))
    _strokes(img, rng, int(rng.integers(2, 5)))
    return img, label, _tight_box(mask), mask, gid


# Decoy shapes whose edge content spans the class marks' (a 7×7 Sobel sum of 13-40k against 22-40k), so that "the
# busiest spot" finds a decoy as often as the mark.
DECOY_MARKS = ["block", "corner", "slash", "bar", "T", "grid", "E"]


def _decoy_glyphs() -> dict[str, np.ndarray]:
    from benchmarks.canvas import GLYPHS

    g = {k: GLYPHS[k] for k in ("block", "corner")}
    z = lambda: np.zeros((7, 7), bool)  # noqa: E731
    a = z()
    np.fill_diagonal(a, True)
    g["slash"] = a
    a = z()
    a[3, :] = True
    a[2, :] = True
    g["bar"] = a
    a = z()
    a[0, :] = True
    a[:, 3] = True
    g["T"] = a
    a = z()
    a[::3, :] = True
    a[:, ::3] = True
    g["grid"] = a
    a = z()
    a[::3, :] = True
    a[:, 0] = True
    g["E"] = a
    return g


def render_marks(split: str, index: int, seed: int = 0, canvas: int = 84, source=None, without_part=False):
    """One ``marks`` sample: ``(image, label, box, mask, source_id)``; label indexes `generate.PART_CLASSES`."""
    from benchmarks.canvas import GLYPHS, PART_CLASSES, _garment, _paste_max, _rng

    rng = _rng(seed, split, index, "marks")
    label = int(rng.integers(0, len(PART_CLASSES)))
    size = int(rng.integers(round(0.35 * canvas), round(0.55 * canvas) + 1))
    garment, _, gid = _garment(rng, split, source, size)
    garment = (garment.astype(float) * _level(rng) / max(int(garment.max()), 1)).astype(np.uint8)
    img = np.zeros((canvas, canvas), np.uint8)
    _paste_max(img, garment, int(rng.integers(0, canvas - size + 1)), int(rng.integers(0, canvas - size + 1)))
    _strokes(img, rng, int(rng.integers(2, 5)))
    scale = int(rng.integers(1, 3))  # 7 or 14 px marks
    m = 7 * scale + 2  # with a one-pixel cleared margin (the same for every mark)
    decoys = _decoy_glyphs()
    spots = _spots(rng, canvas, m, 1 + int(rng.integers(6, 9)))
    mask = np.zeros((canvas, canvas), bool)
    my, mx = spots[0]
    box = [mx + 1, my + 1, mx + m - 1, my + m - 1]
    for k, (y, x) in enumerate(spots):
        name = PART_CLASSES[label] if k == 0 else DECOY_MARKS[int(rng.integers(0, len(DECOY_MARKS)))]
        glyph = np.kron(GLYPHS[name] if k == 0 else decoys[name], np.ones((scale, scale), bool))
        level = _level(rng)
        if k == 0:
            mask[y + 1 : y + m - 1, x + 1 : x + m - 1] = glyph
            if without_part:
                continue
        img[y : y + m, x : x + m] = 0
        img[y + 1 : y + m - 1, x + 1 : x + m - 1][glyph] = level
    return img, label, box, mask, gid


def _patch(kind: str, rng, m: int, mean: float, contrast: float) -> np.ndarray:
    """An m×m texture with the given mean and RMS contrast: "stripes_<deg>" (binary, period 6 px), "checker" (2-px
    squares: fewer edges than stripes), "noise" (blurred) and "blocks" (binary 2×2-px noise), both with more edges:
    so "the busiest spot" does not single the stripes out (binary stripes of period 4 had the most)."""
    yy, xx = np.mgrid[:m, :m].astype(float)
    phase = rng.uniform(0, 2 * np.pi)
    if kind.startswith("stripes_"):
        theta = np.deg2rad(float(kind.split("_")[1]))
        t = np.sign(np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / 6 + phase))
    elif kind == "checker":
        t = ((xx // 2 + yy // 2) % 2) * 2.0 - 1.0
    elif kind == "blocks":
        t = np.kron(np.sign(rng.standard_normal((m // 2 + 1, m // 2 + 1))), np.ones((2, 2)))[:m, :m]
    else:  # blurred noise
        from scipy.ndimage import uniform_filter

        t = uniform_filter(rng.standard_normal((m, m)), 2)
    t = t - t.mean()
    t = t / max(t.std(), 1e-6)
    return np.clip(mean + contrast * t, 0, 255).astype(np.uint8)


def _render_patches(name: str, split, index, seed, canvas, source, without_part, decoys: tuple, decoy_kinds: tuple):
    """A garment and strokes, then one striped patch of the class's orientation and `decoys` (lo, hi) more patches,
    each of a kind drawn from `decoy_kinds`, all of one size, mean intensity (the garment's own mean) and RMS
    contrast."""
    from benchmarks.canvas import _garment, _paste_max, _rng

    rng = _rng(seed, split, index, name)
    label = int(rng.integers(0, len(STRIPE_CLASSES)))
    size = int(rng.integers(round(0.35 * canvas), round(0.55 * canvas) + 1))
    garment, _, gid = _garment(rng, split, source, size)
    garment = (garment.astype(float) * _level(rng) / max(int(garment.max()), 1)).astype(np.uint8)
    img = np.zeros((canvas, canvas), np.uint8)
    _paste_max(img, garment, int(rng.integers(0, canvas - size + 1)), int(rng.integers(0, canvas - size + 1)))
    _strokes(img, rng, int(rng.integers(2, 5)))
    mean = float(garment[garment > 25].mean()) if (garment > 25).any() else 128.0  # the garment's own mean
    contrast = min(mean, 255 - mean) * rng.uniform(0.5, 0.8)
    m = int(rng.integers(12, 17))
    spots = _spots(rng, canvas, m, 1 + int(rng.integers(*decoys)))
    mask = np.zeros((canvas, canvas), bool)
    (py, px) = spots[0]
    mask[py : py + m, px : px + m] = True
    for k, (y, x) in enumerate(spots):
        kind = f"stripes_{45 * label}" if k == 0 else decoy_kinds[int(rng.integers(0, len(decoy_kinds)))]
        p = _patch(kind, rng, m, mean, contrast)
        if k == 0 and without_part:
            continue
        img[y : y + m, x : x + m] = p
    return img, label, [px, py, px + m, py + m], mask, gid


def render_stripes(split: str, index: int, seed: int = 0, canvas: int = 84, source=None, without_part=False):
    """One ``stripes`` sample: ``(image, label, box, mask, source_id)``; label indexes `STRIPE_CLASSES`."""
    textures = ("checker", "noise", "blocks")
    return _render_patches("stripes", split, index, seed, canvas, source, without_part, (4, 7), textures)


# The decoys of ``orientation``: striped patches at the orientations halfway between the classes' (no class), and
# the textures of ``stripes``. "Where are the stripes?" then finds a decoy most of the time: only a readout that
# tells 0/45/90/135 from 22.5/67.5/112.5/157.5 degrees finds the decisive patch (``stripes`` sits at the ceiling:
# every method found its only striped patch on 100% of the images).
ORIENTATION_DECOYS = ("stripes_22.5", "stripes_67.5", "stripes_112.5", "stripes_157.5", "checker", "noise", "blocks")


def render_orientation(split: str, index: int, seed: int = 0, canvas: int = 84, source=None, without_part=False):
    """One ``orientation`` sample: ``(image, label, box, mask, source_id)``; label indexes `STRIPE_CLASSES`."""
    return _render_patches("orientation", split, index, seed, canvas, source, without_part, (5, 8), ORIENTATION_DECOYS)


RENDERERS = {
    "garments": render_garments,
    "marks": render_marks,
    "stripes": render_stripes,
    "orientation": render_orientation,
}


def class_names(variant: str) -> list[str]:
    from benchmarks.canvas import PART_CLASSES
    from training.build_fashion_mnist_subset import CLASS_NAMES

    if variant == "garments":
        return [CLASS_NAMES[c] for c in GARMENT_CLASSES]
    return list(PART_CLASSES) if variant == "marks" else list(STRIPE_CLASSES)  # stripes, orientation


WHAT = {
    "garments": "One garment of a labelled class (trouser, pullover, shirt, bag, ankle boot) among 7-9 decoy "
    "garments of "
    "the other Fashion-MNIST classes, all at one size range and intensity distribution, overlapping freely, with "
    "noise strokes. Label: the labelled garment's class. Ground truth: its box and silhouette.",
    "marks": "The class is the shape of one small mark (plus, cross, ring, triangle, H) among 6-8 decoy marks of "
    "shapes that are no class, every mark, garment and stroke at an intensity of one shared distribution. Ground "
    "truth: the decisive mark's box and pixels.",
    "stripes": "The class is the orientation (0/45/90/135 degrees) of one striped patch at a random place, among 4-6 "
    "decoy patches (checkerboard, blurred noise) of the same size, mean intensity (the garment's own mean) and RMS "
    "contrast. Ground truth: the striped patch's box.",
    "orientation": "The class is the orientation (0/45/90/135 degrees) of one striped patch at a random place, among "
    "5-7 decoy patches: striped at the orientations halfway between the classes' (22.5/67.5/112.5/157.5 degrees, no "
    "class) or textures (checkerboard, blurred noise, block noise), all of the same size, mean intensity (the "
    "garment's own mean) and RMS contrast. Ground truth: the striped patch's box.",
}
