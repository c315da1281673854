"""The ground-truth datasets: Fashion-MNIST garments on larger canvases, with the answer an explanation should give.

In the spirit of FunnyBirds (Hesse et al., ICCV 2023; the InfoDisent paper's own evaluation) but built offline from
Fashion-MNIST (MIT, © 2017 Zalando SE; the Debian package ``dataset-fashion-mnist``). Every sample is rendered from
its own random generator, seeded by ``(seed, split, index, variant)``, so a sample can be rendered again on its own
and *changed by the generator* (not by masking pixels afterwards).

Five variants. ``garments``, ``marks`` and ``stripes`` are the known-answer sets of the ground-truth benchmark
(`benchmarks/known_answer.py`, issue 22: no model-free shortcut, checked by `benchmarks/groundtruth_audit.py`). The
two first ones below have shortcuts (the largest bright blob finds their answer; the audit rejects them) and stay for
the suite's ``cluttered`` dataset and the first benchmark's record:

- ``cluttered``: one garment at a random position and scale on a ``canvas``×``canvas`` black canvas, with distractor
  clutter (small crops of other garments and thin noise strokes, kept outside the garment's box so the garment stays
  whole). Label: the garment's Fashion-MNIST class. Ground truth: ``box`` (the garment's tight box) and ``mask`` (its
  silhouette).
- ``part``: the class is decided by one small mark (one of ``PART_CLASSES``, drawn at full brightness on a dimmed
  garment of an unrelated random class), with one or two decoy marks of shapes that are no class elsewhere on the
  canvas. Ground truth: ``box`` and ``mask`` of the decisive mark. ``without_part=True`` renders the same sample with
  everything but the decisive mark (the correctness test of an explanation: its top prototypes should lose their
  evidence).

Columns: ``image`` (``Image()``, grey PNG), ``label`` (``ClassLabel``), ``box`` (``[x0, y0, x1, y1]`` in pixels, x1/y1
exclusive), ``mask`` (``Image()``, 0/255 grey PNG, the same size as the image), ``index`` (the sample's index, to render
it again), ``source_id`` (index of the garment in the Fashion-MNIST file).

    python benchmarks/generate.py --variant cluttered --out data/gt-cluttered --train 12000 --test 1000 --seed 0
    python benchmarks/generate.py --variant part --out data/gt-part --train 6000 --test 500
    python benchmarks/generate.py --variant part --out data/gt-part-tuning --train 0 --test 1000 --test_seed 1

writes ``OUT/train-00000.parquet``, ``OUT/test-00000.parquet`` and ``OUT/README.md`` (a dataset card with the command);
``training.data.load_image_dataset(OUT)`` and ``datasets.load_dataset("parquet", ...)`` read it.

Python: ``make_cluttered(split, n, seed=0, canvas=84)`` and ``make_part_defined(split, n, seed=0, canvas=84,
without_part=False)`` return a ``datasets.Dataset``; ``render_cluttered`` / ``render_part_defined`` render one sample
as ``(image uint8 H×W, label, box, mask bool H×W)``.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from benchmarks.canvas import (  # noqa: F401  (re-exported: generate.py is where these were always imported from)
    DECOYS,
    GLYPHS,
    KNOWN_ANSWER,
    PART_CLASSES,
    SPLITS,
    VARIANTS,
    _garment,
    _garments,
    _paste_max,
    _place_outside,
    _resize,
    _rng,
    _stroke,
    _tight_box,
)
from training.build_fashion_mnist_subset import CLASS_NAMES, MIT_LICENSE, FashionMNISTMissing

_ROOT = Path(__file__).resolve().parent.parent


def _clutter(canvas, rng, split, source, avoid, crops: int, strokes: int) -> None:
    images, _ = _garments(split, source)
    size = canvas.shape[0]
    for _ in range(crops):
        src = images[int(rng.integers(0, len(images)))]
        c = int(rng.integers(7, 12))
        y, x = rng.integers(4, 28 - c - 3, 2)  # a piece from the garment's inside, not its empty border
        patch = (src[y : y + c, x : x + c].astype(float) * rng.uniform(0.5, 1.0)).astype(np.uint8)
        spot = _place_outside(rng, size, c, c, avoid)
        if spot is not None:
            _paste_max(canvas, patch, *spot)
    for _ in range(strokes):
        _stroke(canvas, rng, avoid)


def render_cluttered(split: str, index: int, seed: int = 0, canvas: int = 84, source=None, without_object=False):
    """One ``cluttered`` sample: ``(image uint8 canvas×canvas, label, box [x0, y0, x1, y1], mask bool)``.
    ``without_object=True``: the same clutter with the garment left out (label, box and mask unchanged)."""
    rng = _rng(seed, split, index, "cluttered")
    size = int(rng.integers(round(0.25 * canvas), round(0.5 * canvas) + 1))  # 21..42 px on 84
    garment, label, gid = _garment(rng, split, source, size)
    y, x = int(rng.integers(0, canvas - size + 1)), int(rng.integers(0, canvas - size + 1))
    img = np.zeros((canvas, canvas), np.uint8)
    mask = np.zeros((canvas, canvas), bool)
    mask[y : y + size, x : x + size] = garment > 25
    box = _tight_box(mask)
    _clutter(img, rng, split, source, box, crops=int(rng.integers(3, 7)), strokes=int(rng.integers(2, 5)))
    if not without_object:
        _paste_max(img, garment, y, x)
    return img, label, box, mask, gid


def render_part_defined(split: str, index: int, seed: int = 0, canvas: int = 84, source=None, without_part=False):
    """One ``part`` sample: ``(image, label, box, mask, source_id)``; the label is the decisive mark's shape
    (``PART_CLASSES``), box/mask are the mark's. ``without_part=True`` leaves that mark out and nothing else."""
    rng = _rng(seed, split, index, "part")
    label = int(rng.integers(0, len(PART_CLASSES)))
    size = int(rng.integers(round(0.35 * canvas), round(0.55 * canvas) + 1))
    garment, _, gid = _garment(rng, split, source, size)
    garment = (garment.astype(float) * rng.uniform(0.35, 0.6)).astype(np.uint8)  # dimmed: the marks stand out
    gy, gx = int(rng.integers(0, canvas - size + 1)), int(rng.integers(0, canvas - size + 1))
    img = np.zeros((canvas, canvas), np.uint8)
    _paste_max(img, garment, gy, gx)
    scale = int(rng.integers(1, 3))  # 7 or 14 px marks
    glyph = np.kron(GLYPHS[PART_CLASSES[label]], np.ones((scale, scale), bool))
    m = glyph.shape[0]
    # The decisive mark sits on the garment (a part of the object), anywhere inside its box.
    my = int(np.clip(gy + rng.integers(0, max(1, size - m + 1)), 0, canvas - m))
    mx = int(np.clip(gx + rng.integers(0, max(1, size - m + 1)), 0, canvas - m))
    mask = np.zeros((canvas, canvas), bool)
    mask[my : my + m, mx : mx + m] = glyph
    box = [mx, my, mx + m, my + m]
    for _ in range(int(rng.integers(1, 3))):  # decoys: marks of no class, away from the decisive one
        decoy = np.kron(GLYPHS[DECOYS[int(rng.integers(0, len(DECOYS)))]], np.ones((scale, scale), bool))
        spot = _place_outside(rng, canvas, m, m, [box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2])
        if spot is not None:
            _paste_max(img, decoy.astype(np.uint8) * 255, *spot)
    _clutter(img, rng, split, source, box, crops=0, strokes=int(rng.integers(1, 4)))
    if not without_part:
        img[mask] = 255
    return img, label, box, mask, gid


def features(variant: str):
    import datasets

    from benchmarks.known_answer import class_names

    names = CLASS_NAMES if variant == "cluttered" else PART_CLASSES if variant == "part" else class_names(variant)
    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(names)),
            "box": datasets.Sequence(datasets.Value("int32"), length=4),
            "mask": datasets.Image(),
            "index": datasets.Value("int64"),
            "source_id": datasets.Value("int64"),
        }
    )


def _png(img: np.ndarray) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _make(variant: str, split: str, n: int, seed: int, canvas: int, source=None, start: int = 0, **render_kwargs):
    import datasets

    if canvas < 56:
        raise ValueError(f"canvas must be >= 56 pixels (garments are 28 px and must move around), got {canvas}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    from benchmarks.known_answer import RENDERERS

    render = {"cluttered": render_cluttered, "part": render_part_defined, **RENDERERS}[variant]
    rows = {k: [] for k in ("image", "label", "box", "mask", "index", "source_id")}
    for i in range(start, start + n):
        img, label, box, mask, gid = render(split, i, seed=seed, canvas=canvas, source=source, **render_kwargs)
        rows["image"].append(_png(img))
        rows["label"].append(label)
        rows["box"].append(box)
        rows["mask"].append(_png(mask.astype(np.uint8) * 255))
        rows["index"].append(i)
        rows["source_id"].append(gid)
    return datasets.Dataset.from_dict(rows, features=features(variant), split=split)


def make_cluttered(split: str, n: int, seed: int = 0, canvas: int = 84, source=None, without_object=False):
    """``n`` ``cluttered`` samples of ``split`` ("train"/"test") as a ``datasets.Dataset`` (columns above)."""
    return _make("cluttered", split, n, seed, canvas, source, without_object=without_object)


def make_part_defined(split: str, n: int, seed: int = 0, canvas: int = 84, source=None, without_part=False):
    """``n`` ``part`` samples; ``without_part=True``: the same samples with the decisive mark left out."""
    return _make("part", split, n, seed, canvas, source, without_part=without_part)


def make(variant: str, split: str, n: int, seed: int = 0, canvas: int = 84, source=None, without_part=False):
    """``n`` samples of any variant; ``without_part=True``: the same samples without their truth (the garment of
    ``cluttered``, the decisive object of the others)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    key = "without_object" if variant == "cluttered" else "without_part"
    return _make(variant, split, n, seed, canvas, source, **({key: True} if without_part else {}))


CARD = """---
license: mit
task_categories: [image-classification]
---
# Ground-truth benchmark data: `{variant}` (generated)

{what}

Generated by `{command}` from Fashion-MNIST (Debian package `dataset-fashion-mnist`): train samples use garments of
the 60k training images, test samples garments of the 10k test images. Splits: train {train}, test {test};
canvas {canvas}×{canvas}; seed {seed} (train), {test_seed} (test). Columns: `image`, `label`, `box` ([x0, y0, x1,
y1], pixels, x1/y1 exclusive), `mask` (0/255), `index` (re-render with `benchmarks/generate.py`), `source_id`
(garment index in the Fashion-MNIST file).

## Licence

{licence}
"""

WHAT = {
    "cluttered": "One Fashion-MNIST garment at a random position and scale among distractor clutter (crops of other "
    "garments, noise strokes) outside its box. Label: the garment's class. Ground truth: the garment's box and "
    "silhouette.",
    "part": "The class is the shape of one small bright mark on a dimmed garment of an unrelated class "
    f"({', '.join(PART_CLASSES)}); decoy marks ({', '.join(DECOYS)}) are no class. Ground truth: the decisive "
    "mark's box and pixels.",
}


def _what(variant: str) -> str:
    from benchmarks.known_answer import WHAT as KNOWN

    return {**WHAT, **KNOWN}[variant]


def write(
    variant: str,
    out: str,
    train: int,
    test: int,
    seed: int = 0,
    canvas: int = 84,
    source=None,
    command: str | None = None,
    test_seed: int | None = None,
) -> None:
    """Write the train / test splits; ``test_seed`` (default: ``seed``) draws the test split from another stream, so
    one training set can be measured on a tuning test set and on a separate, untouched reporting test set."""
    test_seed = seed if test_seed is None else test_seed
    os.makedirs(out, exist_ok=True)
    for split, n, s in (("train", train, seed), ("test", test, test_seed)):
        if n:
            make(variant, split, n, s, canvas, source).to_parquet(os.path.join(out, f"{split}-00000.parquet"))
    command = command or (
        f"python benchmarks/generate.py --variant {variant} --out {out} --train {train} --test "
        f"{test} "
        f"--seed {seed} --test_seed {test_seed} --canvas {canvas}"
    )
    Path(out, "README.md").write_text(
        CARD.format(
            variant=variant,
            what=_what(variant),
            command=command,
            train=train,
            test=test,
            canvas=canvas,
            seed=seed,
            test_seed=test_seed,
            licence=MIT_LICENSE,
        )
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--out", required=True, help="Output folder (parquet files + README.md).")
    p.add_argument("--train", type=int, default=12000, help="Training samples (0 = no train split).")
    p.add_argument("--test", type=int, default=1000, help="Test samples (0 = no test split).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test_seed", type=int, default=None, help="Seed of the test split (default: --seed).")
    p.add_argument("--canvas", type=int, default=84, help="Canvas side in pixels (>= 56).")
    p.add_argument("--source", default=None, help="Folder of the Fashion-MNIST idx files (default: Debian's).")
    args = p.parse_args(argv)
    if args.canvas < 56:
        p.exit(2, f"error: --canvas must be >= 56, got {args.canvas}\n")
    if args.train < 0 or args.test < 0 or args.train + args.test == 0:
        p.exit(2, f"error: --train/--test must be >= 0 and not both 0, got {args.train}/{args.test}\n")
    return args


def main(argv=None):
    args = parse_args(argv)
    command = "python benchmarks/generate.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    try:
        write(
            args.variant,
            args.out,
            args.train,
            args.test,
            args.seed,
            args.canvas,
            args.source,
            command=command,
            test_seed=args.test_seed,
        )
    except FashionMNISTMissing as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.out} ({args.variant}: train {args.train}, test {args.test}, canvas {args.canvas})")


if __name__ == "__main__":
    main()
