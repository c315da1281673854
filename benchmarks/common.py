"""What every benchmark section shares: the run's settings and environment, the phase timer, and `Bench` (the
dataset, the backbone and its head, the feature caches and the training script's recipe).

Importing this module sets ``HF_HUB_OFFLINE=1`` (benchmarks never touch the network). ``python benchmarks/run.py``
finds the ``benchmarks`` and ``training`` packages through the project's install (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks never touch the network

import numpy as np
import torch

import modeling_infodisent  # noqa: F401  (registers the infodisent model type)
from modeling_infodisent import InfoDisentForImageClassification

_ROOT = Path(__file__).resolve().parent.parent

logger = logging.getLogger("benchmarks")


def _train_defaults() -> dict:
    """The training script's recipe defaults, read from its own argument parser (so the two cannot drift apart)."""
    from training.fit import FitConfig
    from training.train import parse_args as train_parse_args

    defaults = vars(train_parse_args([]))
    # Only the recipe: seeds, where outputs go, checkpointing and tracking are not the benchmarks' business.
    skip = {"seed", "checkpointing_steps", "resume_from_checkpoint", "output_dir", "stop_after_steps", "with_tracking"}
    return {k: v for k, v in defaults.items() if k in FitConfig.__dataclass_fields__ and k not in skip}


TRAIN_DEFAULTS = _train_defaults()
DEFAULT_POINT = (TRAIN_DEFAULTS["sparsity_l1"], TRAIN_DEFAULTS["max_prototypes_per_class"])

FULL_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
DENSE = {"sparsity_l1": 0.0, "max_prototypes_per_class": 0}


# ------------------------------------------------------------------------------------------------------ settings
def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(args, device: torch.device) -> dict:
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    env = {
        "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "quick": args.quick,
        "git_commit": commit,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            name: _version(name)
            for name in ("torch", "transformers", "accelerate", "datasets", "numpy", "grad-cam", "infodisent")
        },
    }
    return env


class Timer:
    """Wall-clock seconds of each named phase (the run's own budget is part of the results)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        logger.info("== %s", name)
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 2)
            logger.info("== %s done in %.1f s", name, time.perf_counter() - start)

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def _mean_spread(values: list[float]) -> dict:
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


# ---------------------------------------------------------------------------------------------------------- data
class Bench:
    """The dataset, the backbone and its head, the feature caches and the training settings shared by every run."""

    def __init__(self, args, device: torch.device, timer: Timer):
        from training.data import DEFAULT_BACKBONE, DEFAULT_DATASET, load_image_dataset, make_transform
        from training.features import get_or_extract_features
        from training.train import head_matches_labels, load_backbone

        self.args, self.device = args, device
        # InfoDisent config options of every model this bench builds (e.g. dilate_last_stage), its feature cache too.
        self.model_kwargs = dict(getattr(args, "model_kwargs", None) or {})
        self.dataset_name = args.dataset_name or DEFAULT_DATASET
        self.backbone_name = args.backbone or DEFAULT_BACKBONE
        if not os.path.isdir(self.backbone_name) and args.backbone is None:
            raise SystemExit(
                f"The embedded backbone {self.backbone_name!r} is missing; build it with "
                "`python training/pretrain_backbone.py` or pass --backbone."
            )
        self._tmp_cache = None
        if args.cache_dir:
            self.cache_dir = args.cache_dir
        else:
            self._tmp_cache = tempfile.mkdtemp(prefix="infodisent-bench-cache-")
            self.cache_dir = self._tmp_cache
        with timer("data_and_feature_cache"):
            self.dataset, self.image_column, self.label_column, self.id2label = load_image_dataset(args.dataset_name)
            self.backbone, self.image_processor, has_head = load_backbone(self.backbone_name)
            self.head_model = (
                self.backbone if has_head and head_matches_labels(self.backbone.config, self.id2label) else None
            )
            self.backbone.to(device)
            self.transform = make_transform(self.image_processor, self.image_column, self.label_column)
            probe_model = self.new_model(seed=0)
            self.cache_kwargs = dict(
                image_processor=self.image_processor,
                image_column=self.image_column,
                label_column=self.label_column,
                transform=self.transform,
                cache_dir=self.cache_dir,
                head_model=self.head_model,
                batch_size=128,
            )
            start = time.perf_counter()
            self.train_cache = get_or_extract_features(
                probe_model, self.dataset["train"], split_name="train", **self.cache_kwargs
            )
            self.eval_cache = get_or_extract_features(
                probe_model, self.dataset["validation"], split_name="validation", **self.cache_kwargs
            )
            # The validation split (held out of train when the data has none) takes the schedule's decisions, as in
            # the training script; every reported figure comes from the test split when there is one.
            self.report_split = "test" if "test" in self.dataset else "validation"
            self.test_cache = (
                get_or_extract_features(probe_model, self.dataset["test"], split_name="test", **self.cache_kwargs)
                if self.report_split == "test"
                else None
            )
            self.report_cache = self.test_cache if self.test_cache is not None else self.eval_cache
            self.cache_seconds = time.perf_counter() - start
            self.cache_reused = self.train_cache.reused and self.eval_cache.reused
        self.settings = {
            "dataset": self.dataset_name,
            "train_rows": len(self.dataset["train"]),
            "validation_rows": len(self.dataset["validation"]),
            "eval_rows": len(self.dataset[self.report_split]),
            "eval_split": f"{self.report_split} (the schedule's decisions use the validation split: "
            f"{len(self.dataset['validation'])} rows)",
            "backbone": self.backbone_name,
            "backbone_has_matching_head": self.head_model is not None,
            "feature_map": list(self.train_cache.feature_shape),
            "feature_cache_seconds": round(self.cache_seconds, 2),
            "feature_cache_reused": self.cache_reused,
        }

    def cleanup(self):
        if self._tmp_cache:
            shutil.rmtree(self._tmp_cache, ignore_errors=True)

    def new_model(self, seed: int, **config_kwargs) -> InfoDisentForImageClassification:
        torch.manual_seed(seed)  # the rotation and classifier initialisation, as the training script does
        model = InfoDisentForImageClassification.from_backbone(
            self.backbone, id2label=self.id2label, **{**self.model_kwargs, **config_kwargs}
        )
        return model.to(self.device)

    def fit_config(self, seed: int, **overrides):
        """The training script's own defaults (read from its argument parser, so they cannot drift apart), with the
        run's epoch budget."""
        from training.fit import FitConfig

        values = {k: v for k, v in TRAIN_DEFAULTS.items() if k in FitConfig.__dataclass_fields__}
        values.update(
            num_train_epochs=self.args.num_train_epochs,
            finetune_epochs=self.args.finetune_epochs,
            seed=seed,
            show_progress=False,
        )
        values.update(overrides)
        return FitConfig(**values)

    def train(self, seed: int, fit: dict | None = None, model_kwargs: dict | None = None):
        """One training run through `training.fit.fit_head`; returns (model, summary)."""
        from training.fit import fit_head

        model = self.new_model(seed, **(model_kwargs or {}))
        config = self.fit_config(seed, **(fit or {}))
        start = time.perf_counter()
        result = fit_head(model, self.train_cache, self.eval_cache, config)
        seconds = time.perf_counter() - start
        model.eval()
        result = self.report(model, result)
        summary = {
            "accuracy": result["accuracy"],
            "agreement": result.get("agreement"),
            "backbone_head_accuracy": result.get("backbone_head_accuracy"),
            "explanation_size_median": result["explanation_size_median"],
            "explanation_size_p90": result["explanation_size_p90"],
            "explanation_size_mean": result["explanation_size_mean"],
            "max_prototypes_per_class_used": result["sparsity"]["max_prototypes_per_class_used"],
            "distinct_channels_used": result["sparsity"]["distinct_channels_used"],
            "train_seconds": round(seconds, 2),
            "fit_config": {
                k: v
                for k, v in asdict(config).items()
                if k
                in (
                    "num_train_epochs",
                    "finetune_epochs",
                    "sparsity_l1",
                    "max_prototypes_per_class",
                    "distill_weight",
                    "loss",
                    "learning_rate",
                    "train_batch_size",
                    "seed",
                )
            },
            "model_config": {
                k: getattr(model.config, k) for k in ("rotation_parametrization", "pooling", "classifier_constraint")
            },
        }
        return model, summary

    def report(self, model, fit_result: dict) -> dict:
        """`fit_result` with its evaluation figures replaced by the test split's (evaluated once, on the final model),
        when the data has a test split; the sparsity statistics stay."""
        from training.evaluation import evaluate

        if self.test_cache is None:
            return fit_result
        return {**fit_result, **evaluate(model, self.test_cache, batch_size=256)}

    def eval_pixel_values(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n images of the reported split (test when there is one) through the image processor, and their
        labels."""
        split = self.dataset[self.report_split]
        rows = split.select(range(min(n, len(split))))
        batch = self.transform({self.image_column: rows[self.image_column], self.label_column: rows[self.label_column]})
        return torch.stack(batch["pixel_values"]).float().to(self.device), torch.tensor(batch["labels"])


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
