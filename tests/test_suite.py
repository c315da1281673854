"""The suite (benchmarks/suite.py): its datasets, backbones, summaries and one real run of the default command."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from benchmarks import suite  # noqa: E402
from benchmarks.backbones import build_backbone  # noqa: E402
from benchmarks.suite_data import DataSpec, balanced_counts, build_dataset  # noqa: E402
from training.build_fashion_mnist_subset import DEFAULT_SOURCE, load_fashion_mnist_idx  # noqa: E402
from training.data import load_image_dataset  # noqa: E402

needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(os.path.join(os.environ.get("FASHION_MNIST_DIR", DEFAULT_SOURCE), "t10k-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST idx files (Debian dataset-fashion-mnist) not installed",
)


def _built(folder):
    """The built folder's two splits as written (train.py itself would hold a validation split out of train)."""
    import datasets

    files = {split: os.path.join(folder, f"{split}-00000.parquet") for split in ("train", "test")}
    return datasets.load_dataset("parquet", data_files=files)


def test_balanced_counts():
    assert balanced_counts(1437, 10) == [144] * 7 + [143] * 3
    assert balanced_counts(500, 2) == [250, 250]
    assert sum(balanced_counts(1437, 10)) == 1437


@needs_fmnist
def test_fmnist_parquet_subset_has_requested_sizes_classes_and_is_deterministic(tmp_path):
    spec = DataSpec("fmnist", 41, 20, classes=(6, 0))
    info = build_dataset(spec, tmp_path / "a")
    assert info["train_args"] == ["--dataset_name", str(tmp_path / "a")]
    dataset, image_col, label_col = _built(info["folder"]), "image", "label"
    assert dataset["train"].features["label"].names == ["Shirt", "T-shirt/top"]  # relabelled in the order of `classes`
    assert len(dataset["train"]) == 41 and len(dataset["test"]) == 20
    assert np.bincount(dataset["train"][label_col]).tolist() == [21, 20]
    assert np.bincount(dataset["test"][label_col]).tolist() == [10, 10]
    test_images, test_labels = load_fashion_mnist_idx("test")
    assert [(6, 0)[y] for y in dataset["test"][label_col]] == test_labels[dataset["test"]["id"]].tolist()
    # The images and labels are those of the Fashion-MNIST files at the recorded ids.
    images, labels = load_fashion_mnist_idx("train")
    ids = dataset["train"]["id"]
    assert np.array_equal(np.stack([np.asarray(im) for im in dataset["train"][image_col]]), images[ids])
    assert [(6, 0)[y] for y in dataset["train"][label_col]] == labels[ids].tolist()

    again = _built(build_dataset(spec, tmp_path / "b")["folder"])
    assert again["train"]["id"] == ids and again["test"]["id"] == dataset["test"]["id"]
    other = _built(build_dataset(DataSpec("fmnist", 41, 20, (6, 0), seed=1), tmp_path / "c")["folder"])
    assert other["train"]["id"] != ids


@needs_fmnist
def test_fmnist_imagefolder_subset_keeps_class_order(tmp_path):
    spec = DataSpec("fmnist", 30, 10, classes=(9, 0, 5), layout="imagefolder")
    info = build_dataset(spec, tmp_path / "f")
    assert info["train_args"] == ["--dataset_name", str(tmp_path / "f")]
    assert sorted(os.listdir(tmp_path / "f" / "train")) == ["0_Ankle_boot", "1_T-shirt-top", "2_Sandal"]
    assert [len(os.listdir(tmp_path / "f" / "train" / d)) for d in sorted(os.listdir(tmp_path / "f" / "train"))] == [
        10
    ] * 3
    dataset, _, label_col, id2label = load_image_dataset(
        train_dir=str(tmp_path / "f" / "train"), validation_dir=str(tmp_path / "f" / "test")
    )
    assert len(dataset["train"]) == 30 and len(dataset["validation"]) == 10
    assert id2label == {0: "0_Ankle_boot", 1: "1_T-shirt-top", 2: "2_Sandal"}


@needs_fmnist
def test_built_dataset_is_reused_and_rebuilt_when_the_spec_changes(tmp_path):
    folder = tmp_path / "d"
    build_dataset(DataSpec("fmnist", 20, 10, classes=(1, 2)), folder)
    marker = folder / "train-00000.parquet"
    mtime = marker.stat().st_mtime_ns
    build_dataset(DataSpec("fmnist", 20, 10, classes=(1, 2)), folder)
    assert marker.stat().st_mtime_ns == mtime
    build_dataset(DataSpec("fmnist", 24, 10, classes=(1, 2)), folder)
    assert len(_built(folder)["train"]) == 24


@needs_fmnist
def test_cluttered_variant_comes_from_the_shared_generator(tmp_path):
    generate = pytest.importorskip("benchmarks.generate")
    info = build_dataset(DataSpec("cluttered", 12, 10, canvas=60), tmp_path / "c")
    dataset, image_col, label_col = _built(info["folder"]), "image", "label"
    assert (
        len(dataset["train"]) == 12
        and len(dataset["test"]) == 10
        and len(dataset["train"].features["label"].names) == 10
    )
    assert "box" not in dataset["train"].column_names and "mask" not in dataset["train"].column_names
    image, label, *_ = generate.render_cluttered("train", 3, seed=0, canvas=60)
    assert np.array_equal(np.asarray(dataset["train"][3][image_col]), image) and dataset["train"][3][label_col] == label


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match=r"classes must be distinct Fashion-MNIST class indices 0..9, got \[1, 1\]"):
        DataSpec("fmnist", 10, 10, classes=(1, 1)).validate()
    with pytest.raises(ValueError, match=r"n_train and n_test must be at least one image per class \(3\), got 2 / 10"):
        DataSpec("fmnist", 2, 10, classes=(0, 1, 2)).validate()
    with pytest.raises(ValueError, match="unknown combination 'fm500-2c/resnet50'"):
        suite.parse_combination("fm500-2c/resnet50")


def _row(combination, seed, n, top1, probe):
    return {
        "combination": combination,
        "dataset": combination.split("/")[0],
        "backbone": combination.split("/")[1],
        "seed": seed,
        "num_processes": n,
        "infodisent_top1": top1,
        "linear_probe": probe,
        "gap_pt": round(100 * (top1 - probe), 2),
        "wall_s": 10.0 + seed,
    }


def test_summary_means_spreads_and_goals():
    rows = [_row("a/resnet", s, 1, t, 0.9) for s, t in enumerate((0.90, 0.89, 0.91))]
    rows += [_row("a/resnet", s, 2, t, 0.9) for s, t in enumerate((0.88, 0.89, 0.88))]
    rows += [
        _row("b/vit", 0, 1, 0.5, 0.6),
        {
            "combination": "b/vit",
            "dataset": "b",
            "backbone": "vit",
            "seed": 1,
            "num_processes": 1,
            "returncode": 1,
            "wall_s": 3.0,
        },
    ]
    a, b = suite.summarize(rows)
    one, two = a["by_processes"]["1"], a["by_processes"]["2"]
    assert one["infodisent_top1_pt"] == {"mean": 90.0, "std": 1.0, "values": [90.0, 89.0, 91.0]}
    assert one["gap_pt"]["mean"] == 0.0 and two["gap_pt"]["mean"] == pytest.approx(-1.67)
    assert two["wall_s"] == [10.0, 11.0, 12.0]
    assert a["process_diff_pt"] == pytest.approx(-1.67) and a["processes_goal_met"] is False
    assert a["gap_goal_met"] is False  # the 2-process mean gap is below -1 pt
    assert b["failed_runs"] == 1 and b["by_processes"]["1"]["seeds"] == [0] and "process_diff_pt" not in b
    assert b["by_processes"]["1"]["infodisent_top1_pt"]["std"] == 0.0 and b["gap_goal_met"] is False


def test_read_metrics_prefers_the_test_split():
    assert suite.read_metrics({"eval_accuracy": 0.8, "linear_probe_accuracy": 0.85}) == {
        "split": "eval",
        "infodisent_top1": 0.8,
        "linear_probe": 0.85,
        "gap_pt": -5.0,
    }
    assert (
        suite.read_metrics(
            {
                "eval_accuracy": 0.8,
                "linear_probe_accuracy": 0.85,
                "test_accuracy": 0.7,
                "test_linear_probe_accuracy": 0.75,
            }
        )["split"]
        == "test"
    )


def test_estimate_counts_extraction_once_per_combination():
    combo = suite.parse_combination("fm1437-10c/resnet")
    runs = suite.plan([combo], [0, 1], [1, 2])
    assert [(r["seed"], r["num_processes"]) for r in runs] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    first, later = runs[0]["estimate_s"], runs[2]["estimate_s"]
    assert first - later == pytest.approx(suite._EXTRACT_PER_IMAGE_S["resnet"] * (1437 + 3000))
    assert suite.estimate_total_s([combo], [0, 1], [1, 2]) == pytest.approx(sum(r["estimate_s"] for r in runs))


def test_cli_rejects_unknown_combination(capsys):
    assert suite.main(["--suite_combinations", "nope/resnet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --suite_combinations: unknown combination 'nope/resnet'") and err.count("\n") == 1


@needs_fmnist
def test_suite_runs_the_default_command_and_writes_rows(tmp_path):
    """A tiny combination (40 / 20 images, 2 classes, a random tiny ResNet), one seed, one process, end to end."""
    output, readme = tmp_path / "suite.json", tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nkept\n")
    result = suite.run_suite(
        [suite.parse_combination("tiny/tiny")], [0], [1], tmp_path / "work", output, readme, log=lambda *a: None
    )
    saved = json.loads(output.read_text())
    assert saved == result
    (row,) = saved["runs"]
    assert row["returncode"] == 0, row.get("error")
    assert {
        "combination",
        "dataset",
        "backbone",
        "seed",
        "num_processes",
        "wall_s",
        "split",
        "infodisent_top1",
        "linear_probe",
        "gap_pt",
        "command",
        "train_runtime_s",
        "feature_cache_reused",
    } <= set(row)
    assert (row["combination"], row["seed"], row["num_processes"], row["num_processes_reported"]) == (
        "tiny/tiny",
        0,
        1,
        1,
    )
    assert row["gap_pt"] == round(100 * (row["infodisent_top1"] - row["linear_probe"]), 2)
    assert row["feature_cache_reused"] is False
    # The default command: data, backbone, output folder and seed — no training flag.
    backbone = str(tmp_path / "work" / "backbones" / "tiny")
    out = str(tmp_path / "work" / "runs" / "tiny-tiny-seed0-p1")
    assert row["command"] == (
        f"accelerate launch training/train.py --dataset_name {tmp_path / 'work' / 'data' / 'tiny'} "
        f"--backbone {backbone} --output_dir {out} --seed 0"
    )
    results = json.loads(Path(out, "all_results.json").read_text())
    assert row["infodisent_top1"] == results["eval_accuracy"] or row["infodisent_top1"] == results.get("test_accuracy")
    (summary,) = saved["summary"]
    assert summary["by_processes"]["1"]["infodisent_top1_pt"]["values"] == [round(100 * row["infodisent_top1"], 2)]
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and suite.README_START in text
    assert "| tiny/tiny | 40 / 20, 2 |" in text and "| tiny/tiny | 0 | 1 |" in text


def test_tiny_backbone_folder_is_a_backbone_the_training_script_takes(tmp_path):
    from training.train import load_backbone

    folder = build_backbone("tiny", tmp_path / "tiny")
    backbone, processor, has_head = load_backbone(folder)
    assert has_head and processor.size == {"height": 28, "width": 28}
    assert json.loads(Path(folder, "suite_manifest.json").read_text()) == {
        "backbone": "tiny",
        "steps": 0,
        "seed": 0,
        "image_size": 28,
        "version": 2,
    }
    assert build_backbone("resnet").endswith(os.path.join("training", "embedded", "fashion_mnist_resnet"))


@needs_fmnist
def test_resume_keeps_finished_runs_and_runs_only_the_missing_ones(tmp_path, monkeypatch):
    output = tmp_path / "suite.json"
    kept = _row("tiny/tiny", 0, 1, 0.9, 0.8)
    failed = {k: v for k, v in _row("tiny/tiny", 1, 1, 0.5, 0.8).items() if k not in ("infodisent_top1", "gap_pt")}
    output.write_text(
        json.dumps(
            {
                "meta": {"seeds": [0, 1], "processes": [1], "total_wall_s": 30.0, "estimated_s": 20},
                "runs": [kept, {**failed, "returncode": 1}],
            }
        )
    )
    launched = []

    def fake_run_one(combo, seed, num_processes, data, backbone, work):
        launched.append((combo.name, seed, num_processes))
        return _row(combo.name, seed, num_processes, 0.7, 0.8)

    monkeypatch.setattr(suite, "run_one", fake_run_one)
    combo = suite.parse_combination("tiny/tiny")
    result = suite.run_suite([combo], [0, 1], [1], tmp_path / "work", output, None, log=lambda *a: None, resume=True)
    assert launched == [("tiny/tiny", 1, 1)]
    assert [(r["seed"], r["infodisent_top1"]) for r in result["runs"]] == [(0, 0.9), (1, 0.7)]
    assert result["summary"][0]["by_processes"]["1"]["infodisent_top1_pt"]["values"] == [90.0, 70.0]
    assert result["meta"]["seeds"] == [0, 1] and result["meta"]["total_wall_s"] >= 30.0
    assert json.loads(output.read_text()) == result


def test_readme_suite_table_is_the_generated_one():
    def block(text):
        return text[text.index(suite.README_START) : text.index(suite.README_END)]

    readme = Path(suite.DOCS_PAGE).read_text()
    generated = Path(suite.README).read_text()
    assert block(readme) == block(generated)
    results = json.loads(Path(suite.RESULTS).read_text())
    assert (
        block(readme).strip()
        == (suite.README_START + "\n" + suite.markdown(results["summary"], results["runs"], results["meta"])).strip()
    )
