"""Scoring a localisation against a known answer: the pointing game and the energy in a box, for one image.

The two localisation metrics an audit with ground-truth regions needs, with the definitions of Quantus
(Hedström et al., JMLR 2023; PyPI ``quantus``, ``quantus.PointingGame`` and ``quantus.RelevanceMassAccuracy``),
which ``tests/test_localisation.py`` checks them against when it is installed. They are written out here rather than
called because Quantus scores batches of full-resolution maps through its own pipeline, while an audit also scores
single points (a prototype's `peak_center_px`) and wants a pixel tolerance (Zhang et al., *Top-down neural attention
by excitation backprop*, IJCV 2018, the pointing game's origin, used 15 px); Quantus has neither.

Regions: a box ``[x0, y0, x1, y1)`` in pixels (x1, y1 exclusive: the convention of the ground-truth sets of
``benchmarks/generate.py`` and of `Prototype.peak_box_px`), or a boolean mask (H, W). Points are ``(y, x)`` in
pixels, continuous: pixel (i, j) covers ``[i, i+1) x [j, j+1)``, so the centre of pixel (i, j) is (i + .5, j + .5).

``pointing_hit(point_yx, box_or_mask, tolerance_px=0) -> bool``
``energy_in_box(saliency_map, box_or_mask) -> float``
``region_mask(box_or_mask, shape) -> (H, W) bool``
"""

from __future__ import annotations

import numpy as np

__all__ = ["energy_in_box", "pointing_hit", "region_mask"]


def _is_box(region) -> bool:
    a = np.asarray(region)
    return a.ndim == 1 and a.shape == (4,)


def region_mask(box_or_mask, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) booleans of a box ``[x0, y0, x1, y1)`` (clipped to the image) or of a mask of that shape."""
    if _is_box(box_or_mask):
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box_or_mask))
        if x1 < x0 or y1 < y0:
            raise ValueError(f"A box is [x0, y0, x1, y1) with x0 <= x1 and y0 <= y1; got {list(box_or_mask)}.")
        mask = np.zeros(shape, dtype=bool)
        mask[
            max(int(np.ceil(y0)), 0) : max(int(np.ceil(y1)), 0), max(int(np.ceil(x0)), 0) : max(int(np.ceil(x1)), 0)
        ] = True
        return mask
    mask = np.asarray(box_or_mask).astype(bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"The mask is {mask.shape}, the map {tuple(shape)}: they must be the same size.")
    return mask


def _distance_to_region(y: float, x: float, box_or_mask) -> float:
    """Euclidean distance in pixels from the point to the nearest point of the region (0 inside)."""
    if _is_box(box_or_mask):
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box_or_mask))
        dx, dy = max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1)
        return float(np.hypot(dx, dy))
    ii, jj = np.nonzero(np.asarray(box_or_mask).astype(bool))
    if ii.size == 0:
        return float("inf")
    dy = np.maximum(np.maximum(ii - y, 0.0), y - (ii + 1))
    dx = np.maximum(np.maximum(jj - x, 0.0), x - (jj + 1))
    return float(np.hypot(dx, dy).min())


def _point_inside(y: float, x: float, box_or_mask) -> bool:
    if _is_box(box_or_mask):
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box_or_mask))
        return x0 <= x < x1 and y0 <= y < y1
    mask = np.asarray(box_or_mask).astype(bool)
    i, j = int(np.floor(y)), int(np.floor(x))
    return 0 <= i < mask.shape[0] and 0 <= j < mask.shape[1] and bool(mask[i, j])


def pointing_hit(point_yx, box_or_mask, tolerance_px: float = 0) -> bool:
    """The pointing game for one image: does the point — or a map's maximum — fall on the region?

    ``point_yx``: a point ``(y, x)`` in pixels (e.g. `Prototype.peak_center_px`), or a saliency map (H, W) whose
    maximum is the point (``quantus.PointingGame``'s definition, its default ``weighted=False``: a hit when any pixel
    of the maximum value lies on the region; a map at another resolution than the mask must be upsampled first).
    ``box_or_mask``: a box ``[x0, y0, x1, y1)`` or a boolean mask (H, W). ``tolerance_px``: a hit also when the
    point lies within this Euclidean distance of the region (0 = Quantus; Zhang et al. used 15 px).
    An empty region is an error (Quantus returns NaN for it)."""
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}.")
    points = np.asarray(point_yx, dtype=np.float64)
    if points.ndim == 2:  # a map: every pixel holding its maximum, at the pixel's centre
        if not _is_box(box_or_mask):
            region_mask(box_or_mask, points.shape)  # the shape check
        if not np.isfinite(points).all():
            raise ValueError("The saliency map has NaN or infinite values.")
        ii, jj = np.nonzero(points == points.max())
        candidates = np.stack([ii + 0.5, jj + 0.5], 1)
    elif points.shape == (2,):
        candidates = points[None]
    else:
        raise ValueError(f"point_yx must be a point (y, x) or a map (H, W); got an array of shape {points.shape}.")
    if not _is_box(box_or_mask) and not np.asarray(box_or_mask).astype(bool).any():
        raise ValueError("The region (mask) is empty: a pointing game needs a region to point at.")
    for y, x in candidates:
        if _point_inside(y, x, box_or_mask) or (
            tolerance_px > 0 and _distance_to_region(y, x, box_or_mask) <= tolerance_px
        ):
            return True
    return False


def energy_in_box(saliency_map, box_or_mask) -> float:
    """The share of the map's positive relevance mass that lies on the region (the "energy-based pointing game" of
    Score-CAM, Wang et al. 2020; ``quantus.RelevanceMassAccuracy``): ``sum(map+ on region) / sum(map+)``, in [0, 1].

    Equal to Quantus's on a nonnegative map (Grad-CAM, a prototype's activation map). Negative values are clipped to
    0 first: Quantus (``abs=False``) lets them cancel positive mass, which can push its score outside [0, 1]. A map
    with no positive mass scores 0. The map and the mask must have the same size (upsample a feature-grid map first,
    e.g. ``Explanation.class_map(upsampled=True)``)."""
    heat = np.clip(np.asarray(saliency_map, dtype=np.float64), 0.0, None)
    if heat.ndim != 2:
        raise ValueError(f"saliency_map must be (H, W); got shape {heat.shape}.")
    if not np.isfinite(heat).all():
        raise ValueError("The saliency map has NaN or infinite values.")
    region = region_mask(box_or_mask, heat.shape)
    total = heat.sum()
    return float(heat[region].sum() / total) if total > 0 else 0.0
