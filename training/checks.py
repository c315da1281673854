"""The training script's checks of what the user gave it, before anything heavy is loaded.

Every problem found here is a :class:`UsageError` whose message names the argument and the file; the script prints
it as one ``error: ...`` line and exits with status 2 (see ``training/train.py``).
"""

from __future__ import annotations

import os

__all__ = [
    "UsageError",
    "check_against_data",
    "check_finite",
    "head_label_match",
    "inspect_backbone",
    "looks_like_local_path",
    "validate_args",
]


class UsageError(ValueError):
    """A problem with the user's arguments or files (not a bug): reported as one line, exit status 2."""


def looks_like_local_path(name: str) -> bool:
    """A name that can only be meant as a local path (a Hub id is ``name`` or ``owner/name``)."""
    return (
        name.startswith(("/", "~", "./", "../", ".\\"))
        or os.path.isabs(name)
        or "\\" in name
        or name.count("/") > 1
        or name in (".", "..")
    )


def _check_folder(flag: str, path: str | None, must_have_files: bool = False) -> None:
    if path is None:
        return
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        raise UsageError(f"{flag}: the folder {path!r} does not exist.")
    if not os.path.isdir(full):
        raise UsageError(f"{flag}: {path!r} is a file, not a folder.")
    if must_have_files and not any(os.scandir(full)):
        raise UsageError(f"{flag}: the folder {path!r} is empty (expected one sub-folder of images per class).")


def _check_writable_folder(flag: str, path: str) -> None:
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full) and not os.path.isdir(full):
        raise UsageError(f"{flag}: {path!r} is a file, not a folder.")
    existing = full
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag}: {path!r} cannot be created: {existing!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: {path!r} cannot be written: no write permission on {existing!r}.")
    # Permission bits do not tell everything (root passes os.access everywhere, yet /proc and /sys refuse new
    # entries; read-only mounts): create and remove a folder where the run will create its own. The model folder
    # is built beside --output_dir and renamed into place, so that is its parent (issue 26: /proc/x failed only
    # after training, naming the staging path).
    import tempfile

    parent = existing if existing != full else os.path.dirname(full) or "."
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".infodisent-write-check-", dir=parent))
    except OSError as error:
        raise UsageError(
            f"{flag}: {path!r} cannot be written: creating a folder in {parent!r} fails ({error.strerror or error})."
        ) from None


def _at_least(args, flag: str, minimum: float, strictly: bool = False) -> None:
    value = getattr(args, flag.lstrip("-"), None)
    if value is None:
        return
    if value < minimum or (strictly and value == minimum):
        relation = ">" if strictly else ">="
        raise UsageError(f"{flag} must be {relation} {minimum:g}, got {value:g}.")


def validate_args(args) -> None:
    """Cheap checks of the parsed arguments: folders exist (and are folders), the output folder can be written,
    numbers are in range. Arguments another part of the script may not define are skipped."""
    if args.dataset_name is not None:
        name = args.dataset_name
        if os.path.exists(os.path.expanduser(name)) or looks_like_local_path(name):
            _check_folder("--dataset_name", name, must_have_files=True)
    _check_folder("--train_dir", args.train_dir, must_have_files=True)
    _check_folder("--validation_dir", args.validation_dir, must_have_files=True)
    _check_folder("--test_dir", getattr(args, "test_dir", None), must_have_files=True)
    if args.validation_dir is not None and args.train_dir is None and args.dataset_name is None:
        raise UsageError("--validation_dir was given without --train_dir.")
    if args.backbone is not None and (
        os.path.exists(os.path.expanduser(args.backbone)) or looks_like_local_path(args.backbone)
    ):
        _check_folder("--backbone", args.backbone)
        if not os.path.exists(os.path.join(os.path.expanduser(args.backbone), "config.json")):
            raise UsageError(
                f"--backbone: the folder {args.backbone!r} has no config.json: it is not a Hugging Face model folder."
            )
    _check_writable_folder("--output_dir", args.output_dir)
    if args.cache_dir is not None:
        _check_writable_folder("--cache_dir", args.cache_dir)
    resume = getattr(args, "resume_from_checkpoint", None)
    if resume not in (None, "latest") and not os.path.isdir(os.path.expanduser(resume)):
        raise UsageError(f"--resume_from_checkpoint: the checkpoint folder {resume!r} does not exist.")
    if resume == "latest" and not os.path.isdir(os.path.expanduser(args.output_dir)):
        raise UsageError(f"--resume_from_checkpoint latest: the output folder {args.output_dir!r} does not exist.")
    steps = getattr(args, "checkpointing_steps", None)
    if steps is not None and steps != "epoch" and not (steps.isdigit() and int(steps) > 0):
        raise UsageError(f"--checkpointing_steps must be a positive integer or 'epoch', got {steps!r}.")

    for flag in (
        "--num_train_epochs",
        "--max_train_steps",
        "--per_device_train_batch_size",
        "--per_device_eval_batch_size",
        "--feature_batch_size",
    ):
        _at_least(args, flag, 1)
    for flag in (
        "--finetune_epochs",
        "--max_prototypes_per_class",
        "--gallery_top_k",
        "--sparsity_l1",
        "--sparsity_hoyer",
        "--weight_decay",
        "--distill_weight",
    ):
        _at_least(args, flag, 0)
    for flag in ("--learning_rate", "--finetune_learning_rate", "--distill_temperature"):
        _at_least(args, flag, 0, strictly=True)
    if getattr(args, "distill_weight", None) is not None and args.distill_weight > 1:
        raise UsageError(f"--distill_weight must be in [0, 1], got {args.distill_weight:g}.")
    split = getattr(args, "train_val_split", None)
    if split is not None and not 0 < split < 1:
        raise UsageError(f"--train_val_split must be in (0, 1), got {split:g}.")


MAX_PLANNED_STEPS = 10**9  # a plan longer than this is a typo, not a run (issue 26: 1.7e13 steps ran until killed)


def check_against_data(args, train_rows: int | None, num_processes: int = 1) -> None:
    """The checks that need the number of training rows, run right after the dataset is loaded and before any
    feature is extracted: the global batch fits the data (or the reference batch of 256), and the planned steps of
    --num_train_epochs / --finetune_epochs stay under `MAX_PLANNED_STEPS`. `train_rows` None (a stream of unknown
    length) skips them."""
    if not train_rows:
        return
    per_device = getattr(args, "per_device_train_batch_size", None)
    flag = "--per_device_train_batch_size" if per_device else "--train_batch_size"
    batch = per_device * num_processes if per_device else args.train_batch_size
    # A batch larger than the data only repeats rows; up to the default (256) it is allowed for tiny datasets.
    if batch > max(train_rows, 256):
        total = f" x {num_processes} processes = {batch:,}" if per_device and num_processes > 1 else ""
        raise UsageError(
            f"{flag} {getattr(args, flag[2:]):,}{total} is larger than the {train_rows:,} training rows; "
            f"use at most {max(train_rows, 256):,}."
        )
    for epochs_flag in ("--num_train_epochs", "--finetune_epochs"):
        epochs = getattr(args, epochs_flag[2:], None)
        if epochs and epochs * train_rows / batch > MAX_PLANNED_STEPS:
            raise UsageError(
                f"{epochs_flag} {epochs:g} plans {epochs * train_rows / batch:.3g} steps of {batch:,} rows over "
                f"{train_rows:,} training rows; at most {MAX_PLANNED_STEPS:,} steps "
                f"({MAX_PLANNED_STEPS * batch / train_rows:.3g} epochs)."
            )


def _is_image_config(config) -> bool:
    from transformers.models.auto import modeling_auto

    image_types = set()
    for mapping in (
        "MODEL_FOR_IMAGE_MAPPING_NAMES",
        "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        "MODEL_FOR_BACKBONE_MAPPING_NAMES",
        "MODEL_FOR_MASKED_IMAGE_MODELING_MAPPING_NAMES",
    ):
        image_types.update(getattr(modeling_auto, mapping, {}))
    # Vision towers of multimodal models (e.g. CLIPVisionConfig) are not in the mappings but take images.
    return config.model_type in image_types or any(hasattr(config, a) for a in ("num_channels", "image_size"))


def inspect_backbone(name: str):
    """The backbone's config and image processor (no weights yet), or a UsageError saying what is wrong, in this
    order: the folder does not exist / cannot be loaded, it is InfoDisent itself, it is not an image model, it has no
    image processor."""
    from transformers import AutoConfig, AutoImageProcessor

    if looks_like_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise UsageError(f"--backbone: the folder {name!r} does not exist.")
    try:
        config = AutoConfig.from_pretrained(name)
    except Exception as error:  # noqa: BLE001 - reported in the user's terms
        from huggingface_hub import constants

        offline = " (the Hub is switched off: HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"--backbone: cannot load {name!r}{offline}: it is neither a local model folder nor a Hub model id that "
            f"could be loaded ({type(error).__name__}: {first})"
        ) from error
    if config.model_type == "infodisent":
        raise UsageError(f"--backbone: {name!r} is already an InfoDisent model; pass the backbone it explains instead.")
    if not _is_image_config(config):
        raise UsageError(
            f"--backbone: {name!r} is a {config.model_type!r} model, not an image model; InfoDisent explains vision "
            "backbones (ResNet, ConvNeXt, ViT, DINOv2, ...)."
        )
    try:
        image_processor = AutoImageProcessor.from_pretrained(name)
    except Exception as error:  # noqa: BLE001
        raise UsageError(
            f"--backbone: {name!r} has no image processor (preprocessor_config.json), so its preprocessing is "
            "unknown. Save one next to it (e.g. AutoImageProcessor.from_pretrained(...).save_pretrained(folder))."
        ) from error
    return config, image_processor


def head_label_match(
    head_config, id2label: dict[int, str], user_says_it_matches: bool = False
) -> tuple[bool, str | None]:
    """Whether the backbone's own classifier predicts the dataset's classes, and if not why (for the results).

    Names must agree (case-insensitively, in order). Generic names (``LABEL_0``...) say nothing about what the head
    predicts, so they count as a match only when the user says so (``--backbone_head_matches_labels``)."""
    count = head_config.num_labels
    if count != len(id2label):
        return False, f"the backbone's classifier head predicts {count} classes, the dataset has {len(id2label)}"
    if user_says_it_matches:
        return True, None
    names = [str(head_config.id2label[i]) for i in range(count)]
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return False, (
            "the backbone's classifier head has generic labels (LABEL_0, LABEL_1, ...); pass "
            "--backbone_head_matches_labels if it predicts the dataset's classes in the dataset's order"
        )
    wanted = [id2label[i] for i in range(len(id2label))]
    if [n.lower() for n in names] != [n.lower() for n in wanted]:
        return False, (
            f"the backbone's classifier head's labels {names[:5]}{'...' if count > 5 else ''} are not the dataset's "
            f"classes {wanted[:5]}{'...' if len(wanted) > 5 else ''}; pass --backbone_head_matches_labels if they "
            "are the same classes in the same order"
        )
    return True, None


def check_finite(tensor, what: str, then: str = "") -> None:
    """A UsageError naming ``what`` when ``tensor`` holds NaN or inf (a broken backbone must not train silently)."""
    import torch

    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise UsageError(f"{what}: {bad} of {tensor.numel()} values are NaN or infinite{then}.")
