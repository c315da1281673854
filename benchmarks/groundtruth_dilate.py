"""Finer prototype maps from the SAME frozen backbone (issue 22): three options, side by side on the same images.

    python benchmarks/groundtruth_dilate.py --set marks --black_box 0 --head_seeds 0 1 --images 300 --test_seed 1 \\
        --output benchmarks/results_groundtruth_dilated.json

- ``native``: InfoDisent on the last stage, as trained by default (11×11 on the known-answer sets).
- ``dilated``: the model option ``dilate_last_stage`` (`modeling_infodisent.backbones.dilate_last_stage`): the last
  stage's strided convolution stops striding and its other 3×3 convolutions get dilation 2 (torchvision's
  ``replace_stride_with_dilation``), weights unchanged: 21×21, every cell seeing what it saw before. The original
  classifier is dilated too here (its head average-pools the dilated map), so Grad-CAM on it is read at 21×21 as well.
- ``penultimate``: InfoDisent on the stage before the last (the model option ``feature_layer=-2``: 32×21×21 instead of
  64×11×11), the original classifier the whole black box.

For each: the original classifier's accuracy, the linear probe on the pooled maps, InfoDisent's accuracy (head trained
by `fit_head`), the probe gap, and the pointing of InfoDisent's own maps (read on their own grid) and of Grad-CAM /
input × gradient on the original with every readout, on the first test images of the tuning or reported split
(--test_seed). ScoreCAM and AblationCAM are left out (64 forward passes per image); the dilated model through the
whole protocol is `groundtruth_trust.py --dilate_last_stage`. A run fails when an option leaves InfoDisent's own grid
unchanged (the first version of this script dilated only the original classifier and did not notice).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.groundtruth_trust import SETS
from modeling_infodisent.backbones import dilate_last_stage

# Each option is InfoDisent's own config: `from_backbone` rebuilds the backbone from it, so a change made to the
# loaded modules (the dilation of the original classifier below) would not reach InfoDisent.
MODEL_OPTIONS = {"native": {}, "dilated": {"dilate_last_stage": True}, "penultimate": {"feature_layer": -2}}
OPTIONS = tuple(MODEL_OPTIONS)


def _run(
    variant: str, b: int, head_seeds: list[int], images: int, test_seed: int, option: str, train_rows: int = 2000, **fit
) -> dict:
    """One option on one black box; `fit`: epoch overrides of the head's schedule (`num_train_epochs`, ...)."""
    import shutil
    import tempfile

    import training.train as train_module
    from benchmarks.generate import write
    from benchmarks.groundtruth_trust import TRAIN_SEED, run_black_box, summarise
    from training.evaluation import train_linear_probe

    folder = tempfile.mkdtemp(prefix="infodisent-gt22-dilate-")
    write(variant, folder, train_rows, images, seed=TRAIN_SEED, test_seed=test_seed)
    original_loader = train_module.load_backbone
    probe = {}

    def loader(*a, **k):
        backbone, processor, has_head = original_loader(*a, **k)
        if option == "dilated":  # the original classifier
            dilate_last_stage(backbone)
        return backbone, processor, has_head

    s = dict(images=images, head_seeds=head_seeds, black_box_seeds=[b], chunk=50, costly=False, shuffled_seeds=0)
    s.update(fit)
    s["model_kwargs"] = MODEL_OPTIONS[option]
    train_module.load_backbone = loader
    try:
        run = run_black_box(
            variant,
            folder,
            b,
            s,
            on_bench=lambda bench: probe.update(train_linear_probe(bench.train_cache, bench.report_cache, seed=0)),
        )
    finally:
        train_module.load_backbone = original_loader
        shutil.rmtree(folder, ignore_errors=True)
    # The options are about InfoDisent's grid: say so loudly when it did not change (it silently did not, once).
    if option == "penultimate" and run["infodisent_grid"][0] <= run["grid"][0]:
        raise RuntimeError(f"penultimate: InfoDisent's grid {run['infodisent_grid']} is not finer than {run['grid']}")
    if option == "dilated" and list(run["infodisent_grid"]) != list(run["grid"]):
        raise RuntimeError(f"dilated: InfoDisent's grid {run['infodisent_grid']} is not the dilated {run['grid']}")
    summary = summarise([run], reps=500)
    acc_id = float(run["correct_infodisent"].mean())
    return {
        "grid": run["grid"],  # the original classifier's
        "infodisent_grid": list(run["infodisent_grid"]),
        "original_accuracy": float(run["correct_original"].mean()),
        "infodisent_accuracy": acc_id,
        "linear_probe_accuracy": probe.get("accuracy"),
        "probe_gap": None if probe.get("accuracy") is None else acc_id - probe["accuracy"],
        "pointing": {k: v["all"] for k, v in summary["table"].items() if ":" not in k},
    }


def main(argv=None) -> int:
    from benchmarks.common import _jsonable

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", default="marks", choices=SETS)
    p.add_argument("--black_box", type=int, default=0)
    p.add_argument("--head_seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--test_seed", type=int, default=2)
    p.add_argument("--options", nargs="+", choices=OPTIONS, default=list(OPTIONS))
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    if args.images < 2:
        p.exit(2, f"error: --images must be >= 2, got {args.images}\n")
    torch.set_num_threads(1)
    out = {"command": "python benchmarks/groundtruth_dilate.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    for name in args.options:
        out[name] = _run(args.set, args.black_box, args.head_seeds, args.images, args.test_seed, name)
    out = _jsonable(out)
    for name in args.options:
        r = out[name]
        print(
            f"{name}: InfoDisent's grid {r['infodisent_grid']}, original {100 * r['original_accuracy']:.1f}%, "
            f"InfoDisent {100 * r['infodisent_accuracy']:.1f}%, "
            f"probe {100 * (r['linear_probe_accuracy'] or np.nan):.1f}%"
        )
        for k, v in r["pointing"].items():
            print(f"  {k}: {100 * v['mean']:.1f} [{100 * v['low']:.1f}, {100 * v['high']:.1f}]")
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
