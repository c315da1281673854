"""Feature extraction against the backbone's own forward pass (issue 24): images per second, side by side.

    python -m benchmarks.extraction_speed                      # the real ImageNet network (+ ResNet-50), CPU
    python -m benchmarks.extraction_speed --device cuda        # the same on a GPU (benchmarks/gpu_check.sh)
    python -m benchmarks.extraction_speed --smoke              # tiny configs, seconds (the tests' path)

For each backbone, on the same generated 224² images (``benchmarks/scale_inputs.generated_dataset``) and batch size,
the rounds interleave (A B C … A B C …, so a load change on a shared machine hits every variant alike) and the median
round is kept:

* ``forward``: the backbone's own ``...ForImageClassification`` forward on tensors already made by its image
  processor, under ``torch.no_grad`` — the ceiling extraction is measured against;
* ``forward, inference_mode`` / ``+ channels_last`` / ``+ bf16 autocast``: the same forward with each change, and how
  far its feature map moves from the float32 one (max |Δ| / max |feature|): mixed precision is "exact enough" for
  the cache only when that stays under ``EXACT_ENOUGH`` (the cache feeds the exact logit decomposition);
* ``extraction``: the project's ``training.features.get_or_extract_features`` as ``train.py`` calls it (decode the
  images, the processor, the forward, the head logits, the cache write), into a fresh cache each round; then the same
  with ``DataLoader`` workers (``--dataloader_num_workers`` of ``train.py``).

Writes ``benchmarks/extraction_speed_<device>.json`` and its table between the markers of ``docs/scale.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parents[1]
DOCS = _ROOT / "docs" / "scale.md"
START, END = "<!-- extraction:start -->", "<!-- extraction:end -->"
#: max |feature_bf16 − feature_fp32| / max |feature_fp32| below which mixed precision could fill the cache
EXACT_ENOUGH = 1e-2


def _backbones(smoke: bool, names: list[str] | None) -> dict:
    """name -> a callable giving ``(head_model, image_processor)``."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from benchmarks.scale_inputs import SMOKE_SIZE, _image_processor, backbone_configs

    configs = backbone_configs(smoke)
    size = SMOKE_SIZE if smoke else 224
    found = {}

    def from_config(config):
        def load():
            torch.manual_seed(0)
            return AutoModelForImageClassification.from_config(config).eval(), _image_processor(size)

        return load

    for name, config in configs.items():
        found[name] = from_config(config)
    if not smoke:
        from training import real_backbone

        folder = real_backbone.find()
        if folder is not None:
            found = {
                "efficientnet_lite0_in1k": lambda: (
                    AutoModelForImageClassification.from_pretrained(folder).eval(),
                    AutoImageProcessor.from_pretrained(folder),
                ),
                **found,
            }
    default = list(found)[:2] if not smoke else ["resnet50", "vit_b16"]
    chosen = names or default
    unknown = [n for n in chosen if n not in found]
    if unknown:
        print(f"error: unknown backbone(s) {unknown}; choose from {list(found)}", file=sys.stderr)
        raise SystemExit(2)
    return {n: found[n] for n in chosen}


def _feature_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float((other.float() - reference.float()).abs().max() / reference.float().abs().max().clamp_min(1e-12))


def measure_backbone(head_model, processor, dataset, batch_size: int, rounds: int, device: torch.device) -> dict:
    """Images/s of every variant on ``dataset`` (a ``datasets.Dataset`` with ``image`` / ``label``)."""
    from modeling_infodisent import InfoDisentForImageClassification
    from training.data import collate_fn, make_transform
    from training.features import get_or_extract_features

    head_model = head_model.to(device)
    model = InfoDisentForImageClassification.from_backbone(head_model, id2label=head_model.config.id2label).to(device)
    model.eval()
    transform = make_transform(processor, "image", "label")
    examples = dataset.with_transform(transform)
    pixels = collate_fn([examples[i] for i in range(len(dataset))])["pixel_values"].to(device)
    batches = list(pixels.split(batch_size))
    n = len(pixels)
    is_conv = pixels.dim() == 4 and not hasattr(head_model.config, "patch_size")

    def forward(mode: str):
        def run():
            grad = torch.inference_mode() if mode != "no_grad" else torch.no_grad()
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16")
            with grad, autocast:
                for x in batches:
                    if mode == "channels_last":
                        x = x.contiguous(memory_format=torch.channels_last)
                    head_model(pixel_values=x)

        return run

    scratch = tempfile.mkdtemp(prefix="infodisent-extraction-speed-")

    def extraction(workers: int):
        def run():
            cache = os.path.join(scratch, f"cache-{time.monotonic_ns()}")
            get_or_extract_features(
                model,
                dataset,
                processor,
                "image",
                "label",
                transform,
                cache_dir=cache,
                head_model=head_model,
                batch_size=batch_size,
                num_workers=workers,
            )
            shutil.rmtree(cache, ignore_errors=True)

        return run

    variants = {
        "forward": forward("no_grad"),
        "forward, inference_mode": forward("inference_mode"),
        "forward, inference_mode + bf16 autocast": forward("bf16"),
        "extraction": extraction(0),
        "extraction, 2 DataLoader workers": extraction(2),
    }
    if is_conv:
        variants["forward, inference_mode + channels_last"] = forward("channels_last")
    seconds = {name: [] for name in variants}
    try:
        for name, fn in variants.items():  # warm-up: one-time costs (allocation, oneDNN primitives) out of the rounds
            if name.startswith("forward"):
                fn()
        for _ in range(rounds):
            for name, fn in variants.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[name].append(time.perf_counter() - start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if is_conv:
            head_model.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        x = batches[0]
        reference = model.extract_features(x)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = model.extract_features(x)
        errors = {"forward, inference_mode + bf16 autocast": _feature_error(reference, bf16)}
        if is_conv:
            head_model.to(memory_format=torch.channels_last)
            try:
                cl = model.extract_features(x.contiguous(memory_format=torch.channels_last))
            finally:
                head_model.to(memory_format=torch.contiguous_format)
            errors["forward, inference_mode + channels_last"] = _feature_error(reference, cl)
    base = statistics.median(seconds["forward"])
    rows = {}
    for name, values in seconds.items():
        median = statistics.median(values)
        rows[name] = {
            "images_per_s": round(n / median, 2),
            "relative_to_forward": round(base / median, 3),
            "seconds": [round(v, 3) for v in values],
        }
        if name in errors:
            rows[name]["feature_max_rel_error"] = float(f"{errors[name]:.3g}")
            rows[name]["exact_enough"] = errors[name] < EXACT_ENOUGH
    return {
        "images": n,
        "batch_size": batch_size,
        "rounds": rounds,
        "feature_shape": list(reference.shape[1:]),
        "variants": rows,
    }


def markdown(results: dict) -> str:
    lines = [
        f"{results['device']}, {results['threads']} threads, {results['images']} images of "
        f"{results['image_size']}² per round, batch {results['batch_size']}, median of {results['rounds']} "
        f"interleaved rounds; load average {results['load_average_before']} before; code {results['git_commit']}. "
        "Images/s (× the plain forward).",
        "",
    ]
    names = list(next(iter(results["backbones"].values()))["variants"])
    lines.append("| backbone (map) | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for backbone, r in results["backbones"].items():
        cells = []
        for name in names:
            v = r["variants"].get(name)
            if v is None:
                cells.append("–")
                continue
            cell = f"{v['images_per_s']:.1f} ({v['relative_to_forward']:.2f}×)"
            if "feature_max_rel_error" in v:
                cell += f", error {v['feature_max_rel_error']:.1g}"
            cells.append(cell)
        shape = "×".join(str(s) for s in r["feature_shape"])
        lines.append(f"| {backbone} ({shape}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_docs(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else "# Scale\n"
    if START not in text:
        text = text.rstrip() + f"\n\n## Extraction against the backbone's own forward\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    path.write_text(f"{head}{START}\n{table}{END}{rest.split(END, 1)[1]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.extraction_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backbones", nargs="+", default=None, help="Default: the real network (if installed), ResNet-50.")
    p.add_argument("--images", type=int, default=None, help="Per round (default 128; smoke 16).")
    p.add_argument("--batch_size", type=int, default=None, help="Default 32 (smoke 8).")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--output", default=None, help="Default: benchmarks/extraction_speed_<device>.json (smoke: none).")
    p.add_argument("--no_docs", action="store_true", help="Do not write the table into docs/scale.md.")
    args = p.parse_args(argv)
    for name in ("images", "batch_size", "rounds"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm's first import (datasets'): no bar per extraction round
    import datasets
    import transformers

    from benchmarks.scale_inputs import SMOKE_SIZE, generated_dataset
    from benchmarks.suite import git_commit

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    device = torch.device(args.device)
    images = args.images or (16 if args.smoke else 128)
    batch = args.batch_size or (8 if args.smoke else 32)
    data = generated_dataset(images, 1, SMOKE_SIZE if args.smoke else 224)["train"]
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results = {
        "command": "python -m benchmarks.extraction_speed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "images": images,
        "image_size": SMOKE_SIZE if args.smoke else 224,
        "batch_size": batch,
        "rounds": args.rounds,
        "load_average_before": [round(v, 1) for v in load] if load else None,
        "git_commit": git_commit(),
        "exact_enough": f"max |feature - float32 feature| / max |float32 feature| < {EXACT_ENOUGH}",
        "backbones": {},
    }
    for name, load_backbone in _backbones(args.smoke, args.backbones).items():
        head_model, processor = load_backbone()
        results["backbones"][name] = measure_backbone(head_model, processor, data, batch, args.rounds, device)
        print(json.dumps({name: {k: v["images_per_s"] for k, v in results["backbones"][name]["variants"].items()}}))
    table = markdown(results)
    print(table)
    output = args.output or (None if args.smoke else str(_ROOT / "benchmarks" / f"extraction_speed_{device.type}.json"))
    if output:
        Path(output).write_text(json.dumps({**results, "table": table}, indent=1) + "\n")
    if not (args.smoke or args.no_docs):
        write_docs(DOCS, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
