"""InfoDisent benchmarks: accuracy, ablations, faithfulness against Grad-CAM, compactness, speed, sparsity trade-off.

    python benchmarks/run.py --quick                    # a few-minute CPU run (≤ 10 min on 2 cores, fresh clone)
    python benchmarks/run.py                            # the full run (default training schedule, more images)
    python benchmarks/run.py --sections speed faithfulness --output /tmp/results.json

Everything is measured side by side in one process and written to ``--output`` (``benchmarks/results.json``) with the
settings of every figure (model, data, seeds, threads, versions, device), and as a markdown table between the markers
of ``--readme`` (``benchmarks/README.md``). Definitions of every metric: ``modeling_infodisent/metrics.py`` and
``benchmarks/README.md``.

Training goes through the training script's own functions (``training/fit.py``: ``fit_head``, ``evaluate``,
``train_linear_probe``; ``training/features.py``: the feature cache), so the benchmarks measure exactly what
``accelerate launch training/train.py`` trains. The feature cache is built inside the run (in a temporary folder unless
``--cache_dir`` is given) and its time is counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
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

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `python benchmarks/run.py` from a clone, without installing
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import modeling_infodisent  # noqa: E402,F401  (registers the infodisent model type)
from modeling_infodisent import InfoDisentForImageClassification  # noqa: E402
from modeling_infodisent.metrics import (  # noqa: E402
    class_contributions,
    deletion_insertion_auc,
    explanation_sizes,
    fraction_unused_poles,
    mean_pairwise_rv,
    road_scores,
)

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

SECTIONS = ("accuracy", "ablations", "tradeoff", "compactness", "faithfulness", "speed")
FULL_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
README_START = "<!-- benchmarks:start -->"
README_END = "<!-- benchmarks:end -->"

# Goals of issues 7 and 8, as (comparison, threshold).
GOALS = {
    "forward_vs_backbone_linear": ("<=", 1.05),
    "explain_vs_forward": ("<=", 1.2),
    "explain_heatmap_pruned_10_vs_forward": ("<=", 1.2),
    "grad_cam_vs_explain_heatmap": (">=", 2.0),
    "grad_cam_vs_explain_heatmap_pruned_10": (">=", 2.0),
    "cached_epoch_speedup": (">=", 20.0),
    "explanation_size_median": ("<=", 10),
    "explanation_size_p90": ("<=", 15),
    "accuracy_drop_vs_dense_points": ("<=", 0.5),
    "max_prototypes_per_class_used": ("<=", 20),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="Short schedules and fewer images: ≤ 10 min on a 2-core CPU.")
    p.add_argument("--output", default=str(_ROOT / "benchmarks" / "results.json"), help="Where the JSON goes.")
    p.add_argument("--readme", default=str(_ROOT / "benchmarks" / "README.md"),
                   help="Markdown file whose table (between the benchmark markers) is rewritten; '' = none.")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--dataset_name", default=None, help="Default: the embedded Fashion-MNIST subset.")
    p.add_argument("--backbone", default=None, help="Default: the embedded Fashion-MNIST ResNet.")
    p.add_argument("--full_fashion_mnist", choices=("auto", "yes", "no"), default="auto",
                   help="Also evaluate on the full Fashion-MNIST test set (Debian files in "
                        f"{FULL_FASHION_MNIST}); 'auto' = when the files exist and not --quick.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the CPU cores minus one, or 1 when the machine is already busy).")
    p.add_argument("--device", default="auto", help="'auto' (cuda when available), 'cpu' or 'cuda'.")
    p.add_argument("--cache_dir", default=None, help="Feature cache folder to reuse (default: a fresh temporary one).")
    p.add_argument("--num_train_epochs", type=int, default=None, help="Main epochs of every fit (default: the training script's; quick: at most 6).")
    p.add_argument("--finetune_epochs", type=int, default=None, help="Epochs after pruning (default: the training script's; quick: at most 2).")
    p.add_argument("--distill_weight", type=float, default=0.5, help="Distillation weight of the 'with distillation' runs.")
    p.add_argument("--faithfulness_images", type=int, default=None, help="Test images for deletion/insertion (500; quick 64).")
    p.add_argument("--road_images", type=int, default=None, help="Test images for ROAD (100; quick 32).")
    p.add_argument("--speed_repeats", type=int, default=None, help="Interleaved timing rounds (9; quick 5).")
    p.add_argument("--scale", action="store_true", help="Only the real-scale pipeline (benchmarks/scale.py: ResNet-50, "
                   "ConvNeXt-T, ViT-B/16, Swin-T at 224², 200 classes; ≤ 15 min on a 2-core CPU).")
    p.add_argument("--smoke", action="store_true", help="With --scale: tiny configs at 64 px, seconds (the tests' path).")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = dict(
        # The training script's schedule; --quick shortens it (6 + 2 epochs) to stay well inside 10 minutes on a
        # busy 2-core machine (18 fits: the default schedule took 8.3 min in all at load 3.5).
        num_train_epochs=min(6, TRAIN_DEFAULTS["num_train_epochs"]) if quick else TRAIN_DEFAULTS["num_train_epochs"],
        finetune_epochs=min(2, TRAIN_DEFAULTS["finetune_epochs"]) if quick else TRAIN_DEFAULTS["finetune_epochs"],
        faithfulness_images=64 if quick else 500,
        road_images=32 if quick else 100,
        speed_repeats=5 if quick else 9,
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.threads_reason = "--threads"
    if args.threads is None:
        cores = os.cpu_count() or 1
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        # One core is left free: as soon as another process competes for the cores, torch threads spin and wait
        # (measured here on 2 cores: a fit_head epoch 5x slower with 2 threads than with 1 once one other job ran,
        # and a whole --quick run 5x slower when such a job started mid-run). On an already busy machine, 1.
        args.threads = 1 if load >= cores - 0.5 else max(1, cores - 1)
        args.threads_reason = f"auto: {cores} cores, 1-min load average {load:.1f} at start"
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if not args.seeds:
        p.error("--seeds needs at least one seed")
    return args


# ------------------------------------------------------------------------------------------------------ settings
def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(args, device: torch.device) -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
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
                image_processor=self.image_processor, image_column=self.image_column, label_column=self.label_column,
                transform=self.transform, cache_dir=self.cache_dir, head_model=self.head_model, batch_size=128,
            )  # fmt: skip
            start = time.perf_counter()
            self.train_cache = get_or_extract_features(probe_model, self.dataset["train"], split_name="train", **self.cache_kwargs)
            self.eval_cache = get_or_extract_features(
                probe_model, self.dataset["validation"], split_name="validation", **self.cache_kwargs
            )
            self.cache_seconds = time.perf_counter() - start
            self.cache_reused = self.train_cache.reused and self.eval_cache.reused
        self.settings = {
            "dataset": self.dataset_name,
            "train_rows": len(self.dataset["train"]),
            "eval_rows": len(self.dataset["validation"]),
            "eval_split": "the dataset's validation split (for the embedded default: its test split)",
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
        model = InfoDisentForImageClassification.from_backbone(self.backbone, id2label=self.id2label, **config_kwargs)
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
                k: v for k, v in asdict(config).items()
                if k in ("num_train_epochs", "finetune_epochs", "sparsity_l1", "max_prototypes_per_class",
                         "distill_weight", "loss", "learning_rate", "per_device_train_batch_size", "seed")
            },
            "model_config": {k: getattr(model.config, k) for k in ("rotation", "pooling", "classifier_constraint")},
        }  # fmt: skip
        return model, summary

    def eval_pixel_values(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n images of the evaluation split through the image processor, and their labels."""
        rows = self.dataset["validation"].select(range(min(n, len(self.dataset["validation"]))))
        batch = self.transform({self.image_column: rows[self.image_column], self.label_column: rows[self.label_column]})
        return torch.stack(batch["pixel_values"]).float().to(self.device), torch.tensor(batch["labels"])


# ------------------------------------------------------------------------------------------------------ sections
def section_accuracy(bench: Bench, timer: Timer, cache: dict) -> dict:
    """InfoDisent (the training script's default recipe), with and without distillation, and the dense head, over the
    seeds; the linear probe and the backbone's own head (deterministic)."""
    from training.fit import train_linear_probe

    runs = {"infodisent": [], "infodisent_distilled": [], "infodisent_dense": []}
    distill = bench.head_model is not None
    for seed in tqdm(bench.args.seeds, desc="accuracy seeds"):
        model, summary = bench.train(seed)
        runs["infodisent"].append(summary)
        cache.setdefault("models", {})[("default", seed)] = model
        if distill:
            _, summary = bench.train(seed, fit={"distill_weight": bench.args.distill_weight})
            runs["infodisent_distilled"].append(summary)
        dense_model, summary = bench.train(seed, fit=DENSE)
        runs["infodisent_dense"].append(summary)
        cache["models"][("dense", seed)] = dense_model
    probe = train_linear_probe(bench.train_cache, bench.eval_cache, seed=0)
    out = {"runs": runs, "linear_probe_accuracy": probe["accuracy"]}
    heads = [r["backbone_head_accuracy"] for r in runs["infodisent"] if r["backbone_head_accuracy"] is not None]
    out["backbone_head_accuracy"] = heads[0] if heads else None
    summary = {}
    for name, rs in runs.items():
        if not rs:
            continue
        summary[name] = {"accuracy": _mean_spread([r["accuracy"] for r in rs])}
        if rs[0]["agreement"] is not None:
            summary[name]["agreement"] = _mean_spread([r["agreement"] for r in rs])
        for key in ("explanation_size_median", "explanation_size_p90", "max_prototypes_per_class_used"):
            summary[name][key] = _mean_spread([r[key] for r in rs])
    out["summary"] = summary
    if "infodisent_dense" in summary:
        out["accuracy_drop_vs_dense_points"] = 100 * (
            summary["infodisent_dense"]["accuracy"]["mean"] - summary["infodisent"]["accuracy"]["mean"]
        )
    if not distill:
        out["note"] = "The backbone has no head for the dataset's classes: no agreement and no distillation."
    return out


def section_full_fashion_mnist(bench: Bench, cache: dict) -> dict:
    """The models trained on the embedded default, evaluated on the full Fashion-MNIST test set (10 000 images)."""
    from training.build_fashion_mnist_subset import full_fashion_mnist_dataset
    from training.features import get_or_extract_features
    from training.fit import evaluate

    test = full_fashion_mnist_dataset("test", FULL_FASHION_MNIST)
    kwargs = dict(bench.cache_kwargs, image_column="image", label_column="label",
                  transform=_fmnist_transform(bench))  # fmt: skip
    any_model = next(iter(cache["models"].values()))
    full_cache = get_or_extract_features(any_model, test, split_name="fashion_mnist_test", **kwargs)
    results = {}
    for (kind, seed), model in cache["models"].items():
        r = evaluate(model, full_cache)
        results.setdefault(kind, []).append({"seed": seed, "accuracy": r["accuracy"], "agreement": r.get("agreement")})
    return {
        "test_rows": len(test),
        "note": "models trained on the embedded default's training split, evaluated on all 10 000 test images",
        "runs": results,
        "summary": {k: {"accuracy": _mean_spread([r["accuracy"] for r in v])} for k, v in results.items()},
    }


def _fmnist_transform(bench: Bench):
    from training.data import make_transform

    return make_transform(bench.image_processor, "image", "label")


ABLATIONS = {
    "rotation_identity": {"rotation": "identity"},
    "pooling_avg": {"pooling": "avg"},
    "classifier_unconstrained": {"classifier_constraint": "none"},
}
DENSE = {"sparsity_l1": 0.0, "max_prototypes_per_class": 0}


def section_ablations(bench: Bench, cache: dict) -> dict:
    """The reviewers' ablations, each with the default recipe (L1 + per-class budget + fine-tune) and with the dense
    head (the paper's method, no sparsity), seed by seed; the references are the accuracy section's runs."""
    seeds = bench.args.seeds[:1] if bench.args.quick else bench.args.seeds
    out = {
        "seeds": seeds,
        "reference": "accuracy section: 'infodisent' (default recipe) and 'infodisent_dense' runs with the same seeds",
        "variants": {},
    }
    jobs = [(name, recipe) for recipe in ("default", "dense") for name in ABLATIONS]
    for name, recipe in tqdm(jobs, desc="ablations"):
        model_kwargs = ABLATIONS[name]
        runs = [bench.train(seed, fit=DENSE if recipe == "dense" else None, model_kwargs=model_kwargs)[1] for seed in seeds]
        out["variants"][f"{name}/{recipe}"] = {
            "ablation": name,
            "recipe": recipe,
            "model_config": model_kwargs,
            "runs": runs,
            "accuracy": _mean_spread([r["accuracy"] for r in runs]),
            "explanation_size_median": _mean_spread([r["explanation_size_median"] for r in runs]),
            "explanation_size_p90": _mean_spread([r["explanation_size_p90"] for r in runs]),
        }
    return out


def tradeoff_points(quick: bool) -> list[tuple[float, int]]:
    """(sparsity_l1, max_prototypes_per_class) grid around the training script's default (l1, M); 0 = no budget."""
    l1, budget = DEFAULT_POINT
    if quick:
        points = [(0.0, 0), (1.0, 0), (0.0, budget), (l1, 5), (l1, budget), (l1, 20)]
    else:
        points = [(0.0, 0), (1e-3, 0), (1e-2, 0), (1e-1, 0), (1.0, 0), (0.0, budget), (l1, 5), (l1, budget), (l1, 20),
                  (10 * l1, budget)]  # fmt: skip
    return list(dict.fromkeys(points))  # the default may coincide with a grid point


def section_tradeoff(bench: Bench, accuracy: dict | None) -> dict:
    """Accuracy vs explanation size over L1 strengths and per-class budgets (issue 8), seed 0 (all seeds in full)."""
    points = tradeoff_points(bench.args.quick)
    seeds = bench.args.seeds[:1] if bench.args.quick else bench.args.seeds
    reuse = {}
    if accuracy is not None:  # the default recipe and the dense head were already trained with these seeds
        for r in accuracy["runs"]["infodisent"]:
            reuse[(*DEFAULT_POINT, r["fit_config"]["seed"])] = r
        for r in accuracy["runs"]["infodisent_dense"]:
            reuse[(0.0, 0, r["fit_config"]["seed"])] = r
    rows = []
    for l1, budget in tqdm(points, desc="trade-off"):
        runs = []
        for seed in seeds:
            r = reuse.get((l1, budget, seed))
            if r is None:
                fit = {"sparsity_l1": l1, "max_prototypes_per_class": budget}
                r = bench.train(seed, fit=fit)[1]
            runs.append(r)
        rows.append({
            "sparsity_l1": l1,
            "max_prototypes_per_class": budget,
            "default": (l1, budget) == DEFAULT_POINT,
            "runs": runs,
            "accuracy": _mean_spread([r["accuracy"] for r in runs]),
            "explanation_size_median": _mean_spread([r["explanation_size_median"] for r in runs]),
            "explanation_size_p90": _mean_spread([r["explanation_size_p90"] for r in runs]),
            "max_prototypes_per_class_used": max(r["max_prototypes_per_class_used"] for r in runs),
            "distinct_channels_used": _mean_spread([r["distinct_channels_used"] for r in runs]),
        })  # fmt: skip
    return {"seeds": seeds, "rows": rows}


@torch.no_grad()
def _head_outputs(model, data, batch_size: int = 256):
    """Head outputs over a FeatureCache: raw maps I (kept for the first `keep` rows), pooled poles, logits."""
    from torch.utils.data import DataLoader

    from training.features import collate_batch

    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_batch)
    pos, neg, logits = [], [], []
    for batch in loader:
        out = model.head(batch["features"].to(model.device))
        pos.append(out.pos_activations.cpu())
        neg.append(out.neg_activations.cpu())
        logits.append(out.logits.cpu())
    return torch.cat(pos), torch.cat(neg), torch.cat(logits)


def section_compactness(bench: Bench, cache: dict) -> dict:
    """Explanation size, unused poles and RV coefficients for the default model and the dense head (seed 0)."""
    out = {"definitions": {
        "explanation_size": "prototypes (channel poles) needed for 90% of the predicted class's positive evidence",
        "unused_poles": "share of the 2D poles in no test image's 90% explanation set (positive evidence); "
                        "'_any_sign' builds the sets on |contribution| so that evidence against a class counts too",
        "rv_spatial": "mean over channel pairs of the RV coefficient between the channels' (N, h*w) feature maps over "
                      "the test images; raw = backbone map I, rotated = J = U I",
        "rv_pooled": "same on pooled per-channel scalars (= mean squared correlation): max(ReLU(x)) - max(ReLU(-x)) "
                     "of each raw channel vs of each rotated channel (InfoDisent's v = pos - neg)",
    }}  # fmt: skip
    seed = bench.args.seeds[0]
    n_rv = 1000
    features = torch.from_numpy(np.asarray(bench.eval_cache.__getitems__(np.arange(min(n_rv, len(bench.eval_cache))))["features"]))
    for kind in ("default", "dense"):
        model = cache.get("models", {}).get((kind, seed))
        if model is None:
            model = bench.train(seed, fit=None if kind == "default" else {"sparsity_l1": 0.0, "max_prototypes_per_class": 0})[0]
            cache.setdefault("models", {})[(kind, seed)] = model
        pos, neg, logits = _head_outputs(model, bench.eval_cache)
        predictions = logits.argmax(-1)
        contributions = class_contributions(model.classifier_weight.detach().cpu(), pos, neg, predictions)
        sizes = explanation_sizes(contributions)
        with torch.no_grad():
            rotated = model.head.rotate(features.to(model.device)).cpu()
        raw_pooled = features.flatten(2).clamp_min(0).amax(-1) - (-features).flatten(2).clamp_min(0).amax(-1)
        rot_pooled = rotated.flatten(2).clamp_min(0).amax(-1) - (-rotated).flatten(2).clamp_min(0).amax(-1)
        out[kind] = {
            "seed": seed,
            "num_images": int(len(sizes)),
            "num_poles": int(contributions.shape[1]),
            "explanation_size_median": float(np.median(sizes)),
            "explanation_size_p90": float(np.percentile(sizes, 90)),
            "explanation_size_max": int(sizes.max()),
            "unused_poles": fraction_unused_poles(contributions),
            "unused_poles_any_sign": fraction_unused_poles(contributions, absolute=True),
            "rv_spatial_raw": mean_pairwise_rv(features),
            "rv_spatial_rotated": mean_pairwise_rv(rotated),
            "rv_pooled_raw": mean_pairwise_rv(raw_pooled),
            "rv_pooled_rotated": mean_pairwise_rv(rot_pooled),
            "rv_images": int(features.shape[0]),
        }
    return out


def section_faithfulness(bench: Bench, cache: dict) -> dict:
    """Deletion / insertion AUC and ROAD of InfoDisent's class heatmap vs Grad-CAM (same model) vs random."""
    from benchmarks.speed import grad_cam_maps

    seed = bench.args.seeds[0]
    model = cache.get("models", {}).get(("default", seed)) or bench.train(seed)[0]
    model.eval()
    n = bench.args.faithfulness_images
    x, labels = bench.eval_pixel_values(n)
    from PIL import Image

    h, w = x.shape[-2:]
    black = Image.new("RGB", (w, h), (0, 0, 0))
    baseline = bench.image_processor(black, return_tensors="pt")["pixel_values"][0].to(x.device)
    with torch.no_grad():
        predictions = model(x).logits.argmax(-1).cpu()
    maps = {"infodisent": [], "grad_cam": []}
    for start in range(0, len(x), 32):
        chunk, targets = x[start : start + 32], predictions[start : start + 32]
        maps["infodisent"] += [e.class_heatmap() for e in model.explain(chunk, target=targets)]
        maps["grad_cam"] += list(grad_cam_maps(model, chunk, targets=targets.tolist()))
    maps = {k: np.stack(v) for k, v in maps.items()}
    maps["random"] = np.random.default_rng(seed).random(maps["infodisent"].shape)

    def logits_fn(batch):
        return model(batch).logits

    steps = 28
    out = {
        "settings": {
            "model": f"the default recipe, seed {seed}",
            "images": int(len(x)),
            "targets": "the predicted class",
            "score": "softmax probability of the target class",
            "steps": steps,
            "baseline": "the image processor's encoding of a black image (Fashion-MNIST's background)",
            "infodisent_map": "signed class heatmap (Explanation.class_heatmap()): most positive evidence first, evidence against last",
            "grad_cam_map": "pytorch_grad_cam.GradCAM on the same InfoDisent model, target layer = the explained "
                            "feature map I (backbone parameters temporarily require grad); ties broken at random",
            "road_images": int(min(bench.args.road_images, len(x))),
            "road_percentiles": [20, 50, 80] if bench.args.quick else [10, 20, 30, 40, 50, 60, 70, 80, 90],
        },
        "accuracy_on_these_images": float((predictions == labels).float().mean()),
    }  # fmt: skip
    for name, heat in maps.items():
        entry = {}
        for mode in ("deletion", "insertion"):
            aucs = deletion_insertion_auc(logits_fn, x, heat, predictions, mode=mode, steps=steps, baseline=baseline, seed=seed)
            entry[f"{mode}_auc"] = float(aucs.mean())
            entry[f"{mode}_auc_sem"] = float(aucs.std(ddof=1) / math.sqrt(len(aucs))) if len(aucs) > 1 else 0.0
        k = out["settings"]["road_images"]
        road = road_scores(model, x[:k], heat[:k], predictions[:k], percentiles=out["settings"]["road_percentiles"], seed=seed)
        for key, values in road.items():
            entry[f"road_{key}"] = float(values.mean())
        out[name] = entry
    return out


def section_speed(bench: Bench | None, args, device: torch.device) -> dict:
    """Inference ratios on a ResNet-50-sized model, and the training-epoch ratio on the embedded default."""
    from benchmarks import speed

    out = {"inference": speed.run(device, repeats=args.speed_repeats)}
    if bench is not None:
        out["training_epoch"] = training_epoch_speed(bench)
    if not args.quick:  # a D = 2048 head step costs tens of seconds on a CPU: full run only
        out["training_step_resnet50"] = speed.train_step_ratio(device)
    return out


def training_epoch_speed(bench: Bench) -> dict:
    """One epoch of `fit_head` on cached feature maps vs one epoch through the live backbone (decode, preprocess,
    backbone forward), same data, same recipe; evaluation is on a 128-row slice so that it does not dominate."""
    from torch.utils.data import Subset

    from training.features import LiveImages
    from training.fit import fit_head, live_featurizer

    small = range(min(128, len(bench.eval_cache)))
    # --quick times an epoch of the first 1280 training rows (10 batches): both paths cost the same per row whatever
    # the epoch length, so the ratio is the full epoch's; the full run uses the whole split.
    rows = range(min(1280, len(bench.train_cache))) if bench.args.quick else range(len(bench.train_cache))
    config = dict(num_train_epochs=1, max_prototypes_per_class=0)  # the training recipe's main phase, one epoch
    seconds = {"cached": [], "live": []}
    for _ in range(2 if bench.args.quick else 3):
        for kind in ("cached", "live"):
            model = bench.new_model(0)
            if kind == "cached":
                train_data, eval_data, featurizer = Subset(bench.train_cache, rows), Subset(bench.eval_cache, small), None
            else:
                train_data = Subset(LiveImages(bench.dataset["train"], bench.transform), rows)
                eval_data = Subset(LiveImages(bench.dataset["validation"], bench.transform), small)
                featurizer = live_featurizer(model)
            start = time.perf_counter()
            fit_head(model, train_data, eval_data, bench.fit_config(0, **config), featurizer=featurizer)
            seconds[kind].append(time.perf_counter() - start)
    cached, live = statistics.median(seconds["cached"]), statistics.median(seconds["live"])
    return {
        "settings": {
            "data": f"{len(rows)} training images of {Path(bench.dataset_name).name}",
            "recipe": f"fit_head, 1 epoch of the training script's main phase (batch "
            f"{TRAIN_DEFAULTS['per_device_train_batch_size']}, L1 {TRAIN_DEFAULTS['sparsity_l1']:g}), no pruning; "
            "eval on 128 rows",
            "statistic": "median of interleaved repeats",
        },
        "seconds": seconds,
        "cached_epoch_seconds": cached,
        "live_epoch_seconds": live,
        "cached_epoch_speedup": live / cached,
    }


# ------------------------------------------------------------------------------------------------------- report
def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def _pm(stat, scale=100.0, digits=1):
    if stat is None:
        return "–"
    if stat["std"] == 0 and len(stat["values"]) == 1:
        return f"{scale * stat['mean']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def _goal(name: str, value) -> str:
    if value is None:
        return "–"
    op, threshold = GOALS[name]
    met = value <= threshold if op == "<=" else value >= threshold
    return f"{op} {threshold:g} {'✅ met' if met else '❌ missed'}"


def goals_status(results: dict) -> dict:
    status = {}
    speed = results.get("speed", {})
    ratios = speed.get("inference", {}).get("ratios", {})
    for key in ("forward_vs_backbone_linear", "explain_vs_forward", "explain_heatmap_pruned_10_vs_forward",
                "grad_cam_vs_explain_heatmap", "grad_cam_vs_explain_heatmap_pruned_10"):
        if key in ratios:
            status[key] = ratios[key]
    if "training_epoch" in speed:
        status["cached_epoch_speedup"] = speed["training_epoch"]["cached_epoch_speedup"]
    acc = results.get("accuracy", {})
    if "summary" in acc:
        s = acc["summary"]["infodisent"]
        status["explanation_size_median"] = s["explanation_size_median"]["mean"]
        status["explanation_size_p90"] = s["explanation_size_p90"]["mean"]
        status["max_prototypes_per_class_used"] = s["max_prototypes_per_class_used"]["max"]
        if "accuracy_drop_vs_dense_points" in acc:
            status["accuracy_drop_vs_dense_points"] = acc["accuracy_drop_vs_dense_points"]
    return {
        k: {"value": v, "goal": f"{GOALS[k][0]} {GOALS[k][1]}", "met": (v <= GOALS[k][1]) if GOALS[k][0] == "<=" else (v >= GOALS[k][1])}
        for k, v in status.items()
    }


def markdown_table(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"Measured by `{env['command']}` on {env['device_name']} ({env['device']}, {env['torch_threads']} torch threads "
        f"[{results['settings'].get('threads_reason', '')}], "
        f"load average at start {', '.join(f'{x:.1f}' for x in env['load_average_at_start'] or [])}), "
        f"commit `{(env['git_commit'] or '?')[:10]}`, torch {env['versions']['torch']}, total "
        f"{results['run_seconds']:.0f} s. Every figure's settings are in `benchmarks/results.json`.",
        "",
    ]
    data = results.get("data")
    if data:
        lines += [
            f"Data: `{Path(data['dataset']).name}` ({data['train_rows']} train / {data['eval_rows']} test images), "
            f"backbone `{Path(data['backbone']).name}` (feature map {'×'.join(map(str, data['feature_map']))}).",
            "",
        ]
    acc = results.get("accuracy")
    if acc:
        s = acc["summary"]
        seeds = len(acc["runs"]["infodisent"])
        ep = acc["runs"]["infodisent"][0]["fit_config"]
        lines += [
            f"**Accuracy** (top-1 %, mean ± std over {seeds} seed(s); {ep['num_train_epochs']} epochs"
            f" + {ep.get('finetune_epochs', 0)} fine-tune epochs after pruning)",
            "",
            "| model | top-1 | agreement with backbone head | explanation size median / p90 |",
            "|---|---|---|---|",
        ]
        names = {
            "infodisent": f"InfoDisent (training defaults: L1 {DEFAULT_POINT[0]:g}, ≤ {DEFAULT_POINT[1]} prototypes/class)",
            "infodisent_distilled": f"InfoDisent + distillation (weight {results['settings']['distill_weight']})",
            "infodisent_dense": "InfoDisent dense head (no sparsity)",
        }
        for key, label in names.items():
            if key in s:
                lines.append(
                    f"| {label} | {_pm(s[key]['accuracy'])} | {_pm(s[key].get('agreement'))} | "
                    f"{s[key]['explanation_size_median']['mean']:.1f} / {s[key]['explanation_size_p90']['mean']:.1f} |"
                )
        lines.append(f"| linear probe (avg-pooled features) | {_fmt(100 * acc['linear_probe_accuracy'], 1)} | – | – |")
        if acc.get("backbone_head_accuracy") is not None:
            lines.append(f"| backbone's own head | {_fmt(100 * acc['backbone_head_accuracy'], 1)} | 100 | – |")
        full = results.get("full_fashion_mnist")
        if full:
            lines += ["", f"On the full Fashion-MNIST test set ({full['test_rows']} images; {full['note']}): " + ", ".join(
                f"{k} {_pm(v['accuracy'])}" for k, v in full["summary"].items())]
        lines.append("")
    abl = results.get("ablations")
    if abl:
        s_acc = acc["summary"] if acc else {}
        lines += [
            f"**Ablations** (seed(s) {abl['seeds']}; each variant trained with the default sparse recipe and with the "
            "dense head)",
            "",
            "| variant | top-1, default recipe | size median / p90 | top-1, dense head | size median / p90 |",
            "|---|---|---|---|---|",
        ]

        def cells(stat):
            if stat is None:
                return "– | –"
            return (f"{_pm(stat['accuracy'])} | {stat['explanation_size_median']['mean']:.1f} / "
                    f"{stat['explanation_size_p90']['mean']:.1f}")  # fmt: skip

        if s_acc:
            lines.append(
                f"| InfoDisent (U learned, max pooling, W ≥ 0) | {cells(s_acc.get('infodisent'))} | "
                f"{cells(s_acc.get('infodisent_dense'))} |"
            )
        labels = {
            "rotation_identity": "U = I (no rotation)",
            "pooling_avg": "average pooling instead of max⁺/max⁻",
            "classifier_unconstrained": "W unconstrained (no W ≥ 0)",
        }
        for name, label in labels.items():
            default, dense = abl["variants"].get(f"{name}/default"), abl["variants"].get(f"{name}/dense")
            lines.append(f"| {label} | {cells(default)} | {cells(dense)} |")
        lines.append("")
    trade = results.get("tradeoff")
    if trade:
        lines += [
            f"**Sparsity trade-off** (issue 8; seed(s) {trade['seeds']}): pick your point with `--sparsity_l1` and "
            "`--max_prototypes_per_class`",
            "",
            "| `--sparsity_l1` | `--max_prototypes_per_class` | top-1 | explanation size median / p90 | "
            "max prototypes per class | distinct channels used |",
            "|---|---|---|---|---|---|",
        ]
        for row in trade["rows"]:
            budget = row["max_prototypes_per_class"] or "– (dense)"
            mark = " **(default)**" if row["default"] else ""
            lines.append(
                f"| {row['sparsity_l1']:g}{mark} | {budget} | {_pm(row['accuracy'])} | "
                f"{row['explanation_size_median']['mean']:.1f} / {row['explanation_size_p90']['mean']:.1f} | "
                f"{row['max_prototypes_per_class_used']} | {row['distinct_channels_used']['mean']:.0f} |"
            )
        lines.append("")
    comp = results.get("compactness")
    if comp:
        lines += [
            "**Compactness and disentanglement** (seed 0, test split)",
            "",
            "| model | size median | size p90 | poles never used (+ evidence / any sign) | RV spatial raw → rotated | "
            "RV pooled raw → rotated |",
            "|---|---|---|---|---|---|",
        ]
        for kind, label in (("default", "InfoDisent (default)"), ("dense", "dense head")):
            if kind in comp:
                c = comp[kind]
                lines.append(
                    f"| {label} | {c['explanation_size_median']:.0f} | {c['explanation_size_p90']:.0f} | "
                    f"{100 * c['unused_poles']:.0f}% / {100 * c['unused_poles_any_sign']:.0f}% of {c['num_poles']} | "
                    f"{c['rv_spatial_raw']:.3f} → {c['rv_spatial_rotated']:.3f} | "
                    f"{c['rv_pooled_raw']:.3f} → {c['rv_pooled_rotated']:.3f} |"
                )
        lines.append("")
    faith = results.get("faithfulness")
    if faith:
        st = faith["settings"]
        lines += [
            f"**Faithfulness** ({st['images']} test images, predicted class; ROAD on {st['road_images']} images, "
            f"percentiles {st['road_percentiles']}). Deletion: lower is better; insertion, ROAD combined: higher is "
            "better; ROAD MoRF: lower is better.",
            "",
            "| heatmap | deletion AUC | insertion AUC | ROAD MoRF | ROAD LeRF | ROAD combined |",
            "|---|---|---|---|---|---|",
        ]
        for name, label in (("infodisent", "InfoDisent class heatmap"), ("grad_cam", "Grad-CAM (same model)"), ("random", "random order")):
            e = faith[name]
            lines.append(
                f"| {label} | {e['deletion_auc']:.3f} ± {e['deletion_auc_sem']:.3f} | "
                f"{e['insertion_auc']:.3f} ± {e['insertion_auc_sem']:.3f} | {e['road_morf']:+.3f} | "
                f"{e['road_lerf']:+.3f} | {e['road_combined']:+.3f} |"
            )
        lines.append("")
    speed = results.get("speed")
    if speed:
        inf = speed["inference"]
        med, r = inf["seconds_median"], inf["ratios"]
        fmed = inf.get("forward_pair_seconds_median", med)
        st = inf["settings"]
        lines += [
            f"**Speed** ({env['device']}; ResNet-50-sized backbone, random weights, {st['image_size']}², batch "
            f"{st['batch_size']}, {st['num_labels']} classes; {st['repeats']} interleaved rounds, the forward pair "
            f"{len(inf['forward_pair_seconds_all']['infodisent_forward'])}; seconds are medians, ratios medians of "
            "per-round ratios)",
            "",
            "| measurement | seconds | ratio | goal |",
            "|---|---|---|---|",
            f"| backbone + avg-pool + linear head, forward | {fmed['backbone_linear_forward']:.3f} | 1 | |",
            f"| InfoDisent forward | {fmed['infodisent_forward']:.3f} | {r['forward_vs_backbone_linear']:.3f} × baseline | "
            f"{_goal('forward_vs_backbone_linear', r['forward_vs_backbone_linear'])} |",
            f"| InfoDisent forward, in the explanation series (the reference of the next rows) | "
            f"{med['infodisent_forward']:.3f} | | |",
            f"| InfoDisent full local explanation (`explain`, all prototypes) | {med['explain']:.3f} | "
            f"{r['explain_vs_forward']:.3f} × forward | {_goal('explain_vs_forward', r['explain_vs_forward'])} |",
            f"| … plus its class heatmap (one upsampling) | {med['explain_heatmap']:.3f} | "
            f"{r['explain_heatmap_vs_forward']:.3f} × forward | |",
            f"| … plus heatmap, classifier pruned to 10 prototypes per class (the default recipe) | "
            f"{med['explain_heatmap_pruned_10']:.3f} | {r['explain_heatmap_pruned_10_vs_forward']:.3f} × forward | "
            f"{_goal('explain_vs_forward', r['explain_heatmap_pruned_10_vs_forward'])} |",
            f"| Grad-CAM, same model (backbone carries grad) | {med['grad_cam']:.3f} | "
            f"{r['grad_cam_vs_explain_heatmap']:.2f} × explanation with heatmap | "
            f"{_goal('grad_cam_vs_explain_heatmap', r['grad_cam_vs_explain_heatmap'])} |",
            f"| Grad-CAM vs the pruned model's explanation with heatmap | | "
            f"{r['grad_cam_vs_explain_heatmap_pruned_10']:.2f} × | "
            f"{_goal('grad_cam_vs_explain_heatmap_pruned_10', r['grad_cam_vs_explain_heatmap_pruned_10'])} |",
            f"| Grad-CAM, gradient stopped at the feature map | {med['grad_cam_stop_gradient']:.3f} | "
            f"{r['grad_cam_stop_gradient_vs_explain_heatmap']:.2f} × explanation with heatmap | |",
        ]
        if "training_epoch" in speed:
            t = speed["training_epoch"]
            lines.append(
                f"| training epoch through the backbone / on cached features ({t['settings']['data']}) | "
                f"{t['live_epoch_seconds']:.1f} / {t['cached_epoch_seconds']:.1f} | {t['cached_epoch_speedup']:.1f}× | "
                f"{_goal('cached_epoch_speedup', t['cached_epoch_speedup'])} |"
            )
        if "training_step_resnet50" in speed:
            t = speed["training_step_resnet50"]
            lines.append(
                f"| ResNet-50 size, per batch of {t['settings']['batch_size']}: backbone forward / head training step "
                f"on cached maps | {t['seconds_median']['backbone_forward']:.1f} / {t['seconds_median']['head_step']:.1f} | "
                f"epoch ≈ {t['epoch_speedup_estimate']:.1f}× | |"
            )
        p = inf["explain_profile_seconds"]
        lines += [
            "",
            f"Where `explain` spends its time (s, batch {st['batch_size']}, total {p['explain_total']:.3f}): backbone "
            f"{p['backbone']:.3f}, rotation {p['head_rotate']:.3f}, pooling + classifier {p['head_pool_classify']:.3f}, "
            f"numpy conversions and {p['prototypes_per_image']:.0f} `Prototype` objects per image "
            f"{p['python_and_numpy']:.3f}; "
            f"class heatmaps for the batch: {p['class_heatmap']:.3f}.",
            "",
        ]
    goals = results.get("goals")
    if goals:
        lines += ["**Goals**", "", "| goal | measured | status |", "|---|---|---|"]
        for key, g in goals.items():
            lines.append(f"| {key} {g['goal']} | {g['value']:.3f} | {'✅ met' if g['met'] else '❌ missed'} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_readme(path: str, table: str) -> None:
    text = Path(path).read_text() if os.path.exists(path) else f"# Benchmarks\n\n{README_START}\n{README_END}\n"
    if README_START not in text or README_END not in text:
        text = text.rstrip() + f"\n\n{README_START}\n{README_END}\n"
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    Path(path).write_text(f"{head}{README_START}\n{table}{README_END}{tail}")


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


def main(argv=None):
    args = parse_args(argv)
    if args.scale:
        from benchmarks import scale

        return scale.main_from_run(args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    for noisy in ("training", "accelerate", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import datasets
    import transformers

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))  # fmt: skip
    timer = Timer()
    results = {
        "environment": environment(args, device),
        "settings": {k: v for k, v in vars(args).items()},
        "training_script_defaults": TRAIN_DEFAULTS,
    }
    needs_training = set(args.sections) & {"accuracy", "ablations", "tradeoff", "compactness", "faithfulness"}
    bench, cache = None, {}
    try:
        if needs_training or "speed" in args.sections:
            bench = Bench(args, device, timer)
            results["data"] = bench.settings
        if "accuracy" in args.sections:
            with timer("accuracy"):
                results["accuracy"] = section_accuracy(bench, timer, cache)
            full = args.full_fashion_mnist == "yes" or (
                args.full_fashion_mnist == "auto" and not args.quick and os.path.isdir(FULL_FASHION_MNIST)
            )
            if full:
                with timer("full_fashion_mnist"):
                    results["full_fashion_mnist"] = section_full_fashion_mnist(bench, cache)
        if "ablations" in args.sections:
            with timer("ablations"):
                results["ablations"] = section_ablations(bench, cache)
        if "tradeoff" in args.sections:
            with timer("tradeoff"):
                results["tradeoff"] = section_tradeoff(bench, results.get("accuracy"))
        if "compactness" in args.sections:
            with timer("compactness"):
                results["compactness"] = section_compactness(bench, cache)
        if "faithfulness" in args.sections:
            with timer("faithfulness"):
                results["faithfulness"] = section_faithfulness(bench, cache)
        if "speed" in args.sections:
            with timer("speed"):
                results["speed"] = section_speed(bench, args, device)
    finally:
        if bench is not None:
            bench.cleanup()
    results["phase_seconds"] = timer.seconds
    results["run_seconds"] = timer.total()
    results["environment"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["goals"] = goals_status(results)
    results = _jsonable(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=1)
    table = markdown_table(results)
    if args.readme:
        write_readme(args.readme, table)
    print(table)
    logger.info("Wrote %s%s in %.0f s", args.output, f" and {args.readme}" if args.readme else "", results["run_seconds"])
    return results


if __name__ == "__main__":
    main()
