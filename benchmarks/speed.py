"""Speed ratios of issue 7, measured side by side (interleaved repeats, median) on one machine in one process.

* InfoDisent forward / (same backbone + average pooling + linear head) forward — ResNet-50-sized, 224², batch 8.
* Full local explanation (`model.explain`, every prototype, predicted class) / plain InfoDisent forward; also with the
  class heatmap (`Explanation.class_heatmap()`, one upsampling of the summed feature-grid maps).
* Grad-CAM (pytorch-grad-cam, on the same model, as usually run: backbone parameters require grad) / InfoDisent
  explanation with its class heatmap; Grad-CAM with the gradient stopped at the explained layer is reported too.

Random weights are fine for timing. `run()` returns plain dicts for results.json.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TappedLogits(nn.Module):
    """InfoDisent as a plain logits model for Grad-CAM, with an `nn.Identity` `tap` on the explained feature map I.

    The tap is the Grad-CAM target layer whatever the backbone family (CNN stage output, or transformer tokens already
    laid out on the grid), so Grad-CAM and InfoDisent explain the very same map. With ``stop_gradient=True`` the map
    is detached and made a leaf that requires grad, so the backward pass stops there (the cheapest Grad-CAM
    possible); otherwise the gradient reaches it through the backbone, which must then carry grad.
    """

    def __init__(self, model, stop_gradient: bool = False):
        super().__init__()
        self.model = model
        self.tap = nn.Identity()
        self.stop_gradient = stop_gradient

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.model.extract_features(pixel_values)
        if self.stop_gradient:
            features = features.detach().requires_grad_(True)
        return self.model.head(self.tap(features)).logits


@contextlib.contextmanager
def backbone_requires_grad(model):
    """Temporarily let the frozen backbone's parameters require grad (as in any `from_pretrained` classifier), so that
    the feature map carries a gradient for Grad-CAM; restores the freeze afterwards. The model file is not touched."""
    params = list(model.backbone.parameters())
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)
            p.grad = None


def grad_cam_maps(model, pixel_values: torch.Tensor, targets=None, stop_gradient: bool = False):
    """Grad-CAM (pytorch-grad-cam's `GradCAM`) of `model`'s explained feature map: (B, H, W) numpy in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapper = TappedLogits(model, stop_gradient=stop_gradient)
    cam_targets = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    grad_ctx = contextlib.nullcontext() if stop_gradient else backbone_requires_grad(model)
    grads = {p: p.grad for p in model.parameters()}
    was_training = model.training
    try:
        with grad_ctx, GradCAM(model=wrapper, target_layers=[wrapper.tap]) as cam:
            return cam(input_tensor=pixel_values, targets=cam_targets)
    finally:
        # Grad-CAM's backward pass fills the head's .grad and GradCAM puts the model in eval mode: undo both.
        for p, g in grads.items():
            p.grad = g
        model.train(was_training)


def linear_baseline(model, num_labels: int) -> nn.Module:
    """The black-box reference: the same frozen backbone, global average pooling, one linear layer."""
    linear = nn.Linear(model.config.num_features, num_labels)

    class Baseline(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = linear

        def forward(self, pixel_values):
            return self.linear(model.extract_features(pixel_values).mean(dim=(2, 3)))

    return Baseline()


def _time_interleaved(fns: dict, repeats: int, device: torch.device, warmup: int = 1) -> dict[str, list[float]]:
    """Run every function `warmup` times, then `repeats` rounds of all of them in turn (so that machine load drifts
    hit every variant alike); returns the seconds of each call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def explain_profile(model, pixel_values: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Where the time of `model.explain` goes (median seconds): the backbone, the rotation J = U I, pooling + classifier
    on J, and the rest (numpy conversions and the Python loop that builds the `Prototype` objects)."""
    out = {}
    head = model.head
    with torch.no_grad():
        features = model.extract_features(pixel_values)
        rotated = head.rotate(features)
        parts = {
            "backbone": lambda: model.extract_features(pixel_values),
            "head_rotate": lambda: head.rotate(features),
            "head_pool_classify": lambda: head.forward_rotated(rotated),  # explain() rotates once, then pools J
            "explain_total": lambda: model.explain(pixel_values),
        }
        times = _time_interleaved(parts, repeats, pixel_values.device)
    for name, ts in times.items():
        out[name] = statistics.median(ts)
    out["python_and_numpy"] = max(
        0.0, out["explain_total"] - out["backbone"] - out["head_rotate"] - out["head_pool_classify"]
    )
    explanations = model.explain(pixel_values)
    start = time.perf_counter()
    for e in explanations:
        e.class_heatmap()
    out["class_heatmap"] = time.perf_counter() - start
    out["prototypes_per_image"] = statistics.mean(len(e.prototypes) for e in explanations)
    return out


def run(
    device: torch.device,
    repeats: int = 5,
    batch_size: int = 8,
    image_size: int = 224,
    num_labels: int = 1000,
    backbone_config=None,
    seed: int = 0,
) -> dict:
    """All inference speed ratios on one ResNet-50-sized model (random weights). Returns figures + settings."""
    from transformers import ResNetConfig

    from modeling_infodisent import InfoDisentForImageClassification

    torch.manual_seed(seed)
    bconfig = backbone_config or ResNetConfig()  # transformers' default ResNetConfig is ResNet-50
    model = InfoDisentForImageClassification.from_backbone(
        bconfig, id2label={i: f"class_{i}" for i in range(num_labels)}
    ).eval()
    model.to(device)
    baseline = linear_baseline(model, num_labels).to(device).eval()
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    model.rotation_matrix()  # materialise the cached U (eval mode) before timing, as a deployed model would have it

    def infodisent_forward():
        with torch.no_grad():
            model(x)

    def baseline_forward():
        with torch.no_grad():
            baseline(x)

    def explain():
        model.explain(x)

    def explain_with_heatmap():
        for e in model.explain(x):
            e.class_heatmap()

    # The default training recipe prunes each class to its 10 largest weights: explain() then builds at most 20
    # prototypes per image instead of ~2D. Same backbone and rotation, only the classifier mask differs.
    pruned = copy.deepcopy(model).eval()
    with torch.no_grad():
        weight = pruned.classifier_weight
        keep = torch.zeros_like(weight)
        keep.scatter_(1, weight.topk(min(10, weight.shape[1]), dim=1).indices, 1.0)
        pruned.head.classifier.prototype_mask.copy_(keep)

    def explain_pruned():
        for e in pruned.explain(x):
            e.class_heatmap()

    def grad_cam():
        grad_cam_maps(model, x)

    def grad_cam_stop_gradient():
        grad_cam_maps(model, x, stop_gradient=True)

    fns = {
        "backbone_linear_forward": baseline_forward,
        "infodisent_forward": infodisent_forward,
        "explain": explain,
        "explain_heatmap": explain_with_heatmap,
        "explain_heatmap_pruned_10": explain_pruned,
        "grad_cam": grad_cam,
        "grad_cam_stop_gradient": grad_cam_stop_gradient,
    }
    # The forward ratio is a few percent: it gets its own, longer series of cheap interleaved pairs.
    forward_rounds = max(9, 3 * repeats)
    forward_times = _time_interleaved(
        {"backbone_linear_forward": baseline_forward, "infodisent_forward": infodisent_forward}, forward_rounds, device
    )
    times = _time_interleaved(fns, repeats, device)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    forward_med = {name: statistics.median(ts) for name, ts in forward_times.items()}

    def paired(num: str, den: str, series=times) -> float:
        # Median of the per-round ratios: the two calls of a round ran seconds apart, so a change in machine load
        # between rounds cancels out (a ratio of medians taken from different rounds would not).
        return statistics.median(a / b for a, b in zip(series[num], series[den]))

    ratios = {
        "forward_vs_backbone_linear": paired("infodisent_forward", "backbone_linear_forward", forward_times),
        "explain_vs_forward": paired("explain", "infodisent_forward"),
        "explain_heatmap_vs_forward": paired("explain_heatmap", "infodisent_forward"),
        "explain_heatmap_pruned_10_vs_forward": paired("explain_heatmap_pruned_10", "infodisent_forward"),
        "grad_cam_vs_explain_heatmap": paired("grad_cam", "explain_heatmap"),
        "grad_cam_vs_explain": paired("grad_cam", "explain"),
        "grad_cam_vs_explain_heatmap_pruned_10": paired("grad_cam", "explain_heatmap_pruned_10"),
        "grad_cam_stop_gradient_vs_explain_heatmap": paired("grad_cam_stop_gradient", "explain_heatmap"),
    }
    profile = explain_profile(model, x, repeats=max(2, repeats // 2))
    # Also the training-free baseline of the explanation series, to read its rows against the same forward.
    med["infodisent_forward_explanation_series"] = med["infodisent_forward"]
    return {
        "settings": {
            "backbone": f"transformers ResNetConfig() (ResNet-50, random weights), {model.config.num_features} "
            f"channels, last map {tuple(model(x[:1]).feature_grid)}",
            "num_labels": num_labels,
            "batch_size": batch_size,
            "image_size": image_size,
            "repeats": repeats,
            "statistic": "seconds: median of interleaved rounds after 1 warm-up round; ratios: median over rounds of "
            "the per-round ratio; the forward ratio from its own series of max(9, 3 * repeats) interleaved "
            "(baseline, InfoDisent) pairs",
            "seed": seed,
            "explain": "model.explain(x) with top_k=None (every prototype of the predicted class)",
            "explain_heatmap_pruned_10": "explain + class heatmap on a copy whose classifier keeps each class's "
            "10 largest weights (the default training recipe's budget)",
            "grad_cam": "pytorch_grad_cam.GradCAM on the same model, target layer = the explained feature map; "
            "backbone parameters temporarily require grad (as in any from_pretrained classifier)",
            "grad_cam_stop_gradient": "same, but the backward pass stops at the feature map (cheapest Grad-CAM)",
        },
        "seconds_median": med,
        "seconds_all": times,
        "forward_pair_seconds_median": forward_med,
        "forward_pair_seconds_all": forward_times,
        "ratios": ratios,
        "explain_profile_seconds": profile,
    }


def train_step_ratio(
    device: torch.device,
    batch_size: int = 32,
    image_size: int = 224,
    num_labels: int = 1000,
    backbone_config=None,
    repeats: int = 2,
    seed: int = 0,
) -> dict:
    """ResNet-50-sized training cost per batch: one optimiser step of the head on cached feature maps vs the backbone
    forward that a live-backbone step needs on top of it. The epoch ratio live / cached is
    ``(backbone + head_step) / head_step`` (data loading aside)."""
    from transformers import ResNetConfig

    from modeling_infodisent import InfoDisentForImageClassification

    torch.manual_seed(seed)
    model = InfoDisentForImageClassification.from_backbone(
        backbone_config or ResNetConfig(), id2label={i: f"class_{i}" for i in range(num_labels)}
    ).to(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, num_labels, (batch_size,), device=device)
    with torch.no_grad():
        features = model.extract_features(x)
    optimizer = torch.optim.AdamW([p for p in model.head.parameters() if p.requires_grad], lr=1e-3)
    model.head.rotation.attach(optimizer)  # as training/fit.py does: U is retracted after every step

    def backbone():
        with torch.no_grad():
            model.extract_features(x)

    def head_step():
        model.head.train()
        loss = model.head(features, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    times = _time_interleaved({"backbone_forward": backbone, "head_step": head_step}, repeats, device, warmup=1)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "settings": {
            "batch_size": batch_size,
            "image_size": image_size,
            "num_labels": num_labels,
            "backbone": "ResNetConfig() (ResNet-50), random weights",
            "repeats": repeats,
        },
        "seconds_median": med,
        "seconds_all": times,
        "epoch_speedup_estimate": statistics.median(
            (a + b) / b for a, b in zip(times["backbone_forward"], times["head_step"])
        ),
    }
