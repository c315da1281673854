"""Images of any kind to 8-bit RGB: the one conversion every entry point (training data, gallery, command line, Space)
uses, so an image is seen the same way wherever it comes in."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

__all__ = ["to_rgb"]


def to_rgb(image: Any) -> Image.Image:
    """Convert an image of any mode to an 8-bit ``RGB`` ``PIL.Image``.

    Accepts a ``PIL.Image.Image`` (modes ``1, L, P, RGB, RGBA, LA, PA, CMYK, YCbCr, LAB, HSV, I, I;16*,
    F`` ...) or a numpy array (H×W or H×W×{1,3,4}, uint8; other dtypes are rescaled like the modes
    below). Rules:

    - transparency (``RGBA``, ``LA``, ``PA``, ``P``/``L``/``RGB`` with a transparency key) is alpha-composited
      on a white background;
    - 16-bit modes (``I;16``, ``I;16B``, ...) are scaled by 1/257 to 0..255; ``I`` (32-bit int) is
      treated as 16-bit data when its maximum exceeds 255, else as 8-bit; ``F`` is treated as 0..1
      when its maximum is ≤ 1, else clipped to 0..255;
    - every other mode goes through ``Image.convert("RGB")``.

    Raises ``ValueError`` when ``image`` is not an image.
    """
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise ValueError(
            f"to_rgb expects a PIL.Image.Image or a numpy array, got {type(image).__name__}. "
            "Decode the image first (datasets' Image() feature does this)."
        )
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:  # pragma: no cover - exotic modes
        raise ValueError(f"Cannot convert an image of mode {mode!r} to RGB: {e}") from e


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        a = a * 255.0 if (a.size and np.nanmax(a) <= 1.0) else a
    elif arr.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")) or (a.size and a.max() > 255):
        a = a / 257.0
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(_to_uint8(arr), mode="L")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return Image.fromarray(_to_uint8(arr), mode="RGB" if arr.shape[-1] == 3 else "RGBA")
    raise ValueError(f"A numpy image must be H×W or H×W×{{1,3,4}}, got shape {arr.shape}.")
