"""The ground-truth benchmark: the generator (benchmarks/generate.py) and the benchmark's scoring."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

FMNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="needs Debian's dataset-fashion-mnist")


def _gen():
    sys.path.insert(0, REPO_ROOT)
    from benchmarks import generate

    return generate


def test_cluttered_is_deterministic_and_box_holds_the_garment():
    g = _gen()
    a, b = g.make_cluttered("test", 6, seed=3), g.make_cluttered("test", 6, seed=3)
    c = g.make_cluttered("test", 6, seed=4)
    assert a["image"][0].tobytes() == b["image"][0].tobytes()
    assert a["image"][0].tobytes() != c["image"][0].tobytes()
    assert a.features["label"].names[0] == "T-shirt/top"
    for row in a:
        img, mask = np.asarray(row["image"]), np.asarray(row["mask"]) > 0
        assert img.shape == mask.shape == (84, 84)
        x0, y0, x1, y1 = row["box"]
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        # The garment is between a quarter and half of the canvas wide.
        assert 0.25 * 84 - 6 <= max(x1 - x0, y1 - y0) <= 0.5 * 84
        # Clutter stays outside the box: rendering without the garment leaves the box black.
        empty, *_ = g.render_cluttered("test", row["index"], seed=3, without_object=True)
        assert empty[y0:y1, x0:x1].max() == 0 and empty.sum() > 0


def test_part_defined_without_part_changes_only_the_decisive_mark():
    g = _gen()
    with_part = g.make_part_defined("test", 8, seed=0)
    without = g.make_part_defined("test", 8, seed=0, without_part=True)
    assert with_part.features["label"].names == g.PART_CLASSES
    for a, b in zip(with_part, without):
        ia, ib, mask = np.asarray(a["image"]), np.asarray(b["image"]), np.asarray(a["mask"]) > 0
        changed = ia != ib
        assert changed.any() and not (changed & ~mask).any()  # only mark pixels change
        assert (ia[mask] == 255).all()
        glyph = g.GLYPHS[g.PART_CLASSES[a["label"]]]
        x0, y0, x1, y1 = a["box"]
        scale = (x1 - x0) // 7
        assert np.array_equal(mask[y0:y1, x0:x1], np.kron(glyph, np.ones((scale, scale), bool)))


def test_cli_writes_loadable_parquet_and_rejects_bad_canvas(tmp_path):
    from training.data import load_image_dataset

    out = tmp_path / "gt"
    cmd = [sys.executable, os.path.join(REPO_ROOT, "benchmarks", "generate.py"), "--variant", "part", "--out", str(out)]
    subprocess.run([*cmd, "--train", "5", "--test", "3"], check=True, capture_output=True, cwd=REPO_ROOT)
    ds, image_col, label_col, id2label = load_image_dataset(str(out))
    assert (len(ds["train"]), len(ds["validation"]), image_col, label_col) == (5, 3, "image", "label")
    assert id2label == {0: "plus", 1: "cross", 2: "ring", 3: "triangle", 4: "H"}
    assert "benchmarks/generate.py --variant part" in (out / "README.md").read_text()
    bad = subprocess.run([*cmd, "--canvas", "20"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["error: --canvas must be >= 56, got 20"]
