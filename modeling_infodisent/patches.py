"""The gallery's patch rule, steps 1-5 (see `modeling_infodisent.gallery` for the rule in words): from a pole's map on
the feature grid to a box in model-input pixels, to the part of the source image the model saw, to a square patch.

Geometry only (numpy, torch, PIL); `compute_gallery` applies it, the renderer uses `model_view`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["box_from_map", "crop_patch", "input_box_to_source", "model_view", "square_box", "visible_region"]

_PAD_COLOUR = (127, 127, 127)


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


def _size_value(size: Any, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _timm_geometry(image_processor: Any, width: int, height: int) -> tuple[float, float, int, int] | None:
    """(resized width, height, crop width, height) of a timm processor's evaluation transform (transformers'
    ``TimmWrapperImageProcessor``: timm's ``data_config``): resize to ``floor(size / crop_pct)`` — the shortest edge
    when square (torchvision's rule, the long side truncated), else both sides — then a centre crop of ``size``."""
    data_config = getattr(image_processor, "data_config", None)
    if not isinstance(data_config, dict) or not data_config.get("input_size"):
        return None
    crop_h, crop_w = (int(v) for v in data_config["input_size"][-2:])
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    scale_h, scale_w = math.floor(crop_h / crop_pct), math.floor(crop_w / crop_pct)
    if data_config.get("crop_mode") == "squash" or scale_h != scale_w:
        return float(scale_w), float(scale_h), crop_w, crop_h
    if width <= height:
        return float(scale_w), float(int(scale_w * height / width)), crop_w, crop_h
    return float(int(scale_h * width / height)), float(scale_h), crop_w, crop_h


def visible_region(image_processor: Any, source_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The part of a source image of size ``(width, height)`` that the model input shows, as (left, top, right,
    bottom) in source pixels, following the image processor's geometry:

    * ``size={"height", "width"}`` resize (ViT, DeiT): the whole image, stretched;
    * ``size={"shortest_edge"}`` resize keeping the aspect ratio (ConvNeXt's ``crop_pct``: shortest edge
      ``int(s / crop_pct)`` then a centre crop ``s x s`` when ``s < 384``);
    * then ``do_center_crop`` with ``crop_size``;
    * a timm processor's resize and centre crop (see `_timm_geometry`).

    Anything else (no processor, no resize) is treated as the whole image.
    """
    width, height = source_size
    resized_w, resized_h = float(width), float(height)
    size = getattr(image_processor, "size", None) if getattr(image_processor, "do_resize", True) else None
    crop_w = crop_h = None
    timm_geometry = _timm_geometry(image_processor, width, height)
    if timm_geometry is not None:
        resized_w, resized_h, crop_w, crop_h = timm_geometry
    elif size is not None:
        h, w = _size_value(size, "height"), _size_value(size, "width")
        shortest = _size_value(size, "shortest_edge")
        crop_pct = getattr(image_processor, "crop_pct", None)
        if h and w:
            resized_w, resized_h = float(w), float(h)
        elif shortest:
            if crop_pct is not None and shortest < 384:  # ConvNeXt-style processors
                target, crop_w, crop_h = int(shortest / crop_pct), shortest, shortest
            elif crop_pct is not None:
                target = None
                resized_w = resized_h = float(shortest)  # ConvNeXt warps to a square at >= 384
            else:
                target = shortest
            if target is not None:  # shortest edge to `target`, aspect kept (as transformers rounds it)
                if width <= height:
                    resized_w, resized_h = float(target), float(int(target * height / width))
                else:
                    resized_w, resized_h = float(int(target * width / height)), float(target)
    if getattr(image_processor, "do_center_crop", False):
        crop = getattr(image_processor, "crop_size", None)
        crop_h, crop_w = _size_value(crop, "height") or crop_h, _size_value(crop, "width") or crop_w
    left, top, right, bottom = 0.0, 0.0, resized_w, resized_h
    if crop_w and crop_h:
        left, top = max(0.0, (resized_w - crop_w) / 2), max(0.0, (resized_h - crop_h) / 2)
        right, bottom = min(resized_w, left + crop_w), min(resized_h, top + crop_h)
    sx, sy = width / resized_w, height / resized_h
    return (left * sx, top * sy, right * sx, bottom * sy)


def model_view(image: Image.Image, image_processor: Any) -> Image.Image:
    """The part of `image` the model sees (see `visible_region`), uncropped when the processor does not crop."""
    region = visible_region(image_processor, image.size)
    box = tuple(int(round(v)) for v in region)
    if box == (0, 0, image.width, image.height):
        return image
    return image.crop(box)


# ----------------------------------------------------------------------------------------------------------------
# The patch rule
# ----------------------------------------------------------------------------------------------------------------


def box_from_map(
    maps: torch.Tensor,
    input_size: tuple[int, int],
    threshold: float = 0.5,
    min_box_fraction: float = 0.25,
    box_resolution: int = 64,
) -> np.ndarray:
    """Steps 1-3 of the rule for a batch of pole maps ``(n, h, w)`` (>= 0, each with a positive peak).

    Returns ``(n, 4)`` float boxes (left, top, right, bottom) in model-input pixels (``input_size = (H, W)``).
    The region grows from the peak cell over the feature grid (cheap: h x w cells) by 8-neighbour dilation among
    the cells >= threshold * peak; the box is that of the upsampled pixels >= threshold * peak inside those cells.
    """
    n, h, w = maps.shape
    height, width = input_size
    if n == 0:
        return np.zeros((0, 4), dtype=np.float64)
    scale = min(1.0, box_resolution / max(height, width))
    gh, gw = max(h, round(height * scale)), max(w, round(width * scale))
    maps = maps.float()
    peak, arg = maps.reshape(n, -1).max(dim=1)
    level = (threshold * peak)[:, None, None, None]
    cells = (maps[:, None] >= level).float()
    component = torch.zeros_like(cells)
    component.view(n, -1)[torch.arange(n), arg] = 1.0
    for _ in range(h * w):  # a 3x3 max-pool is one step of 8-neighbour dilation
        grown = F.max_pool2d(component, kernel_size=3, stride=1, padding=1) * cells
        if torch.equal(grown, component):
            break
        component = grown
    up = F.interpolate(maps[:, None], size=(gh, gw), mode="bilinear", align_corners=False)
    inside = F.interpolate(component, size=(gh, gw), mode="nearest") > 0
    seed_cell = torch.zeros_like(cells)
    seed_cell.view(n, -1)[torch.arange(n), arg] = 1.0
    seed = F.interpolate(seed_cell, size=(gh, gw), mode="nearest")
    component = (up >= level) & inside
    # Bilinear interpolation can dip just below the level everywhere in a lone peak cell: then take that cell.
    empty = ~component.flatten(1).any(dim=1)
    component[empty] = seed[empty] > 0
    component = component[:, 0]
    rows = component.any(dim=2).numpy()
    cols = component.any(dim=1).numpy()
    boxes = np.zeros((n, 4), dtype=np.float64)
    for i in range(n):
        r = np.flatnonzero(rows[i])
        c = np.flatnonzero(cols[i])
        boxes[i] = (c[0], r[0], c[-1] + 1, r[-1] + 1)
    boxes[:, [0, 2]] *= width / gw
    boxes[:, [1, 3]] *= height / gh
    for axis, extent in ((0, width), (1, height)):
        low, high = boxes[:, axis], boxes[:, axis + 2]
        need = max(1.0, min_box_fraction * extent)
        short = (high - low) < need
        centre = (low + high) / 2
        new_low = np.clip(centre - need / 2, 0.0, max(0.0, extent - need))
        boxes[:, axis] = np.where(short, new_low, low)
        boxes[:, axis + 2] = np.where(short, np.minimum(new_low + need, extent), high)
    return boxes


def input_box_to_source(
    box: Sequence[float], input_size: tuple[int, int], region: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """Step 4a: a box in model-input pixels (input_size = (H, W)) to source pixels, given the visible region."""
    height, width = input_size
    left, top, right, bottom = region
    sx, sy = (right - left) / width, (bottom - top) / height
    return (left + box[0] * sx, top + box[1] * sy, left + box[2] * sx, top + box[3] * sy)


def square_box(box: Sequence[float], source_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Step 4b: integer square box (longer side, centred, shifted inside the image; clipped if it cannot fit)."""
    width, height = source_size
    left, top = math.floor(box[0]), math.floor(box[1])
    right, bottom = math.ceil(box[2]), math.ceil(box[3])
    side = max(1, right - left, bottom - top)

    def place(low: int, high: int, extent: int) -> tuple[int, int]:
        start = (low + high - side) // 2
        start = min(max(start, 0), max(0, extent - side))
        return start, min(start + side, extent)

    left, right = place(left, right, width)
    top, bottom = place(top, bottom, height)
    return (int(left), int(top), int(right), int(bottom))


def crop_patch(image: Image.Image, box: tuple[int, int, int, int], patch_size: int) -> np.ndarray:
    """Step 5: the (patch_size, patch_size, 3) uint8 patch showing `box` of the RGB `image`."""
    crop = image.crop(box)
    cw, ch = crop.size
    scale = patch_size / max(cw, ch)
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BICUBIC
    new_w, new_h = max(1, round(cw * scale)), max(1, round(ch * scale))
    crop = crop.resize((new_w, new_h), resample)
    if (new_w, new_h) != (patch_size, patch_size):
        canvas = Image.new("RGB", (patch_size, patch_size), _PAD_COLOUR)
        canvas.paste(crop, ((patch_size - new_w) // 2, (patch_size - new_h) // 2))
        crop = canvas
    return np.asarray(crop, dtype=np.uint8)
