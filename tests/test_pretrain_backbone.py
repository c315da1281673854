"""training/pretrain_backbone.py: validation held out of TRAIN, the reported test figure computed on the real test
split (an imagefolder's test/), every figure named by its split; named augmentations with flips switchable alone."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_assets import CLASSES, write_imagefolder

pytest.importorskip("datasets")
pytest.importorskip("accelerate")
pytest.importorskip("torchvision")

from training import pretrain_backbone  # noqa: E402
from training.data import AUGMENTATIONS, _augmentation, load_image_dataset, make_transform, parse_augment  # noqa: E402

TINY = [
    "--image_size",
    "16",
    "--embedding_size",
    "8",
    "--hidden_sizes",
    "8",
    "16",
    "--depths",
    "1",
    "1",
    "--num_train_epochs",
    "2",
    "--per_device_train_batch_size",
    "4",
    "--num_threads",
    "1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    data = write_imagefolder(root / "colours", n_train=10, n_test=5)
    # test/ and train/ tell apart: test/ holds one extra, wrongly filed image per class, so its row count and its
    # accuracy are its own.
    for c, name in enumerate(CLASSES):
        wrong = np.zeros((16, 16, 3), np.uint8)
        wrong[..., (c + 1) % 3] = 250
        Image.fromarray(wrong).save(root / "colours" / "test" / name / "wrong.png")
    out = root / "out"
    assert (
        pretrain_backbone.cli(
            [
                "--dataset_name",
                data,
                "--output_dir",
                str(out),
                "--augment",
                "crop",
                "--validation_fraction",
                "0.2",
                *TINY,
            ]
        )
        == 0
    )
    return root, out, json.loads((out / "training_results.json").read_text())


def _accuracy_on(folder, split_dir):
    """The saved model's accuracy on one imagefolder, computed here, independently of the script."""
    from transformers import AutoImageProcessor, ResNetForImageClassification

    model = ResNetForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    data, *_ = load_image_dataset(train_dir=str(split_dir), train_val_split=0.5)
    images = [im for s in ("train", "validation") for im in data[s]["image"]]
    labels = [y for s in ("train", "validation") for y in data[s]["label"]]
    with torch.no_grad():
        pred = model(**processor([im.convert("RGB") for im in images], return_tensors="pt")).logits.argmax(-1)
    names = data["train"].features["label"].names
    # The model's own label names map the folder's classes (both alphabetical here, checked).
    assert [model.config.id2label[i] for i in range(len(names))] == names
    return float((pred.numpy() == np.array(labels)).mean()), len(labels)


def test_test_figure_is_computed_on_test_folder(trained):
    root, out, results = trained
    splits = results["splits"]
    assert splits["train"]["rows"] + splits["validation"]["rows"] == 10 * len(CLASSES)  # validation out of TRAIN
    assert splits["validation"]["rows"] == 6 and "held out from train" in splits["validation"]["source"]
    assert splits["test"]["rows"] == 6 * len(CLASSES) and splits["test"]["source"] == "test"
    accuracy, rows = _accuracy_on(out, root / "colours" / "test")
    assert rows == splits["test"]["rows"]
    assert results["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert "full_test_accuracy" not in results  # no figure under a name its split does not have
    assert 0.0 <= results["validation_accuracy"] <= 1.0
    assert results["augment"] == ["shift", "zoom"]
    card = (out / "README.md").read_text()
    assert f"{100 * results['test_accuracy']:.2f}% top-1 on its **test** split (18 images" in card
    assert "on its **validation** split (6 images" in card and "augmentation `shift,zoom`" in card


def test_dataset_without_test_split_reports_none(tmp_path):
    data = write_imagefolder(tmp_path / "colours", n_train=6, n_test=0)
    for name in CLASSES:
        (tmp_path / "colours" / "test" / name).rmdir()
    (tmp_path / "colours" / "test").rmdir()
    out = tmp_path / "out"
    assert pretrain_backbone.cli(["--dataset_name", data, "--output_dir", str(out), *TINY]) == 0
    results = json.loads((out / "training_results.json").read_text())
    assert results["test_accuracy"] is None and "test" not in results["splits"]
    assert results["augment"] == ["flip", "shift", "zoom"]  # the default
    assert "no test split" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--augment", "flip,sideways"],
            "error: Unknown augmentation 'sideways': choose from flip, shift, zoom, crop "
            "(= shift,zoom), or none (alone).",
        ),
        (["--validation_fraction", "1.5"], "error: --validation_fraction must be in (0, 1), got 1.5."),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capfd, argv, message):
    assert pretrain_backbone.cli(["--output_dir", str(tmp_path / "out"), *argv]) == 2
    assert capfd.readouterr().err.strip().splitlines() == [message]
    assert not (tmp_path / "out").exists()


def test_named_augmentations_and_flip_alone():
    assert parse_augment(True) == ("flip", "shift", "zoom")
    assert parse_augment("none") == parse_augment(False) == parse_augment(None) == ()
    assert parse_augment("crop") == parse_augment("zoom, shift") == ("shift", "zoom")
    assert parse_augment(["flip"]) == ("flip",) and set(AUGMENTATIONS) == {"flip", "shift", "zoom"}
    # An asymmetric image: a bright left half.
    array = np.zeros((8, 8, 3), np.uint8)
    array[:, :4] = 200
    image, mirrored = Image.fromarray(array), Image.fromarray(array[:, ::-1].copy())
    torch.manual_seed(0)
    flip_only = [np.asarray(_augmentation(parse_augment("flip"))(image)) for _ in range(30)]
    assert any(np.array_equal(a, array) for a in flip_only) and any(
        np.array_equal(a, np.asarray(mirrored)) for a in flip_only
    )
    crop = _augmentation(parse_augment("crop"))
    outputs = [np.asarray(crop(image)) for _ in range(30)]
    # Shift and zoom move the edge but never mirror it: the left half stays the brighter one.
    assert all(o[:, :3].mean() > o[:, 5:].mean() for o in outputs)
    assert not all(np.array_equal(o, array) for o in outputs)  # it does augment

    class Identity:  # an image processor that returns the pixels as they are
        image_mean = None

        def __call__(self, images, return_tensors=None):
            return {
                "pixel_values": torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in images])
            }

    none = make_transform(Identity(), "image", "label", augment="none", num_channels=3)
    assert torch.equal(
        none({"image": [image], "label": [0]})["pixel_values"][0], torch.from_numpy(array).permute(2, 0, 1)
    )


def test_fashion_mnist_card_names_each_split(trained, tmp_path):
    """The default (Fashion-MNIST) card from the fields main() writes for it: test rows are test, validation is
    held out of train (the card the tiny run above cannot produce: it needs the 70,000-image set)."""
    _, out, results = trained
    results = dict(
        results,
        full_test_accuracy=0.9,
        subset_test_accuracy=0.91,
        validation_accuracy=0.92,
        splits={
            "train": {"rows": 54000, "source": "x"},
            "validation": {"rows": 6000, "source": "y"},
            "test": {"rows": 10000, "source": "z"},
            "subset_test": {"rows": 1000, "source": "w"},
        },
    )
    from transformers import AutoConfig

    pretrain_backbone.write_model_card(tmp_path, results, AutoConfig.from_pretrained(out).to_dict())
    card = (tmp_path / "README.md").read_text()
    assert "trained from scratch on\n54,000 images of the Fashion-MNIST training set (the other\n6,000 held out" in card
    assert "| top-1 accuracy, **test**: full Fashion-MNIST test set (10,000 images) | **90.00%** |" in card
    assert "| top-1 accuracy, **validation**: held out of the training set (6,000 images) | 92.00% |" in card
    assert "augmentation\n`shift,zoom` (random translation ≤ 8% of the side + random zoom 0.9–1.1)" in card
