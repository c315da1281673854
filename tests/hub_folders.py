"""Backbone folders laid out exactly as their Hub repositories, at tiny sizes, for the end-to-end family tests.

Each family copies a published repository's files: ``config.json`` with the published keys (the sizes shrunk so
that a run takes seconds; ``id2label`` the ImageNet-1k classes where the repository classifies ImageNet, or the test
data's classes for a fine-tuned head), the weights as the library saves them (``model.safetensors``:
``save_pretrained`` for transformers, ``timm.models.save_for_hf`` for timm; the Hub's older repositories also carry
a pickled ``pytorch_model.bin``, which is never read here), and the image processor file as published — none for
timm, whose preprocessing lives in config.json's ``pretrained_cfg``:

=============== ===================================================== ==========================================
family          repository copied                                     classifier head
=============== ===================================================== ==========================================
resnet          microsoft/resnet-50                                   ImageNet-1k (1000 classes)
convnext        facebook/convnext-tiny-224, fine-tuned layout         the test data's classes
vit             google/vit-base-patch16-224                           ImageNet-1k, on the CLS token
dinov2          facebook/dinov2-with-registers-small                  none (a feature extractor)
swin            microsoft/swin-tiny-patch4-window7-224, fine-tuned    the test data's classes
timm_cnn        timm/test_resnet.r160_in1k, fine-tuned (label_names)  the test data's classes
timm_vit        timm/test_vit.r160_in1k                               ImageNet-1k (names from timm's tables)
=============== ===================================================== ==========================================
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# The published preprocessor files (sizes shrunk to 64 px where the repository says 224).
CONVNEXT_STYLE_PROCESSOR = {  # microsoft/resnet-50 and facebook/convnext-tiny-224 publish this one
    "crop_pct": 0.875,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ConvNextFeatureExtractor",
    "image_mean": IMAGENET_MEAN,
    "image_std": IMAGENET_STD,
    "resample": 3,
    "size": 64,
}
VIT_PROCESSOR = {  # google/vit-base-patch16-224
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "size": 64,
}
SWIN_PROCESSOR = {  # microsoft/swin-tiny-patch4-window7-224
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": IMAGENET_MEAN,
    "image_std": IMAGENET_STD,
    "resample": 3,
    "size": 64,
}
DINOV2_PROCESSOR = {  # facebook/dinov2-with-registers-small (BitImageProcessor: shortest edge 256, crop 224)
    "crop_size": {"height": 64, "width": 64},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": IMAGENET_MEAN,
    "image_processor_type": "BitImageProcessor",
    "image_std": IMAGENET_STD,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 73},
}


def imagenet_labels() -> dict[str, str]:
    """id2label of the Hub's ImageNet-1k classifiers ("tench, Tinca tinca", ...), from timm's tables."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    descriptions = info.label_descriptions(as_dict=True)
    return {str(i): descriptions[s] for i, s in enumerate(info.label_names())}


def _labels(id2label: dict[str, str]) -> dict:
    # The Hub's label2id keeps the last class of a repeated name ("crane"), as json.dump of a dict does.
    return {"id2label": id2label, "label2id": {name: int(i) for i, name in id2label.items()}}


def published_config(family: str, classes: list[str]) -> dict:
    """config.json of the family's repository (published keys, tiny sizes)."""
    own = {str(i): name for i, name in enumerate(classes)}
    if family == "resnet":
        return {
            "architectures": ["ResNetForImageClassification"],
            "depths": [1, 1, 1, 1],
            "downsample_in_first_stage": False,
            "embedding_size": 8,
            "hidden_act": "relu",
            "hidden_sizes": [16, 32, 48, 64],
            **_labels(imagenet_labels()),
            "layer_type": "bottleneck",
            "model_type": "resnet",
            "num_channels": 3,
            "torch_dtype": "float32",
            "transformers_version": "4.18.0.dev0",
        }
    if family == "convnext":
        return {
            "architectures": ["ConvNextForImageClassification"],
            "depths": [1, 1, 1, 1],
            "drop_path_rate": 0.0,
            "hidden_act": "gelu",
            "hidden_sizes": [8, 16, 32, 64],
            **_labels(own),
            "image_size": 64,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "layer_scale_init_value": 1e-06,
            "model_type": "convnext",
            "num_channels": 3,
            "num_stages": 4,
            "patch_size": 4,
            "torch_dtype": "float32",
            "transformers_version": "4.15.0.dev0",
        }
    if family == "vit":
        return {
            "_name_or_path": "google/vit-base-patch16-224",
            "architectures": ["ViTForImageClassification"],
            "attention_probs_dropout_prob": 0.0,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "hidden_size": 32,
            **_labels(imagenet_labels()),
            "image_size": 64,
            "initializer_range": 0.02,
            "intermediate_size": 64,
            "layer_norm_eps": 1e-12,
            "model_type": "vit",
            "num_attention_heads": 2,
            "num_channels": 3,
            "num_hidden_layers": 2,
            "patch_size": 8,
            "qkv_bias": True,
            "transformers_version": "4.13.0.dev0",
        }
    if family == "dinov2":
        return {
            "apply_layernorm": True,
            "architectures": ["Dinov2WithRegistersModel"],
            "attention_probs_dropout_prob": 0.0,
            "drop_path_rate": 0.0,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "hidden_size": 16,
            "image_size": 64,
            "initializer_range": 0.02,
            "interpolate_antialias": True,
            "interpolate_offset": 0.0,
            "layer_norm_eps": 1e-06,
            "layerscale_value": 1.0,
            "mlp_ratio": 4,
            "model_type": "dinov2_with_registers",
            "num_attention_heads": 2,
            "num_channels": 3,
            "num_hidden_layers": 2,
            "num_register_tokens": 4,
            "out_features": ["stage2"],
            "out_indices": [2],
            "patch_size": 8,
            "qkv_bias": True,
            "reshape_hidden_states": True,
            "stage_names": ["stem", "stage1", "stage2"],
            "torch_dtype": "float32",
            "transformers_version": "4.48.0.dev0",
            "use_swiglu_ffn": False,
        }
    if family == "swin":
        return {
            "architectures": ["SwinForImageClassification"],
            "attention_probs_dropout_prob": 0.0,
            "depths": [1, 1, 1, 1],
            "drop_path_rate": 0.1,
            "embed_dim": 8,
            "encoder_stride": 32,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "hidden_size": 64,
            **_labels(own),
            "image_size": 64,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-05,
            "mlp_ratio": 4.0,
            "model_type": "swin",
            "num_channels": 3,
            "num_heads": [1, 1, 2, 2],
            "num_layers": 4,
            "patch_size": 4,
            "path_norm": True,
            "qkv_bias": True,
            "torch_dtype": "float32",
            "transformers_version": "4.19.0.dev0",
            "use_absolute_embeddings": False,
            "window_size": 2,
        }
    raise ValueError(family)


PROCESSORS = {
    "resnet": CONVNEXT_STYLE_PROCESSOR,
    "convnext": CONVNEXT_STYLE_PROCESSOR,
    "vit": VIT_PROCESSOR,
    "dinov2": DINOV2_PROCESSOR,
    "swin": SWIN_PROCESSOR,
}
TIMM_ARCHITECTURES = {"timm_cnn": "test_resnet", "timm_vit": "test_vit"}
FAMILIES = ["resnet", "convnext", "vit", "dinov2", "swin", "timm_cnn", "timm_vit"]
# Whose own classifier predicts the test data's classes (agreement is measured), and whose does not and why.
HEAD_PREDICTS_DATA_CLASSES = {"convnext", "swin", "timm_cnn"}
NO_HEAD = {"dinov2"}


def _write_transformers(folder: Path, family: str, classes: list[str], seed: int) -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    config_dict = published_config(family, classes)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    config = AutoConfig.from_pretrained(str(folder))
    torch.manual_seed(seed)
    has_head = config_dict["architectures"][0].endswith("ForImageClassification")
    model = (AutoModelForImageClassification if has_head else AutoModel).from_config(config)
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(scratch)  # weights as transformers writes them; config.json stays as published
        shutil.copy(os.path.join(scratch, "model.safetensors"), folder / "model.safetensors")
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSORS[family], indent=2, sort_keys=True))


def _write_timm(folder: Path, family: str, classes: list[str], seed: int) -> None:
    import timm
    import timm.models

    from training.real_backbone import _hub_config

    torch.manual_seed(seed)
    fine_tuned = family in HEAD_PREDICTS_DATA_CLASSES
    model = timm.create_model(
        TIMM_ARCHITECTURES[family], pretrained=False, num_classes=len(classes) if fine_tuned else 1000
    )
    extra = {"label_names": list(classes)} if fine_tuned else None
    timm.models.save_for_hf(model, folder, model_config=extra, safe_serialization=True)  # no processor file
    exported = json.loads((folder / "config.json").read_text())
    config = _hub_config(exported)
    if fine_tuned:
        config["label_names"] = exported["label_names"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def write_hub_folder(folder, family: str, classes: list[str], seed: int = 0) -> Path:
    """The family's repository at tiny size in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    (_write_timm if family in TIMM_ARCHITECTURES else _write_transformers)(folder, family, classes, seed)
    return folder


def hub_repo_id(family: str) -> str:
    return {
        "resnet": "microsoft/resnet-50",
        "convnext": "facebook/convnext-tiny-224",
        "vit": "google/vit-base-patch16-224",
        "dinov2": "facebook/dinov2-with-registers-small",
        "swin": "microsoft/swin-tiny-patch4-window7-224",
        "timm_cnn": "timm/test_resnet.r160_in1k",
        "timm_vit": "timm/test_vit.r160_in1k",
    }[family]


def install_in_hub_cache(folder, cache: Path, repo_id: str, commit: str = "0" * 40) -> None:
    """Put ``folder`` in a huggingface_hub cache as ``repo_id``'s snapshot, so that the Hub id loads offline
    (``HF_HUB_OFFLINE=1``) through the same code as a download would."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
