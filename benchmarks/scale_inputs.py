"""What the real-scale benchmark (`benchmarks/scale.py`) runs on: the four backbones' transformers configs (full at
224², or tiny at 64 px for `--smoke`), the generated 200-class dataset, the image processor, and a run's `Settings`
per mode (smoke, CPU, GPU)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_LABELS = 200
SMOKE_SIZE = 64


def backbone_configs(smoke: bool = False) -> dict:
    """name -> transformers config (200 labels). Full: the published architectures' shapes at 224²; smoke: the same
    families, tiny, at 64 px."""
    from transformers import ConvNextConfig, ResNetConfig, SwinConfig, ViTConfig

    labels = {"id2label": {i: f"class_{i:03d}" for i in range(NUM_LABELS)}}
    labels["label2id"] = {v: k for k, v in labels["id2label"].items()}
    if smoke:
        return {
            "resnet50": ResNetConfig(
                embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="bottleneck", **labels
            ),
            "convnext_tiny": ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_stages=4, **labels),
            "vit_b16": ViTConfig(
                image_size=SMOKE_SIZE,
                patch_size=16,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                **labels,
            ),
            "swin_tiny": SwinConfig(
                image_size=SMOKE_SIZE,
                patch_size=4,
                embed_dim=8,
                depths=[1, 1, 1, 1],
                num_heads=[1, 1, 2, 2],
                window_size=2,
                **labels,
            ),
        }
    return {
        "resnet50": ResNetConfig(**labels),  # transformers' defaults are ResNet-50's
        "convnext_tiny": ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], **labels),
        "vit_b16": ViTConfig(image_size=224, patch_size=16, **labels),  # defaults: ViT-B (768, 12 layers, 12 heads)
        "swin_tiny": SwinConfig(
            image_size=224, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, **labels
        ),
    }


# ------------------------------------------------------------------------------------------------------- data
def generated_dataset(num_train: int, num_val: int, size: int, seed: int = 0):
    """A `datasets.DatasetDict` (train / validation) of `size`² RGB images with 200 classes: class c has its own
    background colour and a shape whose kind, colour and position vary per image. Deterministic (numpy RNG seeded
    by seed and index)."""
    import datasets
    from PIL import Image, ImageDraw

    def image(index: int, label: int) -> Image.Image:
        rng = np.random.default_rng([seed, index])
        base = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=np.float32)
        pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels)
        draw = ImageDraw.Draw(picture)
        for _ in range(1 + label % 3):
            x0, y0 = rng.integers(0, size * 3 // 4, 2)
            extent = int(rng.integers(size // 8, size // 3))
            box = [int(x0), int(y0), int(x0) + extent, int(y0) + extent]
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if (label + index) % 2 else draw.rectangle)(box, fill=colour)
        return picture

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=NUM_LABELS)})
    splits = {}
    for name, count, offset in (("train", num_train, 0), ("validation", num_val, 10**6)):
        labels = [i % NUM_LABELS for i in range(count)]
        splits[name] = datasets.Dataset.from_dict(
            {"image": [image(offset + i, labels[i]) for i in range(count)], "label": labels}, features=features
        )
    return datasets.DatasetDict(splits)


@dataclass
class Settings:
    smoke: bool = False
    device: str = "cpu"
    # Lean enough for <= 15 minutes on a 2-core CPU (4.8 min for the four backbones with 32 + 16 images at load ~3.5):
    # every projection is per image or per step, so more images only tighten the per-image figures.
    num_train: int = 64
    num_val: int = 32
    gallery_images: int = 16
    feature_batch_size: int = 32
    step_repeats: int = 2
    step_warmup: int = 2  # Adam's first steps are full-size: time steps after them
    explain_repeats: int = 3
    cache_dtype: str = "float16"
    train_batch_size: int | None = None  # None: the training script's default
    mixed_precision: str = "no"  # of the backbone (extraction, gallery); "bf16" on a GPU. The head stays float32.

    @classmethod
    def for_mode(cls, smoke: bool, device: str, mixed_precision: str | None = None) -> Settings:
        precision = mixed_precision or ("bf16" if device == "cuda" else "no")
        if smoke:
            return cls(
                smoke=True,
                device=device,
                num_train=16,
                num_val=8,
                gallery_images=8,
                feature_batch_size=8,
                step_repeats=1,
                step_warmup=1,
                explain_repeats=1,
                train_batch_size=8,
                mixed_precision=precision,
            )
        if device == "cuda":  # a GPU does the CPU's work ~50x faster: more images, same 5-minute budget
            return cls(
                device=device,
                num_train=1024,
                num_val=256,
                gallery_images=256,
                feature_batch_size=128,
                step_repeats=5,
                explain_repeats=5,
                mixed_precision=precision,
            )
        return cls(device=device, mixed_precision=precision)


def _image_processor(size: int):
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    )
