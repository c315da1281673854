"""docs/audit.md runs as written: its ```python blocks, in order, in one fresh interpreter in an empty folder, print
the audit table (one row per seed) — a black box that learnt the known answer, InfoDisent trained on it, the
re-drawn-head and head-free controls, and Grad-CAM on the original, all scored by the same pointing helper."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytest.importorskip("pytorch_grad_cam")
DOC = os.path.join(REPO_ROOT, "docs", "audit.md")


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_audit_doc_runs_as_written(tmp_path):
    blocks = _python_blocks(open(DOC).read())
    assert len(blocks) == 4  # data, black box, InfoDisent seeds, the table
    script = tmp_path / "audit.py"
    script.write_text("\n\n".join(blocks))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    header = (
        "seed | accuracy | InfoDisent | head re-drawn | feature strength | Grad-CAM (original) | energy: InfoDisent | "
        "energy: re-drawn | energy: Grad-CAM"
    )
    assert header in lines, done.stdout[-2000:]
    rows = [line.split(" | ") for line in lines[lines.index(header) + 1 :]]
    seeds = re.search(r"SEEDS = \[([\d, ]+)\]", blocks[2]).group(1)
    assert [int(r[0]) for r in rows] == [int(s) for s in seeds.split(",")]
    for row in rows:
        values = [float(v.rstrip("%")) for v in row[1:]]
        assert all(0.0 <= v <= 100.0 for v in values), row
        accuracy, gradcam = values[0], values[4]
        # The black box learnt the known answer and InfoDisent on it classifies it; Grad-CAM of that black box lands
        # on the decisive patch far above chance (about 6% of the cells): the pipeline measures what it says.
        assert accuracy >= 90.0 and gradcam >= 50.0, row
        assert values[-1] > 2 * 6.25, row  # Grad-CAM's mass on the patch: over twice its share of the image
    # The saved outputs name their splits (the doc's own claim).
    import json

    results = json.load(open(tmp_path / "audit_blackbox" / "training_results.json"))
    assert results["splits"]["test"]["rows"] == 80 and results["augment"] == ["shift", "zoom"]
