"""The head's training schedule, in optimiser steps of a fixed global batch (independent of the dataset's size and of
the number of processes).

* **Global batch.** Every optimiser step uses ``global_batch`` rows (default 256), split over the processes (rank r
  gets rows ``[G*r//P, G*(r+1)//P)`` of the step's batch), so one step means the same on 1 or N processes.
* **No row dropped.** The training rows are read as one endless stream: epoch e is a permutation of all N rows that
  depends only on (seed, e), the epochs are laid end to end, and step s takes positions ``[s*G, (s+1)*G)`` of the
  stream. Every batch is full, every row is seen exactly once per epoch (an epoch is N consecutive positions; the
  last batch of an epoch continues into the next one), and a resumed run just starts at its step.
* **Learning rate follows the global batch**: ``lr = learning_rate * (G / 256) ** 0.5`` (``lr_scaling="sqrt"``, the
  usual rule for Adam; ``"linear"`` and ``"none"`` are available). ``learning_rate`` is thus the rate at batch 256.
* **Budget.** The main phase has a budget of ``clamp(budget_epochs * N / G, min_train_steps, max_budget_steps)``
  steps: a tiny dataset still gets ``min_train_steps`` steps (many epochs), a large one about ``budget_epochs``.
  The warm-up + cosine learning rate and the geometric Gumbel-temperature annealing are functions of the step within
  this budget. The validation split is evaluated every ``eval_steps``. The evaluations from ``min_train_steps`` on
  are candidates for the best state (earlier states have a high learning rate and temperature; choosing among them
  would mostly select validation noise): the phase stops early once ``early_stopping_patience`` candidates in a row
  did not improve on the best validation accuracy, and the best candidate is restored at the end of the phase (with
  budget = floor, as for small datasets, that is the final, fully annealed state). ``num_train_epochs`` /
  ``max_train_steps`` are explicit overrides: the main phase then runs exactly that long (no early stopping, the last
  state is kept), as in transformers' example scripts.
* **Fine-tuning after pruning** runs in rounds of ``finetune_steps`` steps (each a cosine from the fine-tuning rate
  to 0), the validation split evaluated at the end of each. It stops once the best end-of-round accuracy is within
  ``pruning_tolerance`` of the accuracy before pruning, else runs another round, up to ``finetune_max_rounds``; the
  best end-of-round state is restored. ``finetune_epochs`` is the explicit override (exactly that long, one round).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

REFERENCE_BATCH_SIZE = 256

__all__ = [
    "REFERENCE_BATCH_SIZE",
    "SchedulePlan",
    "StepBatchSampler",
    "nonnegative_float",
    "plan_schedule",
    "positive_float",
    "positive_int",
    "rank_slice",
    "scaled_learning_rate",
]


# argparse types of the schedule's arguments: a bad value is refused when the command line is read, before any
# data or model is loaded ("argument --num_train_epochs: must be > 0, got 0").
def _bounded(kind, name: str, check, condition: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {name}: {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {condition}, got {text}")
        return value

    parse.__name__ = name
    return parse


positive_int = _bounded(int, "an integer", lambda v: v >= 1, ">= 1")
positive_float = _bounded(float, "a number", lambda v: v > 0 and math.isfinite(v), "> 0")
nonnegative_float = _bounded(float, "a number", lambda v: v >= 0 and math.isfinite(v), ">= 0")


def scaled_learning_rate(learning_rate: float, global_batch: int, rule: str = "sqrt") -> float:
    """The learning rate at ``global_batch``, given ``learning_rate`` at the reference batch of 256."""
    ratio = global_batch / REFERENCE_BATCH_SIZE
    if rule == "sqrt":
        return learning_rate * math.sqrt(ratio)
    if rule == "linear":
        return learning_rate * ratio
    if rule == "none":
        return learning_rate
    raise ValueError(f"lr_scaling must be 'sqrt', 'linear' or 'none', got {rule!r}.")


def rank_slice(global_batch: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of each step's global batch that process ``rank`` of ``world`` trains on."""
    return (global_batch * rank) // world, (global_batch * (rank + 1)) // world


class StepBatchSampler:
    """Batch sampler (``DataLoader(batch_sampler=...)``) yielding, from ``start_step`` on and without end, the row
    indices process ``rank`` trains on at each step (see the module docstring: one endless stream of per-epoch
    permutations; a pure function of (seed, step), whatever the number of processes)."""

    def __init__(self, num_rows: int, global_batch: int, seed: int, rank: int = 0, world: int = 1, start_step: int = 0):
        if num_rows < 1:
            raise ValueError("The training split is empty.")
        self.num_rows, self.global_batch, self.seed = num_rows, global_batch, seed
        self.lo, self.hi = rank_slice(global_batch, rank, world)
        self.start_step = start_step
        self._permutations: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._permutations[epoch] = torch.randperm(self.num_rows, generator=generator).numpy()
            for old in [e for e in self._permutations if e < epoch - 1]:
                del self._permutations[old]
        return self._permutations[epoch]

    def rows_of_step(self, step: int) -> list[int]:
        positions = np.arange(step * self.global_batch + self.lo, step * self.global_batch + self.hi, dtype=np.int64)
        epochs, offsets = np.divmod(positions, self.num_rows)
        rows = np.empty_like(positions)
        for epoch in np.unique(epochs):
            where = epochs == epoch
            rows[where] = self.permutation(int(epoch))[offsets[where]]
        return rows.tolist()

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.rows_of_step(step)
            step += 1


@dataclass
class SchedulePlan:
    """What `plan_schedule` decided (recorded in the results and the checkpoints)."""

    num_rows: int
    global_batch: int
    steps_per_epoch: int  # ceil(N / G): steps to see every row once
    main_steps: int  # the main phase's budget (learning rate and temperature schedules are defined on it)
    main_min_steps: int  # no early stopping before this step of the phase
    early_stopping: bool
    finetune_steps: int  # one fine-tuning round (0 = no fine-tuning)
    finetune_max_rounds: int
    eval_steps: int

    def to_dict(self) -> dict:
        return asdict(self)


def plan_schedule(num_rows: int, global_batch: int, config) -> SchedulePlan:
    """The step budget of each phase for ``num_rows`` training rows at ``global_batch`` (see the module docstring;
    ``config`` is a `training.fit.FitConfig`)."""

    def steps_for(epochs: float) -> int:
        return max(1, math.ceil(epochs * num_rows / global_batch))

    if config.max_train_steps:
        main = int(config.max_train_steps)
        main_min, early = main, False
    elif config.num_train_epochs:
        main = steps_for(config.num_train_epochs)
        main_min, early = main, False
    else:
        main = min(
            max(steps_for(config.budget_epochs), config.min_train_steps),
            max(config.max_budget_steps, config.min_train_steps),
        )
        main_min, early = min(config.min_train_steps, main), True
    if config.max_prototypes_per_class <= 0:
        finetune, rounds = 0, 0
    elif config.finetune_epochs is not None:
        finetune = steps_for(config.finetune_epochs) if config.finetune_epochs > 0 else 0
        rounds = 1 if finetune else 0
    else:
        finetune, rounds = int(config.finetune_steps), int(config.finetune_max_rounds)
    eval_steps = int(config.eval_steps) if config.eval_steps else max(1, math.ceil(main / 15))
    return SchedulePlan(
        num_rows=num_rows,
        global_batch=global_batch,
        steps_per_epoch=steps_for(1),
        main_steps=main,
        main_min_steps=main_min,
        early_stopping=early,
        finetune_steps=finetune,
        finetune_max_rounds=rounds,
        eval_steps=eval_steps,
    )


def lr_factor(phase: str, phase_step: int, plan: SchedulePlan, warmup_ratio: float) -> float:
    """Multiplier of the phase's learning rate at step ``phase_step`` of the phase: linear warm-up then cosine to 0
    over the main budget; a cosine from 1 to 0 over each fine-tuning round."""
    if phase == "main":
        warmup = int(warmup_ratio * plan.main_steps)
        if phase_step < warmup:
            return (phase_step + 1) / warmup
        progress = (phase_step - warmup) / max(1, plan.main_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    progress = (phase_step % plan.finetune_steps) / plan.finetune_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def gumbel_temperature(phase: str, phase_step: int, plan: SchedulePlan, start: float, end: float) -> float:
    """Geometric annealing from ``start`` to ``end`` over the main budget; ``end`` while fine-tuning."""
    if phase != "main":
        return float(end)
    progress = min(1.0, phase_step / max(1, plan.main_steps - 1))
    return float(start * (end / start) ** progress)
