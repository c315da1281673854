"""InfoDisent for the Hugging Face ecosystem.

Importing this package registers the `infodisent` model type with transformers' auto classes, so
`AutoConfig`, `AutoModel` and `AutoModelForImageClassification` (and `pipeline("image-classification")`)
load InfoDisent checkpoints without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_infodisent import InfoDisentConfig
from .explanation import Explanation, Prototype, upsample_map
from .images import pixel_values_for, to_rgb
from .modeling_infodisent import (
    InfoDisentForImageClassification,
    InfoDisentImageClassifierOutput,
    InfoDisentPreTrainedModel,
)

AutoConfig.register("infodisent", InfoDisentConfig, exist_ok=True)
AutoModel.register(InfoDisentConfig, InfoDisentForImageClassification, exist_ok=True)
AutoModelForImageClassification.register(InfoDisentConfig, InfoDisentForImageClassification, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "Explanation",
    "InfoDisentConfig",
    "InfoDisentForImageClassification",
    "InfoDisentImageClassifierOutput",
    "InfoDisentPreTrainedModel",
    "Prototype",
    "pixel_values_for",
    "to_rgb",
    "upsample_map",
]
