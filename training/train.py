"""Train an InfoDisent model on top of any pretrained Hugging Face vision backbone, with 🤗 Accelerate.

    accelerate launch training/train.py                       # the embedded default: Fashion-MNIST subset + bundled ResNet
    accelerate launch training/train.py --dataset_name path/or/hub-id --backbone microsoft/resnet-50 \\
        --output_dir outputs/my-infodisent --push_to_hub --hub_model_id me/my-infodisent
    accelerate launch --multi_gpu --num_processes 2 training/train.py ...   # 2 processes (also on a CPU-only machine)

The steps, top to bottom:
1. arguments (the names of transformers' ``run_image_classification_no_trainer.py`` where they exist);
2. the dataset (``training/data.py``: Hub id, imagefolder or parquet; images converted to RGB);
3. the frozen backbone, its image processor and — when it has one — its own classifier head;
4. the feature cache (``training/features.py``): the backbone's feature maps extracted once per split (sharded
   across processes) and kept on disk; ``--live_backbone`` (implied by ``--augment``) runs the backbone in the loop;
5. the head (rotation U, nonnegative W, bias) trained on the features (``training/fit.py``): Gumbel temperature
   annealed per step, optional distillation from the backbone's head, L1 penalty on W, then pruning to
   ``--max_prototypes_per_class`` and fine-tuning (``training/sparsity.py``); evaluation every epoch; checkpoints;
6. the linear-probe baseline, the explanation-size statistics, the prototype gallery (when available);
7. the output folder: a complete Hub repo (weights + code files, image processor, gallery, ``all_results.json``,
   model card), optionally pushed with ``--push_to_hub``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default run is fully offline; unset it to use the Hub

import torch  # noqa: E402

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `accelerate launch training/train.py` from a clone, without installing
    sys.path.insert(0, str(_ROOT))

import modeling_infodisent  # noqa: E402,F401  (registers the infodisent model type)
from accelerate.logging import get_logger  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from modeling_infodisent import InfoDisentForImageClassification  # noqa: E402
from training.data import DEFAULT_BACKBONE, DEFAULT_DATASET, load_image_dataset, make_transform  # noqa: E402
from training.features import LiveImages, default_cache_dir, get_or_extract_features  # noqa: E402
from training.fit import FitConfig, fit_head, live_featurizer, make_accelerator, train_linear_probe  # noqa: E402
from training.model_card import FASHION_MNIST_HUB_ID, build_model_card, push_folder_to_hub  # noqa: E402

logger = get_logger(__name__)

DEFAULT_OUTPUT_DIR = "outputs/infodisent-fashion-mnist"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train InfoDisent on a frozen pretrained backbone.")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", type=str, default=None,
                      help="Hub dataset id or local folder (parquet / imagefolder). Default: the bundled Fashion-MNIST subset.")
    data.add_argument("--train_dir", type=str, default=None, help="An imagefolder with the training data.")
    data.add_argument("--validation_dir", type=str, default=None, help="An imagefolder with the validation data.")
    data.add_argument("--train_val_split", type=float, default=0.15,
                      help="Fraction of train held out for validation when the dataset has no validation/test split.")
    data.add_argument("--image_column_name", type=str, default=None, help="Default: the first Image() column.")
    data.add_argument("--label_column_name", type=str, default=None, help="Default: the first ClassLabel column.")

    model = parser.add_argument_group("backbone and InfoDisent head")
    model.add_argument("--backbone", type=str, default=DEFAULT_BACKBONE,
                       help="Hub id or local folder of any HF vision model (with its image processor). "
                            "Default: the bundled Fashion-MNIST ResNet.")
    model.add_argument("--rotation", choices=("cayley", "matrix_exp", "riemannian", "identity"), default="cayley")
    model.add_argument("--live_backbone", action="store_true",
                       help="Run the backbone in the training loop instead of caching its feature maps.")
    model.add_argument("--augment", action="store_true",
                       help="Random flips / small affine jitter of the training images (implies --live_backbone).")
    model.add_argument("--cache_dir", type=str, default=None,
                       help="Feature cache folder. Default: $INFODISENT_CACHE or ~/.cache/infodisent/features.")
    model.add_argument("--cache_dtype", choices=("float32", "float16"), default="float16",
                       help="Storage type of cached feature maps: float16 (default) halves the disk footprint at the "
                            "same accuracy (embedded default: identical for seeds 0 and 1).")
    model.add_argument("--feature_batch_size", type=int, default=128, help="Batch size of the feature extraction.")

    train = parser.add_argument_group("training")
    train.add_argument("--per_device_train_batch_size", type=int, default=256)
    train.add_argument("--per_device_eval_batch_size", type=int, default=256)
    train.add_argument("--learning_rate", type=float, default=1e-2)
    train.add_argument("--weight_decay", type=float, default=0.0)
    train.add_argument("--num_train_epochs", type=int, default=10)
    train.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_train_epochs (main phase).")
    train.add_argument("--warmup_ratio", type=float, default=0.05)
    train.add_argument("--gumbel_temperature_start", type=float, default=1.0)
    train.add_argument("--gumbel_temperature_end", type=float, default=0.05)
    train.add_argument("--loss", choices=("softmax", "sigmoid"), default="softmax",
                       help="softmax cross-entropy, or SIDE-style per-class sigmoid / binary cross-entropy.")
    train.add_argument("--distill_weight", type=float, default=0.0,
                       help="0 = labels only; a in (0, 1] mixes (1-a) label loss + a KL to the backbone head's logits.")
    train.add_argument("--distill_temperature", type=float, default=2.0)
    train.add_argument("--seed", type=int, default=0)

    sparse = parser.add_argument_group("compact explanations")
    sparse.add_argument("--sparsity_l1", type=float, default=1e-2,
                        help="L1 penalty on the classifier weights W (mean per-class L1 norm) during the main epochs.")
    sparse.add_argument("--sparsity_hoyer", type=float, default=0.0,
                        help="Scale-invariant concentration penalty mean_k |W_k|_1 / |W_k|_2 during the main epochs.")
    sparse.add_argument("--max_prototypes_per_class", type=int, default=10,
                        help="After the main epochs keep each class's M largest weights (0 = dense, no pruning).")
    sparse.add_argument("--finetune_epochs", type=int, default=3, help="Epochs after pruning, with the mask fixed.")
    sparse.add_argument("--finetune_learning_rate", type=float, default=None, help="Default: learning_rate / 3.")

    out = parser.add_argument_group("output")
    out.add_argument("--output_dir", type=str, default=DEFAULT_OUTPUT_DIR)
    out.add_argument("--checkpointing_steps", type=str, default=None, help="Save state every N steps, or 'epoch'.")
    out.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint folder, or 'latest'.")
    out.add_argument("--with_tracking", action="store_true", help="Log metrics with the trackers of --report_to.")
    out.add_argument("--report_to", type=str, default="all",
                     help='"tensorboard", "wandb", "comet_ml", "clearml", or "all" (every installed one).')
    out.add_argument("--gallery_top_k", type=int, default=5, help="Patches per prototype in the gallery (0 = none).")
    out.add_argument("--push_to_hub", action="store_true")
    out.add_argument("--hub_model_id", type=str, default=None, help="Default: the output folder's name.")
    out.add_argument("--hub_token", type=str, default=None)
    # Testing aid: exit abruptly after N optimiser steps (after the checkpoint of that step, if any).
    out.add_argument("--stop_after_steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.augment and not args.live_backbone:
        args.live_backbone = True  # augmented views change every epoch: they cannot come from a cache
    if args.push_to_hub and args.hub_model_id is None:
        args.hub_model_id = Path(args.output_dir).name
    if args.resume_from_checkpoint == "latest" and not os.path.isdir(args.output_dir):
        parser.error(f"--resume_from_checkpoint latest: the output folder {args.output_dir!r} does not exist.")
    return args


def load_backbone(name: str):
    """The frozen backbone as saved (with its classifier head when it has one) and its image processor."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

    try:
        config = AutoConfig.from_pretrained(name)
    except Exception as error:  # noqa: BLE001 - reported in the user's terms
        offline = " (HF_HUB_OFFLINE is set: only local folders work)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise ValueError(
            f"Cannot load the backbone {name!r}{offline}: pass a local folder with config.json, weights and "
            f"preprocessor_config.json, or a Hub model id. ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from error
    if config.model_type == "infodisent":
        raise ValueError(f"{name!r} is already an InfoDisent model; pass the backbone it explains instead.")
    has_head = any(a.endswith("ForImageClassification") for a in (config.architectures or []))
    try:
        backbone = (AutoModelForImageClassification if has_head else AutoModel).from_pretrained(name)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"Cannot load the weights of backbone {name!r}: {type(error).__name__}: {error}") from error
    try:
        image_processor = AutoImageProcessor.from_pretrained(name)
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"The backbone {name!r} has no image processor (preprocessor_config.json), so its preprocessing is "
            f"unknown. Save one next to it (e.g. AutoImageProcessor.from_pretrained(...).save_pretrained(folder))."
        ) from error
    backbone.requires_grad_(False).eval()
    return backbone, image_processor, has_head


def head_matches_labels(head_config, id2label: dict[int, str]) -> bool:
    """Whether the backbone's own classifier predicts the dataset's classes (same count, same names unless generic)."""
    if head_config.num_labels != len(id2label):
        return False
    names = [str(head_config.id2label[i]) for i in range(head_config.num_labels)]
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return True
    return [n.lower() for n in names] == [id2label[i].lower() for i in range(len(id2label))]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = shlex.join(["accelerate", "launch", "training/train.py", *argv])

    # ----------------------------------------------------------------------------------------------- accelerator
    accelerator_kwargs = {}
    if args.with_tracking:
        from accelerate.utils import ProjectConfiguration

        # Tracker files go to output_dir/logs, which is not uploaded with the model.
        accelerator_kwargs.update(
            log_with=args.report_to,
            project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
        )
    accelerator = make_accelerator(**accelerator_kwargs)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    if not accelerator.is_main_process:
        logging.getLogger("training").setLevel(logging.WARNING)
    logger.info(accelerator.state, main_process_only=False)
    import datasets
    import transformers

    datasets.utils.logging.set_verbosity_warning()
    transformers.utils.logging.set_verbosity_error()
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    start_time = time.time()

    # ----------------------------------------------------------------------------------------------------- data
    with accelerator.main_process_first():
        dataset, image_column, label_column, id2label = load_image_dataset(
            args.dataset_name, args.train_dir, args.validation_dir, args.train_val_split,
            args.image_column_name, args.label_column_name, seed=args.seed,
        )  # fmt: skip
    logger.info("Data: %d train / %d validation images, %d classes", len(dataset["train"]), len(dataset["validation"]), len(id2label))

    # ------------------------------------------------------------------------------------------------- backbone
    backbone, image_processor, has_head = load_backbone(args.backbone)
    head_model = backbone if has_head and head_matches_labels(backbone.config, id2label) else None
    if has_head and head_model is None:
        logger.info("The backbone's own classifier predicts other classes: no agreement / distillation.")
    if args.distill_weight > 0 and head_model is None:
        raise ValueError("--distill_weight > 0 needs a backbone whose own classifier predicts the dataset's classes.")
    torch.manual_seed(args.seed)  # the rotation and classifier initialisation
    model = InfoDisentForImageClassification.from_backbone(backbone, id2label=id2label, rotation=args.rotation)
    model.to(accelerator.device)
    if head_model is not None:
        head_model.to(accelerator.device)

    # --------------------------------------------------------------------------------------------- feature cache
    transform = make_transform(image_processor, image_column, label_column)
    cache_kwargs = dict(
        image_processor=image_processor, image_column=image_column, label_column=label_column, transform=transform,
        cache_dir=args.cache_dir or default_cache_dir(), head_model=head_model, batch_size=args.feature_batch_size,
        accelerator=accelerator, dtype=args.cache_dtype, pooled_only=args.live_backbone,
    )  # fmt: skip
    train_cache = get_or_extract_features(model, dataset["train"], split_name="train", **cache_kwargs)
    eval_cache = get_or_extract_features(model, dataset["validation"], split_name="validation", **cache_kwargs)
    cache_reused = train_cache.reused and eval_cache.reused
    featurizer = None
    if args.live_backbone:
        train_data = LiveImages(dataset["train"], make_transform(image_processor, image_column, label_column, args.augment))
        eval_data = LiveImages(dataset["validation"], transform)
        featurizer = live_featurizer(model, head_model)
    else:
        train_data, eval_data = train_cache, eval_cache

    # ------------------------------------------------------------------------------------------------- training
    if args.with_tracking:
        accelerator.init_trackers("infodisent", {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})
    fit_config = FitConfig(
        num_train_epochs=args.num_train_epochs, max_train_steps=args.max_train_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        gumbel_temperature_start=args.gumbel_temperature_start, gumbel_temperature_end=args.gumbel_temperature_end,
        loss=args.loss, distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
        sparsity_l1=args.sparsity_l1, sparsity_hoyer=args.sparsity_hoyer, max_prototypes_per_class=args.max_prototypes_per_class,
        finetune_epochs=args.finetune_epochs, finetune_learning_rate=args.finetune_learning_rate, seed=args.seed,
        checkpointing_steps=args.checkpointing_steps, resume_from_checkpoint=args.resume_from_checkpoint,
        output_dir=args.output_dir, stop_after_steps=args.stop_after_steps, with_tracking=args.with_tracking,
    )  # fmt: skip
    final = fit_head(model, train_data, eval_data, fit_config, accelerator=accelerator, featurizer=featurizer)

    # ----------------------------------------------------------------------------------------------- evaluation
    probe = train_linear_probe(train_cache, eval_cache, seed=args.seed)
    results = {
        "eval_accuracy": final["accuracy"],
        "eval_num_examples": final["num_examples"],
        "linear_probe_accuracy": probe["accuracy"],
        "backbone_head_accuracy": final.get("backbone_head_accuracy"),
        "agreement": final.get("agreement"),
        "train_runtime_s": round(time.time() - start_time, 1),
        "explanation_size_median": final["explanation_size_median"],
        "explanation_size_p90": final["explanation_size_p90"],
        "explanation_size_mean": round(final["explanation_size_mean"], 3),
        **final["sparsity"],
        "pruning": final["pruning"],
        "feature_cache_reused": bool(cache_reused),
        "num_processes": accelerator.num_processes,
        "global_step": final["global_step"],
        "epochs": final["history"],
        "command": command,
        "backbone": _display_path(args.backbone),
        "dataset": _display_path(args.dataset_name or args.train_dir or DEFAULT_DATASET),
    }
    logger.info(
        "eval_accuracy %.4f | linear probe %.4f | backbone head %s | agreement %s | explanation size median %s p90 %s",
        results["eval_accuracy"], results["linear_probe_accuracy"], results["backbone_head_accuracy"],
        results["agreement"], results["explanation_size_median"], results["explanation_size_p90"],
    )  # fmt: skip

    # --------------------------------------------------------------------------------------------- gallery, save
    has_gallery = False
    if accelerator.is_main_process:
        model.set_gumbel_temperature(args.gumbel_temperature_end)
        model.save_pretrained(args.output_dir)
        image_processor.save_pretrained(args.output_dir)
        if args.gallery_top_k > 0:
            has_gallery = _save_gallery(model, dataset["train"], image_processor, args, image_column, label_column)
        results["train_runtime_s"] = round(time.time() - start_time, 1)
        with open(os.path.join(args.output_dir, "all_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        is_default_data = args.dataset_name is None and args.train_dir is None
        dataset_hub_id = FASHION_MNIST_HUB_ID if is_default_data else None
        card = build_model_card(
            results, model_name=args.hub_model_id or Path(args.output_dir).name, backbone=results["backbone"],
            dataset=results["dataset"], command=command, id2label=id2label, dataset_hub_id=dataset_hub_id,
            dataset_pretty_name="Fashion-MNIST (embedded 5,000 / 1,000 subset)" if is_default_data else None,
            has_gallery=has_gallery,
        )  # fmt: skip
        card.save(os.path.join(args.output_dir, "README.md"))
        logger.info("Saved the model folder %s (%.0f s in all)", args.output_dir, results["train_runtime_s"])
        if args.push_to_hub:
            url = push_folder_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token)
            logger.info("Pushed to %s", url)
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.end_training()
    return results


def _display_path(path: str) -> str:
    """Paths inside this repository are written relative to it (the bundled defaults), others as given."""
    try:
        relative = Path(path).resolve().relative_to(_ROOT)
    except (ValueError, OSError):
        return path
    return str(relative) if Path(path).exists() else path


def _save_gallery(model, train_dataset, image_processor, args, image_column, label_column) -> bool:
    """The prototype gallery (top training patches per prototype), when the gallery module is available."""
    try:
        from modeling_infodisent.gallery import compute_gallery
    except ImportError:
        logger.info("No prototype gallery: modeling_infodisent.gallery is not available in this version.")
        return False
    gallery = compute_gallery(
        model, train_dataset, image_processor, top_k=args.gallery_top_k, batch_size=args.feature_batch_size,
        image_column=image_column, label_column=label_column,
    )  # fmt: skip
    gallery.save(args.output_dir)
    return True


if __name__ == "__main__":
    main()
