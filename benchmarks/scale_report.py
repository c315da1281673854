"""The real-scale benchmark's (`benchmarks/scale.py`) outputs: the results file (rewritten atomically after every
backbone) and the markdown table of a run, written between markers into docs/scale.md."""

from __future__ import annotations

import json
import os
from pathlib import Path


def markdown_table(results: dict) -> str:
    """The README table of a --scale run."""

    def minutes(seconds: float) -> str:
        return f"{seconds / 60:.1f}" if seconds < 6000 else f"{seconds / 3600:.1f} h"

    lines = [
        "| backbone (map) | training step | extract s/img | cache (CUB, GB) "
        "| head step / fixed-U step with the same GEMM dtype (training step / `riemannian`) "
        "| training step / U = I step | cached epoch speed-up "
        "| explain / forward | CUB head training, min (eval as scheduled / at end / fixed-U floor) | CUB total, min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["backbones"].items():
        p = r["projection_cub"]
        shape = "×".join(str(s) for s in r["feature_shape"])
        lines.append(
            f"| {name} ({shape}) | `{r['training_step']}` | {r['backbone_seconds_per_image']:.3f} | "
            f"{r['cache_gb_cub']:.2f} "
            f"| {r['head_step'][r['training_step']]['ratio_to_fixed_u']:.2f}× / "
            f"{r['riemannian_step_over_fixed_u']:.2f}× "
            f"| {r['head_step_over_identity']:.2f}× | {r['cached_epoch_speedup']:.1f}× "
            f"| {r['explain_over_forward']:.2f}× | {minutes(p['head_training_s_eval_every_epoch'])} / "
            f"{minutes(p['head_training_s_eval_at_end'])} / {minutes(p['head_training_floor_s'])} | "
            f"{minutes(p['total_s'])} |"
        )
    return "\n".join(lines)


def _write_json(path: str, results: dict) -> None:
    """Rewritten after every backbone: atomically, so a run killed mid-write keeps the previous backbones' figures."""
    from training.checkpoints import atomic_write

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = json.dumps(results, indent=1, default=str)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


README_MARKERS = ("<!-- scale-table:start -->", "<!-- scale-table:end -->")


def write_readme_table(readme: str, table: str, results: dict) -> bool:
    """Rewrite the table between README_MARKERS in `readme` (no markers: nothing written)."""
    text = Path(readme).read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        return False
    note = (
        f"\n\n{results['device']}, {results['threads']} torch threads, run {results['run_seconds']:.0f} s "
        f"(load average at the end {', '.join(f'{v:.1f}' for v in results['load_average_at_end'] or [])})."
    )
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    Path(readme).write_text(f"{head}{start}\n{table}{note}\n{end}{tail}")
    return True
