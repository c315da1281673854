"""The speed section: inference ratios (`benchmarks/speed.py`) and the cached-vs-live training-epoch ratio."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import TRAIN_DEFAULTS, Bench


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

    from training.evaluation import live_featurizer
    from training.features import LiveImages
    from training.fit import fit_head

    small = range(min(128, len(bench.report_cache)))
    # --quick times an epoch of the first 1280 training rows (10 batches): both paths cost the same per row whatever
    # the epoch length, so the ratio is the full epoch's; the full run uses the whole split.
    rows = range(min(1280, len(bench.train_cache))) if bench.args.quick else range(len(bench.train_cache))
    # The training recipe's main phase, one epoch, evaluated once at its end (not every budget/15 steps).
    config = dict(num_train_epochs=1, max_prototypes_per_class=0, eval_steps=10**9)
    seconds = {"cached": [], "live": []}
    for _ in range(2 if bench.args.quick else 3):
        for kind in ("cached", "live"):
            model = bench.new_model(0)
            if kind == "cached":
                train_data, eval_data, featurizer = (
                    Subset(bench.train_cache, rows),
                    Subset(bench.report_cache, small),
                    None,
                )
            else:
                train_data = Subset(LiveImages(bench.dataset["train"], bench.transform), rows)
                eval_data = Subset(LiveImages(bench.dataset[bench.report_split], bench.transform), small)
                featurizer = live_featurizer(model)
            start = time.perf_counter()
            fit_head(model, train_data, eval_data, bench.fit_config(0, **config), featurizer=featurizer)
            seconds[kind].append(time.perf_counter() - start)
    cached, live = statistics.median(seconds["cached"]), statistics.median(seconds["live"])
    return {
        "settings": {
            "data": f"{len(rows)} training images of {Path(bench.dataset_name).name}",
            "recipe": f"fit_head, 1 epoch of the training script's main phase (batch "
            f"{TRAIN_DEFAULTS['train_batch_size']}, L1 {TRAIN_DEFAULTS['sparsity_l1']:g}), no pruning; "
            "eval on 128 rows",
            "statistic": "median of interleaved repeats",
        },
        "seconds": seconds,
        "cached_epoch_seconds": cached,
        "live_epoch_seconds": live,
        "cached_epoch_speedup": live / cached,
    }
