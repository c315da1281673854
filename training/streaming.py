"""``--streaming``: train on 🤗 datasets' iterable datasets (``load_dataset(..., streaming=True)``) through the live
backbone, so that an ImageNet-size dataset needs neither a full local copy nor a feature cache.

* **Sharding.** Each process reads its own part of every split with ``datasets.distributed.split_dataset_by_node``
  (whole shards — parquet files, archive members — when their number is a multiple of the process count, else every
  N-th example), so no process reads or decodes another's images. accelerate's ``prepare`` of an IterableDataset
  loader would instead read everything on process 0 and dispatch slices (a single reader: the bottleneck at this
  scale), so it is not used.
* **Global batch.** As on the cached path, every optimiser step uses the same global batch G on 1 or N processes:
  process r takes ``rank_slice(G, r, N)`` rows per step from its own stream. A process's stream is its shard,
  shuffled with a buffer (``IterableDataset.shuffle(seed, buffer_size)``, shard order included) and reshuffled per
  epoch (``set_epoch``); the epochs are laid end to end (the last batch of an epoch continues into the next one), so
  within each epoch every example of the process's shard is used exactly once: none dropped, none duplicated.
  When the shards differ in size the processes' epochs drift apart (a smaller shard is cycled more often).
* **Step budget.** The schedule needs the number of training rows: parquet metadata, counted image files, or the
  dataset's info (Hub ids). When it cannot be known, ``--max_train_steps`` is required (then an "epoch" in the
  results means the step budget).
* **Validation / test.** A streamed evaluation split is evaluated in full (or its first ``--max_eval_samples``
  rows), each process on its shard; the rows are gathered once at the end (``gather_object``: the shards may have
  different lengths).
* **Resume.** A step checkpoint resumes by replaying each process's stream up to the step, which is exact because
  the shuffle is a function of (seed, epoch): the first epoch and the current one are read (images not decoded: the
  image column is read undecoded and decoded here), the epochs between are skipped unread. (``IterableDataset
  .state_dict()`` of datasets >= 3 would not be exact: it drops the examples in the shuffle buffer.)
* **Not available** under ``--streaming``: the linear-probe baseline (it needs pooled features of the whole training
  split; ``all_results.json`` says it was skipped and why), the prototype gallery (it ranks patches over the whole
  training split), and a validation split held out from train (the data must have a validation split or
  ``--validation_dir``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.data import (
    _IMAGE_EXTENSIONS,
    _SPLIT_ALIASES,
    NamedImage,
    _detect_image_column,
    _detect_label_column,
    _split_of,
)
from training.schedule import rank_slice

logger = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 10_000


# ------------------------------------------------------------------------------------------------- loading
def _local_data_files(folder: str) -> tuple[str, dict[str, list[str]]]:
    """(builder, data_files by split) of a local folder: parquet files, else an imagefolder."""
    parquet = sorted(glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True))
    if parquet:
        files: dict[str, list[str]] = {}
        for f in parquet:
            files.setdefault(_split_of(os.path.relpath(f, folder)) or "train", []).append(f)
        return "parquet", files
    files = {}
    for f in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
        if Path(f).suffix.lower() in _IMAGE_EXTENSIONS:
            files.setdefault(_split_of(os.path.relpath(f, folder)) or "train", []).append(f)
    if not files:
        raise ValueError(f"The folder {folder!r} contains neither parquet files nor images (imagefolder layout).")
    return "imagefolder", files


def _count_rows(builder: str, files: list[str]) -> int:
    """Rows of a local split without reading its data: parquet footers, or the number of image files."""
    if builder == "parquet":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return len(files)


def load_streaming_dataset(dataset_name, train_dir, validation_dir, image_column_name=None, label_column_name=None):
    """``({split: IterableDataset}, {split: rows or None}, image_col, label_col, id2label)`` for ``train``,
    ``validation`` and, when present, ``test``. The image column is left undecoded (`StreamSplit` decodes it)."""
    import datasets

    counts: dict[str, int | None] = {}
    if dataset_name is not None and os.path.isdir(os.path.expanduser(dataset_name)):
        builder, files = _local_data_files(os.path.expanduser(dataset_name))
    elif dataset_name is None:
        builder, files = "imagefolder", {}
        for split, folder in (("train", train_dir), ("validation", validation_dir)):
            if folder is not None:
                files[split] = sorted(
                    f
                    for f in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                    if Path(f).suffix.lower() in _IMAGE_EXTENSIONS
                )
    else:
        builder, files = None, None
    if builder is not None:
        counts = {split: _count_rows(builder, f) for split, f in files.items()}
        raw = datasets.load_dataset(builder, data_files=files, streaming=True)
    else:
        try:
            raw = datasets.load_dataset(dataset_name, streaming=True)
        except Exception as e:  # noqa: BLE001 - DatasetNotFoundError, offline, ...
            raise ValueError(
                f"--dataset_name: cannot stream {dataset_name!r}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"
            ) from e
    splits = {_SPLIT_ALIASES.get(k.lower(), k.lower()): v for k, v in raw.items()}
    if builder is None:  # a Hub id: the row counts its card or info records, if any
        for name, split in splits.items():
            info = getattr(split, "info", None)
            found = [
                s
                for k, s in ((info.splits or {}).items() if info else [])
                if _SPLIT_ALIASES.get(k.lower(), k.lower()) == name
            ]
            counts[name] = int(found[0].num_examples) if found and found[0].num_examples else None
    if "train" not in splits:
        raise ValueError(f"The dataset has no 'train' split; its splits are {list(raw.keys())}.")
    if "validation" not in splits:
        raise ValueError(
            "--streaming needs a validation split (a validation/val/dev split, or --validation_dir): a stream of "
            "unknown order cannot be split into train and validation."
        )
    train = splits["train"]
    if train.features is None:  # some Hub datasets declare no features: read them from the first rows
        train = train._resolve_features()
    image_col = _detect_image_column(train, image_column_name)
    label_col = _detect_label_column(train, label_column_name, image_col)
    label_feature = train.features[label_col]
    if isinstance(label_feature, datasets.ClassLabel):
        id2label = dict(enumerate(label_feature.names))
    else:
        raise ValueError(
            f"--streaming: the label column {label_col!r} has type {label_feature!r}; a stream needs a ClassLabel "
            "(the class names cannot be found without reading the whole split)."
        )
    keep = {"train", "validation", "test"}
    splits = {
        k: v.cast_column(image_col, NamedImage(decode=False)).select_columns([image_col, label_col])
        for k, v in splits.items()
        if k in keep
    }
    return splits, {k: counts.get(k) for k in splits}, image_col, label_col, id2label


def resolve_train_rows(num_rows: int | None, args, global_batch: int) -> int:
    """The row count the schedule plans with; one clear error when it is unknown and no step budget is given."""
    if num_rows is not None:
        return num_rows
    if args.max_train_steps is None:
        raise ValueError(
            "--streaming: the number of training rows is unknown (the dataset's info gives no row count), so the "
            "step-based schedule has no budget: pass --max_train_steps."
        )
    for flag in ("num_train_epochs", "finetune_epochs"):
        if getattr(args, flag) is not None:
            raise ValueError(
                f"--{flag} needs the number of training rows, unknown for this stream: use "
                "--max_train_steps / --finetune_steps."
            )
    if args.checkpointing_steps == "epoch":
        raise ValueError(
            "--checkpointing_steps epoch needs the number of training rows, unknown for this stream: "
            "give a number of steps."
        )
    return args.max_train_steps * global_batch  # "an epoch" = the step budget


# ---------------------------------------------------------------------------------------------- the streams
def _example_id(image: dict, label: int) -> str:
    """An id of an example's content (testing aid: which examples a process trained on)."""
    data = image.get("bytes") or Path(image["path"]).read_bytes()
    return hashlib.sha1(data + str(int(label)).encode()).hexdigest()[:16]


class StreamSplit:
    """One streamed split, read by the processes of an accelerator. ``step_batches`` (training: endless, shuffled,
    the process's slice of every global batch) and ``eval_batches`` / ``gather_rows`` (evaluation: the whole split
    once) are what `training.fit` calls instead of a DataLoader over a map-style dataset."""

    def __init__(
        self,
        stream,
        transform: Callable,
        image_column: str,
        num_rows: int | None,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        max_rows: int | None = None,
        record_ids: str | None = None,
    ):
        self.stream, self.transform, self.image_column = stream, transform, image_column
        self.num_rows = num_rows if max_rows is None or num_rows is None else min(num_rows, max_rows)
        self.max_rows, self.shuffle_buffer, self.record_ids = max_rows, shuffle_buffer, record_ids
        self.consumed: dict[int, int] = {}  # training: epoch -> examples this process used
        self.ids: dict[int, list[str]] = {}  # testing aid: epoch -> ids of the examples this process used

    def __len__(self) -> int:
        if self.num_rows is None:  # an evaluation split of unknown length: counted once, images undecoded
            self.num_rows = sum(1 for _ in self._node_stream(0, 1))
        return self.num_rows

    def _node_stream(self, rank: int, world: int):
        from datasets.distributed import split_dataset_by_node

        stream = split_dataset_by_node(self.stream, rank=rank, world_size=world) if world > 1 else self.stream
        if self.max_rows is not None:  # the bound, split evenly over the processes
            stream = stream.take(self.max_rows * (rank + 1) // world - self.max_rows * rank // world)
        return stream

    def _collate(self, examples: list[dict], index: list[int]) -> dict[str, torch.Tensor]:
        label_column = next(k for k in examples[0] if k != self.image_column)
        batch = {
            self.image_column: [NamedImage().decode_example(e[self.image_column]) for e in examples],
            label_column: [e[label_column] for e in examples],
        }
        out = self.transform(batch)
        return {
            "pixel_values": torch.stack(list(out["pixel_values"])).float(),
            "labels": torch.tensor(out["labels"], dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }

    def step_batches(self, global_batch: int, seed: int, rank: int, world: int, start_step: int = 0):
        """This process's rows of every step from ``start_step`` on, without end (epochs laid end to end). A
        resumed run replays its stream to the step without decoding: the shuffle depends only on (seed, epoch)."""
        lo, hi = rank_slice(global_batch, rank, world)
        if rank == 0 and world > 1:
            whole = self.stream.num_shards % world == 0
            logger.info(
                "Streaming: %d shard(s) over %d processes: each reads %s",
                self.stream.num_shards,
                world,
                f"{self.stream.num_shards // world} whole shard(s)" if whole else f"every {world}th example",
            )
        stream = self._node_stream(rank, world).shuffle(seed=seed, buffer_size=self.shuffle_buffer)
        label_column = None
        skip, epoch, pending = start_step * (hi - lo), 0, []
        shard_length = None  # known once a whole epoch has been read: later skipped epochs are not read at all
        while True:
            if shard_length and skip >= shard_length:
                skip, epoch = skip - shard_length, epoch + 1
                continue
            stream.set_epoch(epoch)
            count = 0
            for example in stream:
                count += 1
                if skip:
                    skip -= 1
                    continue
                label_column = label_column or next(k for k in example if k != self.image_column)
                self.consumed[epoch] = self.consumed.get(epoch, 0) + 1
                if self.record_ids:
                    self.ids.setdefault(epoch, []).append(
                        _example_id(example[self.image_column], example[label_column])
                    )
                pending.append(example)
                if len(pending) == hi - lo:
                    batch = self._collate(pending, [])
                    del batch["index"]  # no row numbers in a stream: `fit_head` counts nothing per row
                    yield batch
                    pending = []
            if count == 0:
                raise ValueError(
                    f"--streaming: process {rank} of {world} got no training rows (fewer rows than processes)."
                )
            shard_length, epoch = count, epoch + 1

    def eval_batches(self, batch_size: int, accelerator=None):
        """The process's shard of the split, once, in stream order (no shuffle)."""
        rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
        stream = self._node_stream(rank, world)
        pending, position = [], 0
        device = accelerator.device if accelerator is not None else torch.device("cpu")
        for example in stream:
            pending.append(example)
            if len(pending) == batch_size:
                yield {
                    k: v.to(device)
                    for k, v in self._collate(pending, list(range(position, position + batch_size))).items()
                }
                position, pending = position + batch_size, []
        if pending:
            yield {
                k: v.to(device)
                for k, v in self._collate(pending, list(range(position, position + len(pending)))).items()
            }

    def gather_rows(self, rows: dict[str, np.ndarray], accelerator=None) -> dict[str, np.ndarray]:
        """Every process's evaluated rows (processes in order, each in its stream order), with the row index
        renumbered 0..n-1 over all of them; the processes' shards may differ in length."""
        parts = [rows]
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            parts = gather_object([rows])
        parts = [p for p in parts if p and len(p.get("labels", ())) > 0]
        if not parts:
            raise ValueError("--streaming: the evaluation split yielded no rows.")
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        merged["index"] = np.arange(len(merged["labels"]))
        if self.num_rows is None:
            self.num_rows = len(merged["labels"])
        return merged

    def report(self, accelerator=None) -> dict:
        """How many examples each process used per epoch (and, with the testing aid, which: written to a file)."""
        from accelerate.utils import gather_object

        mine = {
            "consumed": {str(k): v for k, v in sorted(self.consumed.items())},
            "ids": {str(k): v for k, v in self.ids.items()},
        }
        everyone = gather_object([mine]) if accelerator is not None and accelerator.num_processes > 1 else [mine]
        if self.record_ids and (accelerator is None or accelerator.is_main_process):
            with open(self.record_ids, "w") as f:
                json.dump([p["ids"] for p in everyone], f)
        return {
            "per_process_examples_by_epoch": [p["consumed"] for p in everyone],
            "total": int(sum(sum(p["consumed"].values()) for p in everyone)),
        }


def results_entries(train: StreamSplit, train_rows: int | None, args, accelerator=None) -> dict:
    """What ``all_results.json`` says about a streamed run (every process must call it: it gathers)."""
    report = train.report(accelerator)
    return {
        "streaming": {
            "train_rows": train_rows,  # None: unknown (the schedule then planned with --max_train_steps)
            "shuffle_buffer_size": args.shuffle_buffer_size,
            "max_eval_samples": args.max_eval_samples,
            "sharding": "datasets.distributed.split_dataset_by_node: each process reads its own shard",
        },
        # A stream has no row numbers: the examples each process used, per epoch of its own shard.
        "examples_seen": {
            "total": report["total"],
            "epochs": None if not train_rows else round(report["total"] / train_rows, 3),
            "per_process_by_epoch": report["per_process_examples_by_epoch"],
        },
        "linear_probe_skipped": "--streaming: the linear probe needs the pooled features of the whole training split",
        "gallery_skipped": "--streaming: the gallery ranks patches over the whole training split",
    }
