"""Train an InfoDisent model on top of any pretrained Hugging Face vision backbone, with 🤗 Accelerate.

    accelerate launch training/train.py  # the embedded default: Fashion-MNIST subset + bundled ResNet
    accelerate launch --config_file training/accelerate_config.yaml -q training/train.py   # same, quiet launcher
    accelerate launch training/train.py --dataset_name path/or/hub-id --backbone microsoft/resnet-50 \\
        --output_dir outputs/my-infodisent --push_to_hub --hub_model_id me/my-infodisent
    accelerate launch --multi_gpu --num_processes 2 training/train.py ...   # 2 processes (also on a CPU-only machine)

The steps, top to bottom:
1. arguments (the names of transformers' ``run_image_classification_no_trainer.py`` where they exist);
2. the dataset (``training/data.py``: Hub id, imagefolder or parquet; images converted to what the backbone takes);
   a validation split for the schedule's decisions (held out from train when the data has none) and the test
   split, evaluated once at the end;
3. the frozen backbone, its image processor and — when it has one — its own classifier head;
4. the feature cache (``training/features.py``): the backbone's feature maps extracted once per split (sharded
   across processes) and kept on disk; ``--live_backbone`` (implied by ``--augment``) runs the backbone in the loop;
   ``--streaming`` (``training/streaming.py``) reads every split as a stream, each process its own shard, through the
   live backbone: no local copy, no cache;
5. the head (rotation U, nonnegative W, bias) trained on the features (``training/fit.py``, schedule in
   ``training/schedule.py``): a fixed global batch, a step budget with early stopping on the validation split,
   Gumbel temperature annealed over the budget, optional distillation from the backbone's head, L1 penalty on W,
   then pruning to ``--max_prototypes_per_class`` and fine-tuning until the validation accuracy recovers (if it
   does not, the head before pruning is pruned to twice the budget, and so on; ``training/sparsity.py``);
   checkpoints (``training/checkpoints.py``);
6. the linear-probe baseline, the explanation-size statistics, the prototype gallery (when available);
7. the output folder: a complete Hub repo (weights + code files, image processor, gallery, ``all_results.json``,
   model card), written aside and swapped into place only when complete (``training/publish.py``), optionally
   pushed with ``--push_to_hub``.

Bad arguments or files (``training/checks.py``) are reported as one line ``error: ...`` and exit status 2, before
anything heavy is loaded where they can be. Under ``accelerate launch`` the launcher adds its own traceback and exit
status 1 unless it is given ``-q`` (as with the bundled ``training/accelerate_config.yaml`` command above).
The Hub is never switched off here: local folders (the embedded defaults) load without any network access, and
``HF_HUB_OFFLINE=1`` is the user's choice.
"""

from __future__ import annotations

if __name__ == "__main__":
    # The door: the command line is parsed and range-checked before torch, transformers and datasets are imported
    # (~10 s on a small machine), so a bad argument is one line and exit 2 in well under 2 s.
    from training.arguments import door

    door()

import logging
import os
import shutil
import sys
import time

import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed

import modeling_infodisent  # noqa: F401  (registers the infodisent model type)
from modeling_infodisent import InfoDisentForImageClassification
from training import arguments, streaming
from training.arguments import DEFAULT_OUTPUT_DIR  # noqa: F401  (for callers)
from training.checks import UsageError, check_against_data, head_label_match, inspect_backbone, validate_args
from training.data import DEFAULT_DATASET, load_image_dataset, make_transform, parse_augment, shuffle_labels
from training.evaluation import evaluate, live_featurizer, train_linear_probe
from training.features import LiveImages, default_cache_dir, get_or_extract_features
from training.fit import FitConfig, fit_head
from training.hardware import make_accelerator
from training.model_card import NO_TEST_SPLIT_NOTE, push_folder_to_hub
from training.model_folder import write_model_folder
from training.publish import (
    CARRIED_OVER,
    public_command,
    public_name,
    recover_interrupted_swap,
    staging_dir,
    swap_into_place,
)
from training.run_defaults import backbone_source, check_output_dir

logger = get_logger(__name__)


def parse_args(argv=None):
    """The arguments as `training.arguments` parses and range-checks them (before this module's imports when the
    script runs: see the top of the file), with the names of --augment resolved."""
    args = arguments.parse_args(argv)
    args.augment = parse_augment(args.augment)  # () for none; an unknown name is one error line
    if args.augment and not args.live_backbone:
        args.live_backbone = True  # augmented views change every epoch: they cannot come from a cache
    return args


def load_backbone_weights(name: str, config):
    """The frozen backbone as saved, with its classifier head when it has one. Missing or mismatched weights are an
    error (transformers would initialise them at random and only warn)."""
    from transformers import AutoModel, AutoModelForImageClassification

    from modeling_infodisent.backbones import has_classifier_head

    has_head = has_classifier_head(config)  # transformers' architectures, or a timm config's num_classes
    try:
        backbone, info = (AutoModelForImageClassification if has_head else AutoModel).from_pretrained(
            name, output_loading_info=True
        )
    except Exception as error:  # noqa: BLE001 - reported in the user's terms
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UsageError(f"--backbone: cannot load the weights of {name!r}: {type(error).__name__}: {first}") from error
    broken = list(info.get("missing_keys") or []) + [
        str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or []
    ]
    if broken:
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise UsageError(f"--backbone: the weights of {name!r} lack or mismatch {', '.join(sorted(broken)[:3])}{more}.")
    backbone.requires_grad_(False).eval()
    return backbone, has_head


def load_backbone(name: str):
    """The frozen backbone (with its classifier head when it has one), its image processor, and whether it has a
    head."""
    config, image_processor = inspect_backbone(name)
    backbone, has_head = load_backbone_weights(name, config)
    return backbone, image_processor, has_head


def head_matches_labels(head_config, id2label: dict[int, str], user_says_it_matches: bool = False) -> bool:
    """Whether the backbone's own classifier predicts the dataset's classes (see `training.checks.head_label_match`)."""
    return head_label_match(head_config, id2label, user_says_it_matches)[0]


def main(argv=None):
    """The whole run. User errors raise `training.checks.UsageError` (or another ValueError); `cli` reports them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    validate_args(args)
    check_output_dir(args)  # another run's model is not replaced without --overwrite_output_dir
    backbone_config, image_processor = inspect_backbone(args.backbone)  # config + processor only: cheap
    if args.dilate_last_stage and backbone_config.model_type != "resnet":
        raise UsageError(
            f"--dilate_last_stage: implemented for ResNet backbones; {public_name(args.backbone)} is a "
            f"{backbone_config.model_type!r} model."
        )
    command = public_command(argv)  # no path of this machine in the published folder
    output_existed = os.path.isdir(args.output_dir)
    try:
        return _run(args, command, backbone_config, image_processor)
    except BaseException:
        _remove_if_left_empty(args.output_dir, output_existed)
        raise


def _no_usage_ping_for_local_data(args) -> None:
    """`datasets` pings a usage counter on S3 (3 s timeout) whenever it builds a packaged loader (imagefolder,
    parquet), even for local files: a local run must not touch the network, and this is the only call that would.
    The Hub itself stays on (Hub ids still load); the user's own HF_UPDATE_DOWNLOAD_COUNTS wins."""
    import datasets.config

    source = args.dataset_name or args.train_dir
    if "HF_UPDATE_DOWNLOAD_COUNTS" not in os.environ and (source is None or os.path.exists(os.path.expanduser(source))):
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False


def _remove_if_left_empty(output_dir: str, existed: bool) -> None:
    """A failed run leaves no output folder it created, unless it holds checkpoints to resume from."""
    if existed or not os.path.isdir(output_dir) or int(os.environ.get("RANK", "0")) != 0:
        return
    if not any(CARRIED_OVER.fullmatch(e) and e != "logs" for e in os.listdir(output_dir)):
        shutil.rmtree(output_dir, ignore_errors=True)


_STARTED = {"run": False}  # past the checks that fail the same way on every rank (see `cli`)


def _run(args, command, backbone_config, image_processor):
    """Steps 2-7 of the module docstring, once the arguments and the backbone's config have been checked."""
    _STARTED["run"] = True
    # ----------------------------------------------------------------------------------------------- accelerator
    accelerator_kwargs = {}
    if args.with_tracking:
        from accelerate.utils import ProjectConfiguration

        # Tracker files go to output_dir/logs, which is not uploaded with the model.
        accelerator_kwargs.update(
            log_with=args.report_to,
            project_config=ProjectConfiguration(
                project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
            ),
        )
    accelerator = make_accelerator(**accelerator_kwargs)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    if not accelerator.is_main_process:
        logging.getLogger("training").setLevel(logging.WARNING)
    logger.info(accelerator.state, main_process_only=False)
    logger.info(
        "Backbone: %s, from %s; output folder: %s", public_name(args.backbone), backbone_source(args), args.output_dir
    )
    import datasets
    import transformers

    datasets.utils.logging.set_verbosity_warning()
    transformers.utils.logging.set_verbosity_error()
    set_seed(args.seed)
    if accelerator.is_main_process:
        recover_interrupted_swap(args.output_dir)  # a previous run killed while saving
    accelerator.wait_for_everyone()
    start_time = time.time()

    # ----------------------------------------------------------------------------------------------------- data
    _no_usage_ping_for_local_data(args)
    if args.streaming:
        dataset, split_rows, image_column, label_column, id2label = streaming.load_streaming_dataset(
            args.dataset_name,
            args.train_dir,
            args.validation_dir,
            args.image_column_name,
            args.label_column_name,
        )
        global_batch = (
            args.per_device_train_batch_size * accelerator.num_processes
            if args.per_device_train_batch_size
            else args.train_batch_size
        )
        planned_rows = streaming.resolve_train_rows(split_rows["train"], args, global_batch)
    else:
        with accelerator.main_process_first():
            dataset, image_column, label_column, id2label = load_image_dataset(
                args.dataset_name,
                args.train_dir,
                args.validation_dir,
                args.train_val_split,
                args.image_column_name,
                args.label_column_name,
                seed=args.seed,
                test_dir=args.test_dir,
                test_split_name=args.test_split_name,
            )
            if args.shuffle_labels:
                dataset = shuffle_labels(dataset, label_column, seed=args.seed)
        split_rows = {k: len(v) for k, v in dataset.items()}
    split_sources = getattr(dataset, "split_sources", {})
    logger.info(
        "Data: %s train / %s validation (%s) / %s test images, %d classes%s",
        split_rows["train"],
        split_rows["validation"],
        split_sources.get("validation", "validation"),
        split_rows.get("test", "no"),
        len(id2label),
        " (streamed)" if args.streaming else "",
    )
    # What only the data can bound (the batch against the rows, the planned steps): before any extraction.
    check_against_data(args, split_rows["train"], accelerator.num_processes)

    # ------------------------------------------------------------------------------------------------- backbone
    backbone, has_head = load_backbone_weights(args.backbone, backbone_config)
    head_model, head_missing_reason = None, "the backbone has no classifier head"
    if has_head:
        matches, head_missing_reason = head_label_match(backbone.config, id2label, args.backbone_head_matches_labels)
        head_model = backbone if matches else None
    if head_model is None:
        if args.backbone_head_matches_labels:
            raise UsageError(f"--backbone_head_matches_labels: {head_missing_reason}.")
        if args.distill_weight > 0:
            raise UsageError(
                f"--distill_weight > 0 needs a backbone whose own classifier predicts the dataset's classes: "
                f"{head_missing_reason}."
            )
        logger.info("No agreement, backbone-head accuracy or distillation: %s.", head_missing_reason)
    torch.manual_seed(args.seed)  # the rotation and classifier initialisation
    # One rule for "the backbone's head predicts our classes" (training.checks.head_label_match): the model keeps the
    # original classifier exactly when agreement is measured -- unless the last stage is dilated: the original
    # classifier reads the undilated map, so a dilated model never keeps it (agreement is still measured, against the
    # original's own logits cached at extraction).
    model = InfoDisentForImageClassification.from_backbone(
        backbone,
        id2label=id2label,
        rotation_parametrization=args.rotation,
        dilate_last_stage=args.dilate_last_stage,
        keep_original_head=head_model is not None and not args.dilate_last_stage,
    )
    model.to(accelerator.device)
    if head_model is not None:
        head_model.to(accelerator.device)

    # --------------------------------------------------------------------------------------------- feature cache
    # The channel count the backbone takes (1 for a grayscale backbone): the processor's, else the config's.
    num_channels = getattr(backbone.config, "num_channels", None)
    transform = make_transform(image_processor, image_column, label_column, num_channels=num_channels)
    cache_kwargs = dict(
        image_processor=image_processor,
        image_column=image_column,
        label_column=label_column,
        transform=transform,
        cache_dir=args.cache_dir or default_cache_dir(),
        head_model=head_model,
        batch_size=args.feature_batch_size,
        num_workers=args.dataloader_num_workers,
        accelerator=accelerator,
        dtype=args.cache_dtype,
        pooled_only=args.live_backbone,
        backbone_name=args.backbone,
    )
    if args.streaming:
        train_cache = eval_cache = test_cache = None
        cache_reused = False
        train_transform = make_transform(image_processor, image_column, label_column, args.augment, num_channels)
        train_data = streaming.StreamSplit(
            dataset["train"], train_transform, image_column, planned_rows, args.shuffle_buffer_size
        )
        eval_data, test_data = (
            streaming.StreamSplit(dataset[s], transform, image_column, split_rows[s], max_rows=args.max_eval_samples)
            if s in dataset
            else None
            for s in ("validation", "test")
        )
        featurizer = live_featurizer(model, head_model)
    else:
        train_cache = get_or_extract_features(model, dataset["train"], split_name="train", **cache_kwargs)
        eval_cache = get_or_extract_features(model, dataset["validation"], split_name="validation", **cache_kwargs)
        test_cache = (
            get_or_extract_features(model, dataset["test"], split_name="test", **cache_kwargs)
            if "test" in dataset
            else None
        )
        cache_reused = train_cache.reused and eval_cache.reused and (test_cache is None or test_cache.reused)
        featurizer = None
    if args.live_backbone and not args.streaming:
        train_data = LiveImages(
            dataset["train"], make_transform(image_processor, image_column, label_column, args.augment, num_channels)
        )
        eval_data = LiveImages(dataset["validation"], transform)
        featurizer = live_featurizer(model, head_model)
    elif not args.streaming:
        train_data, eval_data = train_cache, eval_cache

    # ------------------------------------------------------------------------------------------------- training
    if args.with_tracking:
        accelerator.init_trackers(
            "infodisent", {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        )
    fit_config = FitConfig.from_args(args, grow_prototype_budget=not args.strict_prototype_budget)
    final = fit_head(model, train_data, eval_data, fit_config, accelerator=accelerator, featurizer=featurizer)

    # ----------------------------------------------------------------------------------------------- evaluation
    # The validation split took every schedule decision; the test split is evaluated once, here, on the final model.
    no_probe = {"accuracy": None}  # --streaming: no pooled features of the whole training split
    probe = no_probe if args.streaming else train_linear_probe(train_cache, eval_cache, seed=args.seed)
    test = test_probe = None
    if test_cache is not None or (args.streaming and test_data is not None):
        if not args.streaming:
            test_data = LiveImages(dataset["test"], transform) if args.live_backbone else test_cache
        test = evaluate(model, test_data, args.per_device_eval_batch_size, accelerator, featurizer)
        test_probe = no_probe if args.streaming else train_linear_probe(train_cache, test_cache, seed=args.seed)
    results = {
        "splits": {
            "train": {"rows": split_rows["train"], "source": split_sources.get("train", "train")},
            "validation": {
                "rows": len(eval_data) if args.streaming else split_rows["validation"],
                "source": split_sources.get("validation", "validation"),
                "used_for": "every schedule decision (early stopping, best state, pruning recovery)",
            },
            "test": None
            if test is None
            else {
                "rows": test["num_examples"] if args.streaming else split_rows["test"],
                "source": split_sources.get("test", "test"),
                "used_for": "evaluated once, on the final model; never used for a decision",
            },
            "keys": "eval_* and the unprefixed accuracy figures (linear_probe_accuracy, backbone_head_accuracy, "
            "agreement, explanation_size_*) are on the validation split; test_* on the test split",
            **({} if test is not None else {"no_test_split": NO_TEST_SPLIT_NOTE}),
        },
        "shuffled_labels": ({"seed": args.seed, "splits": ["train", "validation"]} if args.shuffle_labels else None),
        "augment": list(args.augment),
        "eval_accuracy": final["accuracy"],
        "eval_num_examples": final["num_examples"],
        "linear_probe_accuracy": probe["accuracy"],
        "backbone_head_accuracy": final.get("backbone_head_accuracy"),
        "agreement": final.get("agreement"),
        "explanation_size_median": final["explanation_size_median"],
        "explanation_size_p90": final["explanation_size_p90"],
        "explanation_size_mean": round(final["explanation_size_mean"], 3),
        **(
            {}
            if test is None
            else {
                "test_accuracy": test["accuracy"],
                "test_num_examples": test["num_examples"],
                "test_linear_probe_accuracy": test_probe["accuracy"],
                "test_backbone_head_accuracy": test.get("backbone_head_accuracy"),
                "test_agreement": test.get("agreement"),
                "test_explanation_size_median": test["explanation_size_median"],
                "test_explanation_size_p90": test["explanation_size_p90"],
                "test_explanation_size_mean": round(test["explanation_size_mean"], 3),
            }
        ),
        "train_runtime_s": round(time.time() - start_time, 1),
        **final["sparsity"],
        "pruning": final["pruning"],
        "pruning_recovered": None if final["pruning"] is None else final["pruning"]["recovered"],
        "schedule": final["schedule"],
        "examples_seen": final["examples_seen"],
        "feature_cache_reused": bool(cache_reused),
        "num_processes": accelerator.num_processes,
        "global_step": final["global_step"],
        "history": final["history"],
        "command": command,
        "backbone": public_name(args.backbone),
        "dataset": public_name(args.dataset_name or args.train_dir or DEFAULT_DATASET),
    }
    if args.streaming:
        results.update(streaming.results_entries(train_data, split_rows["train"], args, accelerator))
    logger.info(
        "validation: accuracy %s | linear probe %s | backbone head %s | agreement %s | explanation size median %s "
        "p90 %s",
        *map(
            _shown,
            (
                results["eval_accuracy"],
                results["linear_probe_accuracy"],
                results["backbone_head_accuracy"],
                results["agreement"],
                results["explanation_size_median"],
                results["explanation_size_p90"],
            ),
        ),
    )
    if test is not None:
        logger.info(
            "test (once, final model): accuracy %s | linear probe %s | backbone head %s | agreement %s",
            *map(
                _shown,
                (
                    results["test_accuracy"],
                    results["test_linear_probe_accuracy"],
                    results["test_backbone_head_accuracy"],
                    results["test_agreement"],
                ),
            ),
        )
    if final["pruning"] is not None and not final["pruning"]["recovered"]:
        logger.warning("Pruning cost validation accuracy beyond the tolerance: %s", final["pruning"]["warning"])

    # --------------------------------------------------------------------------------------------- gallery, save
    if head_model is None:
        results["agreement_missing_reason"] = head_missing_reason  # also why backbone_head_accuracy is null
    if accelerator.is_main_process:
        # The folder is built aside and swapped into place only when complete: a run killed at any point leaves
        # the previous model (or the new one), never new weights next to an old gallery and card.
        staging = staging_dir(args.output_dir)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            write_model_folder(
                staging,
                model,
                image_processor,
                dataset["train"],
                image_column,
                label_column,
                id2label,
                results,
                command,
                args,
                start_time,
            )
            swap_into_place(staging, args.output_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("Saved the model folder %s (%.0f s in all)", args.output_dir, results["train_runtime_s"])
        if args.push_to_hub:
            url = push_folder_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token)
            logger.info("Pushed to %s", url)
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.end_training()
    return results


# Errors in the user's arguments, files or data: reported as one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def _shown(value) -> str:
    """A figure as the log shows it: 3 decimals (0.973, not 0.9733333333333334), integers plain, "n/a" if missing."""
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) and not value.is_integer() else f"{value:g}"


def cli(argv=None) -> int:
    """The command line: ``main``, with user errors printed as one ``error: ...`` line and exit status 2.

    With N processes, the argument checks fail identically on every rank: only the main process prints. A later
    error may be one rank's alone (e.g. NaN features in its shard): the other ranks print it after a moment, unless
    the launcher has stopped them by then because the main process failed too (so the line is not printed twice)."""
    try:
        main(argv)
    except USER_ERRORS as error:
        if int(os.environ.get("RANK", "0")) != 0:
            if not _STARTED["run"]:
                return 2
            time.sleep(3.0)
        message = " ".join(str(error).split()) or type(error).__name__
        print(message if message.startswith("error: ") else f"error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
