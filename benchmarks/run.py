"""InfoDisent benchmarks: accuracy, ablations, faithfulness against Grad-CAM, compactness, speed, sparsity trade-off.

    python benchmarks/run.py --quick                    # the ground-truth section: 73 s of CPU, peak 2.1 GB
    python benchmarks/run.py                            # the full run (default training schedule, more images)
    python benchmarks/run.py --sections speed faithfulness --output /tmp/results.json
    python benchmarks/run.py --suite                    # the suite of datasets x backbones (benchmarks/suite.py)

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

import json
import logging
import os
import sys
from pathlib import Path

import torch

from benchmarks.accuracy import (
    section_ablations,
    section_accuracy,
    section_full_fashion_mnist,
    section_tradeoff,
)
from benchmarks.common import _ROOT, FULL_FASHION_MNIST, TRAIN_DEFAULTS, Bench, Timer, _jsonable, environment
from benchmarks.compactness import section_compactness
from benchmarks.faithfulness import section_faithfulness
from benchmarks.groundtruth_trust import section_groundtruth
from benchmarks.report import goals_status, markdown_table, write_readme
from benchmarks.speed_section import section_speed
from training.arguments import ExitingParser

logger = logging.getLogger("benchmarks")

SECTIONS = ("accuracy", "ablations", "tradeoff", "compactness", "faithfulness", "groundtruth", "speed")


def parse_args(argv=None):
    p = ExitingParser(description=__doc__.split("\n\n")[0])  # errors: one line, "did you mean", exit 2
    p.add_argument(
        "--quick",
        action="store_true",
        help="Short schedules and fewer images (the ground-truth section: "
        "40 images per set, 73 s of CPU time, peak 2.1 GB; 8.3 min wall on 2 cores at load 10).",
    )
    p.add_argument("--output", default=str(_ROOT / "benchmarks" / "results.json"), help="Where the JSON goes.")
    p.add_argument(
        "--readme",
        default=str(_ROOT / "benchmarks" / "README.md"),
        help="Markdown file whose table (between the benchmark markers) is rewritten; '' = none. "
        "The default also rewrites the copy of the block in docs/benchmarks.md.",
    )
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--dataset_name", default=None, help="Default: the embedded Fashion-MNIST subset.")
    p.add_argument("--backbone", default=None, help="Default: the embedded Fashion-MNIST ResNet.")
    p.add_argument(
        "--full_fashion_mnist",
        choices=("auto", "yes", "no"),
        default="auto",
        help="Also evaluate on the full Fashion-MNIST test set (Debian files in "
        f"{FULL_FASHION_MNIST}); 'auto' = when the files exist and not --quick.",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the CPU cores minus one, or 1 when the machine is already busy).",
    )
    p.add_argument("--device", default="auto", help="'auto' (cuda when available), 'cpu' or 'cuda'.")
    p.add_argument("--cache_dir", default=None, help="Feature cache folder to reuse (default: a fresh temporary one).")
    p.add_argument(
        "--num_train_epochs",
        type=int,
        default=None,
        help="Main epochs of every fit (default: the training script's; quick: at most 6).",
    )
    p.add_argument(
        "--finetune_epochs",
        type=int,
        default=None,
        help="Epochs after pruning (default: the training script's; quick: at most 2).",
    )
    p.add_argument(
        "--distill_weight", type=float, default=0.5, help="Distillation weight of the 'with distillation' runs."
    )
    p.add_argument(
        "--faithfulness_images", type=int, default=None, help="Test images for deletion/insertion (500; quick 64)."
    )
    p.add_argument("--road_images", type=int, default=None, help="Test images for ROAD (100; quick 32).")
    p.add_argument("--speed_repeats", type=int, default=None, help="Interleaved timing rounds (9; quick 5).")
    p.add_argument(
        "--groundtruth_full",
        action="store_true",
        help="The ground-truth section with the reported protocol of benchmarks/groundtruth_preregistration.md "
        "(5 head seeds x 2 black boxes, 1,000 images per set; about 15 min per set on one core). Without it, "
        "--quick runs the same protocol on 40 images, 2 head seeds, 1 black box.",
    )
    p.add_argument(
        "--scale",
        action="store_true",
        help="Only the real-scale pipeline (benchmarks/scale.py: ResNet-50, "
        "ConvNeXt-T, ViT-B/16, Swin-T at 224², 200 classes; ≤ 15 min on a 2-core CPU).",
    )
    p.add_argument(
        "--smoke", action="store_true", help="With --scale: tiny configs at 64 px, seconds (the tests' path)."
    )
    args = p.parse_args(argv)
    quick = args.quick
    defaults = dict(
        # The training script's schedule; --quick shortens it (6 + 2 epochs) to keep the training sections to a few
        # minutes on a busy 2-core machine (18 fits: the default schedule took 8.3 min in all at load 3.5).
        # Without --quick: None = the script's own step budget with early stopping on the validation split.
        num_train_epochs=6 if quick else TRAIN_DEFAULTS["num_train_epochs"],
        finetune_epochs=2 if quick else TRAIN_DEFAULTS["finetune_epochs"],
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--suite" in argv:  # the suite has its own options (--suite_seeds, ...): benchmarks/suite.py
        from benchmarks import suite

        sys.exit(suite.main([a for a in argv if a != "--suite"]))
    args = parse_args(argv)
    if args.scale:
        from benchmarks import scale

        return scale.main_from_run(args)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    for noisy in ("training", "accelerate", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import datasets
    import transformers

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
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
        if "groundtruth" in args.sections:
            with timer("groundtruth"):
                results["groundtruth"] = section_groundtruth(args, device, timer)
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
        if Path(args.readme).resolve() == (_ROOT / "benchmarks" / "README.md").resolve():
            # docs/benchmarks.md shows the same block (tests/test_readme.py checks that the two are identical).
            write_readme(str(_ROOT / "docs" / "benchmarks.md"), table)
    print(table)
    logger.info(
        "Wrote %s%s in %.0f s", args.output, f" and {args.readme}" if args.readme else "", results["run_seconds"]
    )
    return results


if __name__ == "__main__":
    main()
