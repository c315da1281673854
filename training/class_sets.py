"""Data whose classes cannot train a classifier, refused with a message naming the folder and what was expected
(issue 26): an imagefolder with no images, with empty class folders or with a single class, and splits whose class
sets disagree (a validation class that train lacks trained a 4-class model with one class never seen, exit 0).

`check_image_folder` reads the folder layout before datasets loads it; `check_split_classes` compares the labels
present in each split once it is loaded. Both raise ValueError (the training script prints one line, exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
EXPECTED = "expected one sub-folder of images per class (PNG, JPEG, WebP, BMP, GIF or TIFF files)"


def _listing(names, limit: int = 5) -> str:
    names = sorted(names)
    return ", ".join(repr(n) for n in names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _images_in(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def check_image_folder(folder: str, flag: str, split_names=()) -> None:
    """An imagefolder (``class_name/image.png``) must hold images, in at least two class folders, none of them
    empty. A folder whose sub-folders are split names (``train/``, ``test/``, ``split_names``) is checked split by
    split. Parquet folders are not imagefolders: skipped."""
    root = Path(os.path.expanduser(folder))
    if not root.is_dir() or any(root.rglob("*.parquet")):
        return
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = [p for p in subfolders if p.name.lower() in split_names]
    if splits:
        for split in splits:
            check_image_folder(str(split), f"{flag} {folder!r}, split folder", ())
        return
    where = f"{flag} {folder!r}" if not flag.endswith("split folder") else f"{flag} {root.name!r}"
    if _images_in(root) == 0:
        files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
        kinds = sorted({p.suffix.lower() or "(no extension)" for p in files})
        found = f"{len(files)} other files ({', '.join(kinds[:5])})" if files else "nothing"
        raise ValueError(f"{where} holds no images (found {found}); {EXPECTED}.")
    empty = [p.name for p in subfolders if _images_in(p) == 0]
    if empty:
        raise ValueError(f"{where}: the class folder(s) {_listing(empty)} hold no images; {EXPECTED}.")
    classes = [p.name for p in subfolders]
    if len(classes) < 2:
        what = f"one class folder ({classes[0]!r})" if classes else "images but no class folders"
        raise ValueError(f"{where} has {what}: InfoDisent needs at least two classes; {EXPECTED}.")


def present_labels(split, label_col: str) -> set[int]:
    import pyarrow.compute as pc

    # (the arrow format follows the split's indices mapping; ``split.data`` would be the whole table)
    return {v for v in pc.unique(split.with_format("arrow")[label_col]).to_pylist() if v is not None}


def check_split_classes(
    train, given: dict, label_col: str, names: list[str] | None, where: dict[str, str], exact: bool
) -> None:
    """The classes of each given split (``{"validation": split, "test": split}``; not a split held out from train)
    against train's: a class train lacks is never learnt, so it is refused; with `exact` (imagefolders, whose class
    sets are their folder names) train's classes must all be there too. `where` names each split's source
    (``"--validation_dir 'val'"``)."""

    def name(v: int) -> str:
        return names[v] if names is not None and 0 <= v < len(names) else str(v)

    seen = present_labels(train, label_col)
    for split_name, split in given.items():
        if split is None:
            continue
        labels = present_labels(split, label_col)
        extra, missing = labels - seen, (seen - labels) if exact else set()
        if not extra and not missing:
            continue
        parts = []
        if extra:
            parts.append(f"only in {where[split_name]}: {_listing(name(v) for v in extra)}")
        if missing:
            parts.append(f"only in {where['train']}: {_listing(name(v) for v in missing)}")
        raise ValueError(
            f"The classes of {where['train']} and {where[split_name]} differ ({'; '.join(parts)}); every split needs "
            "the same classes (a class the training split lacks is never learnt). Rename or move the class folders "
            "so that they match."
        )
