"""InfoDisent: explaining a pretrained image classifier by information disentanglement.

Struski, Rymarczyk, Tabor, "InfoDisent: Explainability of Image Classification Models by Information
Disentanglement", arXiv 2409.10329. The forward pass, top to bottom:

    pixel_values (B, 3, H, W)
      -> frozen backbone, last spatial feature map  I (B, D, h, w)       [InfoDisentBackbone]
      -> orthogonal rotation of the channels        J = U I              [InfoDisentRotation]
      -> sparse pooling, per channel c:  pos_c = max ReLU(J_c),  neg_c = max ReLU(-J_c)   [InfoDisentPooling]
      -> nonnegative classifier          logits = W (pos - neg) + b,  W >= 0               [InfoDisentClassifier]

so that ``logit_k = b_k + sum_c W_kc pos_c - sum_c W_kc neg_c`` exactly: every class logit is the sum of the
contributions of the prototypes (one prototype = one pole, + or -, of one rotated channel) plus a bias.
``explain()`` returns that decomposition as `Explanation` objects.

This file holds the method; its siblings what surrounds it: `explanation.py` (the explanation types and their
assembly), `rotation.py` (how U is computed and trained), `relaxation.py` (the train-mode pooling), `backbones.py`
(backbone loading and heuristics), `checkpoint.py` (strict loading), `defaults.py`. They are imported relatively and
import only torch, numpy and transformers, so `save_pretrained` copies them next to the weights and
``trust_remote_code=True`` loading works without this package installed.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbones import (
    config_num_features,
    dilate_last_stage,
    find_original_head,
    input_channels,
    load_backbone_weights,
    measure_num_features,
    model_labels,
    resolve_backbone,
    token_grid,
)
from .checkpoint import check_loading_info, check_weight_files, load_strictly
from .configuration_infodisent import InfoDisentConfig
from .defaults import EXPLAIN_RELEVANCE_TOP_K, EXPLAIN_TOP_K
from .explanation import Explanation, Prototype, add_relevance, build_explanations, resolve_targets, upsample_map
from .relaxation import relaxed_max
from .rotation import (
    NEWTON_SCHULZ_MAX_ANGLE,
    RETRACTION_TOLERANCE,
    CayleyMap,
    RotateLieGradient,
    attach_riemannian_step,
    initial_generator_std,
    retract,
    rotate_tokens,
)

# The names these moved to siblings had here (scripts and tests import them from this module).
_CayleyMap, _check_weight_files, _check_loading_info = CayleyMap, check_weight_files, check_loading_info


@dataclass
class InfoDisentImageClassifierOutput(ModelOutput):
    """
    Output of [`InfoDisentForImageClassification`].

    Args:
        loss: cross-entropy, when `labels` are given.
        logits: (B, K) class scores, `(pos - neg) @ W.T + b`.
        pos_activations / neg_activations: (B, D) the pooled strength of each channel's positive / negative pole.
        pos_locations / neg_locations: (B, D, 2) (row, col) in the feature grid where each pole peaks.
        feature_grid: (h, w) of the backbone's feature map.
        original_logits: (B, K) the backbone's own classifier on the same map, when the model carries it
            (`config.original_head`).
        hidden_states: the backbone's own hidden states, with `output_hidden_states=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pos_activations: torch.FloatTensor | None = None
    neg_activations: torch.FloatTensor | None = None
    pos_locations: torch.LongTensor | None = None
    neg_locations: torch.LongTensor | None = None
    feature_grid: tuple[int, int] | None = None
    original_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------
# The frozen backbone
# ----------------------------------------------------------------------------------------------------------------


class InfoDisentBackbone(nn.Module):
    """Wraps any Hugging Face vision model (`AutoModel.from_config(backbone_config)`) and returns its last spatial
    feature map (B, D, h, w), whatever the family:

    * CNNs (ResNet, ConvNeXt, RegNet, timm CNNs via `TimmWrapperModel`): the output is already (B, D, h, w).
    * Plain vision transformers (ViT, DeiT, DINOv2, timm ViTs): (B, L, D) tokens; the leading CLS / register /
      distillation tokens are dropped and the patch tokens reshaped to the grid (H // p, W // p).
    * Hierarchical transformers (Swin): tokens of the last stage reshaped to the grid after patch merging.

    The backbone is frozen: its parameters never require grad and it is kept in eval mode (see
    `InfoDisentForImageClassification.train`), so batch-norm statistics never move.
    """

    def __init__(self, config: InfoDisentConfig):
        super().__init__()
        bconfig = config.backbone_config
        self.model = AutoModel.from_config(bconfig)
        self.model_type = bconfig.model_type
        params = inspect.signature(self.model.forward).parameters
        if "pixel_values" not in params:
            raise ValueError(
                f"Backbone {type(self.model).__name__} (model_type={bconfig.model_type!r}) is not an image model: its "
                "forward takes no `pixel_values`, so it has no spatial feature map to explain."
            )
        self._accepts_interpolate = "interpolate_pos_encoding" in params
        self.feature_layer = config.feature_layer
        if getattr(config, "dilate_last_stage", False):  # in the config, so a saved model loads dilated again
            dilate_last_stage(self.model)
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def num_channels(self) -> int:
        """Colour channels the backbone takes (3, or 1 for a grayscale backbone)."""
        return input_channels(self.model)

    def infer_num_features(self) -> int | None:
        """Channel count D of the explained map, read from the config (None when it cannot be read)."""
        return config_num_features(self.model) if self.feature_layer == -1 else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the explained feature map I (B, D, h, w)."""
        return self.features_and_hidden_states(pixel_values)[0]

    def features_and_hidden_states(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(I, the backbone's own `hidden_states` when `output_hidden_states`, else None)."""
        kwargs = {"interpolate_pos_encoding": True} if self._accepts_interpolate else {}
        want_hidden = self.feature_layer != -1 or output_hidden_states
        outputs = self.model(pixel_values, output_hidden_states=want_hidden, return_dict=True, **kwargs)
        if self.feature_layer != -1:
            states = getattr(outputs, "reshaped_hidden_states", None) or outputs.hidden_states
            features = states[self.feature_layer]
        else:
            features = outputs.last_hidden_state
        hidden_states = outputs.hidden_states if output_hidden_states else None
        if features.ndim == 4:
            return features, hidden_states
        if features.ndim == 3:
            height, width = pixel_values.shape[-2:]
            h, w = token_grid(self.model, height, width, features.shape[1])
            # Leading tokens beyond the grid are CLS / register / distillation tokens: they are not places.
            patches = features[:, features.shape[1] - h * w :, :]
            return patches.transpose(1, 2).reshape(features.shape[0], features.shape[2], h, w), hidden_states
        raise ValueError(
            f"Backbone {type(self.model).__name__} (model_type={self.model_type!r}) gives an output of shape "
            f"{tuple(features.shape)}, not a spatial feature map (B, D, h, w) or a token grid (B, L, D)."
        )


# ----------------------------------------------------------------------------------------------------------------
# The InfoDisent head: rotation, sparse pooling, nonnegative classifier
# ----------------------------------------------------------------------------------------------------------------


class InfoDisentRotation(nn.Module):
    """The orthogonal channel rotation U (D x D); `parametrization` (`config.rotation_parametrization`) says how U
    is kept orthogonal while it is trained (the machinery is in `rotation.py`):

    * `"cayley"` (the default) / `"matrix_exp"`: the Cayley map (I − A)⁻¹(I + A) or U = exp(A) of the
      skew-symmetric A = G − Gᵀ of a free `generator` G, computed in float64 in every training step (orthogonal
      by construction, to ~1e-8). The Cayley map costs one D x D inverse forward and two D x D products in the
      GEMMs' dtype backward (`CayleyMap`); `matrix_exp` is 2–20x slower at D = 768–2048.
    * `"riemannian"`: U itself is the parameter `weight`. In train mode its gradient is the gradient with respect
      to the generator of the next rotation step (`RotateLieGradient`); after every optimiser step U is moved by
      that step and re-orthonormalised (`retract`; max |UᵀU - I| stays ~1e-6 in float32). The optimiser must be
      attached once: `rotation.attach(optimizer)` (the training script does it).
    * `"identity"`: no rotation (the ablation U = I).

    For the generator parametrisations U is computed once in eval mode and cached until G changes
    (`torch.nn.utils.parametrizations.orthogonal` is not used: its `.item()` check fails on the meta device).
    `matmul_dtype` (None: the tokens' dtype) is the dtype of the rotation GEMMs in train mode only (the training
    script may set bfloat16); U is still computed in float64, and eval mode always uses float32."""

    newton_schulz_max_angle = NEWTON_SCHULZ_MAX_ANGLE
    retraction_tolerance = RETRACTION_TOLERANCE

    def __init__(self, dim: int, parametrization: str):
        super().__init__()
        self.dim = dim
        self.parametrization = parametrization
        self.generator = None
        self.weight = None
        if parametrization == "riemannian":
            self.weight = nn.Parameter(torch.eye(dim))
        elif parametrization != "identity":
            self.generator = nn.Parameter(torch.zeros(dim, dim))
        self.matmul_dtype: torch.dtype | None = None
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._hooks: list = []

    def _compute(self) -> torch.Tensor:
        # In float64: in float32 the error of exp / solve grows with the generator's norm and UᵀU drifts from I by
        # ~1e-5 once training has moved G; in float64 U stays orthogonal to float32 precision.
        if self.parametrization == "cayley":
            grad_dtype = self.matmul_dtype if self.training and self.matmul_dtype is not None else self.generator.dtype
            return CayleyMap.apply(self.generator, grad_dtype)
        skew = (self.generator - self.generator.T).double()
        return torch.linalg.matrix_exp(skew).to(self.generator.dtype)

    def matrix(self) -> torch.Tensor:
        """U (D, D); in eval mode computed once and cached until the generator changes."""
        if self.weight is not None:
            return self.weight
        if self.generator is None:
            return torch.eye(self.dim)
        if self.training:
            self._cache = None
            return self._compute()
        key = (self.generator.data_ptr(), self.generator._version, self.generator.device, self.generator.dtype)
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self._compute()
            self._cache_key = key
        return self._cache

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D): rotate the channel vector at every position, J = U I, as one (B·N, D) x (D, D)
        matrix product (position-major layout: one large GEMM instead of B thin ones)."""
        dtype = self.matmul_dtype if self.training and self.matmul_dtype is not None else tokens.dtype
        if self.weight is not None:
            if self.training and torch.is_grad_enabled() and self.weight.requires_grad:
                return RotateLieGradient.apply(tokens, self.weight, dtype)
            u = self.weight
        elif self.generator is None:
            return tokens
        else:
            u = self.matrix()
        return rotate_tokens(tokens, u, dtype)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Make every `optimizer.step()` keep U orthogonal (`"riemannian"` only; a no-op otherwise)."""
        if self.weight is None:
            return
        for handle in self._hooks:
            handle.remove()
        self._hooks = attach_riemannian_step(self.weight, optimizer, self.rotation_step)

    @classmethod
    def rotation_step(cls, u: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """U moved by the skew generator `step` and kept orthogonal (see `rotation.retract`)."""
        return retract(u, step, cls.newton_schulz_max_angle, cls.retraction_tolerance)


class InfoDisentPooling(nn.Module):
    """Sparse pooling: each channel keeps only its strongest positive and strongest negative activation.

    Eval: the exact max over positions of ReLU(J_c) and ReLU(-J_c), with the argmax location.
    Train: a Gumbel-softmax relaxation over positions (`relaxation.relaxed_max`): a hard max sends gradient to one
    position only, the relaxation spreads it over the likely maxima, and tends to the exact max as tau -> 0.
    """

    def __init__(self, config: InfoDisentConfig):
        super().__init__()
        self.mode = config.pooling
        self.temperature = config.gumbel_temperature
        self.noise = config.gumbel_noise
        # Per-row seeds of the Gumbel noise (int64, one per row of the next train-mode batch), or None: the global
        # RNG. Set by the training script so that 1 and N processes, or a resumed run, draw the same noise.
        self.noise_seeds: torch.Tensor | None = None

    def forward(self, rotated: torch.Tensor):
        """rotated J as (B, N, D) -> pos, neg (B, D) and the flat position index of each pole's peak (B, D)."""
        # max_n ReLU(J) = ReLU(max_n J): one max and one min over positions, no ReLU'd copies of J.
        top, pos_index = rotated.max(dim=1)
        bottom, neg_index = rotated.min(dim=1)
        pos, neg = top.clamp_min(0), (-bottom).clamp_min(0)
        if self.mode == "avg":
            pos, neg = F.relu(rotated).mean(dim=1), F.relu(-rotated).mean(dim=1)
        elif self.training:
            relax = dict(temperature=self.temperature, noise=self.noise, seeds=self.noise_seeds)
            pos = relaxed_max(F.relu(rotated), pos, pole=0, **relax)
            neg = relaxed_max(torch.neg(rotated).relu_(), neg, pole=1, **relax)
        return pos, neg, pos_index, neg_index


class InfoDisentClassifier(nn.Module):
    """logits = W v + b with W >= 0 by construction: W = mask * softplus(V) (or relu(V), or V unconstrained for the
    ablation). `prototype_mask` (saved with the weights; the key keeps its 0.1 name) holds exact zeros for pruned
    (class, channel) pairs — a pruned channel takes both its prototypes (poles) out of the class — so a pruned
    weight is zero in every forward pass, after any optimiser step and after save / load."""

    def __init__(self, num_features: int, num_labels: int, constraint: str):
        super().__init__()
        self.constraint = constraint
        self.weight_raw = nn.Parameter(torch.zeros(num_labels, num_features))
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.register_buffer("prototype_mask", torch.ones(num_labels, num_features))

    @property
    def weight(self) -> torch.Tensor:
        if self.constraint == "softplus":
            w = F.softplus(self.weight_raw)
        elif self.constraint == "relu":
            w = F.relu(self.weight_raw)
        else:
            w = self.weight_raw
        return w * self.prototype_mask

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return F.linear(v, self.weight, self.bias)


class InfoDisentHead(nn.Module):
    """Rotation + sparse pooling + nonnegative classifier on a feature map (B, D, h, w). The training script calls
    this same module on cached feature maps, so there is exactly one implementation of the method."""

    def __init__(self, config: InfoDisentConfig, num_features: int):
        super().__init__()
        self.rotation = InfoDisentRotation(num_features, config.rotation_parametrization)
        self.pooling = InfoDisentPooling(config)
        self.classifier = InfoDisentClassifier(num_features, config.num_labels, config.classifier_constraint)

    def rotate(self, feature_map: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> J (B, D, h, w)."""
        b, d, h, w = feature_map.shape
        return self.rotation(feature_map.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, d, h, w)

    def forward(self, feature_map: torch.Tensor, labels: torch.Tensor | None = None) -> InfoDisentImageClassifierOutput:
        b, d, h, w = feature_map.shape
        rotated = self.rotation(feature_map.flatten(2).transpose(1, 2))
        return self._pool_and_classify(rotated, (h, w), labels)

    def forward_rotated(
        self, rotated: torch.Tensor, labels: torch.Tensor | None = None
    ) -> InfoDisentImageClassifierOutput:
        """Pooling and classifier on an already rotated map J (B, D, h, w)."""
        return self._pool_and_classify(rotated.flatten(2).transpose(1, 2), tuple(rotated.shape[-2:]), labels)

    def _pool_and_classify(
        self, rotated: torch.Tensor, grid: tuple[int, int], labels
    ) -> InfoDisentImageClassifierOutput:
        w = grid[1]
        pos, neg, pos_index, neg_index = self.pooling(rotated)
        logits = self.classifier(pos - neg)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return InfoDisentImageClassifierOutput(
            loss=loss,
            logits=logits,
            pos_activations=pos,
            neg_activations=neg,
            pos_locations=torch.stack((pos_index // w, pos_index % w), dim=-1),
            neg_locations=torch.stack((neg_index // w, neg_index % w), dim=-1),
            feature_grid=tuple(grid),
        )


class OriginalClassifier(nn.Module):
    """The backbone's own linear classifier, held as buffers: saved and loaded with the weights, never trained (no
    optimiser sees it, whatever `requires_grad` loading sets on parameters)."""

    def __init__(self, num_features: int, num_labels: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_labels, num_features))
        self.register_buffer("bias", torch.zeros(num_labels))


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


class InfoDisentPreTrainedModel(PreTrainedModel):
    config_class = InfoDisentConfig
    base_model_prefix = "infodisent"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module):
        # The backbone (a PreTrainedModel) is initialised by its own `_init_weights`; only InfoDisent parts are here.
        if isinstance(module, InfoDisentRotation) and module.generator is not None:
            # U starts as a random rotation far from I, not U ≈ I: with U ≈ I and W ≥ 0 the untrained class map
            # w·U·I(x) ≈ Σ_c w_c I_c(x) of non-negative backbone channels is the object's silhouette whatever W is,
            # so an untrained head "explains" as well as a trained one (the model-randomisation check failed:
            # Spearman 0.64). The eigen-angles of A = G − Gᵀ with G ~ N(0, s²) fill ±2s·sqrt(2D) (semicircle law);
            # the scale puts E[cos θ] = E[diag U] = 0 for the map in use (`initial_generator_std`).
            init.normal_(module.generator, mean=0.0, std=initial_generator_std(module.dim, module.parametrization))
        elif isinstance(module, InfoDisentRotation) and module.weight is not None:
            # The "riemannian" U stores the rotation itself: the same random rotation exp(G − Gᵀ) as the generator
            # parametrisations draw (float64). Skipped for a U that from_pretrained loads (the float64 matrix_exp
            # costs seconds at D = 2048).
            if getattr(module.weight, "_is_hf_initialized", False) or module.weight.device.type == "meta":
                return
            g = torch.empty_like(module.weight).normal_(0.0, initial_generator_std(module.dim))
            init.copy_(module.weight, torch.linalg.matrix_exp((g - g.T).double()).to(module.weight.dtype))
        elif isinstance(module, InfoDisentClassifier):
            # Small positive W, |N(0, 1/sqrt(D))|, written through the inverse of the constraint.
            num_features = module.weight_raw.shape[1]
            w0 = torch.randn_like(module.weight_raw).abs_().mul_(1.0 / math.sqrt(num_features)).add_(1e-3)
            if module.constraint == "softplus":
                w0 = w0 + torch.log(-torch.expm1(-w0))  # softplus^-1
            init.copy_(module.weight_raw, w0)
            init.zeros_(module.bias)
            init.ones_(module.prototype_mask)


class InfoDisentForImageClassification(InfoDisentPreTrainedModel):
    """A frozen pretrained backbone explained by InfoDisent (see the module docstring).

    Build one from any Hugging Face vision backbone with [`from_backbone`], run it like any image classifier, and
    call [`explain`] to get the exact per-prototype decomposition of a class logit.
    """

    def __init__(self, config: InfoDisentConfig, backbone: InfoDisentBackbone | None = None):
        super().__init__(config)
        # `backbone`: an already built (and loaded) adapter, so from_backbone does not build the backbone twice.
        self.backbone = backbone if backbone is not None else InfoDisentBackbone(config)
        num_features = getattr(config, "num_features", None) or self.backbone.infer_num_features()
        if num_features is None:
            raise ValueError(
                f"Cannot tell the channel count of backbone layer {config.feature_layer} of "
                f"{config.backbone_config.model_type!r}; use InfoDisentForImageClassification.from_backbone(...), "
                "which measures it, or set `num_features` in the config."
            )
        config.num_features = int(num_features)
        self.head = InfoDisentHead(config, config.num_features)
        # The backbone's own classifier (avg-pool + linear on the explained map), frozen: it only reports what the
        # original model decides, it is never trained here.
        self.original_classifier = (
            OriginalClassifier(config.num_features, config.num_labels) if config.original_head else None
        )
        self.post_init()

    # -- the public contract ------------------------------------------------------------------------------------

    def rotation_matrix(self) -> torch.Tensor:
        """U (D, D), the orthogonal rotation actually applied (computed once in eval mode, then cached)."""
        return self.head.rotation.matrix()

    @property
    def rotation(self) -> torch.Tensor:
        """Deprecated: `rotation_matrix()` (`model.rotation` read like a stored tensor but was recomputed)."""
        warnings.warn("`model.rotation` is deprecated: use `model.rotation_matrix()`.", FutureWarning, stacklevel=2)
        return self.rotation_matrix()

    @property
    def classifier_weight(self) -> torch.Tensor:
        """W (K, D), the nonnegative (and, after pruning, sparse) classifier weights actually used."""
        return self.head.classifier.weight

    @property
    def classifier_bias(self) -> torch.Tensor:
        """b (K,)."""
        return self.head.classifier.bias

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics and dropout stay as pretrained
        return self

    def set_gumbel_temperature(self, temperature: float) -> None:
        """Temperature of the train-mode relaxation (the training script anneals it)."""
        if temperature <= 0:
            raise ValueError(f"Gumbel temperature must be > 0, got {temperature}.")
        self.head.pooling.temperature = float(temperature)
        self.config.gumbel_temperature = float(temperature)

    @torch.no_grad()
    def reset_head(self, seed: int) -> InfoDisentForImageClassification:
        """Re-initialise the head as a new model draws it — the rotation U (its generator, or the "riemannian" U
        itself), the classifier W and the bias b — and reset the pruning mask to all ones, deterministically for
        `seed` (the same seed gives the same tensors; the caller's random state is left as it was). The backbone and
        the original classifier are untouched. The model-randomisation control of an audit: explanations that do
        not change when the head is re-drawn do not come from what the head learnt.

        `_init_weights` alone is not enough after `from_pretrained`: transformers flags every loaded tensor
        `_is_hf_initialized`, and its `init.*` functions then leave it as it is (the trained pruning mask stayed)."""
        head = self.head
        tensors = [
            t
            for m in (head.rotation, head.classifier)
            for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))
        ]
        for t in tensors:
            if hasattr(t, "_is_hf_initialized"):
                del t._is_hf_initialized
        device = next(iter(tensors), torch.empty(0)).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            self._init_weights(head.rotation)
            self._init_weights(head.classifier)
        head.rotation._cache = None  # the eval-mode U is recomputed from the new generator
        return self

    def _check_pixel_values(self, pixel_values) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must have shape (batch, channels, height, width); got {pixel_values.ndim} dimensions "
                f"{tuple(pixel_values.shape)}. For one image, add a batch dimension: pixel_values[None]."
            )
        expected = self.backbone.num_channels
        if pixel_values.shape[1] != expected:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the backbone expects {expected} "
                f"(shape {tuple(pixel_values.shape)}). Use the model's image processor, which converts images to RGB."
            )

    def extract_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's feature map I (B, D, h, w) — what the training script caches."""
        self._check_pixel_values(pixel_values)
        return self.backbone(pixel_values)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,  # what pipelines and the Trainer may pass along (e.g. num_items_in_batch); nothing InfoDisent uses
    ) -> InfoDisentImageClassifierOutput | tuple:
        """`output_hidden_states=True` adds the backbone's own hidden states (`hidden_states`)."""
        if pixel_values is None:
            raise ValueError("InfoDisentForImageClassification needs `pixel_values`.")
        if output_attentions:
            raise ValueError("InfoDisentForImageClassification has no attentions to output (output_attentions=True).")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        self._check_pixel_values(pixel_values)
        features, hidden_states = self.backbone.features_and_hidden_states(pixel_values, output_hidden_states)
        output = self.head(features, labels=labels)
        output.original_logits = self.original_logits(features)
        output.hidden_states = hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def original_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        """The backbone's own classifier on the feature map I (B, D, h, w): (B, K), or None when the model has none."""
        if self.original_classifier is None:
            return None
        return F.linear(features.mean(dim=(2, 3)), self.original_classifier.weight, self.original_classifier.bias)

    # -- explanations -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def explain(
        self,
        pixel_values: torch.Tensor,
        target: int | list[int] | torch.Tensor | None = None,
        top_k: int | None = EXPLAIN_TOP_K,
        relevance_top_k: int = EXPLAIN_RELEVANCE_TOP_K,
        relevance: int | None = None,
    ) -> list[Explanation]:
        """Explain one class logit per image: its prototypes (channel poles) ranked by |contribution|.

        Args:
            pixel_values: (B, C, H, W) preprocessed images.
            target: class to explain (one int for all images, or one per image); default the predicted class.
            top_k: keep only the `top_k` strongest prototypes (the rest is summed in `Explanation.residual`);
                `None` keeps every prototype with a nonzero contribution, so `bias + sum(contributions) == logit`.
            relevance_top_k: also give the `relevance_top_k` strongest positive prototypes of each image their
                pixel-level `Prototype.relevance` map (one backward pass through the backbone per rank; see
                `explanation.add_relevance`). The command line uses `defaults.SHOWN_PROTOTYPES`.
            relevance: deprecated name of `relevance_top_k` (`Prototype.relevance` is the map, this is a count).

        Runs in eval mode (exact max pooling) whatever the model's mode, and restores the mode afterwards.
        """
        if relevance is not None:
            warnings.warn("explain(relevance=k) is renamed explain(relevance_top_k=k).", FutureWarning, stacklevel=3)
            relevance_top_k = relevance
        was_training = self.training
        self.eval()
        try:
            features = self.extract_features(pixel_values)
            rotated = self.head.rotate(features)
            out = self.head.forward_rotated(rotated)
            explanations = build_explanations(
                out,
                rotated,
                self.classifier_weight,
                self.classifier_bias,
                resolve_targets(target, out.logits, pixel_values.shape[0]),
                self.config.id2label,
                tuple(pixel_values.shape[-2:]),
                top_k=top_k,
                original=self.original_logits(features),
            )
            if relevance_top_k:
                add_relevance(self, pixel_values, explanations, int(relevance_top_k))
        finally:
            self.train(was_training)
        return explanations

    # -- building and saving ------------------------------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike | PretrainedConfig | PreTrainedModel,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        keep_original_head: bool | None = None,
        **config_kwargs,
    ) -> InfoDisentForImageClassification:
        """A fresh InfoDisent model on top of a pretrained backbone.

        Args:
            backbone: a Hub id or local folder of any Hugging Face vision model (a `...ForImageClassification`
                checkpoint or a timm model with classes included: its head is dropped), a config (random backbone
                weights), or a model instance; a name is loaded and then taken apart exactly as that instance.
            id2label: the classes InfoDisent will predict. Defaults to the backbone's own head's labels when it has one.
            keep_original_head: keep the backbone's own classifier (average pool + linear) inside the model, so that
                every `Explanation` says what the original classifier decides. None: when its label names are
                `id2label`'s (generic `LABEL_i` names say nothing about which classes they are: not kept); True: the
                caller vouches that it predicts `id2label`'s classes in that order (the training script's
                `--backbone_head_matches_labels`); False: never. Either way the head must have as many outputs and
                reproduce the original model's logits from the average-pooled map.
            config_kwargs: InfoDisent hyper-parameters (see `InfoDisentConfig`).

        The backbone's pretrained weights are loaded bit-identically; the rotation and classifier are freshly
        initialised.
        """
        bconfig, weights, head_model = resolve_backbone(backbone)
        id2label, label2id = model_labels(bconfig, head_model, id2label, label2id)
        bconfig = bconfig.__class__.from_dict(bconfig.to_dict())  # a private copy
        config = InfoDisentConfig(backbone_config=bconfig, id2label=id2label, label2id=label2id, **config_kwargs)
        backbone_adapter = InfoDisentBackbone(config)
        if weights is not None:
            load_backbone_weights(backbone_adapter.model, weights)
        config.num_features = measure_num_features(backbone_adapter, bconfig)
        head = None
        if keep_original_head is not False:
            head = find_original_head(
                head_model, backbone_adapter, bconfig, id2label, config.num_features, keep_original_head is None
            )
        config.original_head = head is not None
        model = cls(config, backbone=backbone_adapter)
        if head is not None:
            with torch.no_grad():
                model.original_classifier.weight.copy_(head.weight)
                model.original_classifier.bias.copy_(head.bias)
        model.train(False)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, stricter: safetensors only (a pickle is never opened), and a checkpoint
        that does not fill the model exactly (a missing, unexpected or wrongly shaped tensor) is refused with an error
        naming the keys. ``ignore_mismatched_sizes=True`` still allows what it says (a fresh classifier for another
        class count)."""
        # Overridden because transformers only warns about missing / unexpected keys (its load report table over a
        # partly random model) and falls back to unpickling pytorch_model.bin. `load_strictly` reads transformers'
        # own loading report (`output_loading_info`) and refuses what does not fit.
        model, info = load_strictly(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)
        model.backbone.model.requires_grad_(False)  # loading materialises fresh parameters: freeze them again
        return (model, info) if kwargs.get("output_loading_info") else model


InfoDisentConfig.register_for_auto_class()
InfoDisentForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "Explanation",
    "InfoDisentBackbone",
    "InfoDisentClassifier",
    "InfoDisentForImageClassification",
    "InfoDisentHead",
    "InfoDisentImageClassifierOutput",
    "InfoDisentPooling",
    "InfoDisentPreTrainedModel",
    "InfoDisentRotation",
    "Prototype",
    "upsample_map",
]
