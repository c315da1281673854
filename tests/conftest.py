"""Shared test set-up: offline Hub, tiny random backbones, a tiny InfoDisent model."""

import os

# Read once when huggingface_hub is imported: set before anything imports it. Tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Threads that spin while waiting make torch many times slower when processes share the 2 CI cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import ResNetConfig  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_resnet_config(**kwargs) -> ResNetConfig:
    params = dict(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")
    params.update(kwargs)
    return ResNetConfig(**params)


@pytest.fixture
def tiny_backbone_config() -> ResNetConfig:
    return tiny_resnet_config()


@pytest.fixture
def tiny_model():
    """A tiny InfoDisent model (3 classes, ResNet backbone with 32 channels, 2x2 map at 64 px) in eval mode."""
    from modeling_infodisent import InfoDisentForImageClassification

    torch.manual_seed(0)
    return InfoDisentForImageClassification.from_backbone(
        tiny_resnet_config(), id2label={0: "cat", 1: "dog", 2: "bird"}
    ).eval()
