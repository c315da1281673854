"""Peak memory against dataset size (issue 24): does a training run's memory grow with the batch, not the data?

    python -m benchmarks.memory_scaling                       # 2,000 and 20,000 training rows, ~20 min on 2 cores
    python -m benchmarks.memory_scaling --rows 500 2000 --gallery_top_k 5 --out /tmp/m.json

For each size, a Fashion-MNIST subset of that many training rows (``training/build_fashion_mnist_subset.py``, from
the Debian package ``dataset-fashion-mnist``, MIT; 50 test images per class) is trained by ``training/train.py`` in
a fresh process on the bundled backbone, with a fixed number of head steps (``--max_train_steps``), so that only
the data's size changes. Measured from outside the process: the kernel's peak resident set (``ru_maxrss`` from
``wait4``), and the peaks of its anonymous and file-backed parts (``RssAnon`` / ``RssFile`` of /proc/<pid>/status,
sampled every 50 ms): memory-mapped feature-cache pages count in the resident set but are file pages the kernel
can drop, anonymous memory cannot. The target: the 20,000-row peak at most 1.2x the 2,000-row peak.

Writes a JSON file (default ``benchmarks/memory_scaling.json``) with one record per size and the ratios.
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


def measure(rows: int, work: Path, steps: int, gallery_top_k: int) -> dict:
    data = work / f"fashion-{rows}"
    if not (data / "train-00000.parquet").exists():
        subprocess.run([sys.executable, str(ROOT / "training" / "build_fashion_mnist_subset.py"), "--out", str(data),
                        "--per_class_train", str(rows // 10), "--per_class_test", "50"], check=True,
                       capture_output=True, cwd=ROOT)
    command = [sys.executable, str(ROOT / "training" / "train.py"), "--dataset_name", str(data),
               "--output_dir", str(work / f"out-{rows}"), "--overwrite_output_dir", "--cache_dir", str(work / f"cache-{rows}"),
               "--max_train_steps", str(steps), "--gallery_top_k", str(gallery_top_k)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    record = {"train_rows": rows, "max_train_steps": steps, "gallery_top_k": gallery_top_k}
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
    parser.add_argument("--gallery_top_k", type=int, default=0, help="0: extraction + head training only.")
    parser.add_argument("--work_dir", default=None, help="Default: a temporary folder (deleted).")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "memory_scaling.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        records = []
        for rows in args.rows:
            records.append(measure(rows, work, args.max_train_steps, args.gallery_top_k))
            print(json.dumps(records[-1]), flush=True)
    smallest = records[0]
    summary = {
        "command": "python -m benchmarks.memory_scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "backbone": "training/embedded/fashion_mnist_resnet",
        "target": f"peak RSS at the largest size <= {TARGET_RATIO}x the smallest",
        "runs": records,
        "ratios": {
            str(r["train_rows"]): {k: round(r[k] / smallest[k], 3) if smallest[k] else None
                                   for k in ("peak_rss_mb", "peak_anon_mb", "peak_file_mb")}
            for r in records[1:]
        },
    }
    summary["meets_target"] = all(r["peak_rss_mb"] <= TARGET_RATIO * smallest["peak_rss_mb"] for r in records[1:])
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["ratios"]), "meets target:", summary["meets_target"])
    return 0 if all(r["exit_status"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
