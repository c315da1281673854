"""Checkpoints of `training.fit.fit_head`: the files next to ``accelerator.save_state``'s, written so that a kill at
any moment leaves either the previous state or the new one, and read back so that two runs are never mixed.

A checkpoint folder (``step_N`` / ``epoch_N``) holds accelerate's state (head weights and prototype mask, optimiser,
RNG states), ``infodisent_schedule.safetensors`` (the best head state so far and how often each training row was
seen) and, written last, ``infodisent_state.json`` (step, phase, early-stopping counters, pruning record, history,
the training arguments). Both files are written to a temporary name and renamed into place (``os.replace`` is
atomic), so a folder whose state file exists and parses is complete.
"""

from __future__ import annotations

import json
import logging
import os
import re

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

STATE_FILE = "infodisent_state.json"
TENSORS_FILE = "infodisent_schedule.safetensors"
_CHECKPOINT_NAME = re.compile(r"(step|epoch)_\d+")

__all__ = [
    "STATE_FILE",
    "TENSORS_FILE",
    "atomic_write",
    "check_weights",
    "error_line",
    "config_differences",
    "find_latest_checkpoint",
    "read_state",
    "write_state",
]


def atomic_write(path: str, write) -> None:
    """`write(tmp)` fills a temporary file next to `path`, which is then renamed into place: a reader (or a rerun
    after a kill) sees the old file or the new one, never half of one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_state(folder: str, state: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write the tensors, then the JSON state (last: its presence marks the checkpoint complete), each atomically."""
    atomic_write(
        os.path.join(folder, TENSORS_FILE), lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, p)
    )

    def write_json(p):
        with open(p, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(os.path.join(folder, STATE_FILE), write_json)


def read_state(folder: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON state and the tensors of a checkpoint; ValueError naming the file if either does not parse."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{folder!r} is not a checkpoint of this script (no {STATE_FILE}).")
    try:
        with open(path) as f:
            state = json.load(f)
        if not isinstance(state, dict) or "global_step" not in state:
            raise ValueError("no global_step")
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(
            f"The checkpoint state {path!r} does not parse ({error}); resume from another checkpoint."
        ) from error
    if "phase" not in state:
        raise ValueError(
            f"The checkpoint {folder!r} was written by an older version of the training script; it cannot be resumed."
        )
    check_weights(folder)
    return state, load_file(os.path.join(folder, TENSORS_FILE))  # just read by check_weights: it loads


def error_line(error: Exception) -> str:
    """``"SafetensorError: <first line of the message>"``: what a one-line error says about a library's error."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def check_weights(folder: str) -> None:
    """ValueError naming the file when a weights file of the checkpoint (accelerate's ``model*.safetensors``, this
    module's tensors) is missing, does not load (truncated, a kill mid-copy) or holds NaN / infinite values: resuming
    from it would end in a traceback or train on garbage (issue 26)."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
    if TENSORS_FILE not in names:
        raise ValueError(f"The checkpoint {folder!r} has no {TENSORS_FILE}; resume from another checkpoint.")
    for name in names:
        path = os.path.join(folder, name)
        try:
            tensors = load_file(path)
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise ValueError(
                f"The checkpoint file {path!r} cannot be read ({error_line(error)}); resume from another checkpoint."
            ) from None
        for key, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise ValueError(
                    f"The checkpoint file {path!r} holds {bad} NaN or infinite values in {key!r}; "
                    "resume from another checkpoint."
                )


def find_latest_checkpoint(output_dir: str) -> str:
    """The checkpoint with the highest step in ``output_dir`` whose state parses and whose weights load and are
    finite; checkpoints that fail (a 0-byte or truncated ``infodisent_state.json``, a truncated or NaN
    ``model.safetensors``) are skipped with a warning naming them and why."""
    candidates = []
    for name in sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []:
        path = os.path.join(output_dir, name)
        state_path = os.path.join(path, STATE_FILE)
        if not (_CHECKPOINT_NAME.fullmatch(name) and os.path.exists(state_path)):
            continue
        try:
            with open(state_path) as f:
                candidates.append((int(json.load(f)["global_step"]), path))
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("Skipping the checkpoint %s: its %s does not parse (%s).", path, STATE_FILE, error)
    for _, path in sorted(candidates, reverse=True):
        try:
            check_weights(path)
        except ValueError as error:
            logger.warning("Skipping the checkpoint %s: %s", path, error)
            continue
        return path
    raise ValueError(
        f"--resume_from_checkpoint latest: no usable checkpoint (step_N / epoch_N) in {output_dir!r}"
        + (f" ({len(candidates)} skipped: see the warnings above)." if candidates else ".")
    )


def config_differences(saved: dict, current: dict, neutral: set[str]) -> list[str]:
    """``["--name saved (now current)", ...]`` for every argument that differs and changes what is trained."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key in neutral:
            continue
        if saved.get(key) != current.get(key):
            flag = key if key.startswith("(") else f"--{key}"
            differences.append(f"{flag} {saved.get(key)!r} (now {current.get(key)!r})")
    return differences
