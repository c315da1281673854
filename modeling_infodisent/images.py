"""Images of any kind to 8-bit RGB: the one conversion every entry point (training data, gallery, command line, Space)
uses, so an image is seen the same way wherever it comes in."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "UnreadableImage",
    "open_image",
    "pixel_values_for",
    "processor_num_channels",
    "to_rgb",
]

#: Decompression-bomb guard: images with more pixels than this (read from the header) are refused before decoding.
DEFAULT_MAX_PIXELS = 50_000_000

# EXIF orientation -> the transpose that makes the picture upright (what browsers and ImageOps.exif_transpose do).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes whose resize is nearest-neighbour only in PIL: convert them to RGB before downscaling, not after.
_NEAREST_ONLY_MODES = ("1", "P", "PA")


class UnreadableImage(ValueError):
    """A file that is not a usable image. The message says what is wrong, without the file name (callers add it in
    their own words: ``path: ...`` on the command line, the upload's name in the Space). `reason` is one of
    ``missing, folder, unreadable, empty, not_image, bomb, too_large, no_pixels, damaged``; `size` is the header's
    (width, height) when it was read."""

    def __init__(self, message: str, reason: str, size: tuple[int, int] | None = None):
        super().__init__(message)
        self.reason = reason
        self.size = size


def open_image(
    path: str | os.PathLike,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    exif_transpose: bool = False,
) -> Image.Image:
    """Open, fully decode and convert one image file to RGB, within bounded memory; `UnreadableImage` otherwise.

    Checks, in order: the file exists, is readable and not empty; PIL identifies it; its header size is at most
    `max_pixels` (before any pixel is decoded, so a decompression bomb costs nothing; PIL's own guard is not relied
    on, its warning is silenced); it decodes completely (truncated / corrupt data); only the first frame of an
    animation is used. With `max_side`, the picture is downscaled so that its longer side is at most `max_side`
    right after decoding (JPEG: decoded at 1/2..1/8 scale directly through ``draft``), before the RGB conversion
    and anything else copies it. `exif_transpose` turns the picture upright as a browser shows it.
    """
    from PIL import UnidentifiedImageError

    path = str(path)
    if not os.path.exists(path):
        raise UnreadableImage("no such file", "missing")
    if os.path.isdir(path):
        raise UnreadableImage("is a folder, not an image file", "folder")
    if not os.access(path, os.R_OK):
        raise UnreadableImage("cannot be read (permission denied)", "unreadable")
    if os.path.getsize(path) == 0:
        raise UnreadableImage("is empty (0 bytes), not an image", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"refused as a possible decompression bomb ({error})", "bomb") from None
    except UnidentifiedImageError:
        raise UnreadableImage("is not an image file (PIL cannot identify its format)", "not_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnreadableImage(f"cannot be opened as an image ({error})", "damaged") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise UnreadableImage(
                f"is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
                "(a decompression-bomb guard)",
                "too_large",
                (width, height),
            )
        if width < 1 or height < 1:
            raise UnreadableImage(f"has no pixels ({width}x{height})", "no_pixels", (width, height))
        try:
            orientation = image.getexif().get(0x0112, 1) if exif_transpose else 1
            if max_side and image.format == "JPEG":
                image.draft(image.mode, (max_side, max_side))  # DCT scaling: never decodes the full size
            image.load()  # the first frame; a truncated or corrupt file fails here, not mid-way
            if max_side and image.mode in _NEAREST_ONLY_MODES:
                image = to_rgb(image)
            if max_side and max(image.size) > max_side:
                # reducing_gap=2: a cheap integer box reduction first, so the resampling pass works on a small copy
                image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
            rgb = to_rgb(image)
            if rgb is image:  # already RGB: detach it from the file object
                rgb = image.copy()
        except UnreadableImage:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
            raise UnreadableImage(
                f"looks like a {image.format or 'picture'} file but is damaged or truncated ({error})", "damaged"
            ) from None
    if orientation in _EXIF_TRANSPOSE:
        rgb = rgb.transpose(_EXIF_TRANSPOSE[orientation])
    return rgb


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


def processor_num_channels(image_processor, default: int = 3) -> int:
    """The channel count an image processor normalises for: 1 when its ``image_mean`` has one entry (a grayscale
    backbone's processor, ``num_channels=1``), else ``default``."""
    mean = getattr(image_processor, "image_mean", None)
    if isinstance(mean, (list, tuple)) and len(mean) == 1:
        return 1
    return default


def pixel_values_for(images, image_processor, num_channels: int | None = None):
    """Images (one or a list, any PIL mode) -> the backbone's ``pixel_values`` through its own image processor:
    `to_rgb` first (transparency on white, every mode), then grayscale ``L`` for a 1-channel backbone
    (``num_channels``, default: what the processor normalises for). The one conversion the training data, the
    gallery, the command line and the Space share, so a grayscale backbone gets 1-channel input everywhere."""
    if num_channels is None:
        num_channels = processor_num_channels(image_processor)
    batch = images if isinstance(images, (list, tuple)) else [images]
    batch = [to_rgb(image) for image in batch]
    if num_channels == 1:
        batch = [image.convert("L") for image in batch]
    return image_processor(batch, return_tensors="pt")["pixel_values"]
