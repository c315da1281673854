"""Training and evaluation of the InfoDisent head (rotation U, nonnegative W, b) on a frozen backbone.

Reusable pieces (the training script and the benchmarks call them):

* ``fit_head(model, train_data, eval_data, config, accelerator=None, featurizer=None) -> dict``: the whole schedule
  (main epochs with the L1 penalty and the Gumbel temperature annealed per step, then pruning to the per-class
  budget and fine-tuning with the mask fixed), evaluation every epoch, checkpoints and exact resumption.
* ``evaluate(model, data, ...) -> dict``: accuracy, agreement with the backbone's own head, explanation sizes.
* ``train_linear_probe(train_data, eval_data, ...) -> dict``: the linear-probe baseline on average-pooled features.

``train_data`` / ``eval_data`` are :class:`training.features.FeatureCache` (cached feature maps) or
:class:`training.features.LiveImages` with a featurizer that runs the backbone (``live_featurizer``). Either way the
head is called as ``model.head(feature_map)``: the same module the model uses on live images, never a copy.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from modeling_infodisent.metrics import class_contributions, explanation_sizes
from training.features import collate_batch
from training.sparsity import hoyer_penalty, l1_penalty, prune_to_budget, sparsity_stats

logger = logging.getLogger(__name__)

STATE_FILE = "infodisent_state.json"

__all__ = [
    "FitConfig",
    "EpochShuffleSampler",
    "evaluate",
    "fit_head",
    "live_featurizer",
    "make_accelerator",
    "train_linear_probe",
]


@dataclass
class FitConfig:
    """Hyper-parameters of `fit_head` (the training script's arguments of the same names)."""

    num_train_epochs: int = 10
    max_train_steps: int | None = None  # overrides num_train_epochs for the main phase
    per_device_train_batch_size: int = 256
    per_device_eval_batch_size: int = 256
    learning_rate: float = 1e-2
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    gumbel_temperature_start: float = 1.0
    gumbel_temperature_end: float = 0.05
    loss: str = "softmax"  # or "sigmoid": SIDE-style one-vs-rest binary cross-entropy
    distill_weight: float = 0.0  # 0 = labels only; a in (0, 1]: (1 - a) label loss + a KL to the backbone head
    distill_temperature: float = 2.0
    sparsity_l1: float = 1e-2
    sparsity_hoyer: float = 0.0
    max_prototypes_per_class: int = 10  # 0 = dense (no pruning)
    finetune_epochs: int = 3
    finetune_learning_rate: float | None = None  # default: learning_rate / 3
    seed: int = 0
    checkpointing_steps: str | int | None = None  # N steps, "epoch", or None
    resume_from_checkpoint: str | None = None  # a checkpoint folder or "latest"
    output_dir: str | None = None  # where checkpoints go (step_N / epoch_N, as in the HF examples)
    stop_after_steps: int | None = None  # testing aid: exit abruptly after this many steps (after checkpointing)
    with_tracking: bool = False
    show_progress: bool = True

    def validate(self) -> None:
        if self.loss not in ("softmax", "sigmoid"):
            raise ValueError(f"loss must be 'softmax' or 'sigmoid', got {self.loss!r}.")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}.")
        if self.max_prototypes_per_class < 0:
            raise ValueError(f"max_prototypes_per_class must be >= 0 (0 = dense), got {self.max_prototypes_per_class}.")
        if self.gumbel_temperature_start <= 0 or self.gumbel_temperature_end <= 0:
            raise ValueError("Gumbel temperatures must be > 0.")
        if self.num_train_epochs < 1 and not self.max_train_steps:
            raise ValueError("num_train_epochs must be >= 1 (or give max_train_steps).")
        if isinstance(self.checkpointing_steps, str) and self.checkpointing_steps not in ("epoch",):
            if not self.checkpointing_steps.isdigit():
                raise ValueError(f"checkpointing_steps must be an integer or 'epoch', got {self.checkpointing_steps!r}.")
            self.checkpointing_steps = int(self.checkpointing_steps)


class EpochShuffleSampler(Sampler[int]):
    """A random permutation that depends only on (seed, epoch): a resumed run sees exactly the same batches, however
    many data-loader iterators were created (each one draws from the global RNG) or processes are used."""

    def __init__(self, num_rows: int, seed: int):
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_rows, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_rows


def make_accelerator(**kwargs):
    """An `Accelerator` that also runs multi-process on a machine without any accelerator device: accelerate only
    picks its MULTI_CPU (gloo) mode when told `cpu=True`, otherwise each launched process would train alone."""
    from accelerate import Accelerator

    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return Accelerator(cpu=not has_device, **kwargs)


def _cached_featurizer(batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    return batch["features"], batch.get("teacher_logits")


def live_featurizer(model, head_model=None) -> Callable:
    """Featurizer for LiveImages batches: runs the frozen backbone (and its own head, for distillation and agreement)."""

    @torch.no_grad()
    def featurize(batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        pixel_values = batch["pixel_values"]
        teacher = head_model(pixel_values=pixel_values).logits.float() if head_model is not None else None
        return model.extract_features(pixel_values), teacher

    return featurize


def _loss(logits, labels, teacher_logits, config: FitConfig) -> torch.Tensor:
    if config.loss == "softmax":
        label_loss = F.cross_entropy(logits, labels)
    else:  # one binary problem per class, summed over classes (SIDE)
        targets = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        label_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / logits.shape[0]
    if config.distill_weight <= 0:
        return label_loss
    if teacher_logits is None:
        raise ValueError("distill_weight > 0 needs the backbone head's logits, but the data has none.")
    t = config.distill_temperature
    distill = F.kl_div(
        F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1), log_target=True,
        reduction="batchmean",
    ) * (t * t)  # fmt: skip
    return (1.0 - config.distill_weight) * label_loss + config.distill_weight * distill


# ---------------------------------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate(
    model,
    data,
    batch_size: int = 256,
    accelerator=None,
    featurizer: Callable | None = None,
    fraction: float = 0.9,
    show_progress: bool = False,
) -> dict:
    """Evaluate the InfoDisent model (eval mode: exact max pooling) on a FeatureCache or LiveImages.

    Every example is counted exactly once across processes (``gather_for_metrics`` drops the padding duplicates;
    the rows are put back in split order by their index). Returns ``accuracy``, ``num_examples``, ``predictions``,
    ``labels`` (numpy, split order), the explanation sizes (prototypes needed for ``fraction`` of the predicted
    class's positive evidence: ``explanation_size_median`` / ``_p90`` / ``_mean``), and, when the data carries the
    backbone head's logits, ``backbone_head_accuracy`` and ``agreement`` (top-1 of InfoDisent == top-1 of the head).
    """
    featurizer = featurizer or _cached_featurizer
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_batch)
    if accelerator is not None:
        from accelerate.data_loader import prepare_data_loader

        # The module-level helper (not accelerator.prepare) so that repeated evaluations do not pile up in the
        # accelerator's list of data loaders that save_state / load_state walk through.
        loader = prepare_data_loader(
            loader, accelerator.device, num_processes=accelerator.num_processes,
            process_index=accelerator.process_index, put_on_device=True,
        )  # fmt: skip
    head = model.head
    was_training = head.training
    head.eval()
    weight = model.classifier_weight.detach()
    gathered: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in tqdm(loader, desc="eval", disable=not show_progress, leave=False):
            features, teacher = featurizer(batch)
            out = head(features)
            predictions = out.logits.argmax(dim=-1)
            contributions = class_contributions(weight, out.pos_activations, out.neg_activations, predictions)
            sizes = torch.as_tensor(explanation_sizes(contributions.cpu(), fraction))
            row = {"index": batch["index"], "labels": batch["labels"], "predictions": predictions, "sizes": sizes}
            if teacher is not None:
                row["teacher"] = teacher.argmax(dim=-1)
            row = {k: v.to(predictions.device) for k, v in row.items()}
            if accelerator is not None:
                row = accelerator.gather_for_metrics(row)
            for k, v in row.items():
                gathered.setdefault(k, []).append(v.cpu())
    finally:
        head.train(was_training)
    cat = {k: torch.cat(v).numpy() for k, v in gathered.items()}
    order = np.argsort(cat["index"], kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    if not np.array_equal(cat["index"], np.arange(len(data))):
        # Guards the multi-process bookkeeping: every example exactly once, none dropped, none duplicated.
        raise RuntimeError(f"Evaluation saw {len(cat['index'])} rows ({len(np.unique(cat['index']))} distinct) for a split of {len(data)}.")
    result = {
        "accuracy": float((cat["predictions"] == cat["labels"]).mean()),
        "num_examples": int(len(cat["labels"])),
        "indices": cat["index"],
        "predictions": cat["predictions"],
        "labels": cat["labels"],
        "explanation_size_median": float(np.median(cat["sizes"])),
        "explanation_size_p90": float(np.percentile(cat["sizes"], 90)),
        "explanation_size_mean": float(cat["sizes"].mean()),
    }
    if "teacher" in cat:
        result["backbone_head_accuracy"] = float((cat["teacher"] == cat["labels"]).mean())
        result["agreement"] = float((cat["teacher"] == cat["predictions"]).mean())
    return result


# ------------------------------------------------------------------------------------------------ linear probe
def train_linear_probe(
    train_data,
    eval_data,
    epochs: int = 100,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> dict:
    """The linear-probe baseline: multinomial logistic regression on the average-pooled frozen features (stored in
    the cache as ``pooled``), trained on the same training rows, full-batch L-BFGS on standardised features.
    Deterministic: every process gets the same answer. Returns ``{"accuracy", "num_examples"}``."""
    x_train = torch.from_numpy(train_data.array("pooled")).double()
    y_train = torch.from_numpy(train_data.array("labels")).long()
    x_eval = torch.from_numpy(eval_data.array("pooled")).double()
    y_eval = torch.from_numpy(eval_data.array("labels")).long()
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_eval = (x_train - mean) / std, (x_eval - mean) / std
    num_labels = int(max(y_train.max(), y_eval.max())) + 1
    torch.manual_seed(seed)
    linear = torch.nn.Linear(x_train.shape[1], num_labels).double()
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x_train), y_train) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        accuracy = float((linear(x_eval).argmax(-1) == y_eval).double().mean())
    return {"accuracy": accuracy, "num_examples": int(len(y_eval))}


# ---------------------------------------------------------------------------------------------------- fit_head
def _lr_factor(step: int, main_steps: int, finetune_steps: int, config: FitConfig) -> float:
    """Learning-rate multiplier at a global step: linear warm-up then cosine over the main phase; a fresh cosine from
    finetune_learning_rate over the fine-tuning phase. A pure function of the step, so resuming needs no scheduler."""
    if step < main_steps:
        warmup = int(config.warmup_ratio * main_steps)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, main_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    finetune_lr = config.finetune_learning_rate or config.learning_rate / 3.0
    progress = (step - main_steps) / max(1, finetune_steps)
    return finetune_lr / config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def _gumbel_temperature(step: int, main_steps: int, config: FitConfig) -> float:
    """Geometric annealing from start to end over the main phase; the end value during fine-tuning."""
    t0, t1 = config.gumbel_temperature_start, config.gumbel_temperature_end
    progress = min(1.0, step / max(1, main_steps - 1))
    return float(t0 * (t1 / t0) ** progress)


def _find_latest_checkpoint(output_dir: str) -> str:
    candidates = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        path = os.path.join(output_dir, name)
        if re.fullmatch(r"(step|epoch)_\d+", name) and os.path.exists(os.path.join(path, STATE_FILE)):
            with open(os.path.join(path, STATE_FILE)) as f:
                candidates.append((json.load(f)["global_step"], path))
    if not candidates:
        raise ValueError(f"--resume_from_checkpoint latest: no checkpoint (step_N / epoch_N) in {output_dir!r}.")
    return max(candidates)[1]


def fit_head(
    model,
    train_data,
    eval_data,
    config: FitConfig,
    accelerator=None,
    featurizer: Callable | None = None,
) -> dict:
    """Train ``model.head`` (U, W, b; the backbone stays frozen) on ``train_data``, evaluating on ``eval_data`` after
    every epoch. Schedule: ``num_train_epochs`` (or ``max_train_steps``) main epochs with Adam, warm-up + cosine
    learning rate, Gumbel temperature annealed per step and the sparsity penalties added to the loss; then, if
    ``max_prototypes_per_class > 0``, ``prune_to_budget`` and ``finetune_epochs`` more epochs with the mask fixed.

    With an ``accelerator`` the head is wrapped for DDP and batches are sharded; ``None`` builds a single-process
    one. Checkpoints (``accelerator.save_state``) go to ``config.output_dir/step_N`` or ``epoch_N``; resuming from
    one gives the same final weights as an uninterrupted run (data order and Gumbel noise are functions of the
    seed and the global step). Returns the final evaluation (see `evaluate`) plus ``history`` (per-epoch metrics),
    ``pruning`` (stats of the pruning step, or None), ``sparsity`` (final `sparsity_stats`), ``global_step``.
    """
    config.validate()
    accelerator = accelerator or make_accelerator()
    featurizer = featurizer or _cached_featurizer
    is_main = accelerator.is_main_process

    sampler = EpochShuffleSampler(len(train_data), config.seed)
    # drop_last keeps every optimiser step on a full batch, on every process.
    train_loader = DataLoader(
        train_data, batch_size=config.per_device_train_batch_size, sampler=sampler, collate_fn=collate_batch,
        drop_last=len(train_data) >= config.per_device_train_batch_size * accelerator.num_processes,
    )  # fmt: skip
    model.head.train()
    params = [p for p in model.head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    model.head.rotation.attach(optimizer)  # "riemannian" U: each step is retracted onto the orthogonal group
    # The learning rate is set by hand from the global step (no prepared scheduler, whose step count depends on
    # the number of processes).
    head, optimizer, train_loader = accelerator.prepare(model.head, optimizer, train_loader)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"The training split ({len(train_data)} rows) gives no batch of {config.per_device_train_batch_size}.")
    main_steps = config.max_train_steps or config.num_train_epochs * steps_per_epoch
    prune = config.max_prototypes_per_class > 0
    finetune_steps = config.finetune_epochs * steps_per_epoch if prune else 0
    total_steps = main_steps + finetune_steps
    num_epochs = math.ceil(main_steps / steps_per_epoch) + (config.finetune_epochs if prune else 0)

    global_step, pruning, history = 0, None, []
    if config.resume_from_checkpoint:
        path = config.resume_from_checkpoint
        if path == "latest":
            path = _find_latest_checkpoint(config.output_dir)
        if not os.path.exists(os.path.join(path, STATE_FILE)):
            raise ValueError(f"{path!r} is not a checkpoint of this script (no {STATE_FILE}).")
        accelerator.load_state(path)  # head weights + prototype mask, optimiser, RNG states
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
        global_step, pruning, history = state["global_step"], state.get("pruning"), state.get("history", [])
        if is_main:
            logger.info("Resumed from %s at step %d", path, global_step)

    def save_checkpoint(name: str) -> None:
        if config.output_dir is None:
            return
        path = os.path.join(config.output_dir, name)
        accelerator.save_state(path)
        if is_main:
            with open(os.path.join(path, STATE_FILE), "w") as f:
                json.dump({"global_step": global_step, "pruning": pruning, "history": history, "config": asdict(config)}, f)
        accelerator.wait_for_everyone()

    if is_main:
        logger.info(
            "Training the head: %d main steps + %d fine-tuning steps (%d per epoch), batch %d x %d process(es)",
            main_steps, finetune_steps, steps_per_epoch, config.per_device_train_batch_size, accelerator.num_processes,
        )  # fmt: skip
    progress = tqdm(total=total_steps, initial=global_step, disable=not (is_main and config.show_progress), desc="train")
    starting_epoch = global_step // steps_per_epoch
    for epoch in range(starting_epoch, num_epochs):
        if global_step >= total_steps:
            break
        train_loader.set_epoch(epoch)
        loader = train_loader
        skip = global_step - epoch * steps_per_epoch
        if skip > 0:
            loader = accelerator.skip_first_batches(train_loader, skip)
        head.train()
        running, count = 0.0, 0
        for batch in loader:
            if global_step == main_steps and prune and pruning is None:
                pruning = prune_to_budget(model, config.max_prototypes_per_class)
                if is_main:
                    logger.info(
                        "Pruned to %d prototypes per class (kept %.1f%% of the weight mass); fine-tuning %d steps",
                        config.max_prototypes_per_class, 100 * pruning["kept_weight_fraction"], finetune_steps,
                    )  # fmt: skip
            if global_step >= total_steps:
                break
            in_main = global_step < main_steps
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * _lr_factor(global_step, main_steps, finetune_steps, config)
            model.set_gumbel_temperature(_gumbel_temperature(global_step, main_steps, config))
            # The Gumbel noise is drawn from the global RNG: seed it from (seed, step, rank) so that a resumed run
            # draws the same noise as an uninterrupted one.
            torch.manual_seed(config.seed * 1_000_003 + global_step * 101 + accelerator.process_index)
            features, teacher = featurizer(batch)
            out = head(features)
            loss = _loss(out.logits, batch["labels"], teacher, config)
            if in_main and config.sparsity_l1 > 0:
                loss = loss + config.sparsity_l1 * l1_penalty(model)
            if in_main and config.sparsity_hoyer > 0:
                loss = loss + config.sparsity_hoyer * hoyer_penalty(model)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            global_step += 1
            running, count = running + float(loss.detach()), count + 1
            progress.update(1)
            if isinstance(config.checkpointing_steps, int) and global_step % config.checkpointing_steps == 0:
                save_checkpoint(f"step_{global_step}")
            if config.stop_after_steps is not None and global_step >= config.stop_after_steps:
                raise SystemExit(f"Stopped after {global_step} steps (--stop_after_steps).")
        if global_step == main_steps and prune and pruning is None:  # main phase ended exactly at an epoch end
            pruning = prune_to_budget(model, config.max_prototypes_per_class)
        metrics = evaluate(model, eval_data, config.per_device_eval_batch_size, accelerator, featurizer)
        record = {
            "epoch": epoch,
            "step": global_step,
            "train_loss": running / max(1, count),
            "eval_accuracy": metrics["accuracy"],
            "explanation_size_median": metrics["explanation_size_median"],
        }
        if "agreement" in metrics:
            record["agreement"] = metrics["agreement"]
        history.append(record)
        if is_main:
            logger.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        if config.with_tracking:
            accelerator.log(record, step=global_step)
        if config.checkpointing_steps == "epoch":
            save_checkpoint(f"epoch_{epoch}")
    progress.close()
    model.head.eval()
    if prune and pruning is None:  # e.g. resumed from a checkpoint taken after the last main step
        pruning = prune_to_budget(model, config.max_prototypes_per_class)
    final = evaluate(model, eval_data, config.per_device_eval_batch_size, accelerator, featurizer)
    final.update(history=history, pruning=pruning, sparsity=sparsity_stats(model), global_step=global_step)
    return final
