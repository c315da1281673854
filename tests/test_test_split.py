"""The test split takes no decision: `train.py --test_dir` / `--test_split_name` evaluate it once, at the end, and a
test split with deliberately wrong labels changes neither the trajectory nor the selected weights; figures name their
split; `--shuffle_labels` permutes the training and validation labels (seeded) and leaves the test's."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from tiny_assets import CLASSES, write_backbone, write_imagefolder

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from training import train as train_script  # noqa: E402
from training.data import load_image_dataset, shuffle_labels  # noqa: E402


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("test_split_assets")
    write_imagefolder(root / "colours", n_train=10, n_test=4)
    # The test images filed under the wrong class (blue -> green -> red -> blue): a split that would pull any choice
    # it took part in towards wrong answers.
    wrong = root / "wrong_test"
    for c, name in enumerate(CLASSES):
        shutil.copytree(root / "colours" / "test" / name, wrong / CLASSES[(c + 1) % len(CLASSES)])
    write_backbone(root / "backbone")
    return root


def _args(assets, tmp, name, extra=()):
    return [
        "--train_dir",
        str(assets / "colours" / "train"),
        "--backbone",
        str(assets / "backbone"),
        "--cache_dir",
        str(tmp / "cache"),
        "--output_dir",
        str(tmp / name),
        "--num_train_epochs",
        "8",
        "--learning_rate",
        "0.05",
        "--finetune_epochs",
        "1",
        "--per_device_train_batch_size",
        "6",
        "--max_prototypes_per_class",
        "3",
        "--gallery_top_k",
        "0",
        "--eval_steps",
        "2",
        *extra,
    ]


def test_test_dir_takes_no_decision(assets, tmp_path):
    plain = train_script.main(_args(assets, tmp_path, "plain"))
    wrong = train_script.main(_args(assets, tmp_path, "wrong", ["--test_dir", str(assets / "wrong_test")]))
    right = train_script.main(_args(assets, tmp_path, "right", ["--test_dir", str(assets / "colours" / "test")]))
    # Validation is held out of train the same way whether or not there is a test split.
    assert plain["splits"]["validation"] == wrong["splits"]["validation"] == right["splits"]["validation"]
    assert "held out from train" in wrong["splits"]["validation"]["source"]
    # The same trajectory and the same selected head, tensor by tensor.
    assert plain["history"] == wrong["history"] == right["history"]
    assert plain["pruning"] == wrong["pruning"] and plain["global_step"] == wrong["global_step"]
    weights = [load_file(tmp_path / n / "model.safetensors") for n in ("plain", "wrong", "right")]
    assert weights[0].keys() == weights[1].keys() == weights[2].keys()
    for key in weights[0]:
        assert np.array_equal(weights[0][key], weights[1][key]), key
        assert np.array_equal(weights[0][key], weights[2][key]), key
    # ... and yet the test split was evaluated: the wrong labels are scored as wrong.
    assert "test_accuracy" not in plain and plain["splits"]["test"] is None
    assert wrong["test_num_examples"] == right["test_num_examples"] == 4 * len(CLASSES)
    assert right["test_accuracy"] > wrong["test_accuracy"]
    saved = json.load(open(tmp_path / "wrong" / "all_results.json"))
    assert saved["splits"]["test"]["source"] == "test_dir 'wrong_test'"
    assert saved["test_accuracy"] == wrong["test_accuracy"]
    card = (tmp_path / "wrong" / "README.md").read_text()
    assert "## Results (test split)" in card and "Test split: test_dir 'wrong_test', evaluated once" in card
    assert "      split: test\n" in card and "split: validation" not in card  # the model-index metadata
    assert "## Results (validation split)" in (tmp_path / "plain" / "README.md").read_text()


def test_test_split_name_picks_the_split(tmp_path):
    import datasets

    rows = {"image": [np.full((4, 4, 3), 40 * i, np.uint8) for i in range(6)], "label": [0, 1, 0, 1, 0, 1]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    for split in ("train", "validation", "holdout"):
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / f"{split}-00000.parquet"))
    # "holdout" is no split name this module knows: named, it is the test split; unnamed, it is dropped.
    data, *_ = load_image_dataset(str(tmp_path), test_split_name="holdout")
    assert sorted(data) == ["test", "train", "validation"]
    assert data.split_sources["test"] == "the dataset's 'holdout' split"
    # The dataset's validation as the test split: validation is then held out from train, never from the test.
    (tmp_path / "holdout-00000.parquet").unlink()  # unnamed, a file of no known split would be read as train
    data, *_ = load_image_dataset(str(tmp_path), test_split_name="validation", train_val_split=0.5)
    assert len(data["test"]) == 6 and len(data["train"]) == len(data["validation"]) == 3
    assert "held out from train" in data.split_sources["validation"]
    with pytest.raises(ValueError, match="'nope' is not a split of the dataset; its splits are"):
        load_image_dataset(str(tmp_path), test_split_name="nope")
    with pytest.raises(ValueError, match="is the training split"):
        load_image_dataset(str(tmp_path), test_split_name="train")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--test_dir", "{tmp}/nowhere"], "error: --test_dir: the folder '{tmp}/nowhere' does not exist."),
        (
            ["--dataset_name", "{data}", "--test_dir", "{data}/test"],
            "error: --test_dir goes with --train_dir (imagefolders); with --dataset_name use --test_split_name.",
        ),
        (
            ["--augment", "flip,sideways"],
            "error: Unknown augmentation 'sideways': choose from flip, shift, zoom, crop "
            "(= shift,zoom), or none (alone).",
        ),
        (
            ["--test_split_name", "test"],
            "error: --test_split_name names a split of --dataset_name; with --train_dir use --test_dir.",
        ),
        (
            ["--dataset_name", "{data}", "--test_split_name", "nope"],
            "error: test_split_name 'nope' is not a split of the dataset; its splits are ['train', 'test'].",
        ),
    ],
)
def test_bad_test_split_arguments_are_one_line(assets, tmp_path, capfd, argv, message):
    data = str(assets / "colours")
    args = _args(assets, tmp_path, "out", [a.format(tmp=tmp_path, data=data) for a in argv])
    if "--dataset_name" in argv:
        i = args.index("--train_dir")
        del args[i : i + 2]
    assert train_script.cli(args) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == message.format(tmp=tmp_path, data=data)
    assert not os.path.exists(tmp_path / "out")


def test_shuffle_labels_permutes_train_and_validation_only(assets, tmp_path):
    data, _, label, _ = load_image_dataset(
        train_dir=str(assets / "colours" / "train"), test_dir=str(assets / "colours" / "test"), seed=0
    )
    once = shuffle_labels(data, label, seed=3)
    again = shuffle_labels(data, label, seed=3)
    other = shuffle_labels(data, label, seed=4)
    for split in ("train", "validation"):
        before, after = data[split][label], once[split][label]
        assert sorted(before) == sorted(after) and before != after  # a permutation, not the identity
        assert after == again[split][label]  # seeded
        assert once[split]["image"][0] == data[split]["image"][0]  # images in place: only the labels move
    assert once["train"][label] != other["train"][label]
    assert once["test"][label] == data["test"][label]
    assert once["train"].features[label] == data["train"].features[label]
    assert "labels permuted (seed 3)" in once.split_sources["train"]

    results = train_script.main(
        _args(
            assets,
            tmp_path,
            "control",
            ["--shuffle_labels", "--test_dir", str(assets / "colours" / "test"), "--augment", "crop"],
        )
    )
    assert results["shuffled_labels"] == {"seed": 0, "splits": ["train", "validation"]}
    assert results["augment"] == ["shift", "zoom"]
    assert "labels permuted" in results["splits"]["train"]["source"]
    card = (tmp_path / "control" / "README.md").read_text()
    assert "Control run: the training and validation labels were permuted" in card
    assert "Training images augmented: shift, zoom" in card
