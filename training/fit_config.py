"""`FitConfig`: the settings of `training.fit.fit_head` (the schedule's and the loss's). The training script's
arguments of the same names fill it (`FitConfig.from_args`)."""

from __future__ import annotations

from dataclasses import dataclass, fields


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
    with_tracking: bool = False
    show_progress: bool = True

    def validate(self) -> None:
        if self.loss not in ("softmax", "sigmoid"):
            raise ValueError(f"loss must be 'softmax' or 'sigmoid', got {self.loss!r}.")
        if self.rotation_matmul_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(
                f"rotation_matmul_dtype must be 'auto', 'float32' or 'bfloat16', got {self.rotation_matmul_dtype!r}."
            )
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
        for name in (
            "train_batch_size",
            "per_device_eval_batch_size",
            "min_train_steps",
            "max_budget_steps",
            "finetune_steps",
            "finetune_max_rounds",
            "early_stopping_patience",
        ):
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
                raise ValueError(
                    f"checkpointing_steps must be a positive integer or 'epoch', got {self.checkpointing_steps!r}."
                )
            self.checkpointing_steps = int(self.checkpointing_steps)

    @classmethod
    def from_args(cls, args, **overrides) -> FitConfig:
        """The fields named like the training script's arguments, taken from them (``overrides`` win): the script's
        flags and this class share their names, so nothing is copied by hand."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**{**values, **overrides})

    def global_batch_size(self, num_processes: int) -> int:
        """Rows per optimiser step over all processes: ``per_device_train_batch_size * num_processes`` when the
        per-device size is given (the transformers scripts' meaning), else ``train_batch_size``."""
        if self.per_device_train_batch_size:
            return self.per_device_train_batch_size * num_processes
        return self.train_batch_size


# Arguments that do not change what is trained: a checkpoint may be resumed with other values of these.
RESUME_NEUTRAL = {
    "per_device_eval_batch_size",
    "checkpointing_steps",
    "resume_from_checkpoint",
    "ignore_config_change",
    "output_dir",
    "stop_after_steps",
    "with_tracking",
    "show_progress",  # (stop_after_steps: checkpoints of 0.1)
    # compared through the resolved global batch instead (2 processes x 128 = 1 process x 256)
    "train_batch_size",
    "per_device_train_batch_size",
}
