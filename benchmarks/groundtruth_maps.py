"""Matched readouts for the ground-truth benchmark (issue 22): every method's map at its NATIVE resolution, and one
readout family applied identically to all of them.

Maps (one per image, for the image's true class):

- ``infodisent_prototype``: the top prototype's own activation map, ReLU(sign · J_c) on the feature grid (the
  prototype of the true class with the largest positive contribution) -- no post-hoc attribution;
- ``infodisent_class``: the class map W_t · J on the feature grid (every prototype's map weighted by its signed
  weight; `Explanation.class_heatmap` before upsampling);
- ``grad_cam_infodisent``: Grad-CAM of the InfoDisent model's logit at the backbone's last stage;
- ``grad_cam_original`` / ``score_cam_original`` / ``ablation_cam_original``: pytorch-grad-cam on the ORIGINAL
  classifier (the same frozen backbone with its own head), read at the feature grid (the library's CAM before it
  upsamples: `cam_maps` asks it for a grid-sized target);
- ``input_x_gradient_original``: input × gradient of the original's logit, positive part, summed over colour, at the
  input's pixels.

Readouts (`READOUTS`), the same for every map:

- ``peak_cell``: the centre of the feature-grid cell where the map peaks (a pixel-resolution map is first averaged
  over each cell);
- ``peak_pixel``: the maximum of the map bilinearly upsampled to the input (a pixel-resolution map as it is);
- ``cell_refined``: the peak cell, then the maximum inside that cell of the input × gradient of the model whose
  decision the map explains (the original for the post-hoc maps of the original; the InfoDisent model for its own
  maps and Grad-CAM of it) -- the pixel refinement, applied to every method alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

READOUTS = ("peak_cell", "peak_pixel", "cell_refined")
INFODISENT_OWN = ("infodisent_prototype", "infodisent_class")
POSTHOC_ORIGINAL = ("grad_cam_original", "score_cam_original", "ablation_cam_original", "input_x_gradient_original")


class Logits(nn.Module):
    """A classifier as a plain logits model (what pytorch-grad-cam expects)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def resnet_stages(model) -> list[nn.Module]:
    """The encoder stages of a `ResNetForImageClassification` or of an InfoDisent model on a ResNet backbone."""
    base = getattr(model, "resnet", None)
    if base is None:
        inner = getattr(getattr(model, "backbone", None), "model", None)
        base = getattr(inner, "resnet", inner)
    encoder = getattr(base, "encoder", None)
    if encoder is None or not hasattr(encoder, "stages"):
        raise ValueError(f"the ground-truth benchmark expects a ResNet backbone, got {type(model).__name__}")
    return list(encoder.stages)


def infodisent_maps(model, x: torch.Tensor, targets: torch.Tensor) -> dict:
    """The InfoDisent model's own maps of `targets` on the feature grid (B, h, w), its predictions and logits,
    computed from one backbone pass (the same arithmetic as the model's forward: max+/max- pooling of J = U z)."""
    with torch.no_grad():
        feature_map = model.backbone(x)
        j = model.head.rotate(feature_map)  # (B, D, h, w)
        pos = j.amax(dim=(2, 3)).clamp_min(0)
        neg = (-j).amax(dim=(2, 3)).clamp_min(0)
        weight = model.classifier_weight  # (K, D), >= 0
        logits = (pos - neg) @ weight.T + model.classifier_bias
        w_t = weight[targets.to(weight.device)]  # (B, D)
        top = (w_t * pos).argmax(dim=1)  # the true class's prototype with the largest positive contribution
        rows = torch.arange(len(x), device=j.device)
        proto = j[rows, top].clamp_min(0)
        class_map = torch.einsum("bd,bdhw->bhw", w_t, j)
    return {
        "infodisent_prototype": proto.float().cpu(),
        "infodisent_class": class_map.float().cpu(),
        "prediction": logits.argmax(-1).cpu(),
        "top_channel": top.cpu(),
    }


def predictions(model, x: torch.Tensor) -> torch.Tensor:
    """(B,) predicted classes of an InfoDisent model or an original classifier, on the CPU."""
    with torch.no_grad():
        return model(pixel_values=x).logits.argmax(-1).cpu()


def input_x_gradient(model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, H, W) input × gradient of the target logit, positive part, summed over colour channels."""
    chunk = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(pixel_values=chunk).logits
        picked = logits.gather(1, targets.to(logits.device).long()[:, None])
        (grad,) = torch.autograd.grad(picked.sum(), chunk)
    return (grad * chunk).sum(1).clamp_min(0).detach().float().cpu()


def cam_maps(model, layer: nn.Module, x: torch.Tensor, targets, kind: str, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) Grad-CAM / ScoreCAM / AblationCAM (pytorch-grad-cam) of `model`'s target logits at `layer`, read
    at the feature grid: the library's own map before it upsamples (min-max scaled per image, as it returns them)."""
    from pytorch_grad_cam import AblationCAM, GradCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"grad_cam": GradCAM, "score_cam": ScoreCAM, "ablation_cam": AblationCAM}[kind]
    params = list(model.parameters())
    frozen = [p.requires_grad for p in params]
    try:
        for p in params:  # frozen copies: Grad-CAM needs the layer's output to carry a gradient
            p.requires_grad_(True)
        with cls(model=Logits(model).eval(), target_layers=[layer]) as cam:
            cam.batch_size = 64  # ScoreCAM / AblationCAM: masked inputs per forward pass
            cam.get_target_width_height = lambda _t: (grid[1], grid[0])  # native resolution: no upsampling
            out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        for p, flag in zip(params, frozen):
            p.requires_grad_(flag)
            p.grad = None
    return torch.as_tensor(np.asarray(out, dtype=np.float32))


def readout_points(maps: torch.Tensor, grid: tuple[int, int], size: int, refine: torch.Tensor) -> dict:
    """(N, 2) points (x, y) in input pixels of every readout in `READOUTS` of (N, h', w') maps (feature-grid or
    pixel resolution); `refine` (N, size, size): the pixel map the ``cell_refined`` readout maximises in the cell."""
    maps = torch.as_tensor(maps, dtype=torch.float32)
    n = len(maps)
    h, w = grid
    cells = maps if tuple(maps.shape[-2:]) == (h, w) else F.adaptive_avg_pool2d(maps[:, None], (h, w))[:, 0]
    pixels = (
        maps
        if maps.shape[-1] == size
        else F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    )
    flat = cells.reshape(n, -1).argmax(1)
    r, c = (flat // w).numpy(), (flat % w).numpy()
    out = {"peak_cell": np.stack(((c + 0.5) * size / w, (r + 0.5) * size / h), 1)}
    flat = pixels.reshape(n, -1).argmax(1)
    out["peak_pixel"] = np.stack(((flat % size).numpy() + 0.5, (flat // size).numpy() + 0.5), 1)
    refined = np.zeros((n, 2))
    for i in range(n):
        x0, y0 = int(c[i] * size / w), int(r[i] * size / h)
        x1, y1 = int(math.ceil((c[i] + 1) * size / w)), int(math.ceil((r[i] + 1) * size / h))
        patch = refine[i, y0:y1, x0:x1]
        k = int(patch.reshape(-1).argmax())
        refined[i] = (x0 + k % patch.shape[1] + 0.5, y0 + k // patch.shape[1] + 0.5)
    out["cell_refined"] = refined
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(N,) Spearman correlation between two sets of maps of the same resolution (NaN for a constant map)."""
    from modeling_infodisent.metrics import map_spearman

    return np.asarray(map_spearman(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)), dtype=float)


def reinit_module(module: nn.Module, seed: int) -> None:
    """Draw a module's weights again (and reset its batch-norm statistics), seeded."""
    torch.manual_seed(seed)
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
