"""The feature cache's rows: its on-disk shard format and the datasets training reads.

One shard is a set of plain ``.npy`` files (no pickle) of the same rows, ``<shard>.<array>.npy`` for the arrays
``features`` (n, D, h, w), ``pooled`` (n, D), ``labels`` (n,) int64 and ``logits`` (n, K'), plus ``<shard>.json``;
a complete cache folder's ``meta.json`` lists the shards in split order (``training/features.py`` names the folder
and fills it).

* `_ShardWriter` appends a shard batch by batch with ordinary writes (the header says the final row count) and
  `NpyRows` reads it back row by row with ``os.pread``, so the process's memory grows with the batch, not the data:
  a memory map would be simpler but every page it touches counts in the resident set, and an epoch in random order
  touches the whole cache (issue 24: ``benchmarks/memory_scaling.py``).
* `FeatureCache` is the Dataset over a complete cache folder, `LiveImages` its counterpart for the live-backbone
  path, and `collate_batch` the ``collate_fn`` both share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

CACHE_FORMAT_VERSION = 1

__all__ = ["CACHE_FORMAT_VERSION", "FeatureCache", "LiveImages", "NpyRows", "collate_batch"]


# ------------------------------------------------------------------------------------------------- writing
class _ShardWriter:
    """Writes one rank's block batch by batch into .npy files (created on the first batch, when the shapes are
    known: the header says the final row count, the rows are appended with ordinary writes, never mapped into
    memory), then renames them into place."""

    def __init__(self, folder: str, name: str, num_rows: int, dtype: str):
        self.folder, self.name, self.num_rows, self.dtype = folder, name, num_rows, dtype
        self.arrays: dict[str, tuple] = {}  # key -> (open file, dtype)
        self.position = 0

    def _path(self, key: str, tmp: bool) -> str:
        return os.path.join(self.folder, f"{self.name}.{key}{'.tmp' if tmp else ''}.npy")

    def write(self, batch: dict[str, np.ndarray]) -> None:
        n = len(batch["labels"])
        for key, value in batch.items():
            if key not in self.arrays:
                dtype = value.dtype if key == "labels" else np.dtype(self.dtype)
                f = open(self._path(key, tmp=True), "wb")
                header = {
                    "descr": np.lib.format.dtype_to_descr(dtype),
                    "fortran_order": False,
                    "shape": (self.num_rows,) + tuple(value.shape[1:]),
                }
                np.lib.format.write_array_header_1_0(f, header)
                self.arrays[key] = (f, dtype)
            f, dtype = self.arrays[key]
            f.write(np.ascontiguousarray(value, dtype=dtype).tobytes())
        self.position += n

    def abort(self) -> None:
        """Drop what this rank wrote (an extraction that failed leaves nothing behind)."""
        for f, _ in self.arrays.values():
            f.close()
        self.arrays.clear()
        for key in ("features", "pooled", "labels", "logits"):
            for tmp in (True, False):
                if os.path.exists(self._path(key, tmp)):
                    os.remove(self._path(key, tmp))

    def close(self) -> dict:
        if self.position != self.num_rows:
            raise RuntimeError(f"Shard {self.name} got {self.position} rows, expected {self.num_rows}.")
        for key, (f, _) in self.arrays.items():
            f.close()
            os.replace(self._path(key, tmp=True), self._path(key, tmp=False))
        info = {"name": self.name, "num_rows": self.num_rows, "arrays": sorted(self.arrays)}
        with open(os.path.join(self.folder, f"{self.name}.json"), "w") as f:
            json.dump(info, f)
        return info


# ------------------------------------------------------------------------------------------------- reading
class NpyRows:
    """Rows of a C-order ``.npy`` file read on demand with ``os.pread`` (the operating system's page cache still
    serves repeated reads; nothing is mapped into this process). ``take(indices)`` reads a batch in index order."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(f)
            self.offset = f.tell()
        if fortran_order or dtype.hasobject:
            raise ValueError(f"{path!r} is not a plain C-order numeric array.")
        self.path, self.shape, self.dtype = path, tuple(shape), dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * dtype.itemsize
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self):  # DataLoader workers reopen the file
        state = dict(self.__dict__)
        state.pop("_fd", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) in one read."""
        stop = len(self) if stop is None else stop
        count = max(0, stop - start)
        data = os.pread(self._fd, count * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((count,) + self.shape[1:])

    def take(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices),) + self.shape[1:], dtype=self.dtype)
        flat = out.reshape(len(indices), -1).view(np.uint8)
        for position, row in enumerate(np.asarray(indices, dtype=np.int64)):
            flat[position] = np.frombuffer(
                os.pread(self._fd, self.row_bytes, self.offset + int(row) * self.row_bytes), np.uint8
            )
        return out


class FeatureCache(Dataset):
    """A complete cache folder read back row by row (`NpyRows`: pread, no memory map). Items are dicts with
    ``features`` (D, h, w) float32 tensor (absent for a pooled-only cache), ``labels``, ``index`` (row in the split)
    and, when cached, ``teacher_logits``. ``__getitems__`` returns a whole batch at once (one fancy-index per shard,
    no per-row Python work); use :func:`collate_batch` as the DataLoader's ``collate_fn``."""

    def __init__(self, folder: str):
        meta_path = os.path.join(folder, "meta.json")
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"{folder!r} is not a complete feature cache (no meta.json).")
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.folder = folder
        self.reused = True  # set to False by get_or_extract_features when it has just written the cache
        self.shards: list[dict[str, np.ndarray]] = []
        for shard in self.meta["shards"]:
            if shard["num_rows"] == 0:
                continue
            arrays = {}
            for name in self.meta["arrays"]:
                arrays[name] = NpyRows(os.path.join(folder, f"{shard['name']}.{name}.npy"))
            self.shards.append(arrays)
        sizes = [len(s["labels"]) for s in self.shards]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if int(self.offsets[-1]) != self.meta["num_rows"]:
            raise ValueError(
                f"Feature cache {folder!r} is inconsistent: {self.offsets[-1]} rows vs {self.meta['num_rows']}."
            )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def has_feature_maps(self) -> bool:
        return "features" in self.meta["arrays"]

    @property
    def has_teacher(self) -> bool:
        return "logits" in self.meta["arrays"]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["feature_shape"])

    def array(self, name: str) -> np.ndarray:
        """A whole (small) array, e.g. ``"labels"``, ``"pooled"`` or ``"logits"``, concatenated in split order."""
        return np.concatenate([s[name].read() for s in self.shards]) if self.shards else np.zeros(0)

    def _take(self, name: str, indices: np.ndarray) -> np.ndarray:
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        first = self.shards[0][name]
        out = np.empty((len(indices),) + first.shape[1:], dtype=first.dtype)
        for s in np.unique(shard_of):
            where = np.nonzero(shard_of == s)[0]
            out[where] = self.shards[s][name].take(indices[where] - self.offsets[s])
        return out

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        batch = {
            "labels": torch.from_numpy(self._take("labels", indices)),
            "index": torch.from_numpy(indices.copy()),
        }
        if self.has_feature_maps:
            batch["features"] = torch.from_numpy(self._take("features", indices)).float()
        if self.has_teacher:
            batch["teacher_logits"] = torch.from_numpy(self._take("logits", indices)).float()
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class LiveImages(Dataset):
    """Images through the image processor, for the live-backbone path (``--live_backbone`` / ``--augment``): items
    are ``{"pixel_values", "labels", "index"}`` and the backbone runs in the training loop."""

    def __init__(self, dataset, transform: Callable):
        self.dataset = dataset.with_transform(transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        rows = self.dataset[[int(i) for i in indices]]
        return {
            "pixel_values": torch.stack([torch.as_tensor(p) for p in rows["pixel_values"]]).float(),
            "labels": torch.tensor(rows["labels"], dtype=torch.long),
            "index": torch.as_tensor(np.asarray(indices, dtype=np.int64)),
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def collate_batch(batch: Any) -> dict[str, torch.Tensor]:
    """``collate_fn`` for FeatureCache / LiveImages: batches arrive already stacked from ``__getitems__``; a list of
    single items (a sampler without batching) is stacked here."""
    if isinstance(batch, dict):
        return batch
    return {k: torch.stack([item[k] for item in batch]) for k in batch[0]}
