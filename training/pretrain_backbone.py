"""Train the bundled black-box classifier that InfoDisent explains by default.

A Hugging Face ``ResNetForImageClassification`` (basic blocks, two stages) trained from scratch on the FULL
Fashion-MNIST training set (60,000 images, from the Debian package ``dataset-fashion-mnist``) with
``accelerate``, reading images through ``training/data.py`` (``to_rgb`` → augmentation → the model's own
``ViTImageProcessor``: grey 28×28 images become 3-channel RGB, resized to 56×56 and normalised with
Fashion-MNIST statistics). At 56×56 the last feature map (``ResNetModel.last_hidden_state``) is 128×7×7.

Splits: a validation split is held out of TRAIN (``--validation_fraction``, stratified, seeded) and reported after
every epoch; it takes no decision (the schedule is fixed). The TEST split — the full Fashion-MNIST test set, or the
``test`` split of ``--dataset_name`` — is scored once, at the end. Every reported figure names its split
(``training_results.json``: ``validation_accuracy``, ``test_accuracy`` / ``full_test_accuracy``,
``subset_test_accuracy`` and ``splits`` with each split's rows and source). A dataset without a test split gets
``test_accuracy: null``, never a held-out-train figure under that name.

Augmentation: ``--augment flip,shift,zoom`` (the default, safe for natural images), any subset of those names,
``crop`` (= shift,zoom: what an orientation- or side-sensitive set keeps), or ``none``; the chosen set goes into
``training_results.json`` and the card. ``--no_augment`` is a deprecated alias of ``--augment none``.

Writes ``--output_dir`` (default ``training/embedded/fashion_mnist_resnet``): ``model.safetensors``,
``config.json``, ``preprocessor_config.json``, ``README.md`` (model card) and ``training_results.json``
(the accuracies above, feature_map_shape, train_runtime_s, epochs, augment, command, ...).

    python training/pretrain_backbone.py --num_train_epochs 8
    python training/pretrain_backbone.py --dataset_name data/stripes --augment crop --output_dir out/stripes

``--max_train_steps N --no_save`` times a few steps without saving anything.

``--time_budget_min M`` makes the one-cycle learning-rate schedule run on ``max(step / total_steps,
elapsed / budget)``: on an idle machine it is the ordinary step-based schedule over ``--num_train_epochs``;
when the (shared) machine is slower than expected the schedule is compressed so that training ends, fully
annealed, after M minutes (fewer epochs; the number actually run is recorded in ``training_results.json``).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# On a shared 2-core machine OpenMP's default busy-waiting makes a 2-thread step 5x slower as soon as other
# processes compete for the cores (measured here: 5.1 s vs 1.1 s per step with OMP_WAIT_POLICY=PASSIVE).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from training.arguments import OneLineParser
from training.build_fashion_mnist_subset import CLASS_NAMES, full_fashion_mnist_dataset
from training.data import (
    DEFAULT_BACKBONE,
    DEFAULT_DATASET,
    collate_fn,
    describe_augment,
    load_image_dataset,
    make_transform,
    parse_augment,
)

# Fashion-MNIST pixel statistics (training set, pixels scaled to [0, 1]).
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530


def parse_args(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])  # errors: one line, "did you mean", exit 2 (cli)
    p.add_argument("--output_dir", default=DEFAULT_BACKBONE)
    p.add_argument(
        "--dataset_name",
        default=None,
        help="A parquet/imagefolder folder with train and test splits (e.g. from benchmarks/generate.py) "
        "instead of Fashion-MNIST; its labels become the head's. Default: the full Fashion-MNIST.",
    )
    p.add_argument("--image_size", type=int, default=56)
    p.add_argument("--embedding_size", type=int, default=32)
    p.add_argument("--hidden_sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--depths", type=int, nargs="+", default=[2, 2])
    p.add_argument("--num_train_epochs", type=int, default=8)
    p.add_argument("--max_train_steps", type=int, default=None, help="stop after N steps (timing runs)")
    p.add_argument(
        "--time_budget_min",
        type=float,
        default=None,
        help="compress the one-cycle schedule so that training ends after this many minutes",
    )
    p.add_argument("--warmup_fraction", type=float, default=0.2)
    p.add_argument("--per_device_train_batch_size", type=int, default=128)
    p.add_argument("--per_device_eval_batch_size", type=int, default=500)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--label_smoothing", type=float, default=0.1)
    p.add_argument(
        "--augment",
        default="flip,shift,zoom",
        help="comma-separated augmentations of the training images: flip (horizontal), shift (≤ 8%%), zoom "
        "(0.9-1.1), crop (= shift,zoom), or none. Default flip,shift,zoom (natural images); drop flip "
        "when mirroring changes the class.",
    )
    p.add_argument("--no_augment", action="store_true", help="deprecated: same as --augment none")
    p.add_argument(
        "--validation_fraction",
        type=float,
        default=0.1,
        help="fraction of the training split held out (stratified, seeded) as the validation split "
        "reported after each epoch (when the data has no validation split of its own)",
    )
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--num_threads", type=int, default=2)
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_save", action="store_true", help="do not write the output folder (timing runs)")
    args = p.parse_args(argv)
    if args.no_augment:
        print("warning: --no_augment is deprecated; use --augment none", file=sys.stderr)
        args.augment = "none"
    args.augment = parse_augment(args.augment)  # ValueError naming the choices: one line, exit 2 (see cli)
    if not 0 < args.validation_fraction < 1:
        raise ValueError(f"--validation_fraction must be in (0, 1), got {args.validation_fraction:g}.")
    return args


def build_model_and_processor(args, id2label: dict | None = None):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    id2label = id2label or dict(enumerate(CLASS_NAMES))
    config = ResNetConfig(
        num_channels=3,
        embedding_size=args.embedding_size,
        hidden_sizes=list(args.hidden_sizes),
        depths=list(args.depths),
        layer_type="basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = ResNetForImageClassification(config)
    processor = ViTImageProcessor(
        do_resize=True,
        size={"height": args.image_size, "width": args.image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=[FMNIST_MEAN] * 3,
        image_std=[FMNIST_STD] * 3,
    )
    return model, processor


def load_splits(args) -> tuple[dict, dict[str, str], dict | None]:
    """``({split: Dataset with columns image, label}, {split: where it comes from}, id2label or None)``.

    ``train`` and ``validation`` (held out of the training split unless the data has a validation split of its own)
    always; ``test`` when the data has one (the full Fashion-MNIST test set by default); ``subset_test`` (the bundled
    subset's test split, drawn from the Fashion-MNIST test set) for the default data only."""
    if args.dataset_name:
        data, img_col, lbl_col, id2label = load_image_dataset(
            args.dataset_name, train_val_split=args.validation_fraction, seed=args.seed
        )
        sources = dict(getattr(data, "split_sources", {}))
        splits = {k: data[k] for k in ("train", "validation", "test") if k in data}
        if (img_col, lbl_col) != ("image", "label"):
            splits = {k: v.rename_columns({img_col: "image", lbl_col: "label"}) for k, v in splits.items()}
        return splits, {k: sources.get(k, k) for k in splits}, id2label
    full = full_fashion_mnist_dataset("train")
    parts = full.train_test_split(test_size=args.validation_fraction, seed=args.seed, stratify_by_column="label")
    subset, _, _, _ = load_image_dataset(DEFAULT_DATASET)
    splits = {
        "train": parts["train"],
        "validation": parts["test"],
        "test": full_fashion_mnist_dataset("test"),
        "subset_test": subset["test"],
    }
    sources = {
        "train": f"Fashion-MNIST training set, {len(parts['train'])} of {len(full)} rows",
        "validation": f"held out from the Fashion-MNIST training set ({len(parts['test'])} rows, stratified, "
        f"seed {args.seed})",
        "test": "the full Fashion-MNIST test set",
        "subset_test": "the bundled subset's test split (drawn from the Fashion-MNIST test set)",
    }
    return splits, sources, None


@torch.no_grad()
def evaluate(model, loader, accelerator, desc="eval"):
    model.eval()
    correct = total = 0
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False):
        logits = model(pixel_values=batch["pixel_values"]).logits
        preds, labels = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        correct += (preds == labels).sum().item()
        total += labels.numel()
    return correct / max(total, 1)


def _budget_note(results: dict) -> str:
    if not results.get("time_budget_min"):
        return ""
    return (
        f" The run asked for {results.get('epochs_planned')} epochs with a {results['time_budget_min']:g}-minute "
        "time budget (`--time_budget_min`): the one-cycle schedule follows whichever of step count and elapsed "
        f"time is further along, so on the shared machine it completed {results['epochs']} epochs, fully "
        "annealed."
    )


def write_model_card(out: Path, results: dict, config_dict: dict):
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard_data import EvalResult

    data = ModelCardData(
        library_name="transformers",
        license="mit",
        pipeline_tag="image-classification",
        tags=["image-classification", "resnet", "fashion-mnist", "infodisent"],
        datasets=["zalando-datasets/fashion_mnist"],
        model_name="fashion_mnist_resnet",
        eval_results=[
            EvalResult(
                task_type="image-classification",
                dataset_type="zalando-datasets/fashion_mnist",
                dataset_name="Fashion-MNIST (full 10k test set)",
                dataset_split="test",
                metric_type="accuracy",
                metric_value=results["full_test_accuracy"],
            )
        ],
    )
    fm = results["feature_map_shape"]
    sp = results["splits"]
    rows = [  # the card's table: label, value (Markdown table rows cannot be wrapped, so they are built here)
        (
            f"top-1 accuracy, **test**: full Fashion-MNIST test set ({sp['test']['rows']:,} images)",
            f"**{100 * results['full_test_accuracy']:.2f}%**",
        ),
        (
            f"top-1 accuracy, **test**: bundled subset test split ({sp['subset_test']['rows']:,} images, "
            "`training/embedded/fashion_mnist_subset`)",
            f"{100 * results['subset_test_accuracy']:.2f}%",
        ),
        (
            f"top-1 accuracy, **validation**: held out of the training set ({sp['validation']['rows']:,} images)",
            f"{100 * results['validation_accuracy']:.2f}%",
        ),
        ("last feature map (`ResNetModel.last_hidden_state`, C×H×W)", f"{fm[0]}×{fm[1]}×{fm[2]}"),
        (
            f"training wall time ({results['epochs']} epochs, 2-core CPU, shared machine)",
            f"{results['train_runtime_s'] / 60:.1f} min",
        ),
    ]
    table = "\n".join(f"| {label} | {value} |" for label, value in rows)
    architecture = {
        k: config_dict[k]
        for k in ("embedding_size", "hidden_sizes", "depths", "layer_type", "downsample_in_first_stage")
    }
    content = f"""---
{data.to_yaml()}
---

# fashion_mnist_resnet — the black box InfoDisent explains by default

A small Hugging Face `ResNetForImageClassification` (basic blocks, {len(config_dict["depths"])} stages,
hidden sizes {config_dict["hidden_sizes"]}, depths {config_dict["depths"]}, embedding size
{config_dict["embedding_size"]}; {results["num_parameters"]:,} parameters) trained from scratch on
{results["splits"]["train"]["rows"]:,} images of the Fashion-MNIST training set (the other
{results["splits"]["validation"]["rows"]:,} held out for validation). Grey 28×28 images are converted to RGB and
preprocessed by the bundled `ViTImageProcessor` (resize to {results["image_size"]}×{results["image_size"]}, rescale,
normalise with mean {FMNIST_MEAN} / std {FMNIST_STD}).

| measure | value |
|---|---|
{table}

## Use

```python
from transformers import AutoImageProcessor, ResNetForImageClassification
model = ResNetForImageClassification.from_pretrained("training/embedded/fashion_mnist_resnet")
processor = AutoImageProcessor.from_pretrained("training/embedded/fashion_mnist_resnet")
inputs = processor(image.convert("RGB"), return_tensors="pt")
logits = model(**inputs).logits
```

## Training

```
{results["command"]}
```

Recipe: AdamW (lr {results["learning_rate"]}, weight decay {results["weight_decay"]}), one-cycle schedule,
batch {results["batch_size"]}, label smoothing {results["label_smoothing"]}, augmentation
`{",".join(results["augment"]) or "none"}` ({describe_augment(results["augment"])}),
seed {results["seed"]}, {results["epochs"]} epochs ({results.get("steps", "?")} steps), `accelerate` on CPU
({results["num_threads"]} threads, `OMP_WAIT_POLICY=PASSIVE`).{_budget_note(results)}
Data from the Debian package `dataset-fashion-mnist` read by `training/build_fashion_mnist_subset.py`;
preprocessing by `training/data.py` (the same code as the InfoDisent training script).

Config: `{json.dumps(architecture)}`

## Licence and data

Weights: MIT. Training data: Fashion-MNIST, MIT licence, Copyright © 2017 Zalando SE
(Xiao, Rasul, Vollgraf, *Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms*, 2017).
"""
    ModelCard(content).save(out / "README.md")


def write_dataset_model_card(out: Path, results: dict, config_dict: dict):
    """The card of a backbone trained on another dataset folder (the generated ground-truth sets)."""
    fm = results["feature_map_shape"]
    arch = {k: config_dict[k] for k in ("embedding_size", "hidden_sizes", "depths", "layer_type")}
    sp, size = results["splits"], results["image_size"]
    test = (
        f"{100 * results['test_accuracy']:.2f}% top-1 on its **test** split ({sp['test']['rows']:,} images: "
        f"{sp['test']['source']}, scored once after training)"
        if results.get("test_accuracy") is not None
        else "no test split (the figure below is validation, held out of train)"
    )
    (out / "README.md").write_text(f"""---
library_name: transformers
license: mit
pipeline_tag: image-classification
---
# ResNet trained on `{Path(results["dataset_name"]).name}`

A small `ResNetForImageClassification` (`{json.dumps(arch)}`, {results["num_parameters"]:,} parameters) trained from
scratch on the dataset folder `{Path(results["dataset_name"]).name}` by `training/pretrain_backbone.py`:
{test}; {100 * results["validation_accuracy"]:.2f}% on its **validation** split ({sp["validation"]["rows"]:,} images:
{sp["validation"]["source"]}); trained on {sp["train"]["rows"]:,} images. Input {size}×{size},
last feature map {fm[0]}×{fm[1]}×{fm[2]}; {results["epochs"]} epochs in {results["train_runtime_s"] / 60:.1f} min
(2-core CPU, shared); augmentation `{",".join(results["augment"]) or "none"}` ({describe_augment(results["augment"])}).

```
{results["command"]}
```

Weights: MIT. Data: generated from Fashion-MNIST (MIT, Copyright © 2017 Zalando SE).
""")


def main(argv=None):
    args = parse_args(argv)
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(args.seed)
    command = "python training/pretrain_backbone.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    t0 = time.time()
    splits, sources, id2label = load_splits(args)
    model, processor = build_model_and_processor(args, id2label)
    accelerator.print(
        "data: " + ", ".join(f"{k} {len(v)} ({sources[k]})" for k, v in splits.items()) + f" ({time.time() - t0:.1f}s)"
    )
    accelerator.print(f"augmentation: {describe_augment(args.augment)}")

    g = torch.Generator().manual_seed(args.seed)
    loaders = {}
    for name, ds in splits.items():
        ds = ds.with_transform(
            make_transform(processor, "image", "label", augment=args.augment if name == "train" else False)
        )
        loaders[name] = (
            DataLoader(
                ds,
                batch_size=args.per_device_train_batch_size,
                shuffle=True,
                collate_fn=collate_fn,
                num_workers=args.num_workers,
                drop_last=True,
                generator=g,
            )
            if name == "train"
            else DataLoader(ds, batch_size=args.per_device_eval_batch_size, collate_fn=collate_fn)
        )
    if len(loaders["train"]) == 0:
        raise ValueError(
            f"The training split has {len(splits['train'])} rows, fewer than one batch of "
            f"{args.per_device_train_batch_size}: lower --per_device_train_batch_size."
        )
    steps_per_epoch = len(loaders["train"])
    total_steps = args.num_train_epochs * steps_per_epoch
    if args.max_train_steps is not None:
        total_steps = min(total_steps, args.max_train_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    names = list(loaders)
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders.values())
    loaders = dict(zip(names, prepared))
    train_loader = loaders["train"]
    budget_s = args.time_budget_min * 60 if args.time_budget_min else None

    def progress_fraction(step_done: int) -> float:
        frac = step_done / total_steps
        if budget_s:
            frac = max(frac, (time.time() - t_train) / budget_s)
        return min(frac, 1.0)

    def set_lr(frac: float) -> float:
        # One-cycle (as torch's OneCycleLR, cosine both ways): max_lr/25 -> max_lr -> max_lr/25e4.
        w, top = args.warmup_fraction, args.learning_rate
        if frac < w:
            lo, hi, t = top / 25, top, frac / w
        else:
            lo, hi, t = top, top / 25e4, (frac - w) / (1 - w)
        lr = hi + (lo - hi) * (1 + math.cos(math.pi * t)) / 2
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    accelerator.print(
        f"{sum(p.numel() for p in model.parameters()):,} parameters; {steps_per_epoch} steps/epoch, "
        f"{total_steps} steps in all"
    )
    step = 0
    t_train = time.time()
    progress = tqdm(total=total_steps, disable=not accelerator.is_local_main_process, mininterval=10)
    epochs_run = 0
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):
        model.train()
        run_loss = run_correct = run_n = 0
        for batch in train_loader:
            frac = progress_fraction(step)
            if frac >= 1.0:
                break
            lr = set_lr(frac)
            x = batch["pixel_values"]
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(pixel_values=x).logits
            loss = loss_fn(logits, batch["labels"])
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run_loss += loss.item() * len(x)
            run_correct += (logits.argmax(-1) == batch["labels"]).sum().item()
            run_n += len(x)
            step += 1
            progress.update(1)
            if step % 50 == 0:
                progress.set_postfix(loss=f"{run_loss / run_n:.3f}", acc=f"{run_correct / run_n:.3f}", lr=f"{lr:.2e}")
        epochs_run += 1
        # Validation (held out of train) only: the test split is scored once, after training.
        val_acc = evaluate(model, loaders["validation"], accelerator, "validation")
        accelerator.print(
            f"epoch {epoch + 1}: train loss {run_loss / max(run_n, 1):.4f} acc "
            f"{run_correct / max(run_n, 1):.4f}; validation acc {val_acc:.4f}; "
            f"{time.time() - t_train:.0f}s elapsed, step {step}"
        )
        if progress_fraction(step) >= 1.0:
            break
    progress.close()
    train_runtime = time.time() - t_train
    accelerator.print(
        f"training: {step} steps ({step / steps_per_epoch:.2f} epochs) in {train_runtime:.1f}s "
        f"({train_runtime / max(step, 1):.3f}s/step)"
    )

    accuracy = {name: evaluate(model, loader, accelerator, name) for name, loader in loaders.items() if name != "train"}
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    with torch.no_grad():
        fmap = unwrapped.resnet(torch.zeros(1, 3, args.image_size, args.image_size)).last_hidden_state
    feature_map_shape = list(fmap.shape[1:])
    accelerator.print(
        "accuracy: "
        + "; ".join(f"{k} ({sources[k]}) {v:.4f}" for k, v in accuracy.items())
        + f"; feature map {feature_map_shape}"
    )
    if args.no_save or not accelerator.is_main_process:
        return
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    unwrapped = unwrapped.to(memory_format=torch.contiguous_format)
    unwrapped.save_pretrained(out)
    processor.save_pretrained(out)
    results = {
        # Each figure under the name of the split it was computed on (the Fashion-MNIST default keeps its names).
        "validation_accuracy": round(accuracy["validation"], 4),
        **(
            {
                "full_test_accuracy": round(accuracy["test"], 4),
                "subset_test_accuracy": round(accuracy["subset_test"], 4),
            }
            if not args.dataset_name
            else {"test_accuracy": round(accuracy["test"], 4) if "test" in accuracy else None}
        ),
        "splits": {k: {"rows": len(v), "source": sources[k]} for k, v in splits.items()},
        "feature_map_shape": feature_map_shape,
        "train_runtime_s": round(train_runtime, 1),
        "epochs": round(step / steps_per_epoch, 2),
        "epochs_planned": args.num_train_epochs,
        "steps": step,
        "steps_planned": total_steps,
        "time_budget_min": args.time_budget_min,
        "command": command,
        "dataset_name": args.dataset_name,
        "image_size": args.image_size,
        "batch_size": args.per_device_train_batch_size,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
        "augment": list(args.augment),
        "validation_fraction": args.validation_fraction,
        "seed": args.seed,
        "num_threads": args.num_threads,
        "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
        "torch_version": torch.__version__,
    }
    (out / "training_results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.dataset_name:
        write_dataset_model_card(out, results, unwrapped.config.to_dict())
    else:
        write_model_card(out, results, unwrapped.config.to_dict())
    accelerator.print(f"saved to {out}")


def cli(argv=None) -> int:
    """``main`` with bad input (unknown augmentation, missing or malformed dataset, ...) reported as one line
    ``error: ...`` and exit status 2."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(message if message.startswith("error: ") else f"error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
