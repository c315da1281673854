"""The one data module of the project: dataset loading, image conversion and preprocessing.

Everything that trains or evaluates a model here (the InfoDisent training script, the backbone
pre-training, the benchmarks, the demo) reads images through this module, so that the same images
go through the same Hugging Face image processor everywhere.

Public API
----------
``DEFAULT_DATASET``
    Absolute path of the bundled Fashion-MNIST subset (parquet, splits ``train``/``test``, 500/100
    images per class), built by ``training/build_fashion_mnist_subset.py``.
``DEFAULT_BACKBONE``
    Absolute path of the bundled black-box classifier (``ResNetForImageClassification`` trained on the
    full Fashion-MNIST training set, with its image processor), built by ``training/pretrain_backbone.py``.
``load_image_dataset(dataset_name=None, train_dir=None, validation_dir=None, train_val_split=0.15,
image_column_name=None, label_column_name=None, seed=0, test_dir=None, test_split_name=None) -> (DatasetDict,
image_col, label_col, id2label)``
    A ``DatasetDict`` with the splits ``"train"``, ``"validation"`` (for the training schedule's decisions; held out
    from train when the data has none) and, when the data has one (or ``test_dir`` / ``test_split_name`` names it),
    ``"test"`` (never used for training decisions).
    Its ``split_sources`` attribute says where each split comes from.
``to_rgb(image) -> PIL.Image.Image``
    Any PIL mode (or a numpy array) to 8-bit RGB; transparency is composited on white.
``shuffle_labels(dataset, label_col, seed)``
    The data-randomisation control: train and validation labels permuted (seeded), test labels kept.
``parse_augment(spec)`` / ``AUGMENTATIONS`` / ``DEFAULT_AUGMENT``
    The named augmentations (``flip``, ``shift``, ``zoom``; ``crop`` = shift + zoom; ``none``).
``make_transform(image_processor, image_column, label_column, augment=False, num_channels=None)``
    A function for ``dataset.with_transform(...)`` producing ``{"pixel_values": (C,H,W) float tensor,
    "labels": int}`` per example, via ``to_rgb`` (then grayscale for a 1-channel backbone) and the image processor.
``collate_fn(examples) -> {"pixel_values": (B,3,H,W), "labels": (B,)}``
    For ``torch.utils.data.DataLoader(collate_fn=collate_fn)``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets

from modeling_infodisent.images import processor_num_channels, to_rgb

#: Bundled Fashion-MNIST subset (parquet files train-00000.parquet / test-00000.parquet + README.md) and black-box
#: backbone (HF ResNetForImageClassification + ViTImageProcessor, safetensors): defined with the command line, which
#: is read before this module (and datasets) is imported.
from training.arguments import DEFAULT_BACKBONE, DEFAULT_DATASET
from training.class_sets import check_image_folder, check_split_classes

_HERE = Path(__file__).resolve().parent

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_BACKBONE",
    "load_image_dataset",
    "shuffle_labels",
    "AUGMENTATIONS",
    "DEFAULT_AUGMENT",
    "parse_augment",
    "describe_augment",
    "to_rgb",
    "make_transform",
    "processor_num_channels",
    "collate_fn",
]

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "test": "test",
    "testing": "test",
}
_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


# --------------------------------------------------------------------------------------------- images
# to_rgb lives in the package (modeling_infodisent/images.py): the gallery, CLI and Space convert images the same way.


@dataclass
class NamedImage(datasets.Image):
    """``datasets.Image`` whose decoding failures name the file: datasets decodes images before any transform runs,
    and its own error (``OSError: image file is truncated``) says nothing about which image. `load_image_dataset`
    gives every split's image column this feature (same storage: nothing is rewritten)."""

    def decode_example(self, value, token_per_repo_id=None):
        try:
            return super().decode_example(value, token_per_repo_id=token_per_repo_id)
        except Exception as error:  # noqa: BLE001 - any decoding failure, reported with the file's name
            path = value.get("path") if isinstance(value, dict) else None
            size = len(value.get("bytes") or b"") if isinstance(value, dict) else 0
            where = (
                f"the image file {path!r}" if path else f"an image stored in the dataset ({size} bytes, no file name)"
            )
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"Cannot read {where}: {reason}. Remove or replace it.") from error


# ----------------------------------------------------------------------------------- preprocessing
#: The named augmentations (torchvision ``transforms.v2`` on the PIL image). ``crop`` = shift + zoom (a small
#: random-resized crop). Flips change what a side- or orientation-defined class looks like (a 45° stripe becomes
#: 135°): such data keeps ``crop`` and drops ``flip``.
AUGMENTATIONS = {
    "flip": "random horizontal flip (p = 0.5)",
    "shift": "random translation ≤ 8% of the side",
    "zoom": "random zoom 0.9–1.1",
}
#: The default of ``--augment`` given without names: safe for natural images (photos keep their class when mirrored).
DEFAULT_AUGMENT = ("flip", "shift", "zoom")


def parse_augment(spec) -> tuple[str, ...]:
    """The augmentations named by ``spec``, in a fixed order: ``True`` = :data:`DEFAULT_AUGMENT`; ``False``/``None``/
    ``"none"`` = none; a comma-separated string or a list of names from :data:`AUGMENTATIONS` (and ``crop`` = shift +
    zoom). An unknown name is a ``ValueError`` naming the choices."""
    if spec is True:
        return DEFAULT_AUGMENT
    if spec is None or spec is False:
        return ()
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if names == ["none"]:
        return ()
    chosen = set()
    for name in names:
        if name == "crop":
            chosen |= {"shift", "zoom"}
        elif name in AUGMENTATIONS:
            chosen.add(name)
        else:
            raise ValueError(
                f"Unknown augmentation {name!r}: choose from {', '.join(AUGMENTATIONS)}, crop (= shift,zoom), or none "
                "(alone)."
            )
    if not chosen:
        raise ValueError("No augmentation named: give names like flip,shift,zoom, or none.")
    return tuple(n for n in AUGMENTATIONS if n in chosen)


def describe_augment(names) -> str:
    """One line for cards and logs: ``"random horizontal flip (p = 0.5) + ..."`` or ``"none"``."""
    return " + ".join(AUGMENTATIONS[n] for n in names) or "none"


def _augmentation(names=DEFAULT_AUGMENT):
    from torchvision.transforms import v2

    # Small geometric jitter only. One RandomAffine for shift and zoom together (the default's draws as before).
    steps = [v2.RandomHorizontalFlip(p=0.5)] if "flip" in names else []
    if "shift" in names or "zoom" in names:
        steps.append(
            v2.RandomAffine(
                degrees=0,
                translate=(0.08, 0.08) if "shift" in names else None,
                scale=(0.9, 1.1) if "zoom" in names else None,
            )
        )
    return v2.Compose(steps) if steps else None


def make_transform(
    image_processor, image_column: str, label_column: str, augment=False, num_channels: int | None = None
) -> Callable:
    """Return a batch transform for ``dataset.with_transform(...)``.

    Each example becomes ``{"pixel_values": float32 tensor (C,H,W), "labels": int}``: the image is
    converted with :func:`to_rgb` (then to grayscale "L" when the backbone takes ``num_channels=1``; ``None`` =
    what the processor normalises for, `processor_num_channels`), optionally augmented (``augment``: what
    :func:`parse_augment` takes — ``True`` is a random horizontal flip and a random affine translation ≤ 8% with zoom
    0.9–1.1, ``"shift,zoom"`` the same without the flip; torchvision ``transforms.v2`` on the PIL image), then
    passed to ``image_processor(images, return_tensors="pt")`` — the model's own HF image processor (resize,
    rescale, normalise). Other columns are dropped.
    """
    aug = _augmentation(parse_augment(augment)) if augment else None
    if num_channels is None:
        num_channels = processor_num_channels(image_processor)
    if num_channels not in (1, 3):
        raise ValueError(f"Backbones taking {num_channels}-channel images are not supported (only 1 or 3 channels).")
    mean = getattr(image_processor, "image_mean", None)
    if isinstance(mean, (list, tuple)) and len(mean) not in (1, num_channels):
        raise ValueError(
            f"The backbone takes {num_channels}-channel images but its image processor normalises {len(mean)} "
            f"channels (image_mean {list(mean)}): fix its preprocessor_config.json."
        )

    def transform(batch: dict) -> dict:
        # to_rgb first in both cases: it composites transparency on white and handles every PIL mode.
        images = [to_rgb(im) for im in batch[image_column]]
        if num_channels == 1:
            images = [im.convert("L") for im in images]
        if aug is not None:
            images = [aug(im) for im in images]
        pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": list(pixel_values), "labels": [int(y) for y in batch[label_column]]}

    return transform


def collate_fn(examples: list[dict]) -> dict:
    """Stack examples from :func:`make_transform` into ``{"pixel_values": (B,3,H,W), "labels": (B,) long}``."""
    import torch

    pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples]).float()
    labels = torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long)
    return {"pixel_values": pixel_values, "labels": labels}


# ------------------------------------------------------------------------------------------ loading
def _split_of(rel_path: str, extra: str | None = None) -> str | None:
    """The split a file belongs to, from a folder name or the file name's prefix; ``extra`` is one more split name
    recognised as itself (the user's ``test_split_name``, e.g. ``holdout-00000.parquet``)."""
    aliases = {**_SPLIT_ALIASES, **({extra.lower(): extra} if extra else {})}
    parts = Path(rel_path).parts
    for part in parts[:-1]:
        if part.lower() in aliases:
            return aliases[part.lower()]
    stem = Path(parts[-1]).name.split(".")[0].lower()
    for sep in ("-", "_", "."):
        head = stem.split(sep)[0]
        if head in aliases:
            return aliases[head]
    return aliases.get(stem)


def _load_local_folder(folder: str, extra_split: str | None = None):
    import datasets

    parquet = sorted(glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True))
    if parquet:
        data_files: dict[str, list[str]] = {}
        for f in parquet:
            split = _split_of(os.path.relpath(f, folder), extra_split) or "train"
            data_files.setdefault(split, []).append(f)
        return _load_or_empty_error(datasets.load_dataset, "parquet", data_files=data_files)
    has_images = any(
        Path(f).suffix.lower() in _IMAGE_EXTENSIONS for f in glob.iglob(os.path.join(folder, "**", "*"), recursive=True)
    )
    if not has_images:
        raise ValueError(f"The folder {folder!r} contains neither parquet files nor images (imagefolder layout).")
    check_image_folder(folder, "--dataset_name", {*_SPLIT_ALIASES, *([extra_split.lower()] if extra_split else [])})
    return _load_or_empty_error(datasets.load_dataset, "imagefolder", data_dir=folder)


def _load_or_empty_error(load, *args, **kwargs):
    import datasets

    # Local files only come through here: datasets would label its pass over them "Downloading data".
    kwargs.setdefault("download_config", datasets.DownloadConfig(download_desc="Reading local files"))
    try:
        return load(*args, **kwargs)
    except ValueError as e:  # datasets: 'Instruction "test" corresponds to no data!'
        msg = str(e)
        if "corresponds to no data" in msg:
            split = msg.split('"')[1] if msg.count('"') >= 2 else "?"
            raise ValueError(f"The split {split!r} of the dataset is empty (0 rows).") from e
        raise


def _load_hub(name: str):
    import datasets

    try:
        return datasets.load_dataset(name)
    except Exception as e:  # DatasetNotFoundError, connection/offline errors, ...
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise ValueError(
            f"Unknown dataset {name!r}: it is neither an existing local folder nor a dataset reachable on the "
            f"Hugging Face Hub{' (HF_HUB_OFFLINE is set)' if offline else ''}. Underlying error: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


def _check_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is not an existing folder.")


def _detect_image_column(ds, requested: str | None) -> str:
    import datasets

    cols = list(ds.column_names)
    if requested is not None:
        if requested not in cols:
            raise ValueError(f"Image column {requested!r} not found; the dataset has columns {cols}.")
        return requested
    for c in cols:
        if isinstance(ds.features[c], datasets.Image):
            return c
    for c in ("image", "img", "images", "pixel_values"):
        if c in cols:
            return c
    raise ValueError(
        f"No image column found (no Image() feature, no column named 'image' or 'img'); the dataset has "
        f"columns {cols} with features {dict(ds.features)}. Pass image_column_name."
    )


def _detect_label_column(ds, requested: str | None, image_col: str) -> str:
    import datasets

    cols = list(ds.column_names)
    if requested is not None:
        if requested not in cols:
            raise ValueError(f"Label column {requested!r} not found; the dataset has columns {cols}.")
        return requested
    for c in cols:
        if c != image_col and isinstance(ds.features[c], datasets.ClassLabel):
            return c
    for c in ("label", "labels", "fine_label", "class", "target"):
        if c in cols:
            return c
    raise ValueError(
        f"No label column found (no ClassLabel feature, no column named 'label' or 'labels'); the dataset has "
        f"columns {cols}. Pass label_column_name."
    )


def load_image_dataset(
    dataset_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    train_val_split: float = 0.15,
    image_column_name: str | None = None,
    label_column_name: str | None = None,
    seed: int = 0,
    test_dir: str | None = None,
    test_split_name: str | None = None,
):
    """Load an image-classification dataset as ``(DatasetDict(train=..., validation=...), image_col, label_col,
    id2label)``.

    Sources (the argument names follow ``run_image_classification_no_trainer.py``):

    - ``dataset_name`` an existing local folder with parquet files: loaded with
      ``load_dataset("parquet", data_files={split: files})``; the split of each file comes from a
      sub-folder (``train/``, ``test/``, ``validation/``, ``val/``...) or the file-name prefix
      (``train-00000.parquet``, ``test_0.parquet``...); files without one go to ``train``.
    - ``dataset_name`` an existing local folder of images: ``load_dataset("imagefolder", data_dir=...)``.
    - ``dataset_name`` anything else: a Hub id, ``load_dataset(dataset_name)``.
    - ``train_dir`` / ``validation_dir`` / ``test_dir``: imagefolders (``class_name/xxx.png``), used when
      ``dataset_name`` is None; loaded together, so the class names are those of all the folders.
    - nothing at all: the bundled subset :data:`DEFAULT_DATASET`.

    Validation split: ``validation`` (or ``valid``/``val``/``dev``) if present, else a seeded split of ``train``
    with fraction ``train_val_split`` (stratified by the label when it is a ClassLabel) — never the test split.
    Test split: ``test_split_name`` when given (any split of the dataset but train, e.g. ``validation`` of a Hub
    dataset whose test labels are hidden: validation is then held out from train), else ``test``/``testing``,
    else ``test_dir``'s images. Other splits are dropped. The test split is only ever evaluated at the end.

    Columns: the image column is ``image_column_name`` or the first ``Image()`` feature (else a column named
    ``image``/``img``); the label column is ``label_column_name`` or the first ``ClassLabel`` (else
    ``label``/``labels``). The label must be a ``ClassLabel`` or an integer ``Value``.

    ``id2label`` maps ``int -> str``: the ClassLabel names, else ``str(i)`` for ``i`` in ``0..max_label``.

    Raises ``ValueError`` (in user terms) for: a path that is neither a folder nor a reachable Hub id, a missing
    image/label column (the message lists the existing columns), a label column that is not integer/ClassLabel
    (the message gives its type), an empty split, an invalid ``train_val_split``.
    """
    import datasets

    if dataset_name is None and train_dir is None and validation_dir is None:
        dataset_name = DEFAULT_DATASET
    if test_dir is not None and dataset_name is not None:
        raise ValueError(
            "test_dir goes with train_dir (imagefolders); with dataset_name, name the dataset's test split with "
            "test_split_name."
        )
    if test_split_name is not None and dataset_name is None:
        raise ValueError("test_split_name names a split of dataset_name; with imagefolders, pass test_dir.")

    if dataset_name is not None:
        name = os.path.expanduser(str(dataset_name))
        if os.path.isdir(name):
            raw = _load_local_folder(name, test_split_name)
        elif os.path.exists(name):
            raise ValueError(f"Dataset path {name!r} is a file, not a folder; pass the folder that holds it.")
        elif os.path.isabs(name) or str(dataset_name).startswith((".", "~")) or str(dataset_name).count("/") > 1:
            raise ValueError(
                f"Unknown dataset {dataset_name!r}: it is neither an existing local folder nor a Hugging Face Hub "
                "dataset id (owner/name)."
            )
        else:
            raw = _load_hub(str(dataset_name))
    else:
        if train_dir is None:
            raise ValueError("validation_dir was given without train_dir; pass train_dir (an imagefolder) too.")
        _check_dir(train_dir, "train_dir")
        check_image_folder(train_dir, "--train_dir")  # images, >= 2 class folders, none empty (training/class_sets.py)
        data_files = {"train": os.path.join(train_dir, "**")}
        if validation_dir is not None:
            _check_dir(validation_dir, "validation_dir")
            check_image_folder(validation_dir, "--validation_dir")
            data_files["validation"] = os.path.join(validation_dir, "**")
        if test_dir is not None:
            _check_dir(test_dir, "test_dir")
            check_image_folder(test_dir, "--test_dir")
            data_files["test"] = os.path.join(test_dir, "**")
        # drop_labels=False: datasets infers class labels only when every file sits at the same folder depth, which
        # folders given separately (train/ and ../other/test/) need not.
        raw = _load_or_empty_error(datasets.load_dataset, "imagefolder", data_files=data_files, drop_labels=False)

    if isinstance(raw, datasets.Dataset):
        raw = datasets.DatasetDict({"train": raw})
    named_test = None
    if test_split_name is not None:
        # The named split is the test split and nothing else: taken out before the others are matched to
        # train/validation/test, so a dataset's own "validation" can be its test (validation is then held out).
        if test_split_name not in raw:  # a local folder's splits go by their canonical names (val -> validation)
            test_split_name = _SPLIT_ALIASES.get(test_split_name.lower(), test_split_name)
        if test_split_name not in raw:
            raise ValueError(
                f"test_split_name {test_split_name!r} is not a split of the dataset; its splits are {list(raw.keys())}."
            )
        if _SPLIT_ALIASES.get(test_split_name.lower()) == "train":
            raise ValueError(f"test_split_name {test_split_name!r} is the training split; name another one.")
        named_test = raw[test_split_name]
        raw = datasets.DatasetDict({k: v for k, v in raw.items() if k != test_split_name})
    splits = {(_SPLIT_ALIASES.get(k.lower(), k.lower())): v for k, v in raw.items()}
    if named_test is not None:
        splits["test"] = named_test
    if "train" not in splits:
        raise ValueError(f"The dataset has no 'train' split; its splits are {list(raw.keys())}.")
    for k, v in splits.items():
        if len(v) == 0:
            raise ValueError(f"The split {k!r} of the dataset is empty (0 rows).")

    train = splits["train"]
    image_col = _detect_image_column(train, image_column_name)
    label_col = _detect_label_column(train, label_column_name, image_col)
    label_feature = train.features[label_col]
    is_classlabel = isinstance(label_feature, datasets.ClassLabel)
    if not is_classlabel:
        dtype = getattr(label_feature, "dtype", None)
        if not (isinstance(label_feature, datasets.Value) and dtype and "int" in dtype):
            raise ValueError(
                f"The label column {label_col!r} has type {label_feature!r}; it must be a ClassLabel or an integer "
                f"Value (class indices). Convert it, e.g. dataset.class_encode_column({label_col!r}) for strings."
            )
    if not isinstance(train.features[image_col], datasets.Image):
        try:
            splits = {k: v.cast_column(image_col, datasets.Image()) for k, v in splits.items()}
        except Exception as e:
            raise ValueError(
                f"The image column {image_col!r} has type {train.features[image_col]!r} and cannot be read as "
                f"images: {e}"
            ) from e
        train = splits["train"]

    test = splits.get("test")
    if "validation" in splits:
        validation = splits["validation"]
        sources = {"train": "train", "validation": "validation"}
    else:
        # No validation split: hold out part of train for the schedule's decisions; a test split stays the test split.
        if not 0.0 < float(train_val_split) < 1.0:
            raise ValueError(f"train_val_split must be in (0, 1), got {train_val_split}.")
        kwargs = {"stratify_by_column": label_col} if is_classlabel else {}
        try:
            parts = train.train_test_split(test_size=train_val_split, seed=seed, **kwargs)
        except ValueError:  # too few examples per class to stratify
            parts = train.train_test_split(test_size=train_val_split, seed=seed)
        train, validation = parts["train"], parts["test"]
        if len(train) == 0 or len(validation) == 0:
            raise ValueError(
                f"Splitting {len(splits['train'])} training rows with train_val_split={train_val_split} left an "
                "empty split."
            )
        held_out = (
            f"held out from train ({len(validation)} of {len(splits['train'])} rows, "
            f"train_val_split={train_val_split}, seed {seed})"
        )
        sources = {"train": f"train (the other {len(train)} rows)", "validation": held_out}
    if test is not None:
        sources["test"] = (
            f"the dataset's {test_split_name!r} split"
            if test_split_name is not None
            else f"test_dir {os.path.basename(os.path.normpath(test_dir))!r}"
            if test_dir is not None
            else "test"
        )
    for name, split in (("validation", validation), ("test", test)):
        for c in (image_col, label_col):
            if split is not None and c not in split.column_names:
                raise ValueError(f"Column {c!r} is missing from the {name} split, which has {split.column_names}.")
    _check_two_classes(train, label_col, label_feature if is_classlabel else None)
    # Given validation / test splits (not one held out from train) must have train's classes (training/class_sets.py).
    if dataset_name is None:
        where = {
            "train": f"--train_dir {train_dir!r}",
            "validation": f"--validation_dir {validation_dir!r}",
            "test": f"--test_dir {test_dir!r}",
        }
    else:
        where = {k: f"the {k} split of {dataset_name!r}" for k in ("train", "validation", "test")}
    given = {"validation": validation if "validation" in splits else None, "test": test}
    check_split_classes(
        train, given, label_col, label_feature.names if is_classlabel else None, where, exact=dataset_name is None
    )

    if is_classlabel:
        id2label = {i: str(n) for i, n in enumerate(label_feature.names)}
    else:
        import pyarrow.compute as pc

        present = [d for d in (train, validation, test) if d is not None]
        lo = min(pc.min(d.data.column(label_col)).as_py() for d in present)
        hi = max(pc.max(d.data.column(label_col)).as_py() for d in present)
        if lo is None or lo < 0:
            raise ValueError(f"The integer label column {label_col!r} has negative or missing values (min {lo}).")
        id2label = {i: str(i) for i in range(int(hi) + 1)}

    result = {"train": train, "validation": validation, **({"test": test} if test is not None else {})}
    # Decoding errors name the file (see NamedImage); the cast keeps the storage, it only swaps the decoder.
    result = datasets.DatasetDict({k: v.cast_column(image_col, NamedImage()) for k, v in result.items()})
    result.split_sources = sources
    return result, image_col, label_col, id2label


def shuffle_labels(dataset, label_col: str, seed: int, splits=("train", "validation")):
    """The data-randomisation control (Adebayo et al., *Sanity checks for saliency maps*, 2018): the labels of
    ``splits`` permuted among their rows, seeded — the class frequencies stay, the image-label relation goes. Both the
    splits that take training decisions are permuted (a true-label validation split would select the checkpoint
    closest to the true labels); the test split keeps its true labels, so its accuracy shows what was learnt.
    Returns a new ``DatasetDict`` (its ``split_sources`` say which splits were permuted)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for name, split in dataset.items():
        if name in splits:
            feature = split.features[label_col]
            labels = np.asarray(split.with_format("arrow")[label_col].to_pylist())
            split = split.remove_columns(label_col).add_column(label_col, rng.permutation(labels).tolist())
            split = split.cast_column(label_col, feature)
        out[name] = split
    result = datasets.DatasetDict(out)
    sources = dict(getattr(dataset, "split_sources", {}))
    for name in splits:
        if name in sources:
            sources[name] += f", labels permuted (seed {seed})"
    result.split_sources = sources
    return result


def _check_two_classes(train, label_col: str, classlabel) -> None:
    """A classifier needs two classes: one class only would train to a meaningless perfect accuracy."""
    import pyarrow.compute as pc

    # (the arrow format follows the split's indices mapping; ``train.data`` would be the whole table before a split)
    present = sorted(v for v in pc.unique(train.with_format("arrow")[label_col]).to_pylist() if v is not None)
    if len(present) < 2:
        names = [
            f"{v} ({classlabel.names[v]!r})" if classlabel is not None and 0 <= v < len(classlabel.names) else str(v)
            for v in present
        ]
        raise ValueError(
            f"The training split has {len(train)} rows of {len(present)} class(es) only (label "
            f"{', '.join(names) or 'none'}): "
            f"InfoDisent needs at least two classes in the training split (column {label_col!r})."
        )
