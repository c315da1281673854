"""The prototype gallery: for every prototype, the training patches that activate it most.

InfoDisent's prototypes are the two poles (positive ``+`` and negative ``-``) of each rotated channel ``c``. A pole
means little as a number; it becomes readable when we see the images where it fires hardest. This module computes
that gallery in one pass over a dataset (like ProtoPNet's "push", but without changing any weight), stores it next
to the model weights in a portable form, and loads it back.

The patch rule (documented here and recorded in ``prototype_gallery.json`` under ``"rule"``)
-----------------------------------------------------------------------------------------------
For an image and a pole ``(c, sign)`` with activation ``a = max ReLU(sign * J_c) > 0``:

1. the pole's map ``ReLU(sign * J_c)`` (h x w feature grid) is upsampled bilinearly (``align_corners=False``, as
   `Prototype.heatmap`) to the model input, on a grid of ``box_resolution`` (64) pixels along the longer side (or
   the feature grid, if finer);
2. the region is the set of upsampled pixels ``>= threshold * peak`` (``threshold = 0.5``) that lie in feature cells
   8-connected to the peak cell through cells ``>= threshold * peak``: the blob around the maximum, not every other
   place that also fires;
3. its bounding box is widened, centred, to at least ``min_box_fraction`` (1/4) of the input's width and height, so
   that a one-cell peak still shows some context;
4. the box is mapped from model-input pixels to source-image pixels through the image processor's geometry
   (resize, ``crop_pct`` / centre crop: see `visible_region`), then made square (the longer side, centred, shifted
   to stay inside the image) so that the patch is not distorted;
5. the patch is that box of the source image (RGB), resized to ``patch_size`` x ``patch_size`` (nearest neighbour
   when enlarging 2x or more so small images stay crisp, bicubic otherwise; letterboxed on grey in the rare case
   where the square does not fit in the image). ``GalleryEntry.box`` is exactly the box the patch shows.
   ``patch_size`` defaults to 64, or to the first image's shorter side when that is smaller (a 28 px Fashion-MNIST
   image has no more detail to store).

Channels that no class uses (their weights all exactly 0, e.g. after pruning) cannot contribute to any logit: by
default they are skipped (`PrototypeGallery.is_unused`), which keeps the files small.

Per pole the top-k images are ranked by activation (ties: lower dataset index first); an image counts once per pole
(its maximum); images where the pole does not fire (activation 0) are never listed. A pole that fires on no image
of the dataset is *dead* (`PrototypeGallery.is_dead`).

Files (inside the model folder, uploaded with it):
    ``prototype_gallery.json``         the index: format, rule, top_k, the fingerprint of the weights it was
                                       computed with, and per pole its entries (source id, class,
                                       activation, location, box, rank, patch number) — sorted keys, fixed floats,
                                       so save -> load -> save is byte-identical;
    ``prototype_gallery.safetensors``  ``patches``: uint8 (N, P, P, 3), the crops in index order.
Nothing is pickled, and `PrototypeGallery.load` only reads JSON and safetensors.

Only the model file, numpy, torch and PIL are used (no matplotlib): the training script and the Space import it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .backbones import channels_last
from .fingerprint import weights_fingerprint
from .images import pixel_values_for, to_rgb

# The patch rule's geometry lives in `patches` (re-exported here, where it has always been imported from).
from .patches import box_from_map, crop_patch, input_box_to_source, model_view, square_box, visible_region

__all__ = [
    "GALLERY_INDEX_NAME",
    "GALLERY_WEIGHTS_NAME",
    "GalleryEntry",
    "PrototypeGallery",
    "box_from_map",
    "compute_gallery",
    "input_box_to_source",
    "model_view",
    "square_box",
    "crop_patch",
    "to_rgb",
    "visible_region",
]

GALLERY_INDEX_NAME = "prototype_gallery.json"
GALLERY_WEIGHTS_NAME = "prototype_gallery.safetensors"
_FORMAT = "infodisent-prototype-gallery"
_VERSION = 1

RULE_DESCRIPTION = (
    "Pole map ReLU(sign*J_c) upsampled bilinearly to the model input (box_resolution px along the longer side); "
    "bounding box of the pixels >= threshold*peak inside the feature cells 8-connected to the peak cell through "
    "cells >= threshold*peak; widened to at least "
    "min_box_fraction of the input's width and height; mapped to source-image pixels through the image "
    "processor's resize/crop geometry; made square (longer side, centred, kept inside the image); cropped from the "
    "RGB source and resized to patch_size x patch_size. Top-k images per pole by activation, ties by dataset index; "
    "activation 0 never listed; a pole with no listed image is dead; channels no class uses are skipped "
    "(unused_channels) when skip_unused."
)


# ----------------------------------------------------------------------------------------------------------------
# The gallery
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GalleryEntry:
    """One of the top-k training patches of one pole."""

    image: Image.Image  # the patch (patch_size x patch_size RGB)
    source_id: int | str  # dataset index, or the value of `id_column`
    label: int  # the source image's class
    label_name: str
    activation: float  # the pole's activation on the source image
    box: tuple[int, int, int, int]  # (left, top, right, bottom) of the patch in source-image pixels
    location: tuple[int, int]  # (row, col) of the pole's peak in the feature grid
    rank: int  # 0 = the strongest
    channel: int
    sign: int


def _sign_key(sign: int | str) -> int:
    if sign in (1, "+", "pos", "positive"):
        return 1
    if sign in (-1, "-", "neg", "negative"):
        return -1
    raise ValueError(f"A pole's sign is +1 or -1 ('+' / '-'), got {sign!r}.")


class PrototypeGallery:
    """Top-k patches of every pole ``(channel, sign)``; see the module docstring for the rule and the files."""

    def __init__(
        self,
        num_channels: int,
        top_k: int,
        patch_size: int,
        rule: dict,
        num_images: int,
        poles: dict[tuple[int, int], list[dict]],
        patches: np.ndarray,
        unused_channels: Iterable[int] = (),
        weights_fingerprint: str | None = None,
    ):
        self.num_channels = int(num_channels)
        self.top_k = int(top_k)
        self.patch_size = int(patch_size)
        self.rule = dict(rule)
        self.num_images = int(num_images)
        self._poles = poles
        self._patches = patches
        self.unused_channels = frozenset(int(c) for c in unused_channels)
        # `loading.weights_fingerprint` of the model the gallery was computed with (None: a gallery written before
        # fingerprints existed); a model whose weights do not match it is refused by `load_model_and_gallery`.
        self.weights_fingerprint = weights_fingerprint

    def __repr__(self) -> str:
        dead = sum(self.is_dead(c, s) for c in range(self.num_channels) for s in (1, -1))
        return (
            f"PrototypeGallery(num_channels={self.num_channels}, top_k={self.top_k}, patch_size={self.patch_size}, "
            f"num_images={self.num_images}, dead_poles={dead}/{2 * self.num_channels}, "
            f"unused_channels={len(self.unused_channels)})"
        )

    def _check_channel(self, channel: int) -> None:
        if not 0 <= int(channel) < self.num_channels:
            raise IndexError(f"Channel {channel} is out of range: the gallery has {self.num_channels} channels.")

    def entries(self, channel: int, sign: int | str) -> list[GalleryEntry]:
        """The pole's patches, strongest first (empty for a dead pole)."""
        self._check_channel(channel)
        sign = _sign_key(sign)
        result = []
        for record in self._poles.get((int(channel), sign), []):
            result.append(
                GalleryEntry(
                    image=Image.fromarray(self._patches[record["patch"]], mode="RGB"),
                    source_id=record["source_id"],
                    label=int(record["label"]),
                    label_name=record["label_name"],
                    activation=float(record["activation"]),
                    box=tuple(record["box"]),
                    location=tuple(record["location"]),
                    rank=int(record["rank"]),
                    channel=int(channel),
                    sign=sign,
                )
            )
        return result

    def is_dead(self, channel: int, sign: int | str) -> bool:
        """True when the pole fired (activation > 0) on no image of the gallery dataset (False for an unused
        channel, which was not looked at)."""
        self._check_channel(channel)
        return int(channel) not in self.unused_channels and not self._poles.get((int(channel), _sign_key(sign)))

    def is_unused(self, channel: int) -> bool:
        """True when the channel was skipped because no class uses it (all its weights are 0): no entries."""
        self._check_channel(channel)
        return int(channel) in self.unused_channels

    def max_activation(self, channel: int, sign: int | str) -> float:
        """The pole's largest activation over the gallery dataset (0.0 for a dead pole)."""
        self._check_channel(channel)
        records = self._poles.get((int(channel), _sign_key(sign)))
        return float(records[0]["activation"]) if records else 0.0

    # -- files --------------------------------------------------------------------------------------------------

    def _index(self) -> dict:
        poles = []
        for channel in range(self.num_channels):
            for sign in (1, -1):
                records = self._poles.get((channel, sign), [])
                poles.append(
                    {
                        "channel": channel,
                        "sign": "+" if sign > 0 else "-",
                        "dead": self.is_dead(channel, sign),
                        "entries": records,
                    }
                )
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "num_channels": self.num_channels,
            "top_k": self.top_k,
            "patch_size": self.patch_size,
            "num_images": self.num_images,
            "rule": self.rule,
            "unused_channels": sorted(self.unused_channels),
            "weights_fingerprint": self.weights_fingerprint,
            "poles": poles,
        }

    def _index_text(self) -> str:
        """The index as JSON text: sorted keys, one line per pole (readable and diff-friendly)."""
        index = self._index()
        poles = index.pop("poles")
        lines = [
            f" {json.dumps(key)}: {json.dumps(value, sort_keys=True, ensure_ascii=False)},"
            for key, value in sorted(index.items())
        ]
        pole_lines = ",\n".join("  " + json.dumps(pole, sort_keys=True, ensure_ascii=False) for pole in poles)
        return "{\n" + "\n".join(lines) + '\n "poles": [\n' + pole_lines + "\n ]\n}\n"

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``prototype_gallery.json`` and ``prototype_gallery.safetensors`` into `folder` (created if needed).

        Deterministic bytes: the same gallery always gives the same files. Each file goes through a temporary file
        and a rename, so a crash never leaves a half-written gallery."""
        from safetensors.numpy import save as safetensors_save

        os.makedirs(folder, exist_ok=True)
        index = self._index_text()
        blob = safetensors_save({"patches": np.ascontiguousarray(self._patches)}, metadata={"format": _FORMAT})
        for name, data in ((GALLERY_WEIGHTS_NAME, blob), (GALLERY_INDEX_NAME, index.encode("utf-8"))):
            path = os.path.join(folder, name)
            tmp = path + ".tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> PrototypeGallery | None:
        """The gallery saved in `folder`, or None when the folder has none. Reads JSON and safetensors only."""
        index_path = os.path.join(folder, GALLERY_INDEX_NAME)
        weights_path = os.path.join(folder, GALLERY_WEIGHTS_NAME)
        if not os.path.isfile(index_path):
            return None
        if not os.path.isfile(weights_path):
            raise ValueError(f"{index_path} exists but {GALLERY_WEIGHTS_NAME} (the patch images) is missing.")
        from safetensors.numpy import load_file

        try:
            with open(index_path, encoding="utf-8") as handle:
                index = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{index_path} is not a valid gallery index: {error}") from error
        if not isinstance(index, dict) or index.get("format") != _FORMAT:
            raise ValueError(f"{index_path} is not an InfoDisent prototype gallery (no format {_FORMAT!r}).")
        if index.get("version") != _VERSION:
            raise ValueError(f"{index_path} has gallery version {index.get('version')}, this code reads {_VERSION}.")
        try:
            patches = load_file(weights_path).get("patches")
        except Exception as error:  # noqa: BLE001 - safetensors' SafetensorError, OSError: name the file
            raise ValueError(f"{weights_path} is not a readable safetensors file: {error}") from error
        try:
            return cls._from_index(index, patches, index_path, weights_path)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, ValueError) and str(error).startswith((index_path, weights_path)):
                raise  # already ours, naming the file
            raise ValueError(f"{index_path} is not a valid gallery index ({type(error).__name__}: {error})") from error

    @classmethod
    def _from_index(cls, index: dict, patches, index_path: str, weights_path: str) -> PrototypeGallery:
        patch_size = int(index["patch_size"])
        if patches is None or patches.dtype != np.uint8 or patches.shape[1:] != (patch_size, patch_size, 3):
            raise ValueError(
                f"{weights_path} has no uint8 'patches' array of shape (N, {patch_size}, {patch_size}, 3)."
            )
        fingerprint = index.get("weights_fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"{index_path} has a weights_fingerprint that is not a string: {fingerprint!r}.")
        poles: dict[tuple[int, int], list[dict]] = {}
        for pole in index["poles"]:
            records = pole["entries"]
            for record in records:
                if not 0 <= record["patch"] < len(patches):
                    raise ValueError(f"{index_path} refers to patch {record['patch']}, the file has {len(patches)}.")
            if records:
                poles[(int(pole["channel"]), _sign_key(pole["sign"]))] = records
        return cls(
            num_channels=index["num_channels"],
            top_k=index["top_k"],
            patch_size=patch_size,
            rule=index["rule"],
            num_images=index["num_images"],
            poles=poles,
            patches=patches,
            unused_channels=index.get("unused_channels", []),
            weights_fingerprint=fingerprint,
        )


# ----------------------------------------------------------------------------------------------------------------
# One pass over a dataset
# ----------------------------------------------------------------------------------------------------------------


def _columns(dataset: Any) -> list[str] | None:
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):
        return names
    return None


def _rows(dataset: Any, start: int, end: int, columns: Iterable[str]) -> dict[str, list]:
    if _columns(dataset) is not None:  # datasets.Dataset: one slice decodes a whole batch
        batch = dataset[start:end]
        return {name: list(batch[name]) for name in columns}
    items = [dataset[i] for i in range(start, end)]
    out: dict[str, list] = {name: [] for name in columns}
    for i, item in zip(range(start, end), items):
        for name in columns:
            if name not in item:
                raise KeyError(f"Dataset item {i} has no column {name!r} (it has {sorted(item)}).")
            out[name].append(item[name])
    return out


def _label_names(dataset: Any, label_column: str, model: Any) -> dict[int, str]:
    features = getattr(dataset, "features", None)
    feature = features.get(label_column) if features is not None and hasattr(features, "get") else None
    names = getattr(feature, "names", None)
    if names:
        return {i: str(n) for i, n in enumerate(names)}
    return {int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()}


def _plain_id(value: Any) -> int | str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _plain_id(value.item())
    return str(value)


@torch.no_grad()
def compute_gallery(
    model,
    dataset,
    image_processor,
    top_k: int = 5,
    batch_size: int = 64,
    image_column: str = "image",
    label_column: str = "label",
    id_column: str | None = None,
    *,
    patch_size: int | None = None,
    threshold: float = 0.5,
    min_box_fraction: float = 0.25,
    box_resolution: int = 64,
    skip_unused: bool = True,
    progress: bool = True,
) -> PrototypeGallery:
    """One pass over `dataset` (a `datasets.Dataset` or any sequence of dicts with raw images) in eval mode, without
    changing any weight: the top-k images of every pole with their patches (see the module docstring for the rule).

    Args:
        model: an `InfoDisentForImageClassification` (left in the mode it was in).
        image_processor: the model's image processor (images are converted to RGB first).
        top_k: patches kept per pole.
        id_column: column whose value identifies a source image; default its index in `dataset`.
        patch_size: side of the stored patches; default 64, or the first image's shorter side if smaller.
        skip_unused: leave out the channels no class uses (all weights 0): they cannot explain anything.
    """
    from tqdm.auto import tqdm

    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    num_images = len(dataset)
    if num_images == 0:
        raise ValueError("The gallery dataset is empty.")
    wanted = [image_column, label_column] + ([id_column] if id_column else [])
    columns = _columns(dataset)
    if columns is not None:
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ValueError(f"The gallery dataset has no column {missing} (it has {columns}).")
    label_names = _label_names(dataset, label_column, model)

    num_channels = int(model.config.num_features)
    used = (model.classifier_weight.detach() != 0).any(dim=0).cpu().numpy()
    skipped = np.flatnonzero(~used) if skip_unused else np.zeros(0, dtype=np.int64)
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    best_act = np.full((2, num_channels, top_k), -np.inf)
    best_idx = np.full((2, num_channels, top_k), -1, dtype=np.int64)
    # (pole row, dataset index) -> (location, box, patch, label, source id) for the images currently in a top-k.
    kept: dict[tuple[int, int], tuple] = {}
    try:
        # The backbone pass of feature extraction, in its faster channels-last layout (weights restored after).
        with channels_last(model.backbone) as in_channels_last:
            bar = tqdm(total=num_images, desc="Prototype gallery", unit="img", disable=not progress)
            for start in range(0, num_images, batch_size):
                end = min(start + batch_size, num_images)
                rows = _rows(dataset, start, end, wanted)
                images = [to_rgb(image) for image in rows[image_column]]
                if patch_size is None:
                    patch_size = min(64, min(images[0].size))
                pixel_values = pixel_values_for(images, image_processor)  # 1 channel for a grayscale backbone
                pixel_values = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
                if in_channels_last and pixel_values.dim() == 4:
                    pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
                features = model.extract_features(pixel_values)
                rotated = model.head.rotate(features)
                out = model.head.forward_rotated(rotated)  # the model's own pooling: same values as model(pixel_values)
                rotated = rotated.float().cpu()
                input_size = tuple(pixel_values.shape[-2:])
                acts = torch.stack((out.pos_activations, out.neg_activations)).double().cpu().numpy()  # (2, B, D)
                locations = torch.stack((out.pos_locations, out.neg_locations)).cpu().numpy()  # (2, B, D, 2)
                acts = acts.transpose(0, 2, 1)  # (2, D, B)
                acts = np.where(acts > 0, acts, -np.inf)
                acts[:, skipped] = -np.inf
                count = end - start
                cand_act = np.concatenate((best_act, acts), axis=-1)
                cand_idx = np.concatenate(
                    (best_idx, np.broadcast_to(np.arange(start, end), (2, num_channels, count))), axis=-1
                )
                # Highest activation first, ties by dataset index (deterministic whatever the batch size).
                order = np.lexsort((cand_idx, -cand_act), axis=-1)[..., :top_k]
                best_act = np.take_along_axis(cand_act, order, axis=-1)
                best_idx = np.where(np.isfinite(best_act), np.take_along_axis(cand_idx, order, axis=-1), -1)
                new = np.argwhere((best_idx >= start) & np.isfinite(best_act))  # (n, 3): sign row, channel, slot
                if len(new):
                    sign_row, channel = new[:, 0], new[:, 1]
                    batch_pos = best_idx[sign_row, channel, new[:, 2]] - start
                    signs = torch.as_tensor(1.0 - 2.0 * sign_row, dtype=torch.float32)[:, None, None]
                    maps = F.relu(signs * rotated[torch.as_tensor(batch_pos), torch.as_tensor(channel)])
                    boxes = box_from_map(maps, input_size, threshold, min_box_fraction, box_resolution)
                    for i in range(len(new)):
                        b = int(batch_pos[i])
                        image = images[b]
                        region = visible_region(image_processor, image.size)
                        box = square_box(input_box_to_source(boxes[i], input_size, region), image.size)
                        source_id = _plain_id(rows[id_column][b]) if id_column else start + b
                        kept[(int(sign_row[i]) * num_channels + int(channel[i]), start + b)] = (
                            tuple(int(v) for v in locations[sign_row[i], b, channel[i]]),
                            box,
                            crop_patch(image, box, patch_size),
                            int(rows[label_column][b]),
                            source_id,
                        )
                rows_idx = best_idx.reshape(2 * num_channels, top_k)
                alive = {(r, int(i)) for r, row in enumerate(rows_idx) for i in row if i >= 0}
                kept = {key: value for key, value in kept.items() if key in alive}
                bar.update(count)
            bar.close()
    finally:
        model.train(was_training)

    poles: dict[tuple[int, int], list[dict]] = {}
    patches = []
    for channel in range(num_channels):
        for sign_row, sign in ((0, 1), (1, -1)):
            records = []
            for rank in range(top_k):
                index = int(best_idx[sign_row, channel, rank])
                if index < 0:
                    break
                location, box, patch, label, source_id = kept[(sign_row * num_channels + channel, index)]
                records.append(
                    {
                        "rank": rank,
                        "source_id": source_id,
                        "label": label,
                        "label_name": label_names.get(label, str(label)),
                        "activation": float(best_act[sign_row, channel, rank]),
                        "location": list(location),
                        "box": list(box),
                        "patch": len(patches),
                    }
                )
                patches.append(patch)
            if records:
                poles[(channel, sign)] = records
    patch_array = np.stack(patches) if patches else np.zeros((0, patch_size, patch_size, 3), dtype=np.uint8)
    rule = {
        "description": RULE_DESCRIPTION,
        "threshold": float(threshold),
        "min_box_fraction": float(min_box_fraction),
        "box_resolution": int(box_resolution),
        "patch_size": int(patch_size),
        "skip_unused": bool(skip_unused),
    }
    return PrototypeGallery(
        num_channels,
        top_k,
        patch_size,
        rule,
        num_images,
        poles,
        patch_array,
        skipped.tolist(),
        weights_fingerprint=weights_fingerprint(model),
    )
