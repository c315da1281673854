"""Configuration of InfoDisent (Struski, Rymarczyk, Tabor, arXiv 2409.10329).

The config holds three things:

* the frozen backbone's own config (any Hugging Face vision model config, kept nested and intact so that the
  backbone can be rebuilt exactly and its pretrained weights loaded into it),
* the label maps (``id2label`` / ``label2id``, as for every ``...ForImageClassification`` model),
* the method's hyper-parameters (how the rotation U is parametrised, the Gumbel-softmax relaxation of the sparse
  pooling used in training, the constraint that keeps the classifier nonnegative, and which backbone layer is
  explained).

Words: the *rotation* is U; a *channel* is one of the D rotated channels (a row of U); a *prototype* is one pole
(+ or -) of one channel, so there are 2 D prototypes and each class weighs both poles of a channel with the same
W_kc (pruning removes a channel from a class: both its prototypes).

This file is copied next to the weights when a model is saved, so it imports nothing but transformers.
"""

import warnings

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

# Where the saved model's auto classes find their code when loaded with ``trust_remote_code=True`` (the files
# `save_pretrained` copies next to the weights). Part of every config, so `save_pretrained` needs no override.
AUTO_MAP = {
    "AutoConfig": "configuration_infodisent.InfoDisentConfig",
    "AutoModel": "modeling_infodisent.InfoDisentForImageClassification",
    "AutoModelForImageClassification": "modeling_infodisent.InfoDisentForImageClassification",
}
ROTATIONS = ("cayley", "matrix_exp", "riemannian", "identity")
POOLINGS = ("max", "avg")
CLASSIFIER_CONSTRAINTS = ("softplus", "relu", "none")


class InfoDisentConfig(PretrainedConfig):
    r"""
    Configuration for [`InfoDisentForImageClassification`].

    Args:
        backbone_config (`PretrainedConfig` or `dict`, *optional*):
            Config of the frozen backbone: any Hugging Face vision model (ResNet, ConvNeXt, ViT, DeiT, Swin, DINOv2,
            `timm_wrapper`, ...). Defaults to a ResNet-50 config.
        feature_layer (`int`, *optional*, defaults to -1):
            Which backbone layer is explained. `-1` is the backbone's `last_hidden_state` (the last stage of a CNN,
            the last — normalised — token layer of a transformer); any other value indexes the backbone's
            `hidden_states` tuple.
        dilate_last_stage (`bool`, *optional*, defaults to `False`):
            Run the backbone's last stage at stride 1 with dilation 2 instead of striding (weights unchanged; ResNet
            backbones): a 2× finer feature grid, so every prototype map too (7×7 -> 14×14 at 224 px), for about 4×
            the last stage's compute. Measured on the known-answer benchmark: the prototype maps point at the
            decisive part more often at the same accuracy (docs/faithfulness.md).
        rotation_parametrization (`str`, *optional*, defaults to `"cayley"`):
            How U is kept orthogonal while it is trained (called `rotation` up to version 0.1: that key still loads,
            with a `FutureWarning`). `"cayley"`: U = (I - A)⁻¹(I + A) of the skew-symmetric
            A = G - Gᵀ of a free generator G, computed in float64 (one LU solve per step; at batch 256 a head step
            costs about what it costs with a fixed U). `"matrix_exp"`: U = exp(A) in float64 (the paper's choice and
            the earlier default; 2-20x slower steps at D = 768-2048). `"riemannian"`: U itself is the parameter,
            the optimiser steps in the Lie algebra and U is retracted after every step (no float64 at all; needs
            `model.head.rotation.attach(optimizer)`). `"identity"`: no rotation (the ablation U = I). Checkpoints
            keep loading with the parametrisation they were saved with.
        pooling (`str`, *optional*, defaults to `"max"`):
            `"max"` is InfoDisent's sparse pooling (per channel, the strongest positive and strongest negative
            activation). `"avg"` is the ablation that averages ReLU(±J) over positions instead.
        gumbel_temperature (`float`, *optional*, defaults to 1.0):
            Temperature of the Gumbel-softmax relaxation of the max over positions, used in train mode only. The
            training script anneals it; lower is closer to the exact max.
        gumbel_noise (`bool`, *optional*, defaults to `True`):
            Whether train-mode pooling adds Gumbel noise (a stochastic choice of the max location) or is a plain
            softmax relaxation.
        classifier_constraint (`str`, *optional*, defaults to `"softplus"`):
            How the nonnegative classifier W is obtained from its free parameter: `"softplus"` (smooth, the
            default), `"relu"` (exact zeros possible), or `"none"` (unconstrained W: the ablation).
        original_head (`bool`, *optional*, defaults to `False`):
            Whether the model carries the backbone's own classifier (global average pooling of the explained map and
            one linear layer, as in `ResNetForImageClassification`) so that every explanation says what the
            original classifier decides. `from_backbone` sets it when the backbone has such a head for the same
            labels.
    """

    model_type = "infodisent"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config=None,
        feature_layer: int = -1,
        dilate_last_stage: bool = False,
        rotation_parametrization: str = "cayley",
        pooling: str = "max",
        gumbel_temperature: float = 1.0,
        gumbel_noise: bool = True,
        classifier_constraint: str = "softplus",
        original_head: bool = False,
        **kwargs,
    ):
        if "rotation" in kwargs:  # the 0.1 name, also the key of configs saved by 0.1
            warnings.warn(
                "InfoDisentConfig: `rotation` is renamed `rotation_parametrization` (the word rotation now means U "
                "itself: `model.rotation_matrix()`); the old key still works. Re-save the model to update it.",
                FutureWarning,
                stacklevel=2,
            )
            rotation_parametrization = kwargs.pop("rotation")
        # `initializer_range` (saved by 0.1) never did anything: U and W have their own initialisation.
        kwargs.pop("initializer_range", None)
        if backbone_config is None:
            backbone_config = CONFIG_MAPPING["resnet"]()
        elif isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            model_type = backbone_config.pop("model_type", None)
            if model_type is None:
                raise ValueError("`backbone_config` given as a dict must contain its `model_type` (e.g. 'resnet').")
            if model_type not in CONFIG_MAPPING:
                raise ValueError(f"Unknown backbone model_type {model_type!r}: transformers has no config for it.")
            backbone_config = CONFIG_MAPPING[model_type](**backbone_config)
        elif not isinstance(backbone_config, PretrainedConfig):
            raise TypeError(f"`backbone_config` must be a config or a dict, got {type(backbone_config).__name__}.")
        for name, value, allowed in (
            ("rotation_parametrization", rotation_parametrization, ROTATIONS),
            ("pooling", pooling, POOLINGS),
            ("classifier_constraint", classifier_constraint, CLASSIFIER_CONSTRAINTS),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
        if gumbel_temperature <= 0:
            raise ValueError(f"`gumbel_temperature` must be > 0, got {gumbel_temperature}.")

        self.backbone_config = backbone_config
        if not isinstance(dilate_last_stage, bool):
            raise TypeError(f"`dilate_last_stage` must be True or False, got {dilate_last_stage!r}.")
        if dilate_last_stage and backbone_config.model_type != "resnet":
            raise ValueError(
                f"`dilate_last_stage` is implemented for ResNet backbones (model_type 'resnet'), got "
                f"{backbone_config.model_type!r}."
            )
        self.feature_layer = feature_layer
        self.dilate_last_stage = dilate_last_stage
        self.rotation_parametrization = rotation_parametrization
        self.pooling = pooling
        self.gumbel_temperature = float(gumbel_temperature)
        self.gumbel_noise = gumbel_noise
        self.classifier_constraint = classifier_constraint
        self.original_head = bool(original_head)
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        super().__init__(**kwargs)

    @property
    def rotation(self) -> str:
        """Deprecated name of `rotation_parametrization`."""
        warnings.warn("`config.rotation` is renamed `config.rotation_parametrization`.", FutureWarning, stacklevel=2)
        return self.rotation_parametrization

    @rotation.setter
    def rotation(self, value: str) -> None:
        warnings.warn("`config.rotation` is renamed `config.rotation_parametrization`.", FutureWarning, stacklevel=2)
        self.rotation_parametrization = value


__all__ = ["InfoDisentConfig"]
