"""Peak memory against dataset size (issue 24): does a training run's memory grow with the batch, not the data?

    python -m benchmarks.memory_scaling                       # 2,000 and 20,000 training rows (~1.5 h on 2 cores)
    python -m benchmarks.memory_scaling --rows 500 2000 --gallery_top_k 0 --out /tmp/m.json

For each size, a Fashion-MNIST subset of that many training rows (``training/build_fashion_mnist_subset.py``, from the
Debian package ``dataset-fashion-mnist``, MIT; 50 test images per class) is trained by ``training/train.py`` in a
fresh process on the backbone it takes for a user's own data (the real ImageNet EfficientNet-Lite0 when installed,
else the bundled one; ``--backbone``), gallery included, with a fixed number of head steps (``--max_train_steps``), so
that only the data's size changes. Measured from outside the process: the kernel's peak resident set (``ru_maxrss``
from ``wait4``), and the peaks of its anonymous and file-backed parts (``RssAnon`` / ``RssFile`` of
/proc/<pid>/status, sampled every 50 ms): memory-mapped feature-cache pages count in the resident set but are file
pages the kernel can drop, anonymous memory cannot. The target: the 20,000-row peak at most 1.2x the 2,000-row peak.

Writes a JSON file (default ``benchmarks/memory_scaling_train.json``) with one record per size and the ratios.

``--mode cache`` measures the feature cache alone, in a fresh process per size and reader, in a minute: the cache of
N rows of the bundled backbone's shape (128 x 7 x 7, float16) written batch by batch as extraction writes it, then
read as the head's training reads it (3 epochs of shuffled batches of 256 through a DataLoader), one sequential
evaluation pass, and the linear probe's whole pooled array. ``reader=pread`` is the project's cache
(`training.feature_rows.NpyRows`, ordinary writes); ``reader=mmap`` is the same workload through ``np.lib.format``
memory maps, as the cache worked before (issue 24).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.2


def _status_kb(pid: int) -> dict[str, int]:
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return values


def run_measured(command: list[str], env: dict, log_path: Path) -> dict:
    """Run ``command``; its wall time, exit status, peak RSS (ru_maxrss) and sampled peaks of RssAnon / RssFile."""
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    start = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample():
            while not done.wait(0.05):
                for key, value in _status_kb(process.pid).items():
                    if key in peaks:
                        peaks[key] = max(peaks[key], value)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        done.set()
        sampler.join()
    return {
        "exit_status": os.waitstatus_to_exitcode(status),
        "wall_s": round(time.time() - start, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_anon_mb": round(peaks["RssAnon"] / 1024, 1),
        "peak_file_mb": round(peaks["RssFile"] / 1024, 1),
    }


# --------------------------------------------------------------------------------------------- --mode cache
FEATURE_SHAPE = (128, 7, 7)


class _MappedRows:
    """The cache's former reader: a read-only memory map (every page touched stays in the resident set)."""

    def __init__(self, path: str):
        import numpy as np

        self.array = np.load(path, mmap_mode="r")
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def __len__(self):
        return len(self.array)

    def read(self, start=0, stop=None):
        import numpy as np

        return np.asarray(self.array[start:stop])

    def take(self, indices):
        return self.array[indices]


def _mapped_write(folder: Path, rows: int, batches) -> None:
    """The cache's former writer: ``open_memmap`` files filled batch by batch."""
    import numpy as np

    arrays = {}
    position = 0
    for batch in batches:
        for key, value in batch.items():
            if key not in arrays:
                arrays[key] = np.lib.format.open_memmap(
                    folder / f"shard-00000-of-00001.{key}.npy",
                    mode="w+",
                    dtype=value.dtype,
                    shape=(rows,) + value.shape[1:],
                )
            arrays[key][position : position + len(value)] = value
        position += len(batch["labels"])
    for array in arrays.values():
        array.flush()


def cache_worker(rows: int, reader: str, work: Path) -> dict:
    """One process: write a cache of ``rows`` rows, train-read it, evaluate-read it, read the probe's arrays."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from training import feature_rows as features  # the cache's rows (NpyRows is swapped for mmap below)

    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            for key, value in _status_kb(os.getpid()).items():
                if key in peaks:
                    peaks[key] = max(peaks[key], value)

    threading.Thread(target=sample, daemon=True).start()
    folder = work / f"cache-{reader}-{rows}"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batches():
        for start in range(0, rows, 128):
            n = min(128, rows - start)
            maps = rng.standard_normal((n, *FEATURE_SHAPE), dtype=np.float32)
            yield {
                "labels": rng.integers(0, 10, n),
                "pooled": maps.mean(axis=(2, 3)).astype(np.float16),
                "features": maps.astype(np.float16),
            }

    start = time.time()
    if reader == "mmap":
        _mapped_write(folder, rows, batches())
        features.NpyRows = _MappedRows  # the same FeatureCache, reading through memory maps
    else:
        writer = features._ShardWriter(str(folder), "shard-00000-of-00001", rows, "float16")
        for batch in batches():
            writer.write(batch)
        writer.close()
    shard = {"name": "shard-00000-of-00001", "num_rows": rows}
    meta = {
        "version": features.CACHE_FORMAT_VERSION,
        "split": "train",
        "num_rows": rows,
        "dtype": "float16",
        "arrays": ["features", "labels", "pooled"],
        "feature_shape": list(FEATURE_SHAPE),
        "shards": [shard],
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    cache = features.FeatureCache(str(folder))
    extracted = time.time()
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # the head's epochs: shuffled batches, features converted to float32 as fit_head gets them
        loader = DataLoader(cache, batch_size=256, shuffle=True, generator=generator, collate_fn=features.collate_batch)
        for batch in loader:
            batch["features"].sum()
    for batch in DataLoader(cache, batch_size=256, shuffle=False, collate_fn=features.collate_batch):
        batch["features"].sum()
    pooled = torch.from_numpy(cache.array("pooled")).double()  # the linear probe's input (N x D, small)
    labels = cache.array("labels")
    assert len(pooled) == len(labels) == rows
    done.set()
    import resource

    return {
        "rows": rows,
        "reader": reader,
        "cache_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1),
        "write_s": round(extracted - start, 1),
        "read_s": round(time.time() - extracted, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_anon_mb": round(peaks["RssAnon"] / 1024, 1),
        "peak_file_mb": round(peaks["RssFile"] / 1024, 1),
    }


def measure_cache(rows_list: list[int], work: Path) -> dict:
    runs = []
    for reader in ("mmap", "pread"):
        for rows in rows_list:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.memory_scaling",
                    "--worker",
                    reader,
                    "--rows",
                    str(rows),
                    "--work_dir",
                    str(work),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    ratios = {}
    for reader in ("mmap", "pread"):
        mine = [r for r in runs if r["reader"] == reader]
        ratios[reader] = {
            k: round(mine[-1][k] / mine[0][k], 3) for k in ("peak_rss_mb", "peak_anon_mb", "peak_file_mb")
        }
    return {
        "runs": runs,
        "ratios_largest_to_smallest": ratios,
        "meets_target": ratios["pread"]["peak_rss_mb"] <= TARGET_RATIO,
    }


def default_backbone() -> str:
    """What ``train.py`` takes for a user's own data without ``--backbone``: the real ImageNet network when it is
    installed (1,280 channels at 224²: the case whose memory the issue measured), else the bundled one."""
    from training import real_backbone
    from training.data import DEFAULT_BACKBONE

    found = real_backbone.find()
    return str(found) if found is not None else DEFAULT_BACKBONE


def measure(rows: int, work: Path, steps: int, gallery_top_k: int, backbone: str) -> dict:
    data = work / f"fashion-{rows}"
    if not (data / "train-00000.parquet").exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "training" / "build_fashion_mnist_subset.py"),
                "--out",
                str(data),
                "--per_class_train",
                str(rows // 10),
                "--per_class_test",
                "50",
            ],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
    command = [
        sys.executable,
        str(ROOT / "training" / "train.py"),
        "--dataset_name",
        str(data),
        "--backbone",
        backbone,
        "--output_dir",
        str(work / f"out-{rows}"),
        "--overwrite_output_dir",
        "--cache_dir",
        str(work / f"cache-{rows}"),
        "--max_train_steps",
        str(steps),
        "--gallery_top_k",
        str(gallery_top_k),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    record = {"train_rows": rows, "max_train_steps": steps, "gallery_top_k": gallery_top_k, "backbone": backbone}
    record.update(run_measured(command, env, work / f"log-{rows}.txt"))
    results = work / f"out-{rows}" / "all_results.json"
    if results.exists():
        final = json.loads(results.read_text())
        record.update({k: final.get(k) for k in ("test_accuracy", "eval_accuracy", "train_runtime_s")})
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--max_train_steps", type=int, default=60)
    parser.add_argument(
        "--gallery_top_k", type=int, default=5, help="train.py's default; 0: extraction + head training only."
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="Default: what train.py takes for own data (the real ImageNet network when installed, else the bundled).",
    )
    parser.add_argument("--work_dir", default=None, help="Default: a temporary folder (deleted).")
    parser.add_argument(
        "--out", default=None, help="Default: benchmarks/memory_scaling_train.json (--mode cache: memory_scaling.json)."
    )
    parser.add_argument(
        "--mode",
        choices=("train", "cache"),
        default="train",
        help="train: whole train.py runs (slow); cache: the feature cache's workload alone (~1 min).",
    )
    parser.add_argument("--worker", choices=("mmap", "pread"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rows) < 10 or args.max_train_steps < 1 or args.gallery_top_k < 0:
        parser.error("--rows must be >= 10 (one image per class), --max_train_steps >= 1 and --gallery_top_k >= 0")
    if args.worker:  # one measured process of --mode cache
        print(json.dumps(cache_worker(args.rows[0], args.worker, Path(args.work_dir))))
        return 0
    if args.out is None:
        args.out = str(
            ROOT / "benchmarks" / ("memory_scaling.json" if args.mode == "cache" else "memory_scaling_train.json")
        )
    if args.mode == "cache":
        with tempfile.TemporaryDirectory() as scratch:
            result = measure_cache(args.rows, Path(args.work_dir or scratch))
        result["command"] = "python -m benchmarks.memory_scaling " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        result["target"] = f"peak RSS at the largest size <= {TARGET_RATIO}x the smallest"
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["ratios_largest_to_smallest"]), "meets target:", result["meets_target"])
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        records = []
        backbone = args.backbone or default_backbone()
        for rows in args.rows:
            records.append(measure(rows, work, args.max_train_steps, args.gallery_top_k, backbone))
            print(json.dumps(records[-1]), flush=True)
    smallest = records[0]
    summary = {
        "command": "python -m benchmarks.memory_scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "backbone": backbone,
        "target": f"peak RSS at the largest size <= {TARGET_RATIO}x the smallest",
        "runs": records,
        "ratios": {
            str(r["train_rows"]): {
                k: round(r[k] / smallest[k], 3) if smallest[k] else None
                for k in ("peak_rss_mb", "peak_anon_mb", "peak_file_mb")
            }
            for r in records[1:]
        },
    }
    summary["meets_target"] = all(r["peak_rss_mb"] <= TARGET_RATIO * smallest["peak_rss_mb"] for r in records[1:])
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["ratios"]), "meets target:", summary["meets_target"])
    return 0 if all(r["exit_status"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
