"""The frozen-backbone feature cache.

InfoDisent never trains the backbone, so its feature maps are computed once per split and kept on disk; the
rotation and the classifier then train on them for many epochs at a fraction of the cost of running the backbone.

Layout (one folder per split, named by a key that changes whenever anything that shapes the features changes)::

    <cache_dir>/<key>/meta.json                          # written last: its presence means "complete"
    <cache_dir>/<key>/shard-00000-of-00002.features.npy  # (n, D, h, w) feature maps (omitted when pooled_only)
    <cache_dir>/<key>/shard-00000-of-00002.pooled.npy    # (n, D) average-pooled features (for the linear probe)
    <cache_dir>/<key>/shard-00000-of-00002.labels.npy    # (n,) int64
    <cache_dir>/<key>/shard-00000-of-00002.logits.npy    # (n, K') the backbone's own head logits, when it has one

* Plain ``.npy`` files (no pickle), appended batch by batch with ordinary writes and read back row by row with
  ``os.pread``: the shard format and the datasets read from it (`NpyRows`, `FeatureCache`, `LiveImages`,
  `collate_batch`) are in ``training/feature_rows.py`` and stay importable from here. This module names the cache
  folder (`backbone_fingerprint`, `cache_key`) and fills it (`get_or_extract_features`).
* Extraction is sharded: with N processes, rank r extracts the r-th contiguous block of the split and writes its own
  shard; the main process writes ``meta.json`` once every shard is there. Readers concatenate the shards in order,
  so the cache does not depend on how many processes wrote it. (Multi-node: ``cache_dir`` must be shared storage.)
* A run writes into a staging folder of its own (``<key>.partial-<host>-<pid>-<random>``), renamed to ``<key>`` when
  complete, so concurrent runs on one cache never touch each other's files; the staging folders of killed runs on
  this host are deleted by the next extraction.
* The key hashes the backbone's weights and config (and its head's, whose logits are cached), the InfoDisent feature
  layer, the image processor's config, the dataset split's fingerprint, its size and columns, and the storage dtype.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modeling_infodisent.backbones import channels_last
from training.feature_rows import (  # the cache's rows; the public ones stay importable from here
    CACHE_FORMAT_VERSION,
    FeatureCache,
    LiveImages,
    NpyRows,
    _ShardWriter,
    collate_batch,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureCache",
    "LiveImages",
    "NpyRows",
    "backbone_fingerprint",
    "cache_key",
    "collate_batch",
    "default_cache_dir",
    "get_or_extract_features",
]


def default_cache_dir() -> str:
    """``$INFODISENT_CACHE`` if set, else ``~/.cache/infodisent/features``."""
    return os.environ.get("INFODISENT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "infodisent", "features"
    )


def _hash_state_dict(hasher, module: torch.nn.Module) -> None:
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        hasher.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def backbone_fingerprint(model, head_model: torch.nn.Module | None = None) -> str:
    """Hash of what produces the cached arrays: the InfoDisent backbone's weights and config, the feature layer, and
    the backbone head's weights (its logits are cached too). Weights are hashed by content, so re-saving the same
    backbone elsewhere still hits the cache while retraining it never does."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(model.config.backbone_config.to_json_string(use_diff=False).encode())
    hasher.update(f"feature_layer={model.config.feature_layer}".encode())
    if getattr(model.config, "dilate_last_stage", False):  # the same weights give another (finer) map
        hasher.update(b"dilate_last_stage=True")
    _hash_state_dict(hasher, model.backbone)
    if head_model is not None:
        hasher.update(type(head_model).__name__.encode())
        _hash_state_dict(hasher, head_model)
    return hasher.hexdigest()


def cache_key(
    backbone_fp: str,
    dataset,
    image_processor,
    image_column: str,
    label_column: str,
    dtype: str = "float32",
    pooled_only: bool = False,
) -> str:
    """Folder name of one split's cache (see the module docstring for what it covers)."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None:
        raise ValueError("The dataset has no fingerprint; pass a `datasets.Dataset`.")
    parts = {
        "version": CACHE_FORMAT_VERSION,
        "backbone": backbone_fp,
        "image_processor": json.loads(image_processor.to_json_string()),
        "dataset": fingerprint,
        "num_rows": len(dataset),
        "columns": [image_column, label_column],
        "dtype": dtype,
        "pooled_only": pooled_only,
    }
    # `processor_class` / `_processor_class` only name things; they do not change the pixels.
    parts["image_processor"].pop("_processor_class", None)
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------------------- extraction
_PARTIAL = ".partial-"  # <key>.partial-<host>-<pid>-<random>: one run's extraction in progress


def _remove_abandoned_extractions(cache_dir: str, key: str) -> None:
    """Delete the staging folders of `key` left by runs on this host that no longer exist (killed mid-extraction),
    and a `key` folder without meta.json (an interrupted extraction of an older version, which wrote in place).
    Other hosts' staging folders are left alone: their processes cannot be checked from here."""
    stale = os.path.join(cache_dir, key)
    if os.path.isdir(stale) and not os.path.exists(os.path.join(stale, "meta.json")):
        shutil.rmtree(stale, ignore_errors=True)
    prefix, host = key + _PARTIAL, socket.gethostname()
    for entry in os.listdir(cache_dir):
        if not entry.startswith(prefix):
            continue
        owner_host, _, rest = entry[len(prefix) :].rpartition("-")[0].rpartition("-")
        pid = rest if owner_host else ""
        if owner_host != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(cache_dir, entry), ignore_errors=True)
        except OSError:  # alive, owned by another user
            pass


def _publish(staging: str, folder: str) -> None:
    """Rename the complete `staging` folder to `folder` (atomic); if another run published `folder` first, keep
    theirs (the same features: the key says so) and drop ours."""
    if not os.path.exists(os.path.join(folder, "meta.json")):
        try:
            os.rename(staging, folder)
            return
        except OSError:  # published by another run a moment ago (a non-empty folder is not replaced)
            if not os.path.exists(os.path.join(folder, "meta.json")):
                raise
    shutil.rmtree(staging, ignore_errors=True)


def _shard_bounds(num_rows: int, rank: int, world: int) -> tuple[int, int]:
    return (num_rows * rank) // world, (num_rows * (rank + 1)) // world


class _Replay(torch.nn.Module):
    """Stands in for the InfoDisent backbone's inner model during one call and returns an output already computed
    (by the backbone head's base model, on the same pixels); every other attribute comes from the real model."""

    def __init__(self, inner: torch.nn.Module, output):
        super().__init__()
        self.inner = inner
        self.output = output

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, *args, **kwargs):
        return self.output


def _one_pass(model, head_model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature map and head logits from ONE backbone pass: run the head model, catch its base model's output with a
    hook, and let the InfoDisent adapter turn that output into the feature map (its usual code, fed the caught
    output). The caller checks the result against `model.extract_features` before relying on it."""
    if model.backbone.model_type == "timm_wrapper" and model.config.feature_layer == -1:
        # A timm classifier is forward_features then forward_head, and the adapter's map is forward_features
        # (its base model is the raw timm module, whose output is already the logits: no hook to catch).
        from transformers.models.timm_wrapper.modeling_timm_wrapper import TimmWrapperModelOutput

        raw = head_model.timm_model.forward_features(pixel_values)
        logits = head_model.timm_model.forward_head(raw)
        inner = model.backbone.model
        model.backbone.model = _Replay(inner, TimmWrapperModelOutput(last_hidden_state=raw))
        try:
            return model.backbone(pixel_values), logits
        finally:
            model.backbone.model = inner
    caught = {}
    handle = head_model.base_model.register_forward_hook(lambda module, args, output: caught.setdefault("out", output))
    kwargs = {}
    if model.config.feature_layer != -1:
        kwargs["output_hidden_states"] = True
    if model.backbone._accepts_interpolate:
        kwargs["interpolate_pos_encoding"] = True
    try:
        logits = head_model(pixel_values=pixel_values, **kwargs).logits
    finally:
        handle.remove()
    inner = model.backbone.model
    model.backbone.model = _Replay(inner, caught["out"])
    try:
        features = model.backbone(pixel_values)
    finally:
        model.backbone.model = inner
    return features, logits


def _check_batch(feature_map, logits, backbone_name: str, split_name: str, first_row: int) -> None:
    """Non-finite values are refused before they reach the cache (a NaN in a cached map would poison every epoch,
    and a NaN head would give meaningless agreement figures)."""
    from training.checks import check_finite

    rows = f"rows {first_row}-{first_row + len(feature_map) - 1} of the {split_name} split"
    then = "; nothing was cached"
    check_finite(feature_map, f"The backbone {backbone_name!r} gives non-finite feature maps ({rows})", then)
    if logits is not None:
        check_finite(
            logits, f"The classifier head of the backbone {backbone_name!r} gives non-finite logits ({rows})", then
        )


@torch.inference_mode()
def _extract_block(
    model,
    head_model,
    loader,
    writer,
    pooled_only: bool,
    device,
    show_progress: bool,
    desc: str,
    backbone_name: str = "backbone",
    split_name: str = "train",
    first_row: int = 0,
):
    # With a head, the backbone would run twice per batch (feature map + head logits). One pass suffices when the
    # head's base model computes what the InfoDisent adapter uses: checked on the first batch, else two passes.
    shared_pass = None
    with channels_last(model.backbone, head_model) as in_channels_last:
        for batch in tqdm(loader, desc=desc, disable=not show_progress):
            pixel_values = batch["pixel_values"].to(device)
            if in_channels_last and pixel_values.dim() == 4:
                pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
            logits = None
            if head_model is not None and shared_pass is None:
                feature_map = model.extract_features(pixel_values).float()
                try:
                    shared, logits = _one_pass(model, head_model, pixel_values)
                    shared_pass = shared.shape == feature_map.shape and torch.allclose(
                        shared.float(), feature_map, rtol=1e-4, atol=1e-5
                    )
                except Exception:  # noqa: BLE001 - any failure just means: use two passes
                    shared_pass = False
                if not shared_pass:
                    logger.info("The backbone head's pass does not give the feature map: extracting with two passes.")
                    logits = head_model(pixel_values=pixel_values).logits
            elif head_model is not None and shared_pass:
                feature_map, logits = _one_pass(model, head_model, pixel_values)
            else:
                feature_map = model.extract_features(pixel_values)
                if head_model is not None:
                    logits = head_model(pixel_values=pixel_values).logits
            feature_map = feature_map.float()
            _check_batch(feature_map, logits, backbone_name, split_name, first_row + writer.position)
            arrays = {
                "labels": batch["labels"].numpy().astype(np.int64),
                "pooled": feature_map.mean(dim=(2, 3)).cpu().numpy(),
            }
            if not pooled_only:
                arrays["features"] = feature_map.cpu().numpy()
            if logits is not None:
                arrays["logits"] = logits.float().cpu().numpy()
            writer.write(arrays)


def get_or_extract_features(
    model,
    dataset,
    image_processor,
    image_column: str,
    label_column: str,
    transform: Callable,
    cache_dir: str | None = None,
    head_model: torch.nn.Module | None = None,
    batch_size: int = 64,
    accelerator=None,
    split_name: str = "train",
    dtype: str = "float32",
    pooled_only: bool = False,
    backbone_fp: str | None = None,
    backbone_name: str | None = None,
    num_workers: int = 0,
) -> FeatureCache:
    """Return the split's :class:`FeatureCache`, extracting it first if no complete cache with the same key exists.

    Args:
        model: an `InfoDisentForImageClassification` (its `extract_features` gives the cached maps).
        dataset: the raw split (a `datasets.Dataset` with the image and label columns).
        transform: ``training.data.make_transform(image_processor, image_column, label_column)`` (no augmentation).
        head_model: the backbone's own classifier (``...ForImageClassification``) whose logits are cached too.
        accelerator: shards the extraction across its processes; ``None`` = one process.
        pooled_only: store only average-pooled features, labels and head logits (the live-backbone path needs them
            for the linear probe and the backbone head's accuracy).
        backbone_name: how errors name the backbone (default: its config's ``_name_or_path``).
        num_workers: ``DataLoader`` workers that decode and preprocess images while the backbone runs.
    Returns a cache whose ``reused`` attribute says whether it was already on disk.

    Raises ``training.checks.UsageError`` (a ValueError) when the backbone's feature maps or its head's logits
    hold NaN or inf; nothing of that split is left in the cache then.
    """
    from accelerate.utils import broadcast_object_list

    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = rank == 0
    device = accelerator.device if accelerator is not None else torch.device("cpu")

    cache_dir = os.path.expanduser(cache_dir or default_cache_dir())
    if backbone_fp is None:
        backbone_fp = backbone_fingerprint(model, head_model)
    key = cache_key(backbone_fp, dataset, image_processor, image_column, label_column, dtype, pooled_only)
    if world > 1:  # every rank must agree on the folder even if a fingerprint was not deterministic
        key = broadcast_object_list([key])[0]
    folder = os.path.join(cache_dir, key)
    if os.path.exists(os.path.join(folder, "meta.json")):
        if is_main:
            logger.info("Reusing cached %s features from %s", split_name, folder)
        return FeatureCache(folder)

    # This run extracts into a staging folder of its own and renames it to `folder` once complete: runs that
    # extract the same split at the same time (a sweep sharing one cache) never write into or delete each other's
    # files; the first to finish publishes the folder, the others find it complete and use it.
    staging = f"{folder}{_PARTIAL}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}" if is_main else None
    if world > 1:
        staging = broadcast_object_list([staging])[0]
    if is_main:
        logger.info(
            "Extracting %s features (%d images, %d process(es)) into %s", split_name, len(dataset), world, folder
        )
        os.makedirs(cache_dir, exist_ok=True)
        _remove_abandoned_extractions(cache_dir, key)
        os.makedirs(staging)
    if accelerator is not None:
        accelerator.wait_for_everyone()

    start, stop = _shard_bounds(len(dataset), rank, world)
    name = f"shard-{rank:05d}-of-{world:05d}"
    writer = _ShardWriter(staging, name, stop - start, dtype)
    if stop > start:
        block = dataset.select(range(start, stop)).with_transform(transform)
        from training.data import collate_fn

        loader = DataLoader(block, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=num_workers)
        was_training = model.training
        model.eval()
        if head_model is not None:
            head_model.eval()
        if backbone_name is None:
            bconfig = model.config.backbone_config
            backbone_name = getattr(bconfig, "_name_or_path", "") or bconfig.model_type
        try:
            _extract_block(
                model,
                head_model,
                loader,
                writer,
                pooled_only,
                device,
                show_progress=is_main,
                desc=f"features ({split_name})",
                backbone_name=backbone_name,
                split_name=split_name,
                first_row=start,
            )
        except BaseException:
            writer.abort()
            if is_main:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            model.train(was_training)
    writer.close()
    if accelerator is not None:
        accelerator.wait_for_everyone()

    if is_main:
        shards = []
        for r in range(world):
            with open(os.path.join(staging, f"shard-{r:05d}-of-{world:05d}.json")) as f:
                shards.append(json.load(f))
        arrays = next((s["arrays"] for s in shards if s["num_rows"] > 0), [])
        first = next(s for s in shards if s["num_rows"] > 0)
        # (D, h, w) of the feature maps, or (D,) for a pooled-only cache
        main_array = "features" if "features" in arrays else "pooled"
        probe = NpyRows(os.path.join(staging, f"{first['name']}.{main_array}.npy"))
        feature_shape = list(probe.shape[1:])
        del probe
        meta = {
            "version": CACHE_FORMAT_VERSION,
            "split": split_name,
            "num_rows": len(dataset),
            "arrays": arrays,
            "feature_shape": feature_shape,
            "dtype": dtype,
            "shards": shards,
        }
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        _publish(staging, folder)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    cache = FeatureCache(folder)
    cache.reused = False
    return cache
