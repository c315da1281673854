"""What a training run writes into its (staging) output folder: weights and code files, image processor, prototype
gallery, ``all_results.json`` and the model card (`training.model_card`), with no path of this machine in any of
them. `training.publish` swaps the finished folder into place."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from training.data import DEFAULT_DATASET
from training.model_card import FASHION_MNIST_HUB_ID, build_model_card
from training.publish import make_world_readable, public_name
from training.run_defaults import dataset_folder

logger = logging.getLogger(__name__)

__all__ = [
    "dataset_title",
    "hub_dataset_id",
    "input_size",
    "save_gallery",
    "save_image_processor",
    "write_model_folder",
]


def write_model_folder(
    folder,
    model,
    image_processor,
    train_dataset,
    image_column,
    label_column,
    id2label,
    results,
    command,
    args,
    start_time,
) -> None:
    """Weights + code files, image processor, gallery, all_results.json and the card, into ``folder``."""
    os.makedirs(folder)
    model.set_gumbel_temperature(args.gumbel_temperature_end)
    # config.json would otherwise record where the backbone was loaded from (a path of this machine).
    model.config.backbone_config._name_or_path = public_name(args.backbone)
    model.save_pretrained(folder)
    save_image_processor(image_processor, folder)
    has_gallery = False
    if args.gallery_top_k > 0:
        has_gallery = save_gallery(model, train_dataset, image_processor, args, image_column, label_column, folder)
    results["train_runtime_s"] = round(time.time() - start_time, 1)
    with open(os.path.join(folder, "all_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    is_default_data = args.dataset_name is None and args.train_dir is None
    card = build_model_card(
        results,
        model_name=args.hub_model_id or Path(args.output_dir).name,
        backbone=results["backbone"],
        dataset=dataset_title(args),
        command=command,
        id2label=id2label,
        dataset_hub_id=FASHION_MNIST_HUB_ID if is_default_data else hub_dataset_id(args),
        dataset_pretty_name="Fashion-MNIST (embedded 5,000 / 1,000 subset)" if is_default_data else None,
        has_gallery=has_gallery,
        image_size=input_size(image_processor),
    )
    card.save(os.path.join(folder, "README.md"))
    make_world_readable(folder)


def save_image_processor(image_processor, folder) -> None:
    """preprocessor_config.json for every backbone family, checked by loading it back the way users will
    (``AutoImageProcessor.from_pretrained(folder)``) and comparing its output with the original's on one image.

    transformers keeps a timm model's preprocessing in the model's own config.json and disables the timm processor's
    ``save_pretrained``; an InfoDisent folder's config.json is InfoDisent's, so the processor's configuration is
    written out here, in the form ``TimmWrapperImageProcessor`` reads back (``pretrained_cfg`` = timm's data config).
    """
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    if type(image_processor).__name__ == "TimmWrapperImageProcessor":
        data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in image_processor.data_config.items()}
        entry = {
            "image_processor_type": "TimmWrapperImageProcessor",
            "architecture": image_processor.architecture,
            "pretrained_cfg": data_config,
        }
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump(entry, f, indent=2)
    else:
        image_processor.save_pretrained(folder)
    # One deterministic RGB image with structure (a gradient), so resizing and cropping differences show.
    rows, cols = np.meshgrid(np.linspace(0, 255, 37), np.linspace(0, 255, 53), indexing="ij")
    probe = Image.fromarray(np.stack([rows, cols, 255 - cols], axis=-1).astype(np.uint8))
    reloaded = AutoImageProcessor.from_pretrained(folder)
    expected = image_processor(probe, return_tensors="pt")["pixel_values"]
    got = reloaded(probe, return_tensors="pt")["pixel_values"]
    if (
        type(reloaded) is not type(image_processor)
        or expected.shape != got.shape
        or not torch.allclose(expected, got, atol=1e-5)
    ):
        raise RuntimeError(
            f"The saved image processor ({type(reloaded).__name__}) does not preprocess as the backbone's "
            f"({type(image_processor).__name__}) does: the output folder would not work."
        )


def dataset_title(args) -> str:
    """The dataset's name for the card: a Hub id as given, else the local folder's name, or its parent's when the
    folder is named after a split (``digits/train`` is the dataset "digits", not "train")."""
    source = args.dataset_name or args.train_dir or DEFAULT_DATASET
    if not os.path.exists(os.path.expanduser(source)):
        return source  # a Hub id
    return dataset_folder(os.path.expanduser(source)).name or public_name(source)


def hub_dataset_id(args) -> str | None:
    """``--dataset_name`` when it is a Hub id (not a local folder)."""
    name = args.dataset_name
    return name if name and not os.path.exists(os.path.expanduser(name)) else None


def input_size(image_processor) -> tuple[int, int]:
    """(width, height) of an image the processor accepts as is, for the card's example."""
    timm_input = (getattr(image_processor, "data_config", None) or {}).get("input_size")
    if timm_input:  # a timm processor: (C, H, W) after its resize and centre crop
        return int(timm_input[-1]), int(timm_input[-2])
    size = getattr(image_processor, "crop_size", None) if getattr(image_processor, "do_center_crop", False) else None
    size = size or getattr(image_processor, "size", None) or {}
    height = size.get("height") or size.get("shortest_edge") or 224
    width = size.get("width") or size.get("shortest_edge") or height
    return int(width), int(height)


def save_gallery(model, train_dataset, image_processor, args, image_column, label_column, folder) -> bool:
    """The prototype gallery (top training patches per prototype). An import error is raised, not skipped: it once
    hid a broken installation behind a folder without a gallery."""
    from modeling_infodisent.gallery import compute_gallery

    gallery = compute_gallery(
        model,
        train_dataset,
        image_processor,
        top_k=args.gallery_top_k,
        batch_size=args.feature_batch_size,
        image_column=image_column,
        label_column=label_column,
    )
    gallery.save(folder)
    return True
