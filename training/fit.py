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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from training.checkpoints import config_differences, error_line, find_latest_checkpoint, read_state, write_state
from training.evaluation import cached_featurizer, evaluate
from training.features import collate_batch
from training.fit_config import RESUME_NEUTRAL, FitConfig
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
        F.log_softmax(logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
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


@dataclass
class FitState:
    """Where the schedule is: everything a checkpoint's JSON holds so that a resumed run continues exactly.

    ``phase`` goes main -> pruned -> finetune [-> pruned -> finetune ...] -> done; ``phase_done`` marks the end of a
    phase whose transition (`_Fit.end_of_phase`) has not run yet (a checkpoint may be taken in between)."""

    global_step: int = 0
    phase: str = "main"
    phase_start: int = 0
    phase_done: bool = False
    best_accuracy: float | None = None  # the phase's best validation accuracy among candidate states
    best_step: int | None = None
    evals_since_best: int = 0  # early-stopping patience counter
    last_accuracy: float | None = None
    main_steps_run: int | None = None
    stopped_early: bool = False
    pruning: dict | None = None  # the pruning record (see `fit_head`'s return value)
    history: list = field(default_factory=list)  # one record per evaluation
    loss_sum: float = 0.0  # training loss since the last evaluation
    loss_count: int = 0


@dataclass
class _Fit:
    """One `fit_head` call: the model, the optimiser and the schedule, plus the state that changes as it trains."""

    model: torch.nn.Module
    head: torch.nn.Module  # model.head as prepared by accelerate (DDP-wrapped on several processes)
    optimizer: torch.optim.Optimizer
    accelerator: object
    config: FitConfig
    plan: object  # training.schedule.SchedulePlan
    featurizer: Callable
    eval_data: object
    global_batch: int
    num_rows: int
    run_config: dict  # the arguments a checkpoint records (a resume with other ones is refused)
    state: FitState = field(default_factory=FitState)
    best: dict[str, torch.Tensor] | None = None  # the head's state at the phase's best evaluation (CPU)
    dense: dict[str, torch.Tensor] | None = None  # the head before pruning (a larger budget starts from it again)
    seen: torch.Tensor | None = None  # this process's uses of each row since start / resume
    progress: object = None

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # -------------------------------------------------------------------------------- checkpoints
    def resume(self, path: str) -> None:
        config = self.config
        if path == "latest":
            path = find_latest_checkpoint(config.output_dir)
        saved, tensors = read_state(path)
        differences = config_differences(saved.get("config", {}), self.run_config, RESUME_NEUTRAL)
        if differences and not config.ignore_config_change:
            raise ValueError(
                f"Cannot resume from {path!r}: it was trained with other arguments: {'; '.join(differences)}. Resume "
                "with the same arguments, or pass --ignore_config_change to continue with the new ones anyway."
            )
        try:  # head weights + prototype mask, optimiser, RNG states (the weights were checked by read_state)
            self.accelerator.load_state(path)
        except (OSError, RuntimeError, EOFError, KeyError) as error:  # e.g. a truncated optimizer.bin
            raise ValueError(
                f"Cannot resume from {path!r}: accelerate cannot load its state ({error_line(error)}); "
                "resume from another checkpoint."
            ) from None
        names = {f.name for f in fields(FitState)}
        for key, value in saved.items():
            if key in names:
                setattr(self.state, key, value)
        self.best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")} or None
        self.dense = {k[len("dense.") :]: v for k, v in tensors.items() if k.startswith("dense.")} or None
        if self.is_main and "seen" in tensors:  # the other processes count from 0: the sum over processes stays right
            self.seen = tensors["seen"].clone()
        if self.is_main:
            logger.info("Resumed from %s at step %d (%s phase)", path, self.state.global_step, self.state.phase)
            if differences:
                logger.warning(
                    "Resuming with other arguments than the checkpoint's (--ignore_config_change): %s",
                    "; ".join(differences),
                )

    def total_seen(self) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return self.seen
        return self.accelerator.reduce(self.seen.to(self.accelerator.device), reduction="sum").cpu()

    def save_checkpoint(self, name: str) -> None:
        if self.config.output_dir is None:
            return
        path = os.path.join(self.config.output_dir, name)
        self.accelerator.save_state(path)
        total_seen = self.total_seen()
        if self.is_main:
            tensors = {
                "seen": total_seen,
                **{f"best.{k}": v for k, v in (self.best or {}).items()},
                **{f"dense.{k}": v for k, v in (self.dense or {}).items()},
            }
            write_state(path, {**asdict(self.state), "config": self.run_config, "plan": self.plan.to_dict()}, tensors)
        self.accelerator.wait_for_everyone()

    def end_of_step(self) -> None:
        """A checkpoint when one is due (``checkpointing_steps``: every N steps, or at the end of each epoch). The
        tests that kill and resume a run wrap this method."""
        step, every = self.state.global_step, self.config.checkpointing_steps
        if isinstance(every, int) and step % every == 0:
            self.save_checkpoint(f"step_{step}")
        elif every == "epoch" and step % self.plan.steps_per_epoch == 0:
            self.save_checkpoint(f"epoch_{step // self.plan.steps_per_epoch - 1}")

    # -------------------------------------------------------------------------------- evaluation
    def record_evaluation(self, phase: str, candidate: bool) -> dict:
        """Evaluate on the validation split and log it; a ``candidate`` state may become the phase's best (only
        states after the main phase's floor and at the end of fine-tuning rounds are: before, the learning rate is
        still high and the temperature not annealed, and picking among them would select the validation noise)."""
        config, state = self.config, self.state
        metrics = evaluate(
            self.model, self.eval_data, config.per_device_eval_batch_size, self.accelerator, self.featurizer
        )
        step = state.global_step
        record = {
            "phase": phase,
            "step": step,
            "epoch": round(step * self.global_batch / self.num_rows, 3),
            "train_loss": state.loss_sum / state.loss_count if state.loss_count else None,
            "eval_accuracy": metrics["accuracy"],
            "explanation_size_median": metrics["explanation_size_median"],
        }
        if "agreement" in metrics:
            record["agreement"] = metrics["agreement"]
        state.history.append(record)
        state.loss_sum, state.loss_count, state.last_accuracy = 0.0, 0, metrics["accuracy"]
        # A tie goes to the earlier state in the main phase (patience counts from it) but to the later round in
        # fine-tuning: with the mask fixed, a round that matches the best accuracy has only trained the pruned head
        # longer, and keeping the first round made a run's result hinge on one validation image.
        improves = (
            state.best_accuracy is None
            or metrics["accuracy"] > state.best_accuracy
            or (phase == "finetune" and metrics["accuracy"] == state.best_accuracy)
        )
        if candidate and improves:
            state.best_accuracy, state.best_step, state.evals_since_best = metrics["accuracy"], step, 0
            self.best = _head_state(self.model)
        elif candidate:
            state.evals_since_best += 1
        if self.is_main:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
            shown["epoch"] = round(record["epoch"], 1)  # (the history keeps 3 decimals; a log line needs one)
            logger.info("step %d (%s): %s", step, phase, shown)
        if config.with_tracking:
            self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)
        return metrics

    # -------------------------------------------------------------------------------- phase transitions
    def start_pruning(self, budget: int, before: float) -> None:
        """Prune the head to ``budget`` prototypes per class, evaluate, and start a fine-tuning phase."""
        state = self.state
        stats = prune_to_budget(self.model, budget)
        state.phase, state.best_accuracy, state.best_step, state.evals_since_best = "pruned", None, None, 0
        self.best = None
        after = self.record_evaluation("pruned", candidate=False)["accuracy"]
        attempts = (state.pruning or {}).get("attempts", [])
        state.pruning = {
            **stats,
            "pruned_at_step": state.global_step,
            "validation_accuracy_before_pruning": before,
            "validation_accuracy_after_pruning": after,
            "tolerance": self.config.pruning_tolerance,
            "attempts": attempts,
        }
        if self.is_main:
            logger.info(
                "Pruned to %d prototypes per class (%d of %d weights kept, %.1f%% of the weight mass, %d distinct "
                "channels used): validation accuracy %.4f before pruning, %.4f right after",
                stats["max_prototypes_per_class"],
                stats["nonzero_after"],
                stats["nonzero_before"],
                100 * stats["kept_weight_fraction"],
                stats["distinct_channels_used"],
                before,
                after,
            )
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        inner.state.clear()  # fine-tuning starts from fresh Adam moments, like a new run on the pruned head
        state.phase, state.phase_start, state.phase_done = "finetune", state.global_step, self.plan.finetune_steps == 0

    def end_of_phase(self) -> None:
        """Main -> (prune, fine-tune [-> prune to a larger budget, fine-tune ...]) -> done. A function of the
        checkpointed state only: a run resumed from a checkpoint taken at the end of a phase makes the same
        transition."""
        config, state, plan = self.config, self.state, self.plan
        if state.phase == "main":
            state.main_steps_run = state.global_step - state.phase_start
            if plan.early_stopping and self.best is not None:
                self.model.head.load_state_dict(self.best)
            before = state.best_accuracy if plan.early_stopping else state.last_accuracy
            if self.is_main:
                logger.info(
                    "Main phase %s after %d steps (budget %d); validation accuracy %.4f (best, step %s)",
                    "stopped early" if state.stopped_early else "ended",
                    state.main_steps_run,
                    plan.main_steps,
                    state.best_accuracy,
                    state.best_step,
                )
            if config.max_prototypes_per_class == 0:  # dense: nothing to prune
                state.phase = "done"
                return
            self.dense = _head_state(self.model)
            self.start_pruning(config.max_prototypes_per_class, before)
            return
        self._end_of_finetuning()

    def _end_of_finetuning(self) -> None:
        """Keep the best round; if the validation accuracy did not recover, prune to twice the budget from the head
        before pruning and fine-tune again (``grow_prototype_budget``), else report the loss."""
        config, state, plan, tolerance = self.config, self.state, self.plan, self.config.pruning_tolerance
        explicit = config.finetune_epochs is not None
        if not explicit and self.best is not None:
            self.model.head.load_state_dict(self.best)
        pruning = state.pruning
        before = pruning["validation_accuracy_before_pruning"]
        final = state.last_accuracy if explicit else state.best_accuracy
        steps = state.global_step - state.phase_start
        recovered = final >= before - tolerance - 1e-9
        pruning.update(
            validation_accuracy_after_finetuning=final,
            finetune_steps_run=steps,
            finetune_rounds=math.ceil(steps / plan.finetune_steps) if plan.finetune_steps else 0,
            recovered=recovered,
            accuracy_change=final - before,
        )
        budget, channels = pruning["max_prototypes_per_class"], self.model.head.classifier.weight.shape[1]
        can_grow = config.grow_prototype_budget and budget < channels and self.dense is not None
        if not recovered and not explicit and can_grow:
            kept = (
                "max_prototypes_per_class",
                "validation_accuracy_after_pruning",
                "validation_accuracy_after_finetuning",
                "finetune_steps_run",
            )
            pruning["attempts"] = pruning.get("attempts", []) + [{k: pruning[k] for k in kept}]
            if self.is_main:
                logger.warning(
                    "Pruning to %d prototypes per class: validation accuracy %.4f after %d fine-tuning steps, %.4f "
                    "before pruning (tolerance %s): back to the head before pruning, pruning to %d",
                    budget,
                    final,
                    steps,
                    before,
                    tolerance,
                    min(2 * budget, channels),
                )
            self.model.head.load_state_dict(self.dense)  # the unpruned mask and weights
            self.progress.total += plan.finetune_steps
            self.start_pruning(min(2 * budget, channels), before)
            return
        if not recovered:
            pruning["warning"] = (
                f"validation accuracy {final:.4f} after pruning and {steps} fine-tuning steps is "
                f"{before - final:.4f} below its value before pruning ({before:.4f}), more than the tolerance "
                f"{tolerance}"
            )
        if self.is_main:
            log = logger.info if recovered else logger.warning
            log(
                "Fine-tuning after pruning: %d steps; validation accuracy %.4f before pruning, %.4f right after, %.4f "
                "after fine-tuning (%s)",
                steps,
                before,
                pruning["validation_accuracy_after_pruning"],
                final,
                "recovered" if recovered else f"NOT recovered within {tolerance}",
            )
        state.phase = "done"


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
    # ---- set-up: the plan, the optimiser, and this process's share of every global batch
    config.validate()
    accelerator = accelerator or make_accelerator()
    featurizer = featurizer or cached_featurizer
    rank, world = accelerator.process_index, accelerator.num_processes
    _check_classes(train_data)
    num_rows = len(train_data)
    global_batch = config.global_batch_size(world)
    if global_batch < world:
        raise ValueError(f"The global batch ({global_batch}) is smaller than the number of processes ({world}).")
    plan = plan_schedule(num_rows, global_batch, config)
    learning_rate = scaled_learning_rate(config.learning_rate, global_batch, config.lr_scaling)
    finetune_lr = scaled_learning_rate(
        config.finetune_learning_rate or config.learning_rate / 3.0, global_batch, config.lr_scaling
    )
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
        **asdict(config),
        "(global batch)": global_batch,
        "(training rows)": num_rows,
        "(validation rows)": len(eval_data),
    }
    fit = _Fit(
        model, head, optimizer, accelerator, config, plan, featurizer, eval_data, global_batch, num_rows, run_config
    )
    fit.seen = torch.zeros(num_rows, dtype=torch.int64)
    state = fit.state
    if config.resume_from_checkpoint:
        fit.resume(config.resume_from_checkpoint)

    if fit.is_main:
        logger.info(
            "Training the head: global batch %d (%d process(es) x ~%d), learning rate %.4g; main phase budget %d "
            "steps (%s), fine-tuning rounds of %d steps (at most %d); evaluation every %d steps; %d training rows "
            "(%d steps an epoch)",
            global_batch,
            world,
            hi - lo,
            learning_rate,
            plan.main_steps,
            f"early stopping after {plan.main_min_steps}" if plan.early_stopping else "fixed length",
            plan.finetune_steps,
            plan.finetune_max_rounds,
            plan.eval_steps,
            num_rows,
            plan.steps_per_epoch,
        )
    fit.progress = tqdm(
        total=max(plan.main_steps + plan.finetune_steps, state.global_step),
        initial=state.global_step,
        desc="train",
        disable=not (fit.is_main and config.show_progress),
    )
    if hasattr(train_data, "step_batches"):  # a `training.streaming.StreamSplit`: each process reads its shard
        batches = train_data.step_batches(global_batch, config.seed, rank, world, start_step=state.global_step)
    else:
        sampler = StepBatchSampler(num_rows, global_batch, config.seed, rank, world, start_step=state.global_step)
        batches = iter(DataLoader(train_data, batch_sampler=sampler, collate_fn=collate_batch))

    # ---- the training loop: one optimiser step per global batch, through the phases main -> prune/fine-tune -> done
    while True:
        while state.phase_done:  # (a phase may end as it starts: no fine-tuning steps)
            state.phase_done = False
            fit.end_of_phase()
        if state.phase == "done":
            break
        phase = state.phase
        phase_step = state.global_step - state.phase_start
        batch = {k: v.to(accelerator.device) for k, v in next(batches).items()}

        # learning rate and Gumbel temperature: functions of the phase and the step (`training.schedule`)
        base_lr = learning_rate if phase == "main" else finetune_lr
        for group in optimizer.param_groups:
            group["lr"] = base_lr * lr_factor(phase, phase_step, plan, config.warmup_ratio)
        model.set_gumbel_temperature(
            gumbel_temperature(phase, phase_step, plan, config.gumbel_temperature_start, config.gumbel_temperature_end)
        )
        # The Gumbel noise of each row is seeded from (seed, step, the row's place in the global batch): the same
        # noise on 1 or N processes (so they train the same model) and after a resume. The global RNG (anything
        # else random in a step, e.g. augmentation in the featurizer) is seeded from (seed, step, rank).
        step_seed = config.seed * 1_000_003 + state.global_step * 101
        model.head.pooling.noise_seeds = (step_seed % 2**40) * 2**20 + torch.arange(lo, lo + len(batch["labels"]))
        torch.manual_seed(step_seed + rank)

        # forward, loss (+ the sparsity penalties in the main phase), backward, step
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
            fit.seen.index_add_(0, batch["index"].cpu(), torch.ones(len(batch["index"]), dtype=torch.int64))
        state.global_step += 1
        state.loss_sum += float(loss.detach())
        state.loss_count += 1
        phase_step += 1
        fit.progress.update(1)

        if phase == "main":  # evaluate every eval_steps; early stopping once past the floor
            if phase_step % plan.eval_steps == 0 or phase_step >= plan.main_steps:
                fit.record_evaluation(phase, candidate=phase_step >= plan.main_min_steps)
                patience_over = (
                    plan.early_stopping
                    and phase_step >= plan.main_min_steps
                    and state.evals_since_best >= config.early_stopping_patience
                )
                state.stopped_early = patience_over and phase_step < plan.main_steps
                state.phase_done = patience_over or phase_step >= plan.main_steps
        elif phase_step % plan.finetune_steps == 0:  # fine-tuning: evaluate each round; stop once recovered
            fit.record_evaluation(phase, candidate=True)
            before = state.pruning["validation_accuracy_before_pruning"]
            recovered = state.best_accuracy >= before - config.pruning_tolerance - 1e-9
            rounds = phase_step // plan.finetune_steps
            explicit = config.finetune_epochs is not None
            state.phase_done = explicit or recovered or rounds >= plan.finetune_max_rounds
            if not state.phase_done:
                fit.progress.total += plan.finetune_steps
                if fit.is_main:
                    logger.info(
                        "Validation accuracy %.4f after %d fine-tuning round(s), %.4f before pruning: another round",
                        state.best_accuracy,
                        rounds,
                        before,
                    )

        fit.end_of_step()

    # ---- the final evaluation and the report
    fit.progress.close()
    model.head.eval()
    model.head.rotation.matmul_dtype = None  # the trained model computes in float32 wherever it goes next
    model.head.pooling.noise_seeds = None
    total_seen = fit.total_seen()
    final = evaluate(model, eval_data, config.per_device_eval_batch_size, accelerator, featurizer)
    schedule = {
        **plan.to_dict(),
        "num_processes": world,
        "per_device_train_batch_size": hi - lo,
        "learning_rate": learning_rate,
        "finetune_learning_rate": finetune_lr if config.max_prototypes_per_class > 0 else None,
        "lr_scaling": f"{config.lr_scaling} (learning_rate {config.learning_rate} at batch {REFERENCE_BATCH_SIZE})",
        "main_steps_run": state.main_steps_run,
        "stopped_early": state.stopped_early,
        "rotation_matmul_dtype": str(matmul_dtype).removeprefix("torch."),
    }
    examples_seen = {
        "total": int(total_seen.sum()),
        "min_per_row": int(total_seen.min()),
        "max_per_row": int(total_seen.max()),
        "epochs": round(float(total_seen.sum()) / num_rows, 3),
    }
    final.update(
        history=state.history,
        pruning=state.pruning,
        sparsity=sparsity_stats(model),
        global_step=state.global_step,
        schedule=schedule,
        examples_seen=examples_seen,
    )
    return final
