"""The explanation types and their assembly: what `InfoDisentForImageClassification.explain` returns.

`Explanation` is the exact decomposition of one class logit of one image into `Prototype` terms (one prototype =
one pole, + or -, of one rotated channel): ``logit == bias + sum(p.contribution for p in prototypes) + residual``.
Every consumer (renderer, command line, Space, metrics) reads these two types.

This file travels with the weights (``save_pretrained`` copies the modeling file's relative imports for
``trust_remote_code=True`` loading), so it imports only torch, numpy and its siblings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Explanation",
    "Prototype",
    "build_explanations",
    "cell_box_px",
    "cell_center_px",
    "resolve_targets",
    "upsample_map",
]


def upsample_map(activation_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of an (h, w) map to `size` (H, W), as float32 numpy."""
    t = torch.as_tensor(activation_map, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def cell_box_px(cell: tuple[int, int], grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``[x0, y0, x1, y1)`` in input pixels of feature-grid cell (row, col) of an (h, w) grid over an (H, W) input,
    rounded outwards to whole pixels: cell (r, c) covers rows [r H/h, (r+1) H/h) and columns [c W/w, (c+1) W/w)."""
    (r, c), (h, w), (H, W) = cell, grid, image_size
    return (int(c * W / w), int(r * H / h), int(math.ceil((c + 1) * W / w)), int(math.ceil((r + 1) * H / h)))


def cell_center_px(cell: tuple[int, int], grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[float, float]:
    """(y, x) in input pixels of the centre of feature-grid cell (row, col): ((r + ½) H/h, (c + ½) W/w)."""
    (r, c), (h, w), (H, W) = cell, grid, image_size
    return ((r + 0.5) * H / h, (c + 0.5) * W / w)


@dataclass
class Prototype:
    """One prototypical part's share of one class logit: pole `sign` (+1 / -1) of rotated channel `channel`."""

    channel: int
    sign: int
    activation: float  # pos_c or neg_c (>= 0)
    weight: float  # W_kc (>= 0)
    contribution: float  # sign * weight * activation
    location: tuple[int, int]  # (row, col) of the peak in the feature grid
    activation_map: np.ndarray  # (h, w) ReLU(sign * J_c): the prototype's map in the feature grid
    image_size: tuple[int, int]  # (H, W) of the explained input
    # (H, W) which pixels make the prototype fire where it peaks (`explain(..., relevance_top_k=k)`; else None).
    relevance: np.ndarray | None = field(default=None, repr=False, compare=False)
    _heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """Readable id, e.g. ``"17+"`` for the positive pole of channel 17."""
        return f"{self.channel}{'+' if self.sign > 0 else '-'}"

    @property
    def heatmap(self) -> np.ndarray:
        """(H, W) activation map bilinearly upsampled to the input's resolution (computed on first access)."""
        if self._heatmap is None:
            self._heatmap = upsample_map(self.activation_map, self.image_size)
        return self._heatmap

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in input pixels of the feature-grid cell where the prototype peaks."""
        return cell_box_px(self.peak_cell, self.activation_map.shape, self.image_size)

    # -- readouts an audit scores (`modeling_infodisent.localisation` takes them as they are) -------------------
    @property
    def peak_cell(self) -> tuple[int, int]:
        """(row, col) of the feature-grid cell where the prototype peaks: the one cell whose value enters the logit
        under max pooling (the same as `location`)."""
        return (int(self.location[0]), int(self.location[1]))

    @property
    def peak_center_px(self) -> tuple[float, float]:
        """(y, x) in input pixels of the centre of `peak_cell`: cell (r, c) of an (h, w) grid over an (H, W) input
        covers rows [r H/h, (r+1) H/h) and columns [c W/w, (c+1) W/w); its centre is ((r + ½) H/h, (c + ½) W/w)."""
        return cell_center_px(self.peak_cell, self.activation_map.shape, self.image_size)

    @property
    def peak_box_px(self) -> tuple[int, int, int, int]:
        """``[x0, y0, x1, y1)`` in input pixels (x1, y1 exclusive; the box convention of `localisation` and of the
        ground-truth sets) of `peak_cell`, rounded outwards to whole pixels (the same as `box`)."""
        return self.box


@dataclass
class Explanation:
    """The exact decomposition of one class logit of one image: ``logit == bias + sum(p.contribution)``.

    With ``top_k=None`` the list holds every prototype that contributes (nonzero weight and activation), ordered by
    ``|contribution|``; with ``top_k`` only the strongest ones, and ``residual`` holds what the rest add up to.
    """

    target: int
    label: str
    logit: float
    bias: float
    probability: float
    probabilities: np.ndarray  # (K,) softmax over classes
    prototypes: list[Prototype]
    residual: float  # sum of the contributions left out by top_k (0.0 when top_k is None)
    feature_grid: tuple[int, int]
    image_size: tuple[int, int]
    # What the explained black box itself decides (the backbone's own classifier, when the model carries it): if
    # `agrees` is False, this explanation explains a decision the original classifier did not make.
    original_prediction: int | None = None
    original_label: str | None = None
    agrees: bool | None = None

    @property
    def positive(self) -> list[Prototype]:
        return [p for p in self.prototypes if p.contribution > 0]

    @property
    def negative(self) -> list[Prototype]:
        return [p for p in self.prototypes if p.contribution < 0]

    @property
    def total(self) -> float:
        """bias + all contributions (+ residual): equals `logit` up to float rounding."""
        return self.bias + sum(p.contribution for p in self.prototypes) + self.residual

    @property
    def heatmap(self) -> np.ndarray:
        """(H, W) class evidence map at the input's resolution, as `Prototype.heatmap` is the prototype's: the same as
        ``class_heatmap()`` (the method takes the `where` option)."""
        return self.class_heatmap()

    def class_map(self, upsampled: bool = False, where: str = "maps") -> np.ndarray:
        """The class evidence map of `class_heatmap` at the feature grid's resolution (h, w) — the numbers the model
        computes, before any interpolation — or, with ``upsampled=True``, bilinearly upsampled to the input (H, W)
        (then equal to ``class_heatmap(where)``). Positive where the image argues for the class."""
        if where not in ("maps", "peaks"):
            raise ValueError(f"`where` must be 'maps' or 'peaks', got {where!r}.")
        low = np.zeros(self.feature_grid, dtype=np.float64)
        for p in self.prototypes:
            if where == "maps":
                low += p.sign * p.weight * p.activation_map
            else:
                low[p.location] += p.contribution
        low = low.astype(np.float32)
        return upsample_map(low, self.image_size) if upsampled else low

    def class_heatmap(self, where: str = "maps") -> np.ndarray:
        """(H, W) evidence map, positive where the image argues for the class, negative where it argues against.

        ``where="maps"``: each prototype's whole activation map scaled by its signed weight (each term peaks at about
        its contribution; the sum is W U I, a CAM of the rotated features). ``where="peaks"``: each prototype's exact
        contribution placed on the one feature-grid cell where it peaks — the only place that enters the logit under
        max pooling, so the map's cells sum to ``logit - bias`` (exactly, with ``top_k=None``)."""
        if where not in ("maps", "peaks"):
            raise ValueError(f"`where` must be 'maps' or 'peaks', got {where!r}.")
        if not self.prototypes:
            return np.zeros(self.image_size, dtype=np.float32)
        # Upsampling is linear: sum the (h, w) maps first, then upsample once (not once per prototype).
        return self.class_map(upsampled=True, where=where)


def resolve_targets(target, logits: torch.Tensor, batch: int) -> list[int]:
    """The class to explain for each image: `target` (one int, or one per image) or, when None, the predicted one."""
    num_labels = logits.shape[-1]
    if target is None:
        targets = logits.argmax(dim=-1).tolist()
    elif isinstance(target, int):
        targets = [target] * batch
    else:
        targets = [int(t) for t in (target.tolist() if isinstance(target, torch.Tensor) else target)]
        if len(targets) != batch:
            raise ValueError(f"Got {len(targets)} targets for {batch} images.")
    for t in targets:
        if not 0 <= t < num_labels:
            raise ValueError(f"Target class {t} is out of range: the model has {num_labels} classes.")
    return targets


def build_explanations(
    out,
    rotated: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    targets: list[int],
    id2label: dict,
    image_size: tuple[int, int],
    top_k: int | None = None,
    original: torch.Tensor | None = None,
) -> list[Explanation]:
    """One `Explanation` per image from the model's eval-mode output `out` (an `InfoDisentImageClassifierOutput`),
    the rotated map J (B, D, h, w), the classifier W (K, D) and b (K,), and the original head's logits (or None)."""
    # Everything below is numpy / Python on small arrays: one conversion each, then plain lists.
    weight = weight.detach().double().cpu().numpy()
    bias = bias.detach().double().cpu().numpy()
    probabilities = torch.softmax(out.logits.double(), dim=-1).cpu().numpy()
    logits = out.logits.detach().cpu().numpy()
    maps = {1: F.relu(rotated).float().cpu().numpy(), -1: F.relu(-rotated).float().cpu().numpy()}
    activations = {1: out.pos_activations.double().cpu().numpy(), -1: out.neg_activations.double().cpu().numpy()}
    locations = {1: out.pos_locations.cpu().numpy(), -1: out.neg_locations.cpu().numpy()}
    original = None if original is None else original.argmax(dim=-1).tolist()
    explanations = []
    for i, k in enumerate(targets):
        channels = np.flatnonzero(weight[k])  # pruned prototypes (W_kc == 0) are not part of the explanation
        terms = []  # (contribution, sign, channel)
        for sign in (1, -1):
            act = activations[sign][i, channels]
            fired = act != 0.0
            contribution = sign * weight[k, channels[fired]] * act[fired]
            terms += zip(contribution.tolist(), [sign] * int(fired.sum()), channels[fired].tolist())
        terms.sort(key=lambda t: abs(t[0]), reverse=True)
        residual = 0.0
        if top_k is not None:
            residual = float(sum(t[0] for t in terms[top_k:]))
            terms = terms[:top_k]
        prototypes = [
            Prototype(
                channel=c,
                sign=sign,
                activation=float(activations[sign][i, c]),
                weight=float(weight[k, c]),
                contribution=contribution,
                location=(int(locations[sign][i, c, 0]), int(locations[sign][i, c, 1])),
                activation_map=maps[sign][i, c],
                image_size=image_size,
            )
            for contribution, sign, c in terms
        ]
        decided = None if original is None else original[i]
        explanations.append(
            Explanation(
                target=k,
                label=id2label.get(k, str(k)),
                logit=float(logits[i, k]),
                bias=float(bias[k]),
                probability=float(probabilities[i, k]),
                probabilities=probabilities[i],
                prototypes=prototypes,
                residual=residual,
                feature_grid=out.feature_grid,
                image_size=image_size,
                original_prediction=decided,
                original_label=None if decided is None else id2label.get(decided, str(decided)),
                agrees=None if decided is None else decided == k,
            )
        )
    return explanations


def add_relevance(model, pixel_values: torch.Tensor, explanations: list[Explanation], count: int) -> None:
    """Set `Prototype.relevance` of the `count` strongest positive prototypes of every explanation.

    The map is input × gradient of the prototype's peak activation (the one value max pooling passes to the
    classifier), summed over colour channels, positive part: the pixels that push that activation above what a
    mean-coloured image (0 after normalisation) would give. A prototype's upsampled activation map says which
    feature-grid cell fires; a cell sees far more than its own patch, and a small part on the border of two cells
    fires both, so the map's maximum often lands next to the part. The relevance map shows the pixels themselves
    (the motivation of prototypical relevance propagation, Gautam et al., 2022). `model` must be in eval mode.
    """
    picks = [e.positive[:count] for e in explanations]
    rounds = max((len(p) for p in picks), default=0)
    with torch.enable_grad():
        x = pixel_values.detach().clone().requires_grad_(True)
        rotated = model.head.rotate(model.extract_features(x))
        for j in range(rounds):  # rank j of every image in one backward pass: the images are independent
            terms = [(i, p[j]) for i, p in enumerate(picks) if j < len(p)]
            peaks = torch.stack([p.sign * rotated[i, p.channel, p.location[0], p.location[1]] for i, p in terms])
            (grad,) = torch.autograd.grad(peaks.sum(), x, retain_graph=j + 1 < rounds)
            maps = (grad * x.detach()).sum(dim=1).clamp_min(0).float().cpu().numpy()
            for i, p in terms:
                p.relevance = maps[i]
