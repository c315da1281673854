"""Loading a saved InfoDisent model with its image processor and prototype gallery, and refusing what does not fit.

One job: turn a folder (or Hub id) into ``(model, image_processor, gallery)`` that belong together. The checks:

* the folder holds the model's own safetensors weights (``model.safetensors`` / its sharded index), never a pickle
  (`InfoDisentForImageClassification.from_pretrained`, which also refuses missing / unexpected / mis-shaped keys);
* the gallery was computed with exactly these weights: `compute_gallery` stores `weights_fingerprint(model)` in
  ``prototype_gallery.json`` and a model whose fingerprint differs is refused (a training run killed after it rewrote
  ``model.safetensors`` but before the new gallery would otherwise show the old model's patches as this one's).
"""

from __future__ import annotations

import os

import torch

from .fingerprint import weights_fingerprint

__all__ = ["GalleryMismatchError", "check_model_folder", "load_model_and_gallery", "weights_fingerprint"]


class GalleryMismatchError(ValueError):
    """The prototype gallery next to a model was computed with other weights."""


def check_gallery_matches(gallery, model, where: str) -> None:
    """Raise `GalleryMismatchError` when `gallery` does not belong to `model` (channel count or weights)."""
    if gallery.num_channels != model.config.num_features:
        raise GalleryMismatchError(
            f"The gallery in {where!r} has {gallery.num_channels} channels but the model has "
            f"{model.config.num_features}: it belongs to another model."
        )
    if gallery.weights_fingerprint is not None and gallery.weights_fingerprint != weights_fingerprint(model):
        raise GalleryMismatchError(
            f"The prototype gallery in {where!r} was computed with other weights than its model.safetensors "
            "(weights_fingerprint differs): it would show another model's patches. Recompute it with "
            "compute_gallery(model, dataset, image_processor).save(folder), or retrain into a fresh folder."
        )


def check_model_folder(folder: str | os.PathLike, name: str | None = None) -> None:
    """The cheap checks of a local model folder, before anything is loaded: config.json, the model's own
    safetensors weights (never a pickle), and the image processor. `FileNotFoundError` / `OSError` otherwise."""
    from .checkpoint import check_weight_files

    folder = str(folder)
    name = folder if name is None else name
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{name!r} has no config.json: it is not a saved model folder.")
    check_weight_files(folder)
    if not os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        raise FileNotFoundError(
            f"{name!r} has no image processor (preprocessor_config.json); save one next to the model with "
            "image_processor.save_pretrained(folder)."
        )


def load_model_and_gallery(path_or_hub_id: str | os.PathLike, device: str | torch.device | None = None):
    """(model, image_processor, gallery) from a local model folder or a Hub id (downloaded with
    `huggingface_hub.snapshot_download`, which also fetches the gallery files). `gallery` is None when the model
    has none; a gallery computed with other weights raises `GalleryMismatchError`. The model is returned in eval
    mode."""
    from transformers import AutoImageProcessor

    from .gallery import PrototypeGallery
    from .modeling_infodisent import InfoDisentForImageClassification

    path = str(path_or_hub_id)
    if os.path.isdir(path):
        folder = path
    elif os.path.exists(path):
        raise ValueError(f"{path!r} is a file, not a model folder.")
    else:
        from huggingface_hub import snapshot_download

        if path.startswith((".", "/", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path:
            raise FileNotFoundError(f"Model folder {path!r} does not exist.")  # not a Hub id (owner/name)
        try:
            # Only what loading reads: a pickled pytorch_model.bin in the repo is never downloaded.
            folder = snapshot_download(path_or_hub_id, allow_patterns=["*.json", "*.safetensors", "*.py", "*.md"])
        except Exception as error:  # noqa: BLE001 - offline, unknown repo, ...: say it in the user's terms
            raise FileNotFoundError(
                f"{path!r} is not a local folder and could not be downloaded from the Hugging Face Hub: {error}"
            ) from error
    check_model_folder(folder, path)
    gallery = PrototypeGallery.load(folder)  # cheap, and its errors come before the (slower) model load
    model = InfoDisentForImageClassification.from_pretrained(folder)
    if gallery is not None:
        check_gallery_matches(gallery, model, path)
    if device is not None:
        model = model.to(device)
    model.eval()
    try:
        image_processor = AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise OSError(f"{path!r}: preprocessor_config.json is not a valid image processor ({error}).") from error
    return model, image_processor, gallery
