"""Turning what a user names as a backbone into weights, labels and (when it has one) its own classifier head:
the helpers behind `InfoDisentForImageClassification.from_backbone`.

This file travels with the weights (``save_pretrained`` copies the modeling file's relative imports for
``trust_remote_code=True`` loading), so it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers import logging as transformers_logging

__all__ = [
    "backbone_labels",
    "config_num_features",
    "find_original_head",
    "has_classifier_head",
    "input_channels",
    "input_size",
    "load_backbone_weights",
    "measure_num_features",
    "model_labels",
    "resolve_backbone",
    "token_grid",
]


def has_classifier_head(bconfig: PretrainedConfig) -> bool:
    """Whether a checkpoint with this config carries its own classifier: a transformers
    ``...ForImageClassification`` (named in ``architectures``), or a timm model with classes (timm's Hub configs have
    ``num_classes`` and label names, never ``architectures``)."""
    if any(a.endswith("ForImageClassification") for a in (getattr(bconfig, "architectures", None) or [])):
        return True
    return bconfig.model_type == "timm_wrapper" and int(getattr(bconfig, "num_labels", 0) or 0) > 0


def _timm_head_keys(model: PreTrainedModel) -> set[str]:
    """The state-dict keys of a timm model's classifier (``classifier.*``, ``head.*``, ``head.fc.*``...): what a
    `TimmWrapperModel` built with ``num_classes=0`` does not have."""
    timm_model = model.timm_model
    classifier = timm_model.get_classifier()
    prefixes = [name for name, module in timm_model.named_modules() if module is classifier and name]
    prefix = model.base_model_prefix
    return {f"{prefix}.{k}" for k in timm_model.state_dict() if any(k.startswith(p + ".") for p in prefixes)}


def _split_model(model: PreTrainedModel) -> tuple[PretrainedConfig, dict, PreTrainedModel | None]:
    """(config, the weights of the model without its classifier, the model itself when it has a classifier)."""
    if model.config.model_type == "timm_wrapper":
        # A timm wrapper's `base_model` is the raw timm module (no config): the classifier is found in it instead.
        if int(getattr(model.timm_model, "num_classes", 0) or 0) == 0:
            return model.config, model.state_dict(), None
        head_keys = _timm_head_keys(model)
        return model.config, {k: v for k, v in model.state_dict().items() if k not in head_keys}, model
    has_head = model.base_model is not model
    base = model.base_model if has_head else model
    return base.config, base.state_dict(), model if has_head else None


def resolve_backbone(backbone) -> tuple[PretrainedConfig, dict | None, PreTrainedModel | None]:
    """(config, the backbone's weights without its classifier (a state dict for `AutoModel.from_config(config)`) or
    None, the model with its classification head or None) of `backbone`: a Hub id or folder (loaded, then taken
    apart exactly as the model instance it loads to), a config (random weights) or a model instance."""
    if isinstance(backbone, (str, os.PathLike)):
        try:
            bconfig = AutoConfig.from_pretrained(backbone)
        except Exception as error:  # noqa: BLE001 - re-raised with the user's terms
            raise ValueError(f"Cannot load backbone {str(backbone)!r}: {error}") from error
        if bconfig.model_type == "infodisent":
            raise ValueError(f"{str(backbone)!r} is already an InfoDisent model; load it with from_pretrained.")
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # the dropped classifier head is expected, not news
        try:
            auto = AutoModelForImageClassification if has_classifier_head(bconfig) else AutoModel
            backbone = auto.from_pretrained(backbone)
        finally:
            transformers_logging.set_verbosity(verbosity)
    if isinstance(backbone, PreTrainedModel):
        return _split_model(backbone)
    if isinstance(backbone, PretrainedConfig):
        return backbone, None, None
    raise TypeError(f"`backbone` must be a Hub id, a folder, a config or a model, got {type(backbone).__name__}.")


def backbone_labels(bconfig: PretrainedConfig, head_model: PreTrainedModel | None) -> dict[int, str]:
    """The labels of the backbone's own classification head (for `from_backbone` without `id2label`)."""
    head_labels = getattr(bconfig, "id2label", None) or {}
    has_head = head_model is not None or has_classifier_head(bconfig)
    if not has_head or not head_labels:
        raise ValueError("`id2label` is required: the backbone has no classification head to take labels from.")
    return dict(head_labels)


def input_size(bconfig: PretrainedConfig) -> tuple[int, int] | None:
    """(height, width) the backbone was trained at, when its config says: ``image_size`` (transformers), or timm's
    ``pretrained_cfg["input_size"]`` (some timm models, e.g. ViTs, take only that size)."""
    size = getattr(bconfig, "image_size", None)
    if size is None and isinstance(getattr(bconfig, "pretrained_cfg", None), dict):
        shape = bconfig.pretrained_cfg.get("input_size")
        size = tuple(shape[-2:]) if shape else None
    if size is None:
        return None
    return tuple(int(v) for v in size) if isinstance(size, (list, tuple)) else (int(size), int(size))


# Model families whose token sequence is produced by a hierarchy of patch-merging stages (grid = ceil at each stage).
HIERARCHICAL_TOKEN_MODELS = {"swin", "swinv2", "donut-swin", "maskformer-swin"}


def input_channels(model: PreTrainedModel) -> int:
    """Colour channels a backbone takes (its config's `num_channels`; timm configs may leave it unset: 3)."""
    return getattr(model.config, "num_channels", None) or 3


def config_num_features(model: PreTrainedModel) -> int | None:
    """Channel count D of a backbone's last feature map, read from its config (None when it cannot be read)."""
    if model.config.model_type == "timm_wrapper":
        return int(model.timm_model.num_features)
    for name in ("hidden_sizes", "hidden_size"):
        value = getattr(model.config, name, None)
        if value:
            return int(value[-1] if isinstance(value, (list, tuple)) else value)
    return None


def _patch_size(model: PreTrainedModel) -> tuple[int, int] | None:
    if model.config.model_type == "timm_wrapper":
        size = getattr(getattr(model.timm_model, "patch_embed", None), "patch_size", None)
    else:
        size = getattr(model.config, "patch_size", None)
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else tuple(size)


def token_grid(model: PreTrainedModel, height: int, width: int, num_tokens: int) -> tuple[int, int]:
    """The (h, w) patch grid a token backbone's `num_tokens` tokens lie on for a `height` x `width` input (any
    leading tokens beyond h·w are CLS / register / distillation tokens)."""
    patch = _patch_size(model)
    if patch is None:
        raise ValueError(
            f"Backbone {type(model).__name__} returns a token sequence but declares no patch size, so its "
            "tokens cannot be laid out on a spatial grid: it has no spatial feature map InfoDisent can use."
        )
    if model.config.model_type in HIERARCHICAL_TOKEN_MODELS:
        # Swin pads the image to a multiple of the patch size, then each patch-merging stage pads to even.
        h, w = math.ceil(height / patch[0]), math.ceil(width / patch[1])
        for _ in range(len(model.config.depths) - 1):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
    else:
        h, w = height // patch[0], width // patch[1]
    if h * w > num_tokens:
        raise ValueError(
            f"Backbone {type(model).__name__} returned {num_tokens} tokens for a {height}x{width} input, fewer "
            f"than the {h}x{w} patch grid expected from its patch size {patch}."
        )
    return h, w


def model_labels(bconfig, head_model, id2label: dict | None, label2id: dict | None) -> tuple[dict, dict]:
    """(id2label, label2id) of a new model: the given ones, or the backbone head's labels."""
    id2label = backbone_labels(bconfig, head_model) if id2label is None else id2label
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if label2id is not None and len(label2id) != len(id2label):
        raise ValueError(f"id2label has {len(id2label)} classes but label2id has {len(label2id)}.")
    # A name shared by two classes (ImageNet-1k has two "crane"s) maps to the first of them.
    return id2label, label2id or {v: k for k, v in sorted(id2label.items(), reverse=True)}


def load_backbone_weights(model: nn.Module, weights: dict) -> None:
    """Load the pretrained backbone `weights` (a state dict) into the freshly built `model`, bit-identically. A
    classifier's base model may lack the pooler that AutoModel builds (ViTForImageClassification has none);
    InfoDisent never uses the pooler, so only its absence is tolerated."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise ValueError(f"The backbone's weights do not fit its config: missing {missing}, unexpected {unexpected}.")


def _dummy_size(bconfig: PretrainedConfig, default: int) -> tuple[int, int]:
    return input_size(bconfig) or (default, default)


def measure_num_features(backbone: nn.Module, bconfig: PretrainedConfig) -> int:
    """Run one small dummy image through the backbone adapter: this both checks that it has a spatial map and
    measures its channel count D."""
    dummy = torch.zeros(1, backbone.num_channels, *_dummy_size(bconfig, 224))
    with torch.no_grad():
        return int(backbone(dummy).shape[1])


def find_original_head(
    head_model, backbone: nn.Module, bconfig, id2label: dict, num_features: int, names_must_match: bool = True
) -> nn.Linear | None:
    """The backbone's own classifier as one `nn.Linear` on the average-pooled explained map, when there is one: it
    predicts as many classes, with the same names (case-insensitive) when `names_must_match`, and reproduces the
    original model's logits on a random image (so heads with extra layers — a LayerNorm, a CLS token — are not
    taken). Else None."""
    if head_model is None or getattr(head_model.config, "num_labels", None) != len(id2label):
        return None
    names = [str(head_model.config.id2label.get(i, "")) for i in range(len(id2label))]
    if names_must_match and [n.lower() for n in names] != [id2label[i].lower() for i in range(len(id2label))]:
        return None
    linears = [m for m in head_model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].in_features != num_features or linears[-1].out_features != len(id2label):
        return None
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, backbone.num_channels, *_dummy_size(bconfig, 64), generator=generator)
    with torch.no_grad():
        was_training = head_model.training
        head_model.eval()
        try:
            expected = head_model(pixel_values=x).logits
        finally:
            head_model.train(was_training)
        got = F.linear(backbone(x).mean(dim=(2, 3)), linears[-1].weight, linears[-1].bias)
    if not (torch.isfinite(expected).all() and torch.isfinite(got).all()):
        return None  # a broken head (NaN / inf) is never kept; the training script names the problem
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()) + 1e-6):
        return None
    return linears[-1]


def dilate_last_stage(model: nn.Module) -> None:
    """In place, once: the last stage of a transformers ResNet (`ResNetModel` or `...ForImageClassification`) runs at
    stride 1 -- its strided convolution stops striding, every other 3×3 gets dilation 2 (torchvision's
    ``replace_stride_with_dilation``) -- weights unchanged: a 2× finer feature map in which every cell sees what it
    saw before. On the known-answer benchmark's tuning split this moved the prototype maps' pointing by about 3 points
    at the same accuracy (docs/faithfulness.md); it costs about 4× the last stage's compute."""
    base = getattr(model, "resnet", model)
    stages = getattr(getattr(base, "encoder", None), "stages", None)
    if stages is None or getattr(model.config, "model_type", None) != "resnet":
        raise ValueError(
            f"dilate_last_stage is implemented for ResNet backbones (model_type 'resnet'), got "
            f"{getattr(model.config, 'model_type', type(model).__name__)!r}."
        )
    for layer in stages[-1].layers:
        if hasattr(layer, "shortcut") and hasattr(layer.shortcut, "convolution"):
            layer.shortcut.convolution.stride = (1, 1)
        for conv_layer in layer.layer:
            conv = conv_layer.convolution
            if conv.stride != (1, 1):  # the strided convolution (1×1 or 3×3, by block type) only stops striding
                conv.stride = (1, 1)
            elif conv.kernel_size[0] > 1:  # every later 3×3 sees the same neighbours, now 2 cells apart
                conv.dilation = (2, 2)
                conv.padding = (conv.kernel_size[0] - 1, conv.kernel_size[1] - 1)  # "same" for dilation 2


@contextlib.contextmanager
def channels_last(*modules):
    """Run a backbone on channels-last tensors: oneDNN / cuDNN convolutions are faster in that layout (EfficientNet-
    Lite0 on 2 CPU cores: 1.4x, feature maps equal to 5e-6 relative; benchmarks/extraction_speed.py). The 4-D weights
    go back to the default layout afterwards: safetensors saves only contiguous tensors. Modules whose weights are
    not in the default layout to begin with are left as they are.

    The layout changes run outside inference mode even when the caller is in it (feature extraction is): a weight
    copied under `torch.inference_mode()` becomes an inference tensor, and every later gradient through the backbone
    (Grad-CAM, input x gradient, fine-tuning) would fail with "Inference tensors cannot be saved for backward"."""
    modules = [m for m in modules if m is not None]
    weights = [t for m in modules for t in (*m.parameters(), *m.buffers()) if t.dim() == 4]
    if not weights or not all(t.is_contiguous() for t in weights):
        yield False
        return
    with torch.inference_mode(False):
        for m in modules:
            m.to(memory_format=torch.channels_last)
    try:
        yield True
    finally:
        with torch.inference_mode(False):
            for m in modules:
                m.to(memory_format=torch.contiguous_format)
