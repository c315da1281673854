"""The suite: datasets × backbones the training script's DEFAULT command must hold on (issue 11).

    python benchmarks/run.py --suite                        # every default combination, 3 seeds, 1 and 2 processes
    python benchmarks/run.py --suite --suite_estimate_only  # the plan and its estimated time, nothing run
    python benchmarks/run.py --suite --suite_seeds 0 --suite_combinations fm500-2c/resnet cluttered/resnet

For every combination (``dataset/backbone``) and seed the suite runs, as a user would,

    accelerate launch [--multi_gpu --num_processes 2] training/train.py <data> [--backbone B] --output_dir O --seed S

with no other training flag, once with 1 process and once with 2 (``accelerate``'s gloo CPU mode on a machine without
GPU), reads the run's ``all_results.json`` and records InfoDisent's top-1, the linear probe's, their gap and the wall
time of the whole command. Per combination: mean and spread (sample std) over the seeds of each, and the difference
between the 2-process and the 1-process mean. Written to ``--suite_output`` (``benchmarks/suite_results.json``, after
every run, so an interrupted suite keeps what it measured) and as markdown between the suite markers of
``--suite_readme`` (``benchmarks/README.md`` and ``docs/benchmarks.md``).

Datasets (``benchmarks/suite_data.py``) and backbones (``benchmarks/backbones.py``) are built by the repo's scripts
into ``--suite_dir`` (default ``$INFODISENT_CACHE/suite`` or ``~/.cache/infodisent/suite``) and reused; the feature
cache of the runs goes there too (``INFODISENT_CACHE``: no flag is added to the command). The first run of a
dataset/backbone pair extracts its features; the others reuse them (``feature_cache_reused`` in each row).

Goals (the issue's "done when"): gap = InfoDisent − linear probe ≥ −1 pt (mean of the seeds, each process count) and
|2-process − 1-process| ≤ 0.5 pt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.backbones import BACKBONES, build_backbone
from benchmarks.suite_data import DataSpec, build_dataset
from training.checkpoints import atomic_write

_ROOT = Path(__file__).resolve().parent.parent

RESULTS = _ROOT / "benchmarks" / "suite_results.json"
README = _ROOT / "benchmarks" / "README.md"
DOCS_PAGE = _ROOT / "docs" / "benchmarks.md"  # its suite section (between the markers) gets the same table
README_START, README_END = "<!-- suite:start -->", "<!-- suite:end -->"
GAP_GOAL_PT, PROCESS_GOAL_PT = -1.0, 0.5

# The test splits are large (2,000–10,000 images) because the suite compares runs that differ only in the order of
# floating-point sums (1 vs 2 processes): such twins disagree on a few borderline test images, and the 2 − 1 process
# goal (0.5 pt on a mean of 3 seeds) needs a test split on which one image weighs far less than 0.5 pt. On 360 test
# images one image is 0.28 pt, and 1 vs 2 torch threads in the same 1-process run moved a DINOv2 run by 1.1 pt.
# The training sizes are what the schedule sees; the validation split is held out of them.
#: Datasets by name. ``None``: the embedded default (no data argument at all: the 5,000 / 1,000 bundled subset).
DATASETS: dict[str, DataSpec | None] = {
    "fm500-2c": DataSpec("fmnist", 500, 2000, classes=(0, 6)),  # T-shirt/top vs Shirt, all their test images
    "fm1437-10c": DataSpec("fmnist", 1437, 3000, layout="imagefolder"),  # the training size, as an imagefolder
    "fm5000-10c": None,  # the bundled subset: 5,000 / 1,000
    "fm60000-10c": DataSpec("fmnist", 60000, 10000),
    "cluttered": DataSpec("cluttered", 3000, 3000),  # 84×84 canvas, benchmarks/generate.py
    "tiny": DataSpec("fmnist", 40, 20, classes=(1, 8)),  # tests
}
DEFAULT_COMBINATIONS = (
    "fm500-2c/resnet",
    "fm1437-10c/resnet",
    "fm5000-10c/resnet",
    "cluttered/resnet",
    "fm1437-10c/vit",
    "fm1437-10c/dinov2",
    "fm1437-10c/convnext",
    "fm5000-10c/real",  # the real ImageNet-1k network (issue 24): 224² inputs, 1,280 channels
    "fm1437-10c/real",
    "cluttered/real",
    "fm60000-10c/resnet",  # the whole Fashion-MNIST training set (last: the longest runs)
)
# Seconds per run on the shared 2-core CPU (load average ~6; calibrates the estimate printed before a suite starts):
# accelerate's launch and imports, the script's fixed work (loading, gallery, saving), per training image (the
# schedule), and per image of both splits on the first run of a dataset/backbone pair (feature extraction).
# The step-based schedule (issue 11) makes the training part nearly independent of the dataset's size (≥ 300 steps).
_LAUNCH_S = {1: 20.0, 2: 30.0}
_FIXED_S = 85.0
_PER_TRAIN_IMAGE_S = {
    "resnet": 0.004,
    "vit": 0.004,
    "dinov2": 0.004,
    "convnext": 0.004,
    "vit_classifier": 0.004,
    "tiny": 0.004,
    "real": 0.07,  # 1,280 channels: a head step costs ~1 s on 2 cores
}
_EXTRACT_PER_IMAGE_S = {
    "resnet": 0.003,
    "vit": 0.003,
    "dinov2": 0.003,
    "convnext": 0.003,
    "vit_classifier": 0.003,
    "tiny": 0.003,
    "real": 0.05,  # EfficientNet-Lite0 at 224²
}
_BUILD_BACKBONE_S = {
    "resnet": 0.0,
    "vit": 820.0,
    "dinov2": 830.0,
    "convnext": 770.0,
    "vit_classifier": 820.0,
    "tiny": 2.0,
    "real": 45.0,
}


@dataclass(frozen=True)
class Combination:
    dataset: str
    backbone: str

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.backbone}"

    @property
    def sizes(self) -> tuple[int, int, int]:
        spec = DATASETS[self.dataset]
        return (5000, 1000, 10) if spec is None else (spec.n_train, spec.n_test, len(spec.classes))


def parse_combination(text: str) -> Combination:
    dataset, _, backbone = text.partition("/")
    if dataset not in DATASETS or backbone not in BACKBONES:
        raise ValueError(
            f"unknown combination {text!r}: use DATASET/BACKBONE with DATASET in {sorted(DATASETS)} "
            f"and BACKBONE in {list(BACKBONES)}"
        )
    return Combination(dataset, backbone)


# ------------------------------------------------------------------------------------------------------- estimate
def estimate_run_s(combo: Combination, num_processes: int, first: bool) -> float:
    n_train, n_test, _ = combo.sizes
    seconds = _LAUNCH_S[num_processes] + _FIXED_S + _PER_TRAIN_IMAGE_S[combo.backbone] * n_train
    if first:
        seconds += _EXTRACT_PER_IMAGE_S[combo.backbone] * (n_train + n_test)
    return seconds


def plan(combos: list[Combination], seeds: list[int], processes: list[int]) -> list[dict]:
    """Every run of the suite, in order, with its a-priori time estimate (seconds)."""
    runs, seen = [], set()
    for combo in combos:
        for seed in seeds:
            for n in processes:
                runs.append(
                    {
                        "combination": combo,
                        "seed": seed,
                        "num_processes": n,
                        "estimate_s": estimate_run_s(combo, n, first=combo.name not in seen),
                    }
                )
                seen.add(combo.name)
    return runs


def estimate_total_s(combos: list[Combination], seeds: list[int], processes: list[int]) -> float:
    builds = sum(_BUILD_BACKBONE_S[b] for b in {c.backbone for c in combos})
    return builds + sum(r["estimate_s"] for r in plan(combos, seeds, processes))


# ------------------------------------------------------------------------------------------------------ one run
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(num_processes: int) -> list[str]:
    """``accelerate launch`` with its launcher options spelled out (so it prints no "defaults" warning)."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if num_processes > 1:
        command += ["--multi_gpu", "--main_process_port", str(_free_port())]
    return command + [
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]


def train_command(data_args: list[str], backbone: str | None, output_dir: str, seed: int) -> list[str]:
    """The training script's default command: data, backbone, output folder and seed, nothing else."""
    command = ["training/train.py", *data_args]
    if backbone is not None:
        command += ["--backbone", backbone]
    return command + ["--output_dir", output_dir, "--seed", str(seed)]


def read_metrics(results: dict) -> dict:
    """Top-1 of InfoDisent and of the linear probe from ``all_results.json``, on the held-out test split when the
    run reports one (``test_*``), else on its evaluation split; the split is recorded."""
    if "test_accuracy" in results:
        split, top1, probe = "test", results["test_accuracy"], results.get("test_linear_probe_accuracy")
    else:
        split, top1, probe = "eval", results["eval_accuracy"], results.get("linear_probe_accuracy")
    if probe is None:
        probe = results["linear_probe_accuracy"]
    return {
        "split": split,
        "infodisent_top1": float(top1),
        "linear_probe": float(probe),
        "gap_pt": round(100 * (float(top1) - float(probe)), 2),
    }


def run_one(
    combo: Combination,
    seed: int,
    num_processes: int,
    data: dict,
    backbone: str | None,
    work: Path,
    timeout_s: float = 1800,
) -> dict:
    """One default training run as a subprocess; the row of the suite's JSON."""
    out = work / "runs" / f"{combo.dataset}-{combo.backbone}-seed{seed}-p{num_processes}"
    train = train_command(data["train_args"], backbone, str(out), seed)
    env = dict(
        os.environ,
        INFODISENT_CACHE=str(work / "features"),
        HF_HUB_OFFLINE="1",
        OMP_WAIT_POLICY="PASSIVE",
        PYTHONPATH=os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.time()
    done = subprocess.run(
        launch_command(num_processes) + train, cwd=_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    wall = time.time() - t0
    row = {
        "combination": combo.name,
        "dataset": combo.dataset,
        "backbone": combo.backbone,
        "seed": seed,
        "num_processes": num_processes,
        "wall_s": round(wall, 1),
        "load_average_before": load,
        "returncode": done.returncode,
        "command": shlex.join(
            [
                "accelerate",
                "launch",
                *(["--multi_gpu", "--num_processes", str(num_processes)] if num_processes > 1 else []),
                *train,
            ]
        ),
    }
    results_file = out / "all_results.json"
    if done.returncode != 0 or not results_file.is_file():
        row["error"] = (done.stderr or done.stdout)[-3000:]
        return row
    results = json.loads(results_file.read_text())
    row.update(read_metrics(results))
    for key in ("train_runtime_s", "global_step", "feature_cache_reused", "pruning"):
        if key in results:
            row[key] = results[key]
    row["num_processes_reported"] = results.get("num_processes")
    return row


# ---------------------------------------------------------------------------------------------------- summaries
def _stats(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "values": [round(v, 2) for v in values],
    }


def summarize(rows: list[dict]) -> list[dict]:
    """Per combination and process count: InfoDisent top-1, linear probe and gap in points (mean, sample std, the
    values over seeds); the 2 − 1 process difference of InfoDisent's mean; the goals."""
    out = []
    for name in dict.fromkeys(r["combination"] for r in rows):
        mine = [r for r in rows if r["combination"] == name]
        entry = {
            "combination": name,
            "dataset": mine[0]["dataset"],
            "backbone": mine[0]["backbone"],
            "by_processes": {},
            "failed_runs": sum("infodisent_top1" not in r for r in mine),
        }
        for n in sorted({r["num_processes"] for r in mine}):
            ok = sorted(
                (r for r in mine if r["num_processes"] == n and "infodisent_top1" in r), key=lambda r: r["seed"]
            )
            if not ok:
                continue
            entry["by_processes"][str(n)] = {
                "seeds": [r["seed"] for r in ok],
                "infodisent_top1_pt": _stats([100 * r["infodisent_top1"] for r in ok]),
                "linear_probe_pt": _stats([100 * r["linear_probe"] for r in ok]),
                "gap_pt": _stats([r["gap_pt"] for r in ok]),
                "wall_s": [r["wall_s"] for r in ok],
            }
        by = entry["by_processes"]
        if "1" in by and "2" in by:
            # Over the seeds both process counts ran (a partial suite may have more seeds on one side).
            paired = sorted(set(by["1"]["seeds"]) & set(by["2"]["seeds"]))
            top1 = {
                n: {
                    r["seed"]: 100 * r["infodisent_top1"]
                    for r in mine
                    if r["num_processes"] == int(n) and "infodisent_top1" in r
                }
                for n in ("1", "2")
            }
            if paired:
                entry["process_diff_seeds"] = paired
                entry["process_diff_pt"] = round(statistics.fmean(top1["2"][s] - top1["1"][s] for s in paired), 2)
                entry["processes_goal_met"] = abs(entry["process_diff_pt"]) <= PROCESS_GOAL_PT
        if by:
            entry["gap_goal_met"] = all(v["gap_pt"]["mean"] >= GAP_GOAL_PT for v in by.values())
        out.append(entry)
    return out


def _pm(stat: dict | None) -> str:
    if stat is None:
        return "–"
    n = len(stat["values"])
    return f"{stat['mean']:.1f} (1 seed)" if n == 1 else f"{stat['mean']:.1f} ± {stat['std']:.1f} ({n} seeds)"


def markdown(summary: list[dict], rows: list[dict], meta: dict) -> str:
    lines = [
        f"Default command only, seeds {meta['seeds']}, {meta['machine']}; suite wall time "
        f"{meta['total_wall_s'] / 60:.1f} min (estimated {meta['estimated_s'] / 60:.1f} min); code "
        f"{meta['git_commit']}. "
        "Accuracies in % (mean ± sample std over the seeds); gap = InfoDisent − linear probe in points; "
        "goals: gap ≥ −1 pt, |2 − 1 processes| ≤ 0.5 pt.",
        "",
        "| combination | train / test, classes | InfoDisent, 1 proc | probe | gap, 1 proc | InfoDisent, 2 proc | "
        "gap, 2 proc "
        "| 2 − 1 proc | goals |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sizes = {c["combination"]: c for c in meta["combinations"]}
    for entry in summary:
        by = entry["by_processes"]
        one, two = by.get("1"), by.get("2")
        size = sizes.get(entry["combination"], {})
        goals = []
        if "gap_goal_met" in entry:
            goals.append("gap ✓" if entry["gap_goal_met"] else "gap ✗")
        if "processes_goal_met" in entry:
            goals.append("1≡2 ✓" if entry["processes_goal_met"] else "1≡2 ✗")
        if entry["failed_runs"]:
            goals.append(f"{entry['failed_runs']} run(s) failed")
        probe = (one or two or {}).get("linear_probe_pt")
        diff = entry.get("process_diff_pt")
        lines.append(
            f"| {entry['combination']} | {size.get('n_train', '?'):,} / {size.get('n_test', '?'):,}, "
            f"{size.get('num_classes', '?')} | {_pm(one and one['infodisent_top1_pt'])} | {_pm(probe)} "
            f"| {_pm(one and one['gap_pt'])} | {_pm(two and two['infodisent_top1_pt'])} | {_pm(two and two['gap_pt'])} "
            f"| {'–' if diff is None else f'{diff:+.1f}'} | {', '.join(goals)} |"
        )
    lines += [
        "",
        "Wall time of every run (seconds, the whole `accelerate launch` command; the first run of a "
        "dataset/backbone pair extracts the features):",
        "",
        "| combination | seed | processes | InfoDisent | probe | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "infodisent_top1" in r:
            lines.append(
                f"| {r['combination']} | {r['seed']} | {r['num_processes']} | "
                f"{100 * r['infodisent_top1']:.1f} "
                f"| {100 * r['linear_probe']:.1f} | {r['wall_s']:.0f} |"
            )
        else:
            lines.append(
                f"| {r['combination']} | {r['seed']} | {r['num_processes']} | failed (rc {r['returncode']}) "
                f"| | {r['wall_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def write_readme(path: str | os.PathLike, table: str) -> None:
    """Replace the text between the suite markers (appended at the end of the file when absent)."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if README_START not in text or README_END not in text:
        text = (
            text.rstrip()
            + f"\n\n## Suite: the defaults on other data and backbones (`--suite`)\n\n{README_START}\n{README_END}\n"
        )
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    path.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")


# ------------------------------------------------------------------------------------------------------- runner
def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def default_suite_dir() -> Path:
    base = os.environ.get("INFODISENT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "infodisent")
    return Path(base) / "suite"


def _previous(output, resume: bool) -> tuple[list[dict], dict]:
    """The successful rows and the meta of an earlier suite in ``output`` (``resume``: they are kept, not rerun)."""
    if not (resume and output and Path(output).is_file()):
        return [], {}
    saved = json.loads(Path(output).read_text())
    return [r for r in saved.get("runs", []) if "infodisent_top1" in r], saved.get("meta", {})


def run_suite(
    combos: list[Combination],
    seeds: list[int],
    processes: list[int],
    work: Path,
    output: str | os.PathLike | None = RESULTS,
    readme: str | os.PathLike | list | None = README,
    log=print,
    resume: bool = False,
) -> dict:
    """Build what the combinations need, run every (combination, seed, process count), write JSON + markdown.

    ``resume``: the successful runs already in ``output`` are kept (with the combinations they cover) and not rerun,
    so a suite can be run in parts (e.g. more seeds for some combinations) or picked up after an interruption."""
    work = Path(work)
    rows, before = _previous(output, resume)
    done = {(r["combination"], r["seed"], r["num_processes"]) for r in rows}
    key = lambda r: (r["combination"].name, r["seed"], r["num_processes"])  # noqa: E731
    runs = [r for r in plan(combos, seeds, processes) if key(r) not in done]
    estimated = sum(r["estimate_s"] for r in runs) + sum(_BUILD_BACKBONE_S[b] for b in {c.backbone for c in combos})
    size = f"suite: {len(combos)} combinations x {len(seeds)} seeds x {len(processes)} process counts"
    if resume:
        log(f"{size}: {len(runs)} runs to do ({len(done)} kept from {output}), estimated {estimated / 60:.1f} min")
    else:
        log(f"{size} = {len(runs)} runs, estimated {estimated / 60:.1f} min")
    t_start = time.time()
    meta = {
        "seeds": sorted(set(seeds) | set(before.get("seeds", []))),
        "processes": sorted(set(processes) | set(before.get("processes", []))),
        "estimated_s": round(estimated) + before.get("estimated_s", 0),
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}), shared",
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "combinations": list(before.get("combinations", [])),
        "build_s": dict(before.get("build_s", {})),
    }
    previous_wall = before.get("total_wall_s", 0.0)
    meta["total_wall_s"] = previous_wall
    data, backbones = {}, {}
    for combo in combos:
        n_train, n_test, k = combo.sizes
        if combo.name not in {c["combination"] for c in meta["combinations"]}:
            meta["combinations"].append(
                {"combination": combo.name, "n_train": n_train, "n_test": n_test, "num_classes": k}
            )
        if combo.dataset not in data:
            t0 = time.time()
            spec = DATASETS[combo.dataset]
            data[combo.dataset] = (
                {"train_args": []} if spec is None else build_dataset(spec, work / "data" / combo.dataset)
            )
            meta["build_s"][f"data:{combo.dataset}"] = round(time.time() - t0, 1)
        if combo.backbone not in backbones:
            t0 = time.time()
            folder = build_backbone(combo.backbone, work / "backbones" / combo.backbone)
            backbones[combo.backbone] = None if combo.backbone == "resnet" else folder  # resnet: the default, no flag
            meta["build_s"][f"backbone:{combo.backbone}"] = round(time.time() - t0, 1)

    def save() -> dict:
        meta["total_wall_s"] = round(previous_wall + time.time() - t_start, 1)
        result = {"meta": meta, "summary": summarize(rows), "runs": rows}
        if output:  # atomically: a suite killed mid-write keeps every run measured so far
            text = json.dumps(result, indent=1) + "\n"
            atomic_write(str(output), lambda tmp: Path(tmp).write_text(text))
        return result

    result = save()
    for i, run in enumerate(runs):
        combo = run["combination"]
        row = run_one(combo, run["seed"], run["num_processes"], data[combo.dataset], backbones[combo.backbone], work)
        row["estimate_s"] = round(run["estimate_s"])
        rows.append(row)
        status = (
            f"InfoDisent {100 * row['infodisent_top1']:.1f} probe {100 * row['linear_probe']:.1f}"
            if "infodisent_top1" in row
            else f"FAILED rc {row['returncode']}: {row['error'][-300:]}"
        )
        log(
            f"[{i + 1}/{len(runs)}] {combo.name} seed {run['seed']} p{run['num_processes']}: {status}; "
            f"{row['wall_s']:.0f} s (estimate {run['estimate_s']:.0f} s); {(time.time() - t_start) / 60:.1f} min so far"
        )
        result = save()  # after every run: nothing measured is lost
    for path in [readme] if isinstance(readme, (str, os.PathLike)) else readme or []:
        write_readme(path, markdown(result["summary"], rows, meta))
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="benchmarks/run.py --suite", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--suite_combinations",
        nargs="+",
        default=list(DEFAULT_COMBINATIONS),
        help="DATASET/BACKBONE pairs (default: %(default)s). Datasets: "
        + ", ".join(DATASETS)
        + "; backbones: "
        + ", ".join(BACKBONES)
        + ".",
    )
    p.add_argument("--suite_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--suite_processes", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument(
        "--suite_dir",
        default=None,
        help="Built datasets, backbones, feature cache and run folders "
        "(default: $INFODISENT_CACHE/suite or ~/.cache/infodisent/suite).",
    )
    p.add_argument("--suite_output", default=str(RESULTS), help="JSON results (default: %(default)s).")
    p.add_argument(
        "--suite_readme",
        nargs="*",
        default=[str(README), str(DOCS_PAGE)],
        help="Markdown files whose suite section (between the suite markers; appended when absent) is "
        "rewritten (default: %(default)s; none: no markdown).",
    )
    p.add_argument(
        "--suite_resume",
        action="store_true",
        help="Keep the successful runs already in --suite_output and run only the missing ones.",
    )
    p.add_argument(
        "--suite_estimate_only", action="store_true", help="Print the plan and its estimated time; run nothing."
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import datasets

    datasets.disable_progress_bars()  # the dataset builders' parquet writers would print a bar per split
    try:
        combos = [parse_combination(c) for c in args.suite_combinations]
    except ValueError as e:
        print(f"error: --suite_combinations: {e}", file=sys.stderr)
        return 2
    if args.suite_estimate_only:
        for run in plan(combos, args.suite_seeds, args.suite_processes):
            print(f"{run['combination'].name} seed {run['seed']} p{run['num_processes']}: ~{run['estimate_s']:.0f} s")
        print(
            f"estimated total: {estimate_total_s(combos, args.suite_seeds, args.suite_processes) / 60:.1f} min "
            "(shared 2-core CPU; backbone builds included)"
        )
        return 0
    result = run_suite(
        combos,
        args.suite_seeds,
        args.suite_processes,
        Path(args.suite_dir or default_suite_dir()),
        args.suite_output or None,
        args.suite_readme,
        resume=args.suite_resume,
    )
    print(markdown(result["summary"], result["runs"], result["meta"]))
    return 1 if any(s["failed_runs"] for s in result["summary"]) else 0


if __name__ == "__main__":
    sys.exit(main())
