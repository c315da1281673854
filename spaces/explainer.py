"""The Space's model side, without Gradio: reading an upload safely (`read_image`), loading an InfoDisent model with
its gallery (`Explainer`), explaining an image, and the JSON of an explanation (`explanation_json`). `app.py` builds
the page on top of it; the benchmarks load a model through it as the Space does."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# From a clone, modeling_infodisent is the installed project's package; on a Space it is copied next to app.py.
from modeling_infodisent import Explanation, render
from modeling_infodisent.images import UnreadableImage, open_image, pixel_values_for
from modeling_infodisent.loading import load_model_and_gallery

HERE = Path(__file__).resolve().parent

DEFAULT_MODEL = str(HERE / "model")
PREDICTED = "Predicted class"
GLOBAL_PROTOTYPES = 8  # prototypes shown per class in the global view
DISPLAY_SIZE = 280  # pixels of the longer side of every displayed picture of the input
# A decompression bomb is a small file that decodes to a gigantic bitmap: refuse by header size, before decoding.
MAX_PIXELS = 36_000_000  # 6000 x 6000
MAX_FILE_MB = 20
# Every upload is downscaled to this longer side right after decoding: far more than any model input (<= 518 px) or
# display (DISPLAY_SIZE) needs, and it bounds the memory of everything after decoding (a 6000 x 6000 PNG would
# otherwise be copied at full size by the EXIF rotation and the image processor, ~380 MiB a request).
MAX_SIDE = 1024
# Decoding is the one step whose memory grows with the upload (PIL holds 4 bytes a pixel: up to 137 MiB at
# MAX_PIXELS); one decode at a time bounds it, and everything after works on the downscaled picture.
_DECODE_SLOT = threading.BoundedSemaphore(1)


# ----------------------------------------------------------------------------------------------------------------
# Input validation: everything a user can upload ends here, and leaves as an RGB image or a readable message
# ----------------------------------------------------------------------------------------------------------------


class BadInput(ValueError):
    """An upload the app cannot use; the message is written for the person who uploaded it."""


# ----------------------------------------------------------------------------------------------------------------
# Input validation: everything a user can upload ends here, and leaves as an RGB image or a readable message
# ----------------------------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike | None) -> Image.Image:
    """Open an uploaded file as an RGB image of at most `MAX_SIDE` pixels a side, or raise `BadInput` saying what is
    wrong with it (`modeling_infodisent.images.open_image` does the work, in bounded memory).

    Checks, in order: a file was given, it is not empty or over `MAX_FILE_MB`, PIL recognises it as an image, its
    header size is at most `MAX_PIXELS` (checked before decoding, so a decompression bomb costs nothing), it decodes
    completely (truncated / corrupt files), and its mode converts to RGB (16-bit, CMYK, palette, alpha...). It is
    downscaled right after decoding, before anything copies it, and turned upright as the browser shows it (EXIF).
    """
    if path is None or str(path) == "":
        raise BadInput("No image yet: upload a picture or click one of the examples.")
    path = str(path)
    name = os.path.basename(path)
    if os.path.isfile(path) and os.path.getsize(path) > MAX_FILE_MB * 2**20:
        size = os.path.getsize(path)
        raise BadInput(f"“{name}” is {size / 2**20:.0f} MB; this demo accepts images up to {MAX_FILE_MB} MB.")
    try:
        with _DECODE_SLOT:
            return open_image(path, max_pixels=MAX_PIXELS, max_side=MAX_SIDE, exif_transpose=True)
    except UnreadableImage as error:
        raise BadInput(_upload_message(name, error)) from None


def _upload_message(name: str, error: UnreadableImage) -> str:
    limit = f"this demo accepts images up to {MAX_PIXELS / 1e6:.0f} megapixels"
    if error.reason in ("missing", "folder", "unreadable"):
        return f"The upload “{name}” did not arrive; please upload it again."
    if error.reason == "empty":
        return f"“{name}” is an empty file (0 bytes), not an image."
    if error.reason == "not_image":
        return (
            f"“{name}” is not an image this app can read. Please upload a picture (PNG, JPEG, WebP, BMP, GIF or TIFF)."
        )
    if error.reason == "bomb":
        return f"“{name}” is far too large (PIL refused it as a possible decompression bomb); {limit}."
    if error.reason == "too_large":
        width, height = error.size
        return (
            f"“{name}” is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels); {limit}. "
            "Please downscale it."
        )
    return f"“{name}” {error}."


# ----------------------------------------------------------------------------------------------------------------
# The model, its explanations and their JSON
# ----------------------------------------------------------------------------------------------------------------


def load_model(model_ref: str):
    """(model, image_processor, gallery or None) for a Hub id or a local folder."""
    model, processor, gallery = load_model_and_gallery(model_ref)
    return model.eval(), processor, gallery


def _prototype_dict(rank: int, p) -> dict:
    return {
        "rank": rank,
        "prototype": p.name,
        "channel": int(p.channel),
        "pole": "+" if p.sign > 0 else "-",
        "activation": float(p.activation),
        "weight": float(p.weight),
        "contribution": float(p.contribution),
        "location": [int(p.location[0]), int(p.location[1])],
        "box": [int(v) for v in p.box],
    }


def explanation_json(explanation: Explanation, id2label: dict[int, str], model_ref: str) -> dict:
    """Everything the view shows, as plain JSON: the `explain` API's second output."""
    probabilities = [float(p) for p in explanation.probabilities]
    predicted = int(np.argmax(probabilities))
    contributions = [float(p.contribution) for p in explanation.prototypes]
    return {
        "model": model_ref,
        "predicted_class": {"id": predicted, "label": id2label[predicted], "probability": probabilities[predicted]},
        "probabilities": [{"id": k, "label": id2label[k], "probability": p} for k, p in enumerate(probabilities)],
        "explained_class": {
            "id": int(explanation.target),
            "label": explanation.label,
            "probability": float(explanation.probability),
        },
        "logit": float(explanation.logit),
        "bias": float(explanation.bias),
        "sum_of_contributions": float(sum(contributions)),
        "residual": float(explanation.residual),
        "prototypes": [_prototype_dict(i + 1, p) for i, p in enumerate(explanation.prototypes)],
        "feature_grid": [int(v) for v in explanation.feature_grid],
        "image_size": [int(v) for v in explanation.image_size],
        "equation": "logit = bias + sum(prototypes[].contribution) + residual",
        "original_classifier": None
        if explanation.original_prediction is None
        else {
            "id": int(explanation.original_prediction),
            "label": id2label[int(explanation.original_prediction)],
            "agrees": bool(explanation.agrees),
        },
    }


class Explainer:
    """The loaded model + processor + gallery, and the operations the page needs."""

    def __init__(self, model_ref: str):
        # Shown in the page and the API: the bundled model by name, not by this machine's path.
        self.model_ref = "bundled demo model (spaces/model)" if model_ref == DEFAULT_MODEL else model_ref
        self.folder = model_ref if os.path.isdir(model_ref) else None
        self.model, self.processor, self.gallery = load_model(model_ref)
        config = self.model.config
        self.num_labels = int(config.num_labels)
        self.id2label = {int(k): str(v) for k, v in config.id2label.items()}
        # Dropdown entries must be unique even if two classes share a name.
        names = [self.id2label[k] for k in range(self.num_labels)]
        self.class_choices = [n if names.count(n) == 1 else f"{n} ({k})" for k, n in enumerate(names)]
        self.weight = self.model.classifier_weight.detach().double().cpu().numpy()  # (K, D) >= 0
        self.num_features = self.weight.shape[1]

    # -- local explanations --------------------------------------------------------------------------------------

    def class_id(self, choice: str | None) -> int | None:
        """Dropdown value -> class id; None means the predicted class."""
        if choice is None or choice == "" or choice == PREDICTED:
            return None
        if choice in self.class_choices:
            return self.class_choices.index(choice)
        raise BadInput(f"Unknown class {choice!r}. Choose one of: {', '.join(self.class_choices)}.")

    def explain(self, image: Image.Image, target: int | None, relevance: int = 0) -> tuple[Explanation, torch.Tensor]:
        """`relevance`: how many of the strongest positive prototypes get a pixel relevance map (one backward pass
        through the backbone each; the page's cards outline it, the API's JSON has no use for it)."""
        pixel_values = pixel_values_for(image, self.processor)  # 1 channel for a grayscale backbone
        return self.model.explain(pixel_values, target=target, relevance_top_k=relevance)[0], pixel_values

    def model_view(self, pixel_values: torch.Tensor) -> Image.Image:
        """The input exactly as the model saw it (after the processor's resize/crop), un-normalised, so that the
        prototype maps line up with it whatever the processor does."""
        x = pixel_values[0].double().cpu().numpy()
        mean, std = getattr(self.processor, "image_mean", None), getattr(self.processor, "image_std", None)
        if getattr(self.processor, "do_normalize", False) and mean is not None and std is not None:
            x = x * np.asarray(std).reshape(-1, 1, 1) + np.asarray(mean).reshape(-1, 1, 1)
            # back to 0..1: undo the processor's rescale (usually 1/255) relative to 0..255 pixels
            rescale = getattr(self.processor, "rescale_factor", 1 / 255)
            x = x / (rescale * 255.0) if getattr(self.processor, "do_rescale", True) else x / 255.0
        else:  # unknown preprocessing: stretch to the full range
            x = (x - x.min()) / max(x.max() - x.min(), 1e-8)
        array = (np.clip(x.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(array if array.shape[-1] == 3 else array[..., 0]).convert("RGB")
        return fit_to(image, DISPLAY_SIZE)

    # -- global explanations -------------------------------------------------------------------------------------

    def class_prototypes(self, class_id: int, limit: int = GLOBAL_PROTOTYPES) -> list[tuple[int, float]]:
        """(channel, weight) of the class's largest weights: its positive-pole prototypes argue for it."""
        row = self.weight[class_id]
        order = [int(c) for c in np.argsort(-row, kind="stable") if row[c] > 0]
        return [(c, float(row[c])) for c in order[:limit]]

    def prototype_usage(self, channel: int) -> list[tuple[int, float]]:
        """(class id, weight) of every class that uses `channel`, largest weight first."""
        return [(int(k), float(w)) for k, w in render.prototype_usage(self.model, channel)]

    def gallery_items(self, channel: int, sign: int, limit: int | None = None) -> list[tuple[Image.Image, str]]:
        """The gallery's training patches of one prototype as (image, caption) for `gr.Gallery`."""
        if self.gallery is None:
            return []
        items = []
        for entry in self.gallery.entries(channel, sign)[:limit]:
            name = entry.label_name if entry.label_name is not None else self.id2label.get(int(entry.label), "?")
            items.append((fit_to(entry.image.convert("RGB"), 112), f"{name} · {entry.activation:.2f}"))
        return items

    def results_line(self) -> str:
        """A Markdown bullet with the accuracy the training script recorded (all_results.json), if the folder has it:
        the held-out test split's when the run had one, else the validation split's, said to be the one that also
        took the schedule's decisions (early stopping, pruning)."""
        path = os.path.join(self.folder, "all_results.json") if self.folder else None
        if not path or not os.path.isfile(path):
            return ""
        try:
            with open(path) as f:
                results = json.load(f)
            if isinstance(results.get("test_accuracy"), (int, float)):
                prefix = "test_"
                line = (
                    f"- Test accuracy {results['test_accuracy']:.1%} on {results['test_num_examples']} held-out images"
                )
            else:
                prefix = ""
                line = (
                    f"- Validation accuracy {results['eval_accuracy']:.1%} on {results['eval_num_examples']} images "
                    "(no test split: the same images took the training schedule's decisions)"
                )
        except (OSError, ValueError, KeyError, TypeError):
            return ""
        head = results.get(f"{prefix}backbone_head_accuracy")
        if isinstance(head, (int, float)):
            line += f" (the backbone's own classifier: {head:.1%})"
        if isinstance(results.get("explanation_size_median"), (int, float)):
            line += f"; median explanation size {results['explanation_size_median']:g} prototypes"
        return line + "\n"

    def is_dead(self, channel: int, sign: int) -> bool:
        return self.gallery is not None and bool(self.gallery.is_dead(channel, sign))

    def prototype_choices(self) -> list[str]:
        """Every prototype some class uses, e.g. "17+" / "17-" (channels with an all-zero weight column are unused)."""
        used = [c for c in range(self.num_features) if (self.weight[:, c] > 0).any()]
        return [f"{c}{s}" for c in used for s in ("+", "-")]


def fit_to(image: Image.Image, size: int) -> Image.Image:
    """Scale so that the longer side is `size` (nearest for upscaling small images: crisp pixels)."""
    w, h = image.size
    scale = size / max(w, h)
    resample = Image.NEAREST if scale >= 2 else Image.BILINEAR
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
