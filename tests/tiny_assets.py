"""Tiny training inputs built on the fly for the command-line and publishing tests: an imagefolder dataset of coloured
noise (the class is the dominant channel) and random ResNet backbones saved to folders, so a whole run takes seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from conftest import REPO_ROOT, tiny_resnet_config
from train_hooks import HOOKS_ENV

CLASSES = ["blue", "green", "red"]  # alphabetical, as imagefolder numbers them
TRAIN_SCRIPT = os.path.join(REPO_ROOT, "training", "train.py")
ACCELERATE_CONFIG = os.path.join(REPO_ROOT, "training", "accelerate_config.yaml")


def write_imagefolder(root, n_train: int = 8, n_test: int = 3, seed: int = 0) -> str:
    """``root/<name>/{train,test}/<class>/<i>.png``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(n):
                array = rng.integers(0, 90, (16, 16, 3)).astype(np.uint8)
                array[..., c] += 140
                Image.fromarray(array).save(os.path.join(root, split, name, f"{i}.png"))
    return str(root)


def write_backbone(folder, labels=CLASSES, seed: int = 0, nan: str | None = None, head: bool = True) -> str:
    """A random tiny ResNet (with a classifier head named ``labels`` when ``head``) and its image processor.
    ``nan="features"`` poisons the last stage (NaN feature maps), ``nan="head"`` the classifier (NaN logits)."""
    from transformers import ResNetForImageClassification, ResNetModel, ViTImageProcessor

    torch.manual_seed(seed)
    id2label = dict(enumerate(labels))
    config = tiny_resnet_config(num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    model = ResNetForImageClassification(config) if head else ResNetModel(config)
    with torch.no_grad():
        if nan == "features":
            base = model.resnet if head else model
            base.encoder.stages[-1].layers[-1].layer[-1].convolution.weight.fill_(float("nan"))
        elif nan == "head":
            model.classifier[-1].weight.fill_(float("nan"))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    return str(folder)


def train_args(data, backbone, output_dir, cache) -> list[str]:
    """A short run: 2 main epochs + 1 fine-tuning epoch of batch 8."""
    return [
        "--train_dir",
        os.path.join(data, "train"),
        "--validation_dir",
        os.path.join(data, "test"),
        "--backbone",
        str(backbone),
        "--cache_dir",
        str(cache),
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        "2",
        "--finetune_epochs",
        "1",
        "--per_device_train_batch_size",
        "8",
        "--max_prototypes_per_class",
        "4",
        "--gallery_top_k",
        "2",
    ]


def run_script(args, launcher=None, env=None, timeout=600, cwd=REPO_ROOT, hooks=None) -> subprocess.CompletedProcess:
    """``python training/train.py args`` (or ``launcher + [train.py] + args``) in a fresh process; with ``hooks``
    (see `train_hooks`), the same script with those test hooks installed."""
    full_env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1")
    full_env.update(env or {})
    script = TRAIN_SCRIPT
    if hooks:
        script = os.path.join(REPO_ROOT, "tests", "train_hooks.py")
        full_env[HOOKS_ENV] = json.dumps(hooks)
    for key in [k for k, v in full_env.items() if v is None]:
        del full_env[key]
    command = (launcher or [sys.executable]) + [script, *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def accelerate_launcher() -> list[str]:
    """The README's launcher: the bundled accelerate config, quiet."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ACCELERATE_CONFIG, "-q"]


def two_process_launcher() -> list[str]:
    """``accelerate launch --multi_gpu --num_processes 2`` on this CPU-only machine (gloo), on a free port: the
    suite's launcher (its options spelled out, so accelerate prints no "defaults" warning)."""
    from benchmarks.suite import launch_command

    return launch_command(2)
