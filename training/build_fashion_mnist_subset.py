"""Build the bundled Fashion-MNIST subset (and read the full Fashion-MNIST set) from the Debian files.

Source: the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), which
installs the original Zalando Research idx files under ``/usr/share/datasets/fashion-mnist/``.
Fashion-MNIST is MIT-licensed, Copyright (c) 2017 Zalando SE.

Command line::

    python training/build_fashion_mnist_subset.py [--out DIR] [--per_class_train 500]
        [--per_class_test 100] [--seed 0] [--source DIR]

writes ``DIR/train-00000.parquet`` and ``DIR/test-00000.parquet`` (columns ``image``: ``Image()`` with PNG
bytes, ``label``: ``ClassLabel`` with the ten class names, ``id``: index in the original idx file) and a
``DIR/README.md`` dataset card. ``datasets.load_dataset("parquet", data_files=...)`` and
``training.data.load_image_dataset(DIR)`` load it as the two splits ``train`` and ``test``.

Python API (used by the backbone trainer and the benchmarks for the FULL 60k/10k sets):

- ``load_fashion_mnist_idx(split, source=None) -> (uint8 array N x 28 x 28, int64 labels N)``
- ``full_fashion_mnist_dataset(split, source=None) -> datasets.Dataset`` with the same features as the subset.

``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000 images; ``"t10k"`` is accepted too). The source
folder defaults to ``$FASHION_MNIST_DIR`` or ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shlex
import sys
from pathlib import Path

import numpy as np

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
APT_PACKAGE = "dataset-fashion-mnist"
CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEFAULT_OUT = Path(__file__).resolve().parent / "embedded" / "fashion_mnist_subset"

MIT_LICENSE = """The MIT License (MIT) Copyright © 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN
AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE
OR OTHER DEALINGS IN THE SOFTWARE."""


class FashionMNISTMissing(FileNotFoundError):
    """The Debian Fashion-MNIST idx files are not where we looked."""


def _source_dir(source: str | os.PathLike | None) -> Path:
    if source is None:
        source = os.environ.get("FASHION_MNIST_DIR", DEFAULT_SOURCE)
    return Path(source)


def _split_prefix(split: str) -> str:
    if split in ("train",):
        return "train"
    if split in ("test", "t10k", "validation"):
        return "t10k"
    raise ValueError(f"Unknown Fashion-MNIST split {split!r}: use 'train' or 'test'.")


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path} is not an idx file of the expected kind (magic {magic}, expected {expected_magic}).")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape)


def load_fashion_mnist_idx(split: str, source: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the full Fashion-MNIST ``split`` ("train": 60k, "test"/"t10k": 10k) from the Debian idx files.

    Returns ``(images, labels)``: ``uint8`` array of shape (N, 28, 28) and ``int64`` array of shape (N,).
    Raises ``FashionMNISTMissing`` (a ``FileNotFoundError``) naming the apt package and the folder if the
    files are absent.
    """
    prefix = _split_prefix(split)
    src = _source_dir(source)
    img_path = src / f"{prefix}-images-idx3-ubyte.gz"
    lbl_path = src / f"{prefix}-labels-idx1-ubyte.gz"
    missing = [str(p) for p in (img_path, lbl_path) if not p.is_file()]
    if missing:
        raise FashionMNISTMissing(
            f"Fashion-MNIST idx files not found in {src} (missing: {', '.join(missing)}). Install the Debian "
            f"package '{APT_PACKAGE}' (apt-get install {APT_PACKAGE}) or point --source / $FASHION_MNIST_DIR "
            f"to a folder holding {prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz."
        )
    images = _read_idx(img_path, 2051)
    labels = _read_idx(lbl_path, 2049).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_path} has {images.shape[0]} images but {lbl_path} has {labels.shape[0]} labels.")
    return images, labels


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def features():
    """The ``datasets.Features`` shared by the subset and the full set: image, label (ClassLabel), id."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=CLASS_NAMES),
            "id": datasets.Value("int64"),
        }
    )


def _to_dataset(images: np.ndarray, labels: np.ndarray, ids: np.ndarray):
    import datasets

    return datasets.Dataset.from_dict(
        {
            "image": [{"bytes": _png_bytes(im), "path": None} for im in images],
            "label": [int(x) for x in labels],
            "id": [int(i) for i in ids],
        },
        features=features(),
    )


def full_fashion_mnist_dataset(split: str, source: str | os.PathLike | None = None):
    """The full Fashion-MNIST ``split`` as a ``datasets.Dataset`` (features: image, label, id), in file order."""
    images, labels = load_fashion_mnist_idx(split, source)
    return _to_dataset(images, labels, np.arange(len(labels)))


def stratified_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` seeded random indices of each class, returned sorted (original file order)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if per_class > len(idx):
            raise ValueError(f"Class {c} has only {len(idx)} images, {per_class} requested.")
        out.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(out))


def _card(out: Path, counts: dict[str, int], per_class: dict[str, int], seed: int, command: str) -> str:
    return f"""---
license: mit
pretty_name: Fashion-MNIST stratified subset (InfoDisent embedded default)
task_categories:
- image-classification
size_categories:
- 1K<n<10K
source_datasets:
- fashion_mnist
---

# Fashion-MNIST stratified subset

A small, class-balanced, seeded subset of [Fashion-MNIST](https://github.com/zalandoresearch/fashion-mnist)
(Xiao, Rasul, Vollgraf, 2017, Zalando Research), bundled with the InfoDisent project so that its
examples, tests and demo run offline.

| split | images | per class |
|-------|-------:|----------:|
| train | {counts["train"]} | {per_class["train"]} |
| test  | {counts["test"]} | {per_class["test"]} |

- Source: the original idx files as shipped by the Debian package `{APT_PACKAGE}`
  (`{DEFAULT_SOURCE}`); `train` is drawn from the 60,000 training images, `test` from the 10,000
  test images, {per_class["train"]} / {per_class["test"]} per class, random seed {seed}.
- Columns: `image` (`Image()`, 28x28 greyscale PNG), `label` (`ClassLabel`, 10 classes:
  {", ".join(CLASS_NAMES)}), `id` (index of the image in the original idx file of its split).
- Load: `datasets.load_dataset("parquet", data_files={{"train": "train-00000.parquet", "test": "test-00000.parquet"}})`
  or `training.data.load_image_dataset(training.data.DEFAULT_DATASET)`.

## Rebuild

```
{command}
```

The build is deterministic (same seed, same files).

## Licence

Fashion-MNIST is distributed under the MIT licence; this subset keeps it.

```
{MIT_LICENSE}
```
"""


def build_subset(
    out: str | os.PathLike = DEFAULT_OUT,
    per_class_train: int = 500,
    per_class_test: int = 100,
    seed: int = 0,
    source: str | os.PathLike | None = None,
    command: str | None = None,
) -> dict:
    """Write the stratified subset (parquet + README.md) into ``out``; returns the split sizes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts, per_class = {}, {"train": per_class_train, "test": per_class_test}
    for split, n in per_class.items():
        images, labels = load_fashion_mnist_idx(split, source)
        idx = stratified_indices(labels, n, seed)
        ds = _to_dataset(images[idx], labels[idx], idx)
        ds.to_parquet(str(out / f"{split}-00000.parquet"))
        counts[split] = len(ds)
    if command is None:
        command = "python training/build_fashion_mnist_subset.py " + " ".join(
            [f"--per_class_train {per_class_train}", f"--per_class_test {per_class_test}", f"--seed {seed}"]
        )
    (out / "README.md").write_text(_card(out, counts, per_class, seed, command))
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    p.add_argument("--per_class_train", type=int, default=500)
    p.add_argument("--per_class_test", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--source",
        default=None,
        help=f"folder with the idx .gz files (default: $FASHION_MNIST_DIR or {DEFAULT_SOURCE})",
    )
    args = p.parse_args(argv)
    cmd = "python training/build_fashion_mnist_subset.py"
    if Path(args.out).resolve() != DEFAULT_OUT:
        cmd += f" --out {shlex.quote(args.out)}"
    cmd += f" --per_class_train {args.per_class_train} --per_class_test {args.per_class_test} --seed {args.seed}"
    try:
        counts = build_subset(args.out, args.per_class_train, args.per_class_test, args.seed, args.source, cmd)
    except FashionMNISTMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
