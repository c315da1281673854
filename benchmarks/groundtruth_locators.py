"""The first ground-truth benchmark's (`benchmarks/groundtruth.py`) maps and locators: the post-hoc baselines of the
original classifier (Grad-CAM / ScoreCAM / AblationCAM, input × gradient) and the centre prior, InfoDisent's
explanations in batches, and where a prototype or a map points (`proto_points`, `grid_subcell_points`), with the
completeness and chance references read off the same points."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modeling_infodisent.explanation import cell_center_px
from modeling_infodisent.metrics import RELEVANCE_QUANTILE, pointing_game, region_centre, subcell_peak


def centre_gaussian(n: int, size: int) -> np.ndarray:
    """The prior that ignores the image: an isotropic Gaussian at the canvas centre (σ = size / 4)."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    g = np.exp(-(xx**2 + yy**2) / (2 * (size / 4) ** 2)).astype(np.float32)
    return np.broadcast_to(g, (n, size, size)).copy()


class OriginalLogits(nn.Module):
    """The backbone with its own head as a plain logits model (what pytorch-grad-cam expects)."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(pixel_values=x).logits


def last_stage(classifier) -> nn.Module:
    """The last stage of a `ResNetForImageClassification` (the layer InfoDisent explains)."""
    base = getattr(classifier, "resnet", None)
    if base is None:
        raise ValueError(
            f"The ground-truth benchmark's post-hoc baselines expect a ResNet, got {type(classifier).__name__}."
        )
    return base.encoder.stages[-1]


def posthoc_maps(classifier, x: torch.Tensor, targets, methods=("grad_cam", "score_cam", "ablation_cam")) -> dict:
    """Grad-CAM / ScoreCAM / AblationCAM (pytorch-grad-cam) of the original classifier's last stage, (N, H, W) each."""
    from pytorch_grad_cam import AblationCAM, GradCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kinds = {"grad_cam": GradCAM, "score_cam": ScoreCAM, "ablation_cam": AblationCAM}
    model = OriginalLogits(classifier).eval()
    layer = last_stage(classifier)
    params = list(classifier.parameters())
    frozen = [p.requires_grad for p in params]
    out = {}
    try:
        for p in params:  # the benchmark's copy is frozen; Grad-CAM needs the stage's output to carry a gradient
            p.requires_grad_(True)
        for name in methods:
            maps = []
            with kinds[name](model=model, target_layers=[layer]) as cam:
                cam.batch_size = 64  # ScoreCAM / AblationCAM: masked inputs per forward pass
                for start in range(0, len(x), 32):
                    chunk = x[start : start + 32]
                    cam_targets = [ClassifierOutputTarget(int(t)) for t in targets[start : start + 32]]
                    maps.append(cam(input_tensor=chunk, targets=cam_targets))
            out[name] = np.concatenate(maps).astype(np.float32)
    finally:
        for p, flag in zip(params, frozen):
            p.requires_grad_(flag)
            p.grad = None
    return out


def explain_all(model, x: torch.Tensor, targets, relevance: int = 0) -> list:
    """`model.explain` of every image for its target, in batches; `relevance`: pixel relevance of that many top
    positive prototypes (`Prototype.relevance`, what the "relevance" locator reads)."""
    out = []
    for start in range(0, len(x), 64):
        out += model.explain(
            x[start : start + 64], target=[int(t) for t in targets[start : start + 64]], relevance_top_k=relevance
        )
    return out


def predictions(model, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """(N,) predicted classes (on the CPU) of an InfoDisent model or an original classifier, in batches: one forward
    pass over 10,000 images would hold every layer's output at once."""
    with torch.no_grad():
        return torch.cat(
            [model(pixel_values=x[i : i + batch]).logits.argmax(-1).cpu() for i in range(0, len(x), batch)]
        )


def input_x_gradient(classifier, x: torch.Tensor, targets) -> np.ndarray:
    """(N, H, W) input × gradient of the original classifier's target logit, summed over colour channels, positive
    part: the pixel-level post-hoc baseline for the prototypes' relevance maps (the same attribution, on the black
    box's decision instead of on one prototype's peak)."""
    model = OriginalLogits(classifier).eval()
    out = []
    for start in range(0, len(x), 64):
        chunk = x[start : start + 64].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(chunk)
            picked = logits.gather(
                1, torch.as_tensor(targets[start : start + 64], device=logits.device).long()[:, None]
            )
            (grad,) = torch.autograd.grad(picked.sum(), chunk)
        out.append((grad * chunk).sum(1).clamp_min(0).detach().float().cpu().numpy())
    return np.concatenate(out)


# Where a prototype is. "relevance": the weighted centre of the top 1% of its pixel relevance map (input × gradient
# of its peak activation, `explain(..., relevance_top_k=k)`), the default: on the tuning split
# (`benchmarks/groundtruth_failures.py`) the top prototype read this way pointed at the decisive mark in 98.6% of the
# images (Grad-CAM on the original 97.0%) and at the garment in 99.6% (98.9%); the top 5% gave 98.5% / 97.9% (a
# large garment's relevance spreads), the maximum 98.6% / 99.3%. "region": the weighted centre of its upsampled
# activation map's 95th-percentile region (`metrics.region_centre`; ProtoPNet's and the InfoDisent paper's way of
# showing a prototype; the readout before, 95.9% / 99.7% there). "cell": the centre of the feature-grid cell where
# the map peaks (`Prototype.location` / `Prototype.box`; the readout before that).
LOCATORS = ("relevance", "region", "cell")
DEFAULT_LOCATOR = "relevance"


def proto_points(explanations, k: int, locator: str = DEFAULT_LOCATOR) -> np.ndarray:
    """(N, k, 2) points (x, y) in pixels of each explanation's k largest positive prototypes, read with `locator`
    (NaN when fewer than k prototypes contribute positively; "relevance" needs `explain_all(..., relevance=k)`)."""
    if locator not in LOCATORS:
        raise ValueError(f"locator must be one of {LOCATORS}, got {locator!r}")
    pts = np.full((len(explanations), k, 2), np.nan)
    for i, e in enumerate(explanations):
        for j, p in enumerate(e.positive[:k]):
            if locator == "relevance":
                if p.relevance is None:
                    raise ValueError(
                        f"the 'relevance' locator needs the prototypes' relevance maps: explain with relevance >= {k}"
                    )
                pts[i, j] = region_centre(p.relevance[None], RELEVANCE_QUANTILE)[0]
            elif locator == "region":
                pts[i, j] = region_centre(p.heatmap[None])[0]
            else:
                pts[i, j] = p.peak_center_px[::-1]  # (y, x) -> this module's (x, y)
    return pts


def grid_subcell_points(maps: np.ndarray, grid: tuple[int, int], pixels: bool = True) -> np.ndarray:
    """(N, 2) sub-cell peaks (x, y) of (N, H, W) maps upsampled from a (h, w) grid (what pytorch-grad-cam returns):
    each map is sampled back at the cell centres and read out like a prototype's map (`metrics.subcell_peak`), so a
    post-hoc map and a prototype are located with the same precision. `pixels=False`: in grid units (col, row)."""
    n, H, W = maps.shape
    h, w = grid
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(int), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(int), W - 1)
    out = np.zeros((n, 2))
    for i in range(n):
        r, c = subcell_peak(maps[i][np.ix_(rows, cols)])
        out[i] = ((c + 0.5) * W / w, (r + 0.5) * H / h) if pixels else (c, r)
    return out


def peak_share_inside(explanations, boxes, locator: str = "region") -> np.ndarray:
    """Completeness: per image, the share of the positive evidence (sum of positive contributions) whose prototype
    is located (`locator`) inside the truth box. Read off the upsampled maps by default: it needs every positive
    prototype located, and a relevance map costs a backward pass per prototype rank."""
    out = np.zeros(len(explanations))
    for i, e in enumerate(explanations):
        pos = e.positive
        if not pos:
            continue
        pts = proto_points([e], len(pos), locator)[0]
        inside = pointing_game(pts, np.repeat(np.asarray(boxes[i])[None], len(pos), 0))
        c = np.array([p.contribution for p in pos])
        out[i] = c[inside].sum() / c.sum()
    return out


def cells_inside(boxes, grid: tuple[int, int], size: int) -> np.ndarray:
    """The share of feature-grid cells whose centre lies in the box: what uniformly scattered peaks would score."""
    h, w = grid
    centres = np.array([cell_center_px((r, c), grid, (size, size))[::-1] for r in range(h) for c in range(w)])  # (x, y)
    return np.array([pointing_game(centres, np.repeat(np.asarray(b)[None], len(centres), 0)).mean() for b in boxes])
