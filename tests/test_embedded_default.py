"""The bundled defaults: the Fashion-MNIST subset and the pre-trained black-box backbone (issue 3)."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import datasets  # noqa: E402

from training.data import (  # noqa: E402
    DEFAULT_BACKBONE,
    DEFAULT_DATASET,
    collate_fn,
    load_image_dataset,
    make_transform,
)

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BUILDER = os.path.join(REPO_ROOT, "training", "build_fashion_mnist_subset.py")


def _folder_bytes(path):
    return sum(
        os.path.getsize(f) for f in glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isfile(f)
    )


# ------------------------------------------------------------------------------------------ dataset
def test_default_paths_are_absolute_and_exist():
    assert os.path.isabs(DEFAULT_DATASET) and os.path.isdir(DEFAULT_DATASET)
    assert os.path.isabs(DEFAULT_BACKBONE)
    assert os.path.isfile(os.path.join(DEFAULT_DATASET, "README.md"))
    assert _folder_bytes(DEFAULT_DATASET) < 5 * 2**20


def test_subset_loads_with_load_image_dataset():
    dd, img, lbl, id2label = load_image_dataset(DEFAULT_DATASET)
    assert set(dd) == {"train", "validation", "test"}
    assert (img, lbl) == ("image", "label")
    assert id2label == dict(enumerate(CLASS_NAMES))
    assert isinstance(dd["train"].features["image"], datasets.Image)
    # The subset's train split minus the held-out validation split (15%, stratified), and its untouched test split.
    for split, per_class in (("train", 425), ("validation", 75), ("test", 100)):
        labels = dd[split]["label"]
        assert len(labels) == 10 * per_class
        assert [labels.count(c) for c in range(10)] == [per_class] * 10
    im = dd["test"][0]["image"]
    assert im.size == (28, 28) and im.mode == "L"


def test_subset_loads_with_plain_datasets():
    files = {
        "train": os.path.join(DEFAULT_DATASET, "train-00000.parquet"),
        "test": os.path.join(DEFAULT_DATASET, "test-00000.parquet"),
    }
    dd = datasets.load_dataset("parquet", data_files=files)
    assert set(dd) == {"train", "test"}
    assert {"image", "label"} <= set(dd["train"].column_names)
    assert dd["test"].features["label"].names == CLASS_NAMES
    assert (len(dd["train"]), len(dd["test"])) == (5000, 1000)
    # ids point into the original idx files and are unique
    assert len(set(dd["test"]["id"])) == 1000 and max(dd["test"]["id"]) < 10000


def test_builder_missing_source_names_the_apt_package(tmp_path):
    r = subprocess.run(
        [sys.executable, BUILDER, "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode != 0
    assert "dataset-fashion-mnist" in r.stderr
    assert str(tmp_path / "nowhere") in r.stderr
    assert not glob.glob(str(tmp_path / "out" / "*.parquet"))


def test_builder_is_deterministic_small(tmp_path):
    pytest.importorskip("numpy")
    from training.build_fashion_mnist_subset import DEFAULT_SOURCE, build_subset

    if not os.path.isfile(
        os.path.join(os.environ.get("FASHION_MNIST_DIR", DEFAULT_SOURCE), "t10k-images-idx3-ubyte.gz")
    ):
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    counts = build_subset(tmp_path, per_class_train=2, per_class_test=1, seed=0)
    assert counts == {"train": 20, "test": 10}
    dd = datasets.load_dataset("parquet", data_files={"train": str(tmp_path / "train-00000.parquet")})
    bundled = datasets.load_dataset(
        "parquet", data_files={"train": os.path.join(DEFAULT_DATASET, "train-00000.parquet")}
    )
    assert set(dd["train"]["id"]) <= set(range(60000))
    assert len(bundled["train"]) == 5000


# ----------------------------------------------------------------------------------------- backbone
@pytest.fixture(scope="module")
def backbone():
    if not os.path.isfile(os.path.join(DEFAULT_BACKBONE, "model.safetensors")):
        pytest.fail(f"bundled backbone missing: run python training/pretrain_backbone.py ({DEFAULT_BACKBONE})")
    from transformers import AutoImageProcessor, ResNetForImageClassification

    model = ResNetForImageClassification.from_pretrained(DEFAULT_BACKBONE).eval()
    processor = AutoImageProcessor.from_pretrained(DEFAULT_BACKBONE)
    with open(os.path.join(DEFAULT_BACKBONE, "training_results.json")) as f:
        results = json.load(f)
    return model, processor, results


def test_backbone_folder(backbone):
    model, processor, results = backbone
    assert _folder_bytes(DEFAULT_BACKBONE) < 8 * 2**20
    for key in (
        "full_test_accuracy",
        "subset_test_accuracy",
        "feature_map_shape",
        "train_runtime_s",
        "epochs",
        "command",
    ):
        assert key in results
    assert model.config.id2label == dict(enumerate(CLASS_NAMES))
    assert os.path.isfile(os.path.join(DEFAULT_BACKBONE, "README.md"))
    size = processor.size
    x = torch.zeros(1, 3, size["height"], size["width"])
    with torch.no_grad():
        fmap = model.resnet(x).last_hidden_state
    assert list(fmap.shape[1:]) == results["feature_map_shape"]
    assert fmap.shape[-1] >= 7 and fmap.shape[-2] >= 7


def test_backbone_accuracy_on_bundled_test_split(backbone):
    model, processor, results = backbone
    dd, img, lbl, _ = load_image_dataset(DEFAULT_DATASET)
    test = dd["test"].with_transform(make_transform(processor, img, lbl))
    loader = torch.utils.data.DataLoader(test, batch_size=250, collate_fn=collate_fn)
    correct = 0
    with torch.no_grad():
        for batch in loader:
            correct += (model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch["labels"]).sum().item()
    acc = correct / len(test)
    assert abs(acc - results["subset_test_accuracy"]) <= 0.01, (acc, results["subset_test_accuracy"])
    assert results["full_test_accuracy"] >= 0.90
