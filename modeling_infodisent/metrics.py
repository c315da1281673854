"""Metrics for InfoDisent explanations: compactness, faithfulness, disentanglement.

Used by the training script (explanation size of a fitted head), the benchmarks (`benchmarks/run.py`) and the tests.
Only torch and numpy are imported here; the `grad-cam` package (ROAD scores) is imported inside `road_scores`, so
the metrics stay usable without the `bench` extra.

Definitions (the README's benchmark table uses exactly these):

* **Explanation size** — for one decision, the smallest number of prototypes (channel poles) whose positive
  contributions to the explained class sum to at least `fraction` (90%) of the class's total positive evidence.
* **Deletion / insertion AUC** — pixels are removed from the image (deletion) or revealed on a baseline image
  (insertion) in the order given by a heatmap, most relevant first; the probability of the target class is tracked
  and its mean over the fraction of pixels perturbed (trapezoid rule on [0, 1]) is the AUC. Lower deletion and higher
  insertion AUC mean the heatmap found the pixels the model actually uses.
* **RV coefficient** — Escoufier's multivariate correlation between two column-centred data matrices X (n, p) and
  Y (n, q): ``RV = ||XᵀY||²_F / (||XᵀX||_F ||YᵀY||_F)``, 1 for identical (or rotated/scaled) matrices, near 0 for
  independent ones. `mean_pairwise_rv` averages it over all pairs of channels: a lower value means channels carry less
  shared information (more disentangled).
* **ROAD** (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods") — the
  `grad-cam` package's implementation, run on any (B, H, W) map by `road_scores`.

Against a known answer (the ground-truth benchmark, `benchmarks/groundtruth.py`):

* **Pointing game** (Zhang et al. 2016) — a hit when the point an explanation names (a heatmap's maximum, a
  prototype's peak cell centre) lies inside the ground-truth box; `pointing_game`, `heatmap_peaks`.
* **Sub-cell peak** — where a (h, w) feature-grid map peaks, refined below the grid's resolution by a parabola
  through the peak and its two neighbours along each axis (the standard sub-pixel peak estimate); `subcell_peak`.
* **Region centre** — where a map says its evidence is, read the way ProtoPNet (Chen et al. 2019) and the InfoDisent
  paper show a prototype: the region of the input-resolution map above its 95th percentile (the connected part that
  holds the maximum), and that region's activation-weighted centre; `region_centre`.
* **Energy in box** (Score-CAM's "energy-based pointing game") — the share of a map's positive mass that lies inside
  the ground-truth region; `energy_in_region`.
* **Paired bootstrap CI** — the mean per-image difference of two methods on the same images, with a percentile
  confidence interval from resampling the images; `paired_bootstrap`.
* **Spearman rank correlation of maps** (the model-randomisation sanity check, Adebayo et al. 2018);
  `map_spearman`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .localisation import energy_in_box, pointing_hit

__all__ = [
    "box_masks",
    "class_contributions",
    "deletion_insertion_auc",
    "energy_in_region",
    "explanation_size",
    "explanation_sizes",
    "fraction_unused_poles",
    "heatmap_peaks",
    "map_spearman",
    "mean_pairwise_rv",
    "paired_bootstrap",
    "pointing_game",
    "region_centre",
    "relevance_pixels",
    "road_scores",
    "rv_coefficient",
    "subcell_peak",
]

# Relative slack when comparing a cumulative sum of contributions with `fraction * total`: without it, 9 equal
# contributions of 0.1 would "not reach" 0.9 of 1.0 because of float rounding, and uniform over n would not give
# exactly ceil(0.9 n).
_REL_TOL = 1e-9


def _as_numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        array = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{name}` must be numeric (a tensor, an array or a list of numbers): {error}") from error
    return array


def _check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
    return fraction


# ----------------------------------------------------------------------------------------------------------------
# Compactness
# ----------------------------------------------------------------------------------------------------------------


def explanation_sizes(contributions, fraction: float = 0.9) -> np.ndarray:
    """Vectorised `explanation_size`: `contributions` (N, P) -> (N,) int64, one size per row.

    Row i holds the contributions of the P prototypes to the explained class of decision i (any sign: only the
    positive ones count). A row without positive evidence has size 0.
    """
    fraction = _check_fraction(fraction)
    c = _as_numpy(contributions, "contributions")
    if c.ndim != 2:
        raise ValueError(f"`contributions` must be (N, P), got shape {c.shape}.")
    if not np.all(np.isfinite(c)):
        raise ValueError("`contributions` contains NaN or infinite values.")
    if c.shape[1] == 0:
        return np.zeros(c.shape[0], dtype=np.int64)
    positive = np.sort(np.clip(c, 0.0, None), axis=1)[:, ::-1]
    cumulative = np.cumsum(positive, axis=1)
    total = cumulative[:, -1:]
    reached = cumulative >= (fraction * total) * (1.0 - _REL_TOL)
    sizes = np.argmax(reached, axis=1) + 1  # first index where the running sum reaches the threshold
    sizes[total[:, 0] <= 0] = 0
    return sizes.astype(np.int64)


def explanation_size(contributions, fraction: float = 0.9) -> int:
    """Number of prototypes needed to cover `fraction` of the positive evidence of one decision.

    Args:
        contributions: the prototypes' contributions to the explained (usually the predicted) class: a 1-D tensor,
            array or list, or an `Explanation` from `model.explain(..., top_k=None)`. Negative contributions
            (evidence against the class) are ignored.
        fraction: share of the total positive contribution to reach (default 90%).

    Returns:
        The smallest m such that the m largest positive contributions sum to >= `fraction` of all positive
        contributions; 0 when there is no positive evidence. One-hot -> 1; uniform over n -> ceil(fraction * n).
    """
    if hasattr(contributions, "prototypes") and hasattr(contributions, "residual"):
        if contributions.residual != 0.0:
            raise ValueError(
                "This Explanation was cut with `top_k` (its residual is nonzero), so the prototypes it dropped are "
                "unknown: explain with `top_k=None` to measure the explanation size."
            )
        contributions = [p.contribution for p in contributions.prototypes]
    c = _as_numpy(contributions, "contributions")
    if c.ndim != 1:
        raise ValueError(f"`contributions` must be 1-D (one value per prototype), got shape {c.shape}.")
    return int(explanation_sizes(c[None], fraction)[0])


def class_contributions(weight, pos, neg, targets) -> torch.Tensor:
    """Per-pole contributions to one class per decision, from the model's pooled outputs (no `Explanation` objects).

    Args:
        weight: W (K, D) (`model.classifier_weight`).
        pos, neg: (N, D) pooled activations (`output.pos_activations`, `output.neg_activations`).
        targets: (N,) the class explained for each decision (usually `logits.argmax(-1)`).

    Returns:
        (N, 2D): columns [0, D) are the positive poles ``W[k, c] * pos[i, c]``, columns [D, 2D) the negative poles
        ``-W[k, c] * neg[i, c]``; each row sums to ``logit - bias`` of the target class.
    """
    weight = torch.as_tensor(weight)
    pos, neg = torch.as_tensor(pos), torch.as_tensor(neg)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if weight.ndim != 2 or pos.ndim != 2 or pos.shape != neg.shape or pos.shape[1] != weight.shape[1]:
        raise ValueError(
            f"Expected weight (K, D) and pos / neg (N, D) with the same D; got weight {tuple(weight.shape)}, "
            f"pos {tuple(pos.shape)}, neg {tuple(neg.shape)}."
        )
    if targets.shape != (pos.shape[0],):
        raise ValueError(f"`targets` must be (N,) = ({pos.shape[0]},), got {tuple(targets.shape)}.")
    if targets.numel() and (targets.min() < 0 or targets.max() >= weight.shape[0]):
        raise ValueError(f"`targets` must be class indices in [0, {weight.shape[0]}).")
    w = weight.detach().to(pos.dtype)[targets]  # (N, D)
    return torch.cat((w * pos.detach(), -w * neg.detach()), dim=1)


def fraction_unused_poles(contributions, fraction: float = 0.9, absolute: bool = False) -> float:
    """Share of the 2D poles that never enter any decision's explanation.

    For each decision (row of `contributions`, (N, 2D) as returned by `class_contributions`), the explanation set is
    the smallest set of poles covering `fraction` of the positive evidence (the set `explanation_size` counts). A pole
    is *used* if it is in the explanation set of at least one decision; the result is ``1 - used / 2D``.

    With ``absolute=True`` the sets are built on ``|contribution|`` instead, so that poles that matter only as evidence
    *against* a class (the negative poles of a W >= 0 model) also count as used.
    """
    fraction = _check_fraction(fraction)
    c = _as_numpy(contributions, "contributions")
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"`contributions` must be (N, P) with P > 0, got shape {c.shape}.")
    evidence = np.abs(c) if absolute else np.clip(c, 0.0, None)
    sizes = explanation_sizes(evidence, fraction)
    order = np.argsort(-evidence, axis=1, kind="stable")
    used = np.zeros(c.shape[1], dtype=bool)
    for row, size in zip(order, sizes):
        used[row[:size]] = True
    return float(1.0 - used.mean())


# ----------------------------------------------------------------------------------------------------------------
# Disentanglement
# ----------------------------------------------------------------------------------------------------------------


def rv_coefficient(X, Y) -> float:
    """Escoufier's RV coefficient between X (n, p) and Y (n, q) (rows: the same n observations).

    Columns are centred; ``RV = ||XᵀY||²_F / (||XᵀX||_F · ||YᵀY||_F)`` in [0, 1]. 1-D inputs are one column.
    """
    x = _as_numpy(X, "X")
    y = _as_numpy(Y, "Y")
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"X and Y must be (n, p) and (n, q) matrices, got shapes {x.shape} and {y.shape}.")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of rows (observations), got {x.shape[0]} and {y.shape[0]}."
        )
    if x.shape[0] < 2:
        raise ValueError("The RV coefficient needs at least 2 observations.")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    xy = np.linalg.norm(x.T @ y) ** 2
    xx = np.linalg.norm(x.T @ x)
    yy = np.linalg.norm(y.T @ y)
    if xx == 0 or yy == 0:
        raise ValueError("The RV coefficient is undefined for a constant matrix (all columns constant).")
    return float(xy / (xx * yy))


def mean_pairwise_rv(features, max_observations: int | None = None) -> float:
    """Mean RV coefficient over all pairs of distinct channels: how much information the channels share.

    Args:
        features: (N, D) pooled vectors (then RV of two single columns is their squared correlation) or
            (N, D, h, w) / (N, D, L) spatial maps (then channel c is the (N, h*w) matrix of its map over the images).
        max_observations: use only the first N images (bounds the cost).

    Channels that are constant over the data set are left out (their RV is undefined). Computed from one
    cross-product matrix of all channels, so it costs O(N (D L)²) rather than D² separate RVs.
    """
    f = torch.as_tensor(features).detach().double().cpu()
    if f.ndim == 2:
        f = f[:, :, None]
    elif f.ndim == 4:
        f = f.flatten(2)
    elif f.ndim != 3:
        raise ValueError(f"`features` must be (N, D), (N, D, L) or (N, D, h, w), got shape {tuple(f.shape)}.")
    if max_observations is not None:
        f = f[:max_observations]
    n, d, length = f.shape
    if n < 2:
        raise ValueError("The RV coefficient needs at least 2 observations (images).")
    f = f - f.mean(dim=0, keepdim=True)
    flat = f.reshape(n, d * length)
    gram = (flat.T @ flat).reshape(d, length, d, length)  # cross-products between every pair of columns
    block_norms_sq = gram.pow(2).sum(dim=(1, 3))  # (D, D): ||X_c^T X_e||_F^2
    self_norms = block_norms_sq.diagonal().sqrt()  # ||X_c^T X_c||_F
    keep = self_norms > 0
    if keep.sum() < 2:
        raise ValueError("Fewer than 2 non-constant channels: the mean pairwise RV is undefined.")
    rv = block_norms_sq[keep][:, keep] / torch.outer(self_norms[keep], self_norms[keep])
    m = rv.shape[0]
    return float((rv.sum() - rv.diagonal().sum()) / (m * (m - 1)))


# ----------------------------------------------------------------------------------------------------------------
# Heatmaps and faithfulness
# ----------------------------------------------------------------------------------------------------------------


def _ranks(heatmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """rank[pixel] = position of the pixel in the order "most relevant first"; ties are broken at random (a map that is
    flat over a region says nothing about the order inside it)."""
    flat = heatmap.reshape(-1)
    order = np.lexsort((rng.random(flat.size), -flat))  # primary key: -heat; ties: random
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks


def _checked_inputs(images, heatmaps, targets) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """images (B, C, H, W), heatmaps (B, H, W) finite, one target per image: the shared input check of the
    faithfulness metrics. Returns (images tensor, heatmaps as numpy, targets as a (B,) LongTensor)."""
    images = torch.as_tensor(images)
    if images.ndim != 4:
        raise ValueError(f"`images` must be (B, C, H, W), got shape {tuple(images.shape)}.")
    b, _, h, w = images.shape
    heat = _as_numpy(heatmaps, "heatmaps")
    if heat.shape != (b, h, w):
        raise ValueError(f"`heatmaps` must be (B, H, W) = {(b, h, w)} to match the images, got {heat.shape}.")
    if not np.all(np.isfinite(heat)):
        raise ValueError("`heatmaps` contains NaN or infinite values.")
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if targets.shape[0] != b:
        raise ValueError(f"Got {targets.shape[0]} targets for {b} images.")
    return images, heat, targets


@torch.no_grad()
def deletion_insertion_auc(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    images,
    heatmaps,
    targets,
    mode: str = "deletion",
    steps: int = 32,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    return_curves: bool = False,
):
    """Deletion or insertion AUC of heatmaps (Petsiuk et al. 2018, RISE), one value per image.

    Args:
        model_fn: maps pixel_values (B, C, H, W) to logits (B, K) (for InfoDisent: ``lambda x: model(x).logits``).
        images: (B, C, H, W) the model's inputs.
        heatmaps: (B, H, W) relevance maps at the input resolution; larger = more relevant. Ties are ordered at random
            with `seed`.
        targets: (B,) the class whose probability is tracked (e.g. the predicted class).
        mode: ``"deletion"`` (start from the image, replace the most relevant pixels by the baseline first; lower is
            better) or ``"insertion"`` (start from the baseline, reveal the most relevant pixels first; higher is
            better).
        steps: the pixels are perturbed in `steps` equal chunks; the curve has `steps + 1` points (0% ... 100%).
        baseline: what a removed pixel becomes: a number, or a tensor broadcastable to (B, C, H, W) (e.g. a blurred
            copy of the images). All channels of a pixel are perturbed together.
        batch_size: forward passes per model call.
        return_curves: also return the (B, steps + 1) probability curves.

    Returns:
        (B,) numpy array of AUCs in [0, 1] (trapezoid rule over the fraction of pixels perturbed), and the curves if
        asked.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"`mode` must be 'deletion' or 'insertion', got {mode!r}.")
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    images, heat, targets = _checked_inputs(images, heatmaps, targets)
    b, _, h, w = images.shape
    base = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    base = torch.broadcast_to(base, images.shape) if base.ndim else torch.full_like(images, float(base))

    steps = int(steps)
    num_pixels = h * w
    # Pixel counts perturbed at each point of the curve: 0, ..., num_pixels.
    counts = torch.tensor([round(num_pixels * s / steps) for s in range(steps + 1)], device=images.device)
    rng = np.random.default_rng(seed)
    curves = np.zeros((b, steps + 1), dtype=np.float64)
    for i in range(b):
        ranks = torch.from_numpy(_ranks(heat[i], rng)).to(images.device).reshape(1, 1, h, w)
        perturbed = (ranks < counts.reshape(-1, 1, 1, 1)).to(images.dtype)  # (S+1, 1, H, W): 1 = perturbed
        if mode == "deletion":
            batch = images[i] * (1 - perturbed) + base[i] * perturbed
        else:
            batch = base[i] * (1 - perturbed) + images[i] * perturbed
        probs = []
        for start in range(0, batch.shape[0], batch_size):
            logits = model_fn(batch[start : start + batch_size])
            probs.append(torch.softmax(logits.float(), dim=-1)[:, targets[i]].cpu())
        curves[i] = torch.cat(probs).double().numpy()
    fractions = counts.cpu().double().numpy() / num_pixels
    aucs = np.trapezoid(curves, fractions, axis=1) if hasattr(np, "trapezoid") else np.trapz(curves, fractions, axis=1)
    return (aucs, curves) if return_curves else aucs


def road_scores(
    model: Callable[[torch.Tensor], torch.Tensor],
    images,
    heatmaps,
    targets,
    percentiles: Sequence[int] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """ROAD scores of any (B, H, W) heatmaps with the `grad-cam` package (`pip install grad-cam`).

    Runs `pytorch_grad_cam.metrics.road`'s ``ROADMostRelevantFirstAverage`` and ``ROADLeastRelevantFirstAverage``
    (noisy linear imputation of the removed pixels, averaged over `percentiles`), tracking the softmax probability of
    `targets` (``ClassifierOutputSoftmaxTarget``), and combines them exactly as the package's ``ROADCombined`` does,
    ``(LeRF - MoRF) / 2``, without running both passes twice.

    Args:
        model: maps pixel_values (B, C, H, W) to logits (B, K).
        heatmaps: (B, H, W); each map is min-max scaled to [0, 1] (the package's LeRF uses ``1 - map``) after a tiny
            seeded jitter that breaks ties (its percentile thresholds would otherwise remove all or none of a flat
            region).

    Returns:
        ``{"morf": (B,), "lerf": (B,), "combined": (B,)}`` probability changes. MoRF: lower (larger drop) is better;
        LeRF: higher is better; combined: higher is better.
    """
    try:
        from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    except ImportError as error:
        raise ImportError(
            "ROAD scores need the `grad-cam` package: pip install 'grad-cam>=1.5' (or the `bench` extra)."
        ) from error
    images, heat, targets = _checked_inputs(images, heatmaps, targets)
    b, _, h, w = images.shape
    targets = targets.tolist()
    rng = np.random.default_rng(seed)
    scaled = np.empty_like(heat, dtype=np.float32)
    for i in range(b):
        m = heat[i]
        span = float(m.max() - m.min())
        m = (m - m.min()) / span if span > 0 else np.zeros_like(m)
        # Jitter far below any real difference in relevance: only reorders exactly tied pixels.
        scaled[i] = np.clip(m * (1 - 1e-4) + 1e-4 * rng.random(m.shape), 0.0, 1.0)
    cam_targets = [ClassifierOutputSoftmaxTarget(t) for t in targets]
    percentiles = list(percentiles)

    def logits_only(x):
        out = model(x)
        return out.logits if hasattr(out, "logits") else out

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the imputer adds torch noise
    try:
        with warnings.catch_warnings():
            # The package thresholds torch tensors with numpy (a NumPy 2 deprecation notice per image, not ours).
            warnings.filterwarnings("ignore", message=".*__array_wrap__.*", category=DeprecationWarning)
            morf = ROADMostRelevantFirstAverage(percentiles)(images, scaled, cam_targets, logits_only)
            lerf = ROADLeastRelevantFirstAverage(percentiles)(images, scaled, cam_targets, logits_only)
    finally:
        torch.random.set_rng_state(state)
    morf, lerf = np.asarray(morf, dtype=np.float64), np.asarray(lerf, dtype=np.float64)
    return {"morf": morf, "lerf": lerf, "combined": (lerf - morf) / 2}


# ----------------------------------------------------------------------------------------------------------------
# Against a known answer: localisation, paired confidence intervals, randomisation
# ----------------------------------------------------------------------------------------------------------------


def _boxes(boxes) -> np.ndarray:
    b = _as_numpy(boxes, "boxes").reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    if np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
        raise ValueError("Every box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0 (x1, y1 exclusive).")
    return b


def box_masks(boxes, size: tuple[int, int]) -> np.ndarray:
    """(N, 4) boxes ``[x0, y0, x1, y1]`` (pixels, x1/y1 exclusive) -> (N, H, W) boolean masks."""
    b = _boxes(boxes)
    h, w = size
    ys, xs = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    return (
        (xs >= b[:, 0, None, None])
        & (xs < b[:, 2, None, None])
        & (ys >= b[:, 1, None, None])
        & (ys < b[:, 3, None, None])
    )


def heatmap_peaks(heatmaps) -> np.ndarray:
    """(N, H, W) maps -> (N, 2) pixel coordinates ``(x, y)`` of each map's maximum (the first one in row-major order
    when several pixels tie, so a constant map points at the top-left corner: it names no place)."""
    heat = _as_numpy(heatmaps, "heatmaps")
    if heat.ndim != 3:
        raise ValueError(f"`heatmaps` must be (N, H, W), got shape {heat.shape}.")
    flat = heat.reshape(len(heat), -1).argmax(axis=1)
    return np.stack((flat % heat.shape[2], flat // heat.shape[2]), axis=1)


def subcell_peak(activation_map, location: tuple[int, int] | None = None) -> tuple[float, float]:
    """(row, col) of a (h, w) map's peak in grid units (cell (r, c)'s centre is (r, c); in pixels of an (H, W) input
    that is ``x = (col + 0.5) W / w``, ``y = (row + 0.5) H / h``), refined along each axis by the vertex of the
    parabola through the peak cell and its two neighbours:
    ``offset = (left - right) / (2 (left - 2 peak + right))``, clipped to half a cell. A peak on the map's border, or a
    neighbourhood that is not strictly concave along an axis (a plateau), keeps that axis at the cell's centre.

    `location` is the peak cell (default: the map's first maximum in row-major order, as max pooling reports it)."""
    m = _as_numpy(activation_map, "activation_map")
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"`activation_map` must be a non-empty (h, w) map, got shape {m.shape}.")
    r, c = np.unravel_index(int(np.argmax(m)), m.shape) if location is None else (int(location[0]), int(location[1]))
    if not (0 <= r < m.shape[0] and 0 <= c < m.shape[1]):
        raise ValueError(f"`location` {location} lies outside the {m.shape} map.")

    def offset(before: float, peak: float, after: float) -> float:
        curvature = before - 2.0 * peak + after
        if curvature >= 0:  # flat or not a maximum along this axis: no evidence for a shift
            return 0.0
        return float(np.clip((before - after) / (2.0 * curvature), -0.5, 0.5))

    dy = offset(m[r - 1, c], m[r, c], m[r + 1, c]) if 0 < r < m.shape[0] - 1 else 0.0
    dx = offset(m[r, c - 1], m[r, c], m[r, c + 1]) if 0 < c < m.shape[1] - 1 else 0.0
    return float(r + dy), float(c + dx)


# Where a prototype's part is, read off its pixel relevance map (`explain(..., relevance_top_k=k)`): the top 1% of
# the map.
# The renderer outlines that region and the ground-truth benchmark locates a prototype at its weighted centre
# (chosen on the benchmark's tuning split; `benchmarks/groundtruth.py`).
RELEVANCE_QUANTILE = 0.99


def relevance_pixels(relevance) -> np.ndarray | None:
    """(H, W) bool mask of the pixels that make a prototype fire: the top `RELEVANCE_QUANTILE` of its relevance map
    (`Prototype.relevance`), what the renderer and the Space outline. None when the map is empty or has no positive
    value (nothing to show)."""
    relevance = np.asarray(relevance, dtype=np.float32)
    if relevance.size == 0 or float(relevance.max()) <= 0:
        return None
    return relevance >= np.quantile(relevance, RELEVANCE_QUANTILE)


def region_centre(heatmaps, quantile: float = 0.95) -> np.ndarray:
    """(N, H, W) maps -> (N, 2) points ``(x, y)`` (pixels, continuous: pixel (i, j) spans [j, j + 1) × [i, i + 1)).

    The point is the weighted centre of the map's high region: the pixels at or above the map's `quantile` (ProtoPNet's
    and the InfoDisent paper's 95th-percentile region of an upsampled activation map), restricted to the 4-connected
    part that holds the map's maximum (a second blob elsewhere does not pull the point between the two), each pixel
    weighted by how far it rises above the threshold. A map without such a rise (constant) gives that part's plain
    centre. Unlike the maximum of a map upsampled from a coarse grid, which always lies on a cell's centre, this point
    moves with the shape of the map between the cells."""
    from scipy import ndimage

    heat = _as_numpy(heatmaps, "heatmaps")
    if heat.ndim != 3:
        raise ValueError(f"`heatmaps` must be (N, H, W), got shape {heat.shape}.")
    if not 0.0 <= float(quantile) < 1.0:
        raise ValueError(f"`quantile` must be in [0, 1), got {quantile}.")
    out = np.zeros((len(heat), 2))
    for i, m in enumerate(heat):
        threshold = np.quantile(m, quantile)
        parts, _ = ndimage.label(m >= threshold)
        ys, xs = np.nonzero(parts == parts[np.unravel_index(int(np.argmax(m)), m.shape)])
        w = m[ys, xs] - threshold
        w = w if w.sum() > 0 else np.ones_like(w)
        out[i] = ((xs * w).sum() / w.sum() + 0.5, (ys * w).sum() / w.sum() + 0.5)
    return out


def pointing_game(points, boxes) -> np.ndarray:
    """(N,) booleans: whether point i ``(x, y)`` (pixels, may be fractional) lies inside box i ``[x0, y0, x1, y1)``:
    `localisation.pointing_hit` (the one definition, Quantus's) over a batch; a NaN point is a miss."""
    p = _as_numpy(points, "points").reshape(-1, 2)
    b = _boxes(boxes)
    if len(p) != len(b):
        raise ValueError(f"Got {len(p)} points for {len(b)} boxes.")
    return np.array([pointing_hit((y, x), box) for (x, y), box in zip(p, b)], dtype=bool)


def energy_in_region(heatmaps, regions) -> np.ndarray:
    """(N,) share of each map's positive mass inside its region (N, H, W booleans, e.g. `box_masks`): 1 = all the
    evidence the map shows lies on the ground truth; a uniform map scores the region's share of the image. A map with
    no positive mass scores 0."""
    heat = _as_numpy(heatmaps, "heatmaps")
    region = np.asarray(regions, dtype=bool)
    if heat.shape != region.shape or heat.ndim != 3:
        raise ValueError(f"`heatmaps` and `regions` must both be (N, H, W); got {heat.shape} and {region.shape}.")
    # The one definition (Quantus's), map by map; a map with a NaN or infinite value scores 0, as this batch version
    # always did (energy_in_box itself refuses it).
    return np.array([energy_in_box(m, r) if np.isfinite(m).all() else 0.0 for m, r in zip(heat, region)])


def paired_bootstrap(a, b, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean of the per-item differences ``a - b`` (the same items scored by two methods) with a percentile bootstrap
    confidence interval over items.

    Returns ``{"mean_a", "mean_b", "difference", "low", "high", "n", "excludes_zero"}``; `excludes_zero` is True when
    the whole interval lies on one side of 0 (the difference is resolved at this confidence).
    """
    x, y = _as_numpy(a, "a").reshape(-1), _as_numpy(b, "b").reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"Paired scores must have the same length, got {x.size} and {y.size}.")
    if x.size < 2:
        raise ValueError("A bootstrap needs at least 2 paired items.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}.")
    d = x - y
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(int(n_resamples), d.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return {
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "difference": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "n": int(d.size),
        "excludes_zero": bool(low > 0 or high < 0),
    }


def map_spearman(maps_a, maps_b) -> np.ndarray:
    """(N,) Spearman rank correlation between map i of `maps_a` and map i of `maps_b` (any equal shapes per item), with
    `scipy.stats.spearmanr` (average ranks for ties). A constant map correlates with nothing: NaN."""
    from scipy.stats import spearmanr

    a, b = _as_numpy(maps_a, "maps_a"), _as_numpy(maps_b, "maps_b")
    if a.shape != b.shape:
        raise ValueError(f"Maps must have the same shape, got {a.shape} and {b.shape}.")
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            out[i] = spearmanr(a[i], b[i]).statistic
    return out
