"""The feature cache's file access (training/feature_rows.py): rows are appended and read with ordinary I/O, never
memory-mapped, so that what a run holds grows with the batch, not the data (measured in
benchmarks/memory_scaling.py); the files stay plain .npy."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from training.feature_rows import NpyRows, _ShardWriter


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_rows_read_as_numpy_reads_them(tmp_path, version):
    array = np.random.default_rng(0).standard_normal((37, 4, 3, 2)).astype(np.float16)
    path = tmp_path / "a.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=version)
    rows = NpyRows(str(path))
    assert rows.shape == array.shape and rows.dtype == array.dtype and len(rows) == 37
    indices = np.array([36, 0, 5, 5, 17])
    assert np.array_equal(rows.take(indices), array[indices])
    assert np.array_equal(rows.read(), array) and np.array_equal(rows.read(3, 9), array[3:9])
    assert rows.read(9, 9).shape == (0, 4, 3, 2)
    again = pickle.loads(pickle.dumps(rows))  # DataLoader workers: the file is reopened
    assert np.array_equal(again.take(indices), array[indices])


def test_writer_appends_plain_npy_and_nothing_stays_mapped(tmp_path):
    writer = _ShardWriter(str(tmp_path), "shard-00000-of-00001", num_rows=10, dtype="float16")
    rng = np.random.default_rng(1)
    batches = [
        {"labels": np.arange(i, i + 5), "features": rng.standard_normal((5, 8, 2, 2)).astype(np.float32)}
        for i in (0, 5)
    ]
    for batch in batches:
        writer.write(batch)
    info = writer.close()
    assert info["arrays"] == ["features", "labels"]
    features = np.load(tmp_path / "shard-00000-of-00001.features.npy", allow_pickle=False)
    assert features.dtype == np.float16 and features.shape == (10, 8, 2, 2)
    expected = np.concatenate([b["features"] for b in batches]).astype(np.float16)
    assert np.array_equal(features, expected)
    assert np.array_equal(np.load(tmp_path / "shard-00000-of-00001.labels.npy"), np.arange(10))

    rows = NpyRows(str(tmp_path / "shard-00000-of-00001.features.npy"))
    assert np.array_equal(rows.take(np.array([9, 1])), expected[[9, 1]])
    with open("/proc/self/maps") as maps:  # a memory map would list the file here (and count in the RSS)
        assert str(tmp_path) not in maps.read()


def test_a_short_shard_is_refused(tmp_path):
    writer = _ShardWriter(str(tmp_path), "s", num_rows=3, dtype="float32")
    writer.write({"labels": np.arange(2), "pooled": np.zeros((2, 4), np.float32)})
    with pytest.raises(RuntimeError, match="got 2 rows, expected 3"):
        writer.close()
    writer.abort()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".npy")]


def test_memory_scaling_measures_whole_runs_of_train_py(tmp_path):
    """`python -m benchmarks.memory_scaling` (the issue's 2k vs 20k rows) at a tiny size: two train.py runs in fresh
    processes, each one's peak resident set measured from outside, the ratio and the backbone recorded."""
    import json

    from benchmarks import memory_scaling
    from training.data import DEFAULT_BACKBONE

    out = tmp_path / "scaling.json"
    args = ["--rows", "20", "40", "--max_train_steps", "2", "--gallery_top_k", "1", "--backbone", DEFAULT_BACKBONE]
    assert memory_scaling.main([*args, "--work_dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert [r["train_rows"] for r in summary["runs"]] == [20, 40]
    assert all(r["exit_status"] == 0 and r["backbone"] == DEFAULT_BACKBONE for r in summary["runs"])
    small, large = summary["runs"]
    assert 200 < small["peak_rss_mb"] and small["peak_anon_mb"] <= small["peak_rss_mb"] + 1
    ratio = summary["ratios"]["40"]["peak_rss_mb"]
    assert ratio == round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
    assert summary["meets_target"] == (ratio <= memory_scaling.TARGET_RATIO)


@pytest.mark.parametrize("args", [["--rows", "5", "2000"], ["--max_train_steps", "0"], ["--gallery_top_k", "-1"]])
def test_memory_scaling_refuses_absurd_sizes_at_the_door(args, capsys):
    from benchmarks import memory_scaling

    with pytest.raises(SystemExit) as exit_info:
        memory_scaling.main(args)
    assert exit_info.value.code == 2
    assert "error: --rows must be >= 10" in capsys.readouterr().err
