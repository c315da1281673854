"""Training and evaluation of the InfoDisent head (rotation U, nonnegative W, b) on a frozen backbone.

Reusable pieces (the training script and the benchmarks call them):

* ``fit_head(model, train_data, eval_data, config, accelerator=None, featurizer=None) -> dict``: the whole schedule
  (`training.schedule`: a main phase with the L1 penalty and the Gumbel temperature annealed over a step budget,
  early stopping on the validation split, then pruning to the per-class budget and fine-tuning with the mask fixed
  until the validation accuracy recovers), checkpoints (`training.checkpoints`) and exact resumption.
* ``FitConfig``: the schedule's and the loss's settings (the training script's arguments default to its fields).

Evaluation and the linear probe are in `training.evaluation`, what the hardware can do in `training.hardware`.

``train_data`` / ``eval_data`` are :class:`training.features.FeatureCache` (cached feature maps) or
:class:`training.features.LiveImages` with a featurizer that runs the backbone (``live_featurizer``). Either way the
head is called as ``model.head(feature_map)``: the same module the model uses on live images, never a copy.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from training.checkpoints import config_differences, find_latest_checkpoint, read_state, write_state
from training.evaluation import cached_featurizer, evaluate
from training.features import collate_batch
from training.hardware import keep_freed_memory_for_reuse, make_accelerator, rotation_matmul_dtype
from training.schedule import (
    REFERENCE_BATCH_SIZE,
    StepBatchSampler,
    gumbel_temperature,
    lr_factor,
    plan_schedule,
    rank_slice,
    scaled_learning_rate,
)
from training.sparsity import hoyer_penalty, l1_penalty, prune_to_budget, sparsity_stats

logger = logging.getLogger(__name__)

__all__ = ["FitConfig", "fit_head"]


@dataclass
class FitConfig:
    """Hyper-parameters of `fit_head` (the training script's arguments of the same names). The schedule they define
    is described in `training.schedule`."""

    train_batch_size: int = 256  # the GLOBAL batch of an optimiser step, whatever the number of processes
    per_device_train_batch_size: int | None = None  # if set, the global batch is this times the number of processes
    per_device_eval_batch_size: int = 256
    learning_rate: float = 1e-2  # at a global batch of 256; scaled to the actual global batch by lr_scaling
    lr_scaling: str = "sqrt"  # "sqrt" (Adam's usual rule), "linear" or "none"
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    num_train_epochs: float | None = None  # explicit main-phase length (no early stopping)
    max_train_steps: int | None = None  # explicit main-phase length in steps (overrides num_train_epochs)
    min_train_steps: int = 300  # floor of the main budget; no early stopping before it
    budget_epochs: float = 10.0  # main budget in epochs, clamped to [min_train_steps, max_budget_steps]
    max_budget_steps: int = 3000
    eval_steps: int | None = None  # evaluate the validation split every N steps (default: budget / 15)
    early_stopping_patience: int = 5  # evaluations without improvement before the main phase stops
    gumbel_temperature_start: float = 1.0
    gumbel_temperature_end: float = 0.05
    loss: str = "softmax"  # or "sigmoid": SIDE-style one-vs-rest binary cross-entropy
    distill_weight: float = 0.0  # 0 = labels only; a in (0, 1]: (1 - a) label loss + a KL to the backbone head
    distill_temperature: float = 2.0
    sparsity_l1: float = 1e-2
    # dtype of the rotation GEMMs while training: "auto" = bfloat16 where the hardware multiplies it natively and
    # D >= BF16_MIN_FEATURES (`rotation_matmul_dtype`), else float32; "float32" / "bfloat16" force one.
    rotation_matmul_dtype: str = "auto"
    sparsity_hoyer: float = 0.0
    max_prototypes_per_class: int = 10  # 0 = dense (no pruning)
    finetune_epochs: float | None = None  # explicit fine-tuning length (one round, no recovery check)
    finetune_steps: int = 60  # one fine-tuning round
    finetune_max_rounds: int = 4  # rounds until the validation accuracy recovers to within pruning_tolerance
    pruning_tolerance: float = 0.01  # accepted validation-accuracy loss from pruning (fraction, 0.01 = 1 point)
    # When fine-tuning does not recover within the tolerance: back to the head before pruning, prune to twice the
    # budget and fine-tune again, until it recovers or the budget reaches every channel (False: keep the budget and
    # report the loss).
    grow_prototype_budget: bool = True
    finetune_learning_rate: float | None = None  # default: learning_rate / 3 (then scaled like learning_rate)
    seed: int = 0
    checkpointing_steps: str | int | None = None  # N steps, "epoch", or None
    resume_from_checkpoint: str | None = None  # a checkpoint folder or "latest"
    ignore_config_change: bool = False  # resume even if the checkpoint was trained with other arguments
    output_dir: str | None = None  # where checkpoints go (step_N / epoch_N, as in the HF examples)
    stop_after_steps: int | None = None  # testing aid: exit abruptly after this many steps (after checkpointing)
    with_tracking: bool = False
    show_progress: bool = True

    def validate(self) -> None:
        if self.loss not in ("softmax", "sigmoid"):
            raise ValueError(f"loss must be 'softmax' or 'sigmoid', got {self.loss!r}.")
        if self.rotation_matmul_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"rotation_matmul_dtype must be 'auto', 'float32' or 'bfloat16', got {self.rotation_matmul_dtype!r}.")
        if self.lr_scaling not in ("sqrt", "linear", "none"):
            raise ValueError(f"lr_scaling must be 'sqrt', 'linear' or 'none', got {self.lr_scaling!r}.")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}.")
        if self.max_prototypes_per_class < 0:
            raise ValueError(f"max_prototypes_per_class must be >= 0 (0 = dense), got {self.max_prototypes_per_class}.")
        if self.gumbel_temperature_start <= 0 or self.gumbel_temperature_end <= 0:
            raise ValueError("Gumbel temperatures must be > 0.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        for name in ("train_batch_size", "per_device_eval_batch_size", "min_train_steps", "max_budget_steps",
                     "finetune_steps", "finetune_max_rounds", "early_stopping_patience"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("per_device_train_batch_size", "max_train_steps", "eval_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.num_train_epochs is not None and self.num_train_epochs <= 0:
            raise ValueError(f"num_train_epochs must be > 0, got {self.num_train_epochs}.")
        if self.finetune_epochs is not None and self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}.")
        if not 0.0 <= self.pruning_tolerance < 1.0:
            raise ValueError(f"pruning_tolerance must be in [0, 1), got {self.pruning_tolerance}.")
        if self.budget_epochs <= 0:
            raise ValueError(f"budget_epochs must be > 0, got {self.budget_epochs}.")
        if isinstance(self.checkpointing_steps, str) and self.checkpointing_steps not in ("epoch",):
            if not self.checkpointing_steps.isdigit() or int(self.checkpointing_steps) < 1:
                raise ValueError(f"checkpointing_steps must be a positive integer or 'epoch', got {self.checkpointing_steps!r}.")
            self.checkpointing_steps = int(self.checkpointing_steps)

    def global_batch_size(self, num_processes: int) -> int:
        """Rows per optimiser step over all processes: ``per_device_train_batch_size * num_processes`` when the
        per-device size is given (the transformers scripts' meaning), else ``train_batch_size``."""
        if self.per_device_train_batch_size:
            return self.per_device_train_batch_size * num_processes
        return self.train_batch_size


# Arguments that do not change what is trained: a checkpoint may be resumed with other values of these.
_RESUME_NEUTRAL = {
    "per_device_eval_batch_size", "checkpointing_steps", "resume_from_checkpoint", "ignore_config_change",
    "output_dir", "stop_after_steps", "with_tracking", "show_progress",
    # compared through the resolved global batch instead (2 processes x 128 = 1 process x 256)
    "train_batch_size", "per_device_train_batch_size",
}  # fmt: skip


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


# ---------------------------------------------------------------------------------------------------- fit_head
def _check_classes(train_data) -> None:
    """Fewer than two classes cannot be classified: say so instead of reporting a perfect accuracy."""
    labels = train_data.array("labels") if hasattr(train_data, "array") else None
    if labels is not None and len(np.unique(labels)) < 2:
        found = ", ".join(str(int(v)) for v in np.unique(labels)) or "none"
        raise ValueError(
            f"The training split has examples of {len(np.unique(labels))} class(es) (label {found}); InfoDisent needs "
            "at least two classes."
        )


def _head_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()}


def fit_head(
    model,
    train_data,
    eval_data,
    config: FitConfig,
    accelerator=None,
    featurizer: Callable | None = None,
) -> dict:
    """Train ``model.head`` (U, W, b; the backbone stays frozen) on ``train_data``; every schedule decision (early
    stopping, best state, pruning recovery) is taken on ``eval_data``, the validation split (never the test split).

    The schedule (`training.schedule`): a main phase with AdamW, warm-up + cosine learning rate and the Gumbel
    temperature annealed over a step budget, the sparsity penalties added to the loss, evaluation every
    ``eval_steps``, early stopping and the best state restored; then, if ``max_prototypes_per_class > 0``,
    ``prune_to_budget`` and fine-tuning with the mask fixed, in rounds, until the validation accuracy is back to
    within ``pruning_tolerance`` of its value before pruning (or ``finetune_max_rounds``); if it is not, and
    ``grow_prototype_budget``, the head before pruning is restored and pruned to twice the budget, and so on, so that
    pruning never costs more than the tolerance without the report saying so. The global batch, hence
    what a step and an epoch mean, is the same on 1 or N processes, and no training row is dropped.

    With an ``accelerator`` the head is wrapped for DDP and each process trains on its slice of every global batch;
    ``None`` builds a single-process one. Checkpoints (``accelerator.save_state`` plus `training.checkpoints`' files)
    go to ``config.output_dir/step_N`` or ``epoch_N``; resuming from one gives the same final weights as an
    uninterrupted run (data order and Gumbel noise are functions of the seed and the global step, and the
    early-stopping state — best accuracy, best weights, patience counter — is checkpointed). A checkpoint trained
    with other arguments is refused unless ``ignore_config_change``.

    Returns the final evaluation on ``eval_data`` (see `evaluate`) plus ``history`` (one record per evaluation),
    ``pruning`` (what was pruned, the validation accuracy before / right after pruning / after fine-tuning, and
    whether it ``recovered``; None when dense), ``sparsity`` (final `sparsity_stats`), ``global_step``, ``schedule``
    (the plan and what ran) and ``examples_seen`` (how often each training row was used, over all processes).
    """
    config.validate()
    accelerator = accelerator or make_accelerator()
    featurizer = featurizer or cached_featurizer
    is_main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    _check_classes(train_data)
    num_rows = len(train_data)
    global_batch = config.global_batch_size(world)
    if global_batch < world:
        raise ValueError(f"The global batch ({global_batch}) is smaller than the number of processes ({world}).")
    plan = plan_schedule(num_rows, global_batch, config)
    prune = config.max_prototypes_per_class > 0
    learning_rate = scaled_learning_rate(config.learning_rate, global_batch, config.lr_scaling)
    finetune_lr = scaled_learning_rate(config.finetune_learning_rate or config.learning_rate / 3.0, global_batch, config.lr_scaling)
    lo, hi = rank_slice(global_batch, rank, world)
    # Each process averages its loss over its own rows and DDP averages over processes: weighting by the share of
    # rows makes the gradient exactly the global batch's mean, even when G is not a multiple of the process count.
    loss_scale = (hi - lo) * world / global_batch

    if accelerator.device.type == "cpu":
        keep_freed_memory_for_reuse()
    model.head.train()
    matmul_dtype = rotation_matmul_dtype(config.rotation_matmul_dtype, model.head.rotation.dim, accelerator.device)
    model.head.rotation.matmul_dtype = matmul_dtype
    params = [p for p in model.head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=config.weight_decay)
    model.head.rotation.attach(optimizer)  # "riemannian" U: each step is retracted onto the orthogonal group
    head, optimizer = accelerator.prepare(model.head, optimizer)
    run_config = {
        **asdict(config), "(global batch)": global_batch, "(training rows)": num_rows, "(validation rows)": len(eval_data),
    }  # fmt: skip

    state = {
        "global_step": 0, "phase": "main", "phase_start": 0, "phase_done": False, "best_accuracy": None,
        "best_step": None, "evals_since_best": 0, "last_accuracy": None, "main_steps_run": None,
        "stopped_early": False, "pruning": None, "history": [], "loss_sum": 0.0, "loss_count": 0,
    }  # fmt: skip
    best: dict[str, torch.Tensor] | None = None  # the head's state at the phase's best evaluation (CPU)
    dense: dict[str, torch.Tensor] | None = None  # the head before pruning (a larger budget starts from it again)
    seen = torch.zeros(num_rows, dtype=torch.int64)  # this process's uses of each row since start / resume
    if config.resume_from_checkpoint:
        path = config.resume_from_checkpoint
        if path == "latest":
            path = find_latest_checkpoint(config.output_dir)
        saved, tensors = read_state(path)
        differences = config_differences(saved.get("config", {}), run_config, _RESUME_NEUTRAL)
        if differences and not config.ignore_config_change:
            raise ValueError(
                f"Cannot resume from {path!r}: it was trained with other arguments: {'; '.join(differences)}. Resume "
                "with the same arguments, or pass --ignore_config_change to continue with the new ones anyway."
            )
        accelerator.load_state(path)  # head weights + prototype mask, optimiser, RNG states
        state.update({k: v for k, v in saved.items() if k in state})
        best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} or None
        dense = {k[len("dense."):]: v for k, v in tensors.items() if k.startswith("dense.")} or None
        if is_main and "seen" in tensors:  # the other processes count from 0: the sum over processes stays right
            seen = tensors["seen"].clone()
        if is_main:
            logger.info("Resumed from %s at step %d (%s phase)", path, state["global_step"], state["phase"])
            if differences:
                logger.warning("Resuming with other arguments than the checkpoint's (--ignore_config_change): %s", "; ".join(differences))

    def save_checkpoint(name: str) -> None:
        if config.output_dir is None:
            return
        path = os.path.join(config.output_dir, name)
        accelerator.save_state(path)
        total_seen = accelerator.reduce(seen.to(accelerator.device), reduction="sum").cpu() if world > 1 else seen
        if is_main:
            tensors = {"seen": total_seen, **{f"best.{k}": v for k, v in (best or {}).items()},
                       **{f"dense.{k}": v for k, v in (dense or {}).items()}}  # fmt: skip
            write_state(path, {**state, "config": run_config, "plan": plan.to_dict()}, tensors)
        accelerator.wait_for_everyone()

    def record_evaluation(phase: str, candidate: bool) -> dict:
        """Evaluate on the validation split and log it; a ``candidate`` state may become the phase's best (only
        states after the main phase's floor and at the end of fine-tuning rounds are: before, the learning rate is
        still high and the temperature not annealed, and picking among them would select the validation noise)."""
        nonlocal best
        metrics = evaluate(model, eval_data, config.per_device_eval_batch_size, accelerator, featurizer)
        step = state["global_step"]
        record = {
            "phase": phase, "step": step, "epoch": round(step * global_batch / num_rows, 3),
            "train_loss": state["loss_sum"] / state["loss_count"] if state["loss_count"] else None,
            "eval_accuracy": metrics["accuracy"], "explanation_size_median": metrics["explanation_size_median"],
        }  # fmt: skip
        if "agreement" in metrics:
            record["agreement"] = metrics["agreement"]
        state["history"].append(record)
        state["loss_sum"], state["loss_count"], state["last_accuracy"] = 0.0, 0, metrics["accuracy"]
        # A tie goes to the earlier state in the main phase (patience counts from it) but to the later round in
        # fine-tuning: with the mask fixed, a round that matches the best accuracy has only trained the pruned head
        # longer, and keeping the first round made a run's result hinge on one validation image (issue 11: a
        # 1-process run that stayed level for 4 rounds kept round 1, 1.4 test points below its 2-process twin).
        improves = (
            state["best_accuracy"] is None or metrics["accuracy"] > state["best_accuracy"]
            or (phase == "finetune" and metrics["accuracy"] == state["best_accuracy"])
        )  # fmt: skip
        if candidate and improves:
            state["best_accuracy"], state["best_step"], state["evals_since_best"] = metrics["accuracy"], step, 0
            best = _head_state(model)
        elif candidate:
            state["evals_since_best"] += 1
        if is_main:
            logger.info("step %d (%s): %s", step, phase, {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        if config.with_tracking:
            accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)
        return metrics

    def start_pruning(budget: int, before: float) -> None:
        """Prune the head to ``budget`` prototypes per class, evaluate, and start a fine-tuning phase."""
        nonlocal best
        stats = prune_to_budget(model, budget)
        state.update(phase="pruned", best_accuracy=None, best_step=None, evals_since_best=0)
        best = None
        after = record_evaluation("pruned", candidate=False)["accuracy"]
        attempts = (state["pruning"] or {}).get("attempts", [])
        state["pruning"] = {
            **stats, "pruned_at_step": state["global_step"], "validation_accuracy_before_pruning": before,
            "validation_accuracy_after_pruning": after, "tolerance": config.pruning_tolerance, "attempts": attempts,
        }  # fmt: skip
        if is_main:
            logger.info(
                "Pruned to %d prototypes per class (%d of %d weights kept, %.1f%% of the weight mass, %d distinct "
                "channels used): validation accuracy %.4f before pruning, %.4f right after",
                stats["max_prototypes_per_class"], stats["nonzero_after"], stats["nonzero_before"],
                100 * stats["kept_weight_fraction"], stats["distinct_channels_used"], before, after,
            )  # fmt: skip
        inner = getattr(optimizer, "optimizer", optimizer)
        inner.state.clear()  # fine-tuning starts from fresh Adam moments, like a new run on the pruned head
        state.update(phase="finetune", phase_start=state["global_step"], phase_done=plan.finetune_steps == 0)

    def end_of_phase() -> None:
        """Main -> (prune, fine-tune [-> prune to a larger budget, fine-tune ...]) -> done. A function of the
        checkpointed state only: a run resumed from a checkpoint taken at the end of a phase makes the same
        transition."""
        nonlocal best, dense
        phase, tolerance = state["phase"], config.pruning_tolerance
        if phase == "main":
            state["main_steps_run"] = state["global_step"] - state["phase_start"]
            if plan.early_stopping and best is not None:
                model.head.load_state_dict(best)
            before = state["best_accuracy"] if plan.early_stopping else state["last_accuracy"]
            if is_main:
                logger.info(
                    "Main phase %s after %d steps (budget %d); validation accuracy %.4f (best, step %s)",
                    "stopped early" if state["stopped_early"] else "ended", state["main_steps_run"], plan.main_steps,
                    state["best_accuracy"], state["best_step"],
                )  # fmt: skip
            if not prune:
                state["phase"] = "done"
                return
            dense = _head_state(model)
            start_pruning(config.max_prototypes_per_class, before)
            return
        # end of fine-tuning
        explicit = config.finetune_epochs is not None
        if not explicit and best is not None:
            model.head.load_state_dict(best)
        pruning = state["pruning"]
        final = state["last_accuracy"] if explicit else state["best_accuracy"]
        steps = state["global_step"] - state["phase_start"]
        recovered = final >= pruning["validation_accuracy_before_pruning"] - tolerance - 1e-9
        pruning.update(
            validation_accuracy_after_finetuning=final, finetune_steps_run=steps,
            finetune_rounds=math.ceil(steps / plan.finetune_steps) if plan.finetune_steps else 0, recovered=recovered,
            accuracy_change=final - pruning["validation_accuracy_before_pruning"],
        )  # fmt: skip
        budget, channels = pruning["max_prototypes_per_class"], model.head.classifier.weight.shape[1]
        if not recovered and not explicit and config.grow_prototype_budget and budget < channels and dense is not None:
            attempt = {k: pruning[k] for k in ("max_prototypes_per_class", "validation_accuracy_after_pruning",
                                               "validation_accuracy_after_finetuning", "finetune_steps_run")}  # fmt: skip
            pruning["attempts"] = pruning.get("attempts", []) + [attempt]  # (a checkpoint of 0.1 has none)
            if is_main:
                logger.warning(
                    "Pruning to %d prototypes per class: validation accuracy %.4f after %d fine-tuning steps, %.4f "
                    "before pruning (tolerance %s): back to the head before pruning, pruning to %d", budget, final,
                    steps, pruning["validation_accuracy_before_pruning"], tolerance, min(2 * budget, channels),
                )  # fmt: skip
            model.head.load_state_dict(dense)  # the unpruned mask and weights
            progress.total += plan.finetune_steps
            start_pruning(min(2 * budget, channels), pruning["validation_accuracy_before_pruning"])
            return
        if not recovered:
            pruning["warning"] = (
                f"validation accuracy {final:.4f} after pruning and {steps} fine-tuning steps is "
                f"{pruning['validation_accuracy_before_pruning'] - final:.4f} below its value before pruning "
                f"({pruning['validation_accuracy_before_pruning']:.4f}), more than the tolerance {tolerance}"
            )
        if is_main:
            log = logger.info if recovered else logger.warning
            log(
                "Fine-tuning after pruning: %d steps; validation accuracy %.4f before pruning, %.4f right after, %.4f "
                "after fine-tuning (%s)", steps, pruning["validation_accuracy_before_pruning"],
                pruning["validation_accuracy_after_pruning"], final,
                "recovered" if recovered else f"NOT recovered within {tolerance}",
            )  # fmt: skip
        state["phase"] = "done"

    if is_main:
        logger.info(
            "Training the head: global batch %d (%d process(es) x ~%d), learning rate %.4g; main phase budget %d "
            "steps (%s), fine-tuning rounds of %d steps (at most %d); evaluation every %d steps; %d training rows "
            "(%d steps an epoch)", global_batch, world, hi - lo, learning_rate, plan.main_steps,
            f"early stopping after {plan.main_min_steps}" if plan.early_stopping else "fixed length",
            plan.finetune_steps, plan.finetune_max_rounds, plan.eval_steps, num_rows, plan.steps_per_epoch,
        )  # fmt: skip
    total = plan.main_steps + plan.finetune_steps
    progress = tqdm(total=max(total, state["global_step"]), initial=state["global_step"], desc="train",
                    disable=not (is_main and config.show_progress))  # fmt: skip
    if hasattr(train_data, "step_batches"):  # a `training.streaming.StreamSplit`: each process reads its shard
        batches = train_data.step_batches(global_batch, config.seed, rank, world, start_step=state["global_step"])
    else:
        sampler = StepBatchSampler(num_rows, global_batch, config.seed, rank, world, start_step=state["global_step"])
        batches = iter(DataLoader(train_data, batch_sampler=sampler, collate_fn=collate_batch))
    while True:
        while state["phase_done"]:  # (a phase may end as it starts: no fine-tuning steps)
            state["phase_done"] = False
            end_of_phase()
        if state["phase"] == "done":
            break
        phase = state["phase"]
        phase_step = state["global_step"] - state["phase_start"]
        batch = {k: v.to(accelerator.device) for k, v in next(batches).items()}
        base_lr = learning_rate if phase == "main" else finetune_lr
        for group in optimizer.param_groups:
            group["lr"] = base_lr * lr_factor(phase, phase_step, plan, config.warmup_ratio)
        model.set_gumbel_temperature(
            gumbel_temperature(phase, phase_step, plan, config.gumbel_temperature_start, config.gumbel_temperature_end)
        )
        # The Gumbel noise of each row is seeded from (seed, step, the row's place in the global batch): the same
        # noise on 1 or N processes (so they train the same model) and after a resume. The global RNG (anything
        # else random in a step, e.g. augmentation in the featurizer) is seeded from (seed, step, rank).
        step_seed = config.seed * 1_000_003 + state["global_step"] * 101
        model.head.pooling.noise_seeds = (step_seed % 2**40) * 2**20 + torch.arange(lo, lo + len(batch["labels"]))
        torch.manual_seed(step_seed + rank)
        features, teacher = featurizer(batch)
        out = head(features)
        loss = _loss(out.logits, batch["labels"], teacher, config) * loss_scale
        if phase == "main" and config.sparsity_l1 > 0:
            loss = loss + config.sparsity_l1 * l1_penalty(model)
        if phase == "main" and config.sparsity_hoyer > 0:
            loss = loss + config.sparsity_hoyer * hoyer_penalty(model)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        if "index" in batch:  # (a stream has no row numbers: it counts its examples itself)
            seen.index_add_(0, batch["index"].cpu(), torch.ones(len(batch["index"]), dtype=torch.int64))
        state["global_step"] += 1
        state["loss_sum"] += float(loss.detach())
        state["loss_count"] += 1
        phase_step += 1
        progress.update(1)
        if phase == "main":
            if phase_step % plan.eval_steps == 0 or phase_step >= plan.main_steps:
                record_evaluation(phase, candidate=phase_step >= plan.main_min_steps)
                patience_over = (
                    plan.early_stopping and phase_step >= plan.main_min_steps
                    and state["evals_since_best"] >= config.early_stopping_patience
                )  # fmt: skip
                state["stopped_early"] = patience_over and phase_step < plan.main_steps
                state["phase_done"] = patience_over or phase_step >= plan.main_steps
        else:
            end_of_round = phase_step % plan.finetune_steps == 0
            if end_of_round:
                record_evaluation(phase, candidate=True)
                before = state["pruning"]["validation_accuracy_before_pruning"]
                recovered = state["best_accuracy"] >= before - config.pruning_tolerance - 1e-9
                rounds = phase_step // plan.finetune_steps
                explicit = config.finetune_epochs is not None
                state["phase_done"] = explicit or recovered or rounds >= plan.finetune_max_rounds
                if not state["phase_done"]:
                    progress.total += plan.finetune_steps
                    if is_main:
                        logger.info(
                            "Validation accuracy %.4f after %d fine-tuning round(s), %.4f before pruning: another "
                            "round", state["best_accuracy"], rounds, before,
                        )  # fmt: skip
        step = state["global_step"]
        if isinstance(config.checkpointing_steps, int) and step % config.checkpointing_steps == 0:
            save_checkpoint(f"step_{step}")
        elif config.checkpointing_steps == "epoch" and step % plan.steps_per_epoch == 0:
            save_checkpoint(f"epoch_{step // plan.steps_per_epoch - 1}")
        if config.stop_after_steps is not None and step >= config.stop_after_steps:
            raise SystemExit(f"Stopped after {step} steps (--stop_after_steps).")
    progress.close()
    model.head.eval()
    model.head.rotation.matmul_dtype = None  # the trained model computes in float32 wherever it goes next
    model.head.pooling.noise_seeds = None
    total_seen = accelerator.reduce(seen.to(accelerator.device), reduction="sum").cpu() if world > 1 else seen
    final = evaluate(model, eval_data, config.per_device_eval_batch_size, accelerator, featurizer)
    schedule = {
        **plan.to_dict(), "num_processes": world, "per_device_train_batch_size": hi - lo,
        "learning_rate": learning_rate, "finetune_learning_rate": finetune_lr if prune else None,
        "lr_scaling": f"{config.lr_scaling} (learning_rate {config.learning_rate} at batch {REFERENCE_BATCH_SIZE})",
        "main_steps_run": state["main_steps_run"], "stopped_early": state["stopped_early"],
        "rotation_matmul_dtype": str(matmul_dtype).removeprefix("torch."),
    }  # fmt: skip
    examples_seen = {
        "total": int(total_seen.sum()), "min_per_row": int(total_seen.min()), "max_per_row": int(total_seen.max()),
        "epochs": round(float(total_seen.sum()) / num_rows, 3),
    }  # fmt: skip
    final.update(
        history=state["history"], pruning=state["pruning"], sparsity=sparsity_stats(model),
        global_step=state["global_step"], schedule=schedule, examples_seen=examples_seen,
    )  # fmt: skip
    return final
