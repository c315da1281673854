"""The suite's datasets, built offline from Fashion-MNIST (MIT, © 2017 Zalando SE; Debian ``dataset-fashion-mnist``).

Two kinds, each written once into a folder the training script reads with ``--dataset_name DIR`` (a train and a
test split; the script holds its validation split out of train):

- ``fmnist``: a seeded, class-balanced subset of ``n_train`` images of the 60k training file and ``n_test`` of the
  10k test file, restricted to ``classes`` (Fashion-MNIST class indices, relabelled 0..k-1 in that order). Written as
  parquet (``train-00000.parquet`` / ``test-00000.parquet``, the bundled subset's format) or as an imagefolder
  (``train/<class>/<id>.png``, ``test/<class>/<id>.png``: what a new user brings).
- ``cluttered``: the garment at a random place on a larger cluttered canvas, from the shared generator
  ``benchmarks/generate.py`` (``make_cluttered``), written as parquet without its ground-truth box / mask columns
  (the suite measures accuracy only).

``build_dataset(spec, root) -> dict`` writes the folder (or reuses it when its ``suite_manifest.json`` records the same
spec) and returns ``{"folder", "train_args", "n_train", "n_test", "num_classes"}``; ``train_args`` are the data
arguments of the training script's command (``--dataset_name FOLDER``).

    python benchmarks/suite_data.py --out /tmp/fm500 --n_train 500 --n_test 200 --classes 0 6
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.build_fashion_mnist_subset import CLASS_NAMES, FashionMNISTMissing, load_fashion_mnist_idx

_ROOT = Path(__file__).resolve().parent.parent

MANIFEST = "suite_manifest.json"
KINDS = ("fmnist", "cluttered")
LAYOUTS = ("parquet", "imagefolder")


@dataclass(frozen=True)
class DataSpec:
    """One suite dataset. ``classes`` are Fashion-MNIST class indices (all ten by default)."""

    kind: str
    n_train: int
    n_test: int
    classes: tuple[int, ...] = tuple(range(10))
    layout: str = "parquet"
    seed: int = 0
    canvas: int = 84  # cluttered only

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dataset kind must be one of {KINDS}, got {self.kind!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"dataset layout must be one of {LAYOUTS}, got {self.layout!r}")
        if len(set(self.classes)) != len(self.classes) or not all(0 <= c < len(CLASS_NAMES) for c in self.classes):
            raise ValueError(f"classes must be distinct Fashion-MNIST class indices 0..9, got {list(self.classes)}")
        if len(self.classes) < 2:
            raise ValueError(f"a classification dataset needs at least 2 classes, got {list(self.classes)}")
        if self.n_train < len(self.classes) or self.n_test < len(self.classes):
            raise ValueError(
                f"n_train and n_test must be at least one image per class ({len(self.classes)}), "
                f"got {self.n_train} / {self.n_test}"
            )
        if self.kind == "cluttered" and (self.layout != "parquet" or tuple(self.classes) != tuple(range(10))):
            raise ValueError("the cluttered variant has the ten Fashion-MNIST classes and is written as parquet")


def balanced_counts(n: int, k: int) -> list[int]:
    """``n`` images over ``k`` classes as evenly as possible (the first ``n % k`` classes get one more)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def sample_indices(labels: np.ndarray, classes: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """Seeded class-balanced indices (sorted, i.e. file order) of ``n`` images of ``classes``."""
    rng = np.random.default_rng(seed)
    picked = []
    for c, count in zip(classes, balanced_counts(n, len(classes))):
        pool = np.flatnonzero(labels == c)
        if count > len(pool):
            raise ValueError(f"class {c} ({CLASS_NAMES[c]}) has {len(pool)} images, {count} requested")
        picked.append(rng.choice(pool, size=count, replace=False))
    return np.sort(np.concatenate(picked))


def _class_names(classes: tuple[int, ...]) -> list[str]:
    return [CLASS_NAMES[c] for c in classes]


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _fmnist_split(spec: DataSpec, split: str, n: int):
    """``(images, new labels 0..k-1, original ids)`` of one split; the test split draws with seed + 1."""
    images, labels = load_fashion_mnist_idx(split)
    idx = sample_indices(labels, spec.classes, n, spec.seed + (0 if split == "train" else 1))
    remap = {c: i for i, c in enumerate(spec.classes)}
    return images[idx], np.array([remap[int(y)] for y in labels[idx]]), idx


def _write_parquet(folder: Path, split: str, images, labels, ids, names: list[str]) -> None:
    import datasets

    feats = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names), "id": datasets.Value("int64")}
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": _png(im), "path": None} for im in images],
            "label": [int(y) for y in labels],
            "id": [int(i) for i in ids],
        },
        features=feats,
    )
    ds.to_parquet(str(folder / f"{split}-00000.parquet"))


def _write_imagefolder(folder: Path, split: str, images, labels, ids, names: list[str]) -> None:
    # Folder names cannot hold "/" ("T-shirt/top"); imagefolder numbers the classes in sorted folder order, so the
    # folders are prefixed with the class's position to keep the order of ``classes``.
    dirs = [f"{i}_{n.replace('/', '-').replace(' ', '_')}" for i, n in enumerate(names)]
    for d in dirs:
        (folder / split / d).mkdir(parents=True, exist_ok=True)
    for im, y, i in zip(images, labels, ids):
        (folder / split / dirs[int(y)] / f"{int(i):05d}.png").write_bytes(_png(im))


def _write_cluttered(spec: DataSpec, folder: Path) -> None:
    from benchmarks.generate import make_cluttered

    for split, n in (("train", spec.n_train), ("test", spec.n_test)):
        ds = make_cluttered(split, n, seed=spec.seed, canvas=spec.canvas).remove_columns(["box", "mask"])
        ds.to_parquet(str(folder / f"{split}-00000.parquet"))


def train_args(spec: DataSpec, folder: str | os.PathLike) -> list[str]:
    """The data arguments of the training script for this dataset's folder: ``--dataset_name FOLDER`` for both
    layouts, so the script sees a train and a test split, holds out its validation split from train and reports
    the test split once (``--validation_dir`` would make the test images the schedule's validation data)."""
    return ["--dataset_name", str(folder)]


def build_dataset(spec: DataSpec, folder: str | os.PathLike) -> dict:
    """Write ``spec`` into ``folder`` unless it already holds exactly that dataset (its manifest says so)."""
    spec.validate()
    folder = Path(folder)
    manifest = {"spec": asdict(spec), "class_names": _class_names(spec.classes)}
    manifest["spec"]["classes"] = list(spec.classes)
    path = folder / MANIFEST
    if not (path.is_file() and json.loads(path.read_text()) == manifest):
        if folder.exists():
            shutil.rmtree(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if spec.kind == "cluttered":
            _write_cluttered(spec, tmp)
        else:
            write = _write_parquet if spec.layout == "parquet" else _write_imagefolder
            for split, n in (("train", spec.n_train), ("test", spec.n_test)):
                write(tmp, split, *_fmnist_split(spec, split, n), _class_names(spec.classes))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        tmp.rename(folder)  # complete or absent: an interrupted build is never taken for a finished one
    return {
        "folder": str(folder),
        "train_args": train_args(spec, folder),
        "n_train": spec.n_train,
        "n_test": spec.n_test,
        "num_classes": len(spec.classes),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--kind", choices=KINDS, default="fmnist")
    p.add_argument("--n_train", type=int, required=True)
    p.add_argument("--n_test", type=int, required=True)
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--layout", choices=LAYOUTS, default="parquet")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    spec = DataSpec(args.kind, args.n_train, args.n_test, tuple(args.classes), args.layout, args.seed)
    try:
        info = build_dataset(spec, args.out)
    except (ValueError, FashionMNISTMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {info['folder']}: train {info['n_train']}, test {info['n_test']}, {info['num_classes']} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
