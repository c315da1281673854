"""The whole pipeline at real scale (issue 12): `python benchmarks/run.py --scale`.

Random-weight ResNet-50, ConvNeXt-T, ViT-B/16 and Swin-T (each a transformers `...ForImageClassification` with a
200-class head, so that extraction also caches the backbone head's logits as for a fine-tuned CUB backbone) at 224²
on a generated dataset of a few hundred images, through the project's own functions: feature extraction
(`training.features.get_or_extract_features`) -> head training with pruning (`training.fit.fit_head`) -> gallery
(`modeling_infodisent.gallery.compute_gallery`) -> save + model card (`training.model_card.build_model_card`) ->
`explain()` -> the Space's loader (`spaces/explainer.py`'s `Explainer`). Per phase: wall time and peak resident memory;
the cache size; head step / fixed-U step ratios (`benchmarks.rotation`); explain / forward; the cached epoch vs an
epoch through the backbone; and the projected time of CUB-200 (5,994 training and 5,794 test images, the training
script's default schedule) on this machine, from per-image and per-step times measured here.

Random weights are fine: every cost here depends on shapes, not on what the weights learned (accuracy is not
reported). The images are generated deterministically (coloured shapes on textured backgrounds, numpy RNG per
index), nothing is downloaded. `--smoke` runs the same code on tiny configs at 64 px in well under a minute (the
tests run it); `--device cuda` (benchmarks/gpu_check.sh) runs the backbone in bf16 mixed precision through
accelerate and keeps the head in float32 (U itself is built in float64 by the Cayley map, as on the CPU).

This module measures and drives the run; the configs, data and settings are in `benchmarks/scale_inputs.py`, the
results file and the table in `benchmarks/scale_report.py`.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.memory import PeakMemory
from benchmarks.scale_inputs import SMOKE_SIZE, Settings, _image_processor, backbone_configs, generated_dataset
from benchmarks.scale_report import _write_json, markdown_table, write_readme_table

_ROOT = Path(__file__).resolve().parents[1]
CUB_TRAIN, CUB_TEST = 5994, 5794  # CUB-200-2011's official split


# ----------------------------------------------------------------------------------------------- measurement
@dataclass
class Phases:
    device: torch.device
    records: dict = field(default_factory=dict)

    def run(self, name: str, fn):
        """Run fn(), record its wall time and peak memory, return its result."""
        _sync(self.device)
        with PeakMemory(self.device) as memory:
            start = time.perf_counter()
            result = fn()
            _sync(self.device)
            seconds = time.perf_counter() - start
        record = {"seconds": round(seconds, 6), "peak_rss_mb": round(memory.peak_mb, 1)}
        if memory.cuda_peak_mb is not None:
            record["cuda_peak_mb"] = round(memory.cuda_peak_mb, 1)
        self.records[name] = record
        return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _folder_mb(path: str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def run_backbone(name: str, config, data, settings: Settings, workdir: str, fit_defaults) -> dict:
    """The pipeline on one backbone; returns its phases, sizes, ratios and the CUB projection."""
    from transformers import AutoModelForImageClassification

    from benchmarks import rotation, speed
    from modeling_infodisent import InfoDisentForImageClassification
    from modeling_infodisent.gallery import compute_gallery
    from training.data import make_transform
    from training.evaluation import evaluate
    from training.features import get_or_extract_features
    from training.fit import FitConfig, fit_head
    from training.hardware import make_accelerator
    from training.model_card import build_model_card
    from training.sparsity import prune_to_budget

    device = torch.device(settings.device)
    phases = Phases(device)
    size = SMOKE_SIZE if settings.smoke else 224
    processor = _image_processor(size)

    def build():
        torch.manual_seed(0)
        backbone = AutoModelForImageClassification.from_config(config).eval()
        model = InfoDisentForImageClassification.from_backbone(backbone, id2label=config.id2label)
        return backbone.to(device), model.to(device)

    backbone, model = phases.run("build", build)
    # The backbone in mixed precision (autocast around extraction and gallery); the head trains with a float32
    # accelerator: U's retraction and the exact decomposition need float32.
    backbone_accelerator = make_accelerator(mixed_precision=settings.mixed_precision)
    accelerator = make_accelerator()
    transform = make_transform(processor, "image", "label")
    cache_dir = os.path.join(workdir, "cache")

    def extract():
        # Under accelerate's autocast on a GPU the backbone runs in bf16; the cache stores what it produces.
        with backbone_accelerator.autocast():
            kwargs = dict(
                image_processor=processor,
                image_column="image",
                label_column="label",
                transform=transform,
                cache_dir=cache_dir,
                head_model=backbone,
                batch_size=settings.feature_batch_size,
                accelerator=accelerator,
                dtype=settings.cache_dtype,
            )
            train = get_or_extract_features(model, data["train"], split_name="train", **kwargs)
            val = get_or_extract_features(model, data["validation"], split_name="validation", **kwargs)
        return train, val

    train_cache, val_cache = phases.run("extract", extract)
    num_images = len(data["train"]) + len(data["validation"])
    feature_shape = tuple(train_cache.feature_shape)
    dim, grid = feature_shape[0], feature_shape[1:]
    cache_mb = _folder_mb(cache_dir)

    batch = settings.train_batch_size or fit_defaults.train_batch_size  # the global batch
    fit_config = FitConfig(
        num_train_epochs=1,
        finetune_epochs=1,
        train_batch_size=min(batch, len(train_cache)),
        per_device_eval_batch_size=fit_defaults.per_device_eval_batch_size,
        show_progress=False,
    )
    final = phases.run(
        "train_and_prune", lambda: fit_head(model, train_cache, val_cache, fit_config, accelerator=accelerator)
    )
    phases.run("prune_again", lambda: prune_to_budget(model, fit_defaults.max_prototypes_per_class))
    u = model.rotation.detach().double()
    orthogonality = float((u.T @ u - torch.eye(dim, dtype=torch.float64, device=u.device)).abs().max())
    eval_result = phases.run(
        "evaluate", lambda: evaluate(model, val_cache, fit_defaults.per_device_eval_batch_size, accelerator)
    )

    out_dir = os.path.join(workdir, "model")

    def save_and_card():
        model.set_gumbel_temperature(fit_defaults.gumbel_temperature_end)
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        results = {
            "eval_accuracy": final["accuracy"],
            "eval_num_examples": final["num_examples"],
            "explanation_size_median": final["explanation_size_median"],
            "explanation_size_p90": final["explanation_size_p90"],
            **final["sparsity"],
        }
        card = build_model_card(
            results,
            model_name=f"infodisent-scale-{name}",
            backbone=f"random {name}",
            dataset="generated",
            command="python benchmarks/run.py --scale",
            id2label=config.id2label,
            has_gallery=True,
        )
        card.save(os.path.join(out_dir, "README.md"))

    def gallery():
        subset = data["train"].select(range(min(settings.gallery_images, len(data["train"]))))
        with backbone_accelerator.autocast():
            result = compute_gallery(
                model, subset, processor, top_k=5, batch_size=settings.feature_batch_size, progress=False
            )
        result.save(out_dir)

    phases.run("save_and_card", save_and_card)
    phases.run("gallery", gallery)

    # explain() vs a plain forward, batch 1 (one image explained), interleaved
    model.eval()
    pixel_values = processor(images=[data["validation"][0]["image"]], return_tensors="pt")["pixel_values"].to(device)
    model.rotation_matrix()  # materialise U as a deployed model would have it
    times = speed._time_interleaved(
        {"forward": lambda: model(pixel_values), "explain": lambda: model.explain(pixel_values)},
        repeats=settings.explain_repeats,
        device=device,
    )
    explain_ratio = statistics.median(e / f for e, f in zip(times["explain"], times["forward"]))
    forward_seconds = statistics.median(times["forward"])

    def space_load():
        from spaces.explainer import Explainer  # the Space's model side (no Gradio needed)

        explainer = Explainer(out_dir)
        explainer.explain(data["validation"][0]["image"], None)

    phases.run("space_load_and_explain", space_load)

    # Head step (batch of the training script's default) per rotation parametrisation, on synthetic features of the
    # cached shape; the floor is the fixed-U step.
    # The GEMM dtype the training run above actually used (fit_head reports it: bfloat16 at D >= 512 where native).
    bf16 = final["schedule"]["rotation_matmul_dtype"] == "bfloat16"
    variants = ("fixed_u", "identity", "cayley", "riemannian") + (("fixed_u+bf16", "cayley+bf16") if bf16 else ())
    steps = rotation.step_ratios(
        shapes={name: (dim, grid[0])},
        batches=(batch,),
        variants=variants,
        repeats=settings.step_repeats,
        device=device,
        warmup=settings.step_warmup,
    )[f"{name}_batch{batch}"]
    row_seconds = _cache_read_seconds_per_row(train_cache, batch)
    extraction_per_image = phases.records["extract"]["seconds"] / num_images
    eval_per_row = phases.records["evaluate"]["seconds"] / max(1, len(val_cache))
    suffix = "+bf16" if bf16 else ""
    default = model.config.rotation_parametrization + suffix  # the step the training script takes
    projection = project_cub(
        fit_defaults,
        steps[default]["seconds"],
        steps["fixed_u" + suffix]["seconds"],
        row_seconds,
        extraction_per_image,
        eval_per_row,
    )
    return {
        "feature_shape": list(feature_shape),
        "phases": phases.records,
        "cache_mb": round(cache_mb, 2),
        "cache_mb_per_image": round(cache_mb / num_images, 4),
        "cache_gb_cub": round(cache_mb / num_images * (CUB_TRAIN + CUB_TEST) / 1024, 2),
        "cache_dtype": settings.cache_dtype,
        "orthogonality_error": orthogonality,
        "eval_rows": eval_result["num_examples"],
        "rotation": model.config.rotation_parametrization,
        # the head_step variant the training script runs here ("cayley+bf16" at D >= 512 on AMX)
        "training_step": default,
        "head_step": steps,
        "head_step_over_fixed_u": steps[default]["ratio_to_fixed_u"],
        "riemannian_step_over_fixed_u": steps["riemannian"]["ratio_to_fixed_u"],
        "head_step_over_identity": statistics.median(
            a / b for a, b in zip(steps[default]["all_seconds"], steps["identity"]["all_seconds"])
        ),
        "explain_over_forward": explain_ratio,
        "forward_seconds_batch1": forward_seconds,
        "backbone_seconds_per_image": extraction_per_image,
        "cache_read_seconds_per_row": row_seconds,
        "cached_epoch_speedup": projection["live_epoch_s"] / projection["cached_epoch_s"],
        "projection_cub": projection,
    }


def _cache_read_seconds_per_row(cache, batch: int) -> float:
    """Seconds per row to read and collate random batches from the cache (what a cached epoch reads)."""
    from training.features import collate_batch

    rows = len(cache)
    order = np.random.default_rng(0).permutation(rows)
    start = time.perf_counter()
    for first in range(0, rows, batch):
        collate_batch(cache.__getitems__(order[first : first + batch]))
    return (time.perf_counter() - start) / rows


def project_cub(
    fit_defaults, step_s: float, floor_step_s: float, row_s: float, image_s: float, eval_row_s: float
) -> dict:
    """Projected seconds for CUB-200 with the training script's default schedule (`training.schedule.plan_schedule`),
    from measured per-unit costs. CUB has train + test only, so the script holds 15% of train out for validation:
    extraction of all images, then the main phase's step budget (no early stop assumed: the upper bound) and one
    fine-tuning round, each step a head step plus the cache reads of one global batch; the validation split is
    evaluated every ``eval_steps`` ("eval as scheduled") or only once at the end of each phase, the test split once."""
    from training.schedule import plan_schedule

    batch = fit_defaults.train_batch_size
    validation = round(CUB_TRAIN * 0.15)
    plan = plan_schedule(CUB_TRAIN - validation, batch, fit_defaults)
    steps = plan.main_steps + plan.finetune_steps
    step_cost, floor_cost = step_s + batch * row_s, floor_step_s + batch * row_s
    scheduled_evals = math.ceil(plan.main_steps / plan.eval_steps) + (1 if plan.finetune_steps else 0)
    final_evals = 1 + (1 if plan.finetune_steps else 0)
    eval_val, eval_test = validation * eval_row_s, CUB_TEST * eval_row_s
    extraction = (CUB_TRAIN + CUB_TEST) * image_s
    cached_epoch = plan.steps_per_epoch * step_cost
    return {
        "schedule": f"{plan.main_steps} main steps (step budget, eval every {plan.eval_steps}) + "
        f"{plan.finetune_steps} fine-tuning steps (one round), global batch {batch}",
        "train_rows": plan.num_rows,
        "validation_rows": validation,
        "steps": steps,
        "epochs": steps / plan.steps_per_epoch,
        "steps_per_epoch": plan.steps_per_epoch,
        "extraction_s": extraction,
        "cached_epoch_s": cached_epoch,
        "live_epoch_s": plan.num_rows * image_s + cached_epoch,
        "head_training_s_eval_every_epoch": steps * step_cost + scheduled_evals * eval_val + eval_test,
        "head_training_s_eval_at_end": steps * step_cost + final_evals * eval_val + eval_test,
        "head_training_floor_s": steps * floor_cost + final_evals * eval_val + eval_test,
        "total_s": extraction + steps * step_cost + scheduled_evals * eval_val + eval_test,
    }


# ----------------------------------------------------------------------------------------------------- driver
def run(
    smoke: bool = False,
    device: str = "cpu",
    backbones: list[str] | None = None,
    threads: int | None = None,
    settings: Settings | None = None,
    mixed_precision: str | None = None,
    partial_output: str | None = None,
) -> dict:
    """All backbones, one after another. With `partial_output`, the results so far are written there after each
    backbone (`"complete": false` until the last), so a run stopped at a time limit still leaves its figures."""
    import datasets
    import transformers

    from training.fit import FitConfig

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("TQDM_DISABLE", "1")  # the extraction's progress bars
    if threads:
        torch.set_num_threads(threads)
    settings = settings or Settings.for_mode(smoke, device, mixed_precision)
    fit_defaults = FitConfig()  # the training script's schedule (its arguments default to FitConfig's)
    configs = backbone_configs(smoke)
    names = backbones or list(configs)
    start = time.perf_counter()
    data = generated_dataset(settings.num_train, settings.num_val, SMOKE_SIZE if smoke else 224)
    generate_s = time.perf_counter() - start
    results = {
        "settings": {k: v for k, v in vars(settings).items()},
        "device": _device_name(torch.device(device)),
        "threads": torch.get_num_threads(),
        "generate_dataset_s": round(generate_s, 2),
        "backbones": {},
    }
    for name in names:
        workdir = tempfile.mkdtemp(prefix=f"infodisent-scale-{name}-")
        try:
            results["backbones"][name] = run_backbone(name, configs[name], data, settings, workdir, fit_defaults)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if partial_output:
            _write_json(
                partial_output, {**results, "complete": False, "seconds_so_far": round(time.perf_counter() - start, 1)}
            )
    results["complete"] = True
    results["run_seconds"] = round(time.perf_counter() - start, 1)
    results["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return results


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores)"


def main(
    smoke: bool = False,
    device: str = "cpu",
    output: str | None = None,
    threads: int | None = None,
    backbones: list[str] | None = None,
    mixed_precision: str | None = None,
    settings: Settings | None = None,
) -> dict:
    results = run(
        smoke=smoke,
        device=device,
        backbones=backbones,
        threads=threads,
        mixed_precision=mixed_precision,
        settings=settings,
        partial_output=output,
    )
    table = markdown_table(results)
    results["table"] = table
    if output:
        _write_json(output, results)
    print(table)
    return results


def main_from_run(args) -> dict:
    """`benchmarks/run.py --scale [--smoke] [--device cuda] [--threads N] [--output F]`: results to
    benchmarks/scale_results.json (or --output when given) and the table into docs/scale.md (not with --smoke)."""
    import logging

    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    for noisy in ("training", "accelerate", "datasets", "transformers", "modeling_infodisent"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    output = args.output
    if Path(output).resolve() == (_ROOT / "benchmarks" / "results.json").resolve():
        output = str(
            _ROOT / "benchmarks" / ("scale_smoke_results.json" if args.smoke else f"scale_results_{device}.json")
        )
    results = main(smoke=args.smoke, device=device, output=output, threads=args.threads)
    if not args.smoke and args.readme:
        readme = str(_ROOT / "docs" / "scale.md")
        if write_readme_table(readme, results["table"], results):
            logging.getLogger(__name__).info("Wrote the table into %s", readme)
    # Extraction against the backbone's own forward (images/s, side by side): benchmarks/extraction_speed.py
    from benchmarks import extraction_speed

    smoke = ["--smoke", "--images", "8", "--rounds", "1", "--backbones", "resnet50"] if args.smoke else []
    docs = [] if args.readme else ["--no_docs"]
    extraction_speed.main(["--device", device, *smoke, *docs])
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The InfoDisent pipeline at real scale (issue 12).")
    parser.add_argument("--smoke", action="store_true", help="Tiny configs at 32 px: the code path in seconds.")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--output", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backbones", nargs="+", default=None)
    parser.add_argument(
        "--mixed_precision",
        choices=("no", "bf16", "fp16"),
        default=None,
        help="Of the backbone (default: bf16 on cuda, no on cpu); the head is always float32.",
    )
    for name in ("num_train", "num_val", "gallery_images", "step_repeats", "step_warmup"):
        parser.add_argument(f"--{name}", type=int, default=None, help="Overrides the mode's setting.")
    a = parser.parse_args()
    chosen = Settings.for_mode(a.smoke, a.device, a.mixed_precision)
    for name in ("num_train", "num_val", "gallery_images", "step_repeats", "step_warmup"):
        if getattr(a, name) is not None:
            setattr(chosen, name, getattr(a, name))
    main(a.smoke, a.device, a.output, a.threads, a.backbones, a.mixed_precision, settings=chosen)
