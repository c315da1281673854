"""Unit tests of training/data.py: to_rgb, load_image_dataset (sources, splits, errors), transforms."""

import io
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import datasets  # noqa: E402

from training.data import collate_fn, load_image_dataset, make_transform, to_rgb  # noqa: E402


# ------------------------------------------------------------------------------------------- to_rgb
@pytest.mark.parametrize("mode", ["L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK", "1", "YCbCr"])
def test_to_rgb_modes(mode):
    out = to_rgb(Image.new(mode, (6, 4)))
    assert out.mode == "RGB" and out.size == (6, 4)


def test_to_rgb_alpha_on_white():
    im = Image.new("RGBA", (3, 3), (10, 20, 30, 0))
    im.putpixel((1, 1), (10, 20, 30, 255))
    arr = np.asarray(to_rgb(im))
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[1, 1].tolist() == [10, 20, 30]
    la = Image.new("LA", (2, 2), (0, 0))
    assert np.asarray(to_rgb(la))[0, 0].tolist() == [255, 255, 255]


def test_to_rgb_16bit_scaled():
    a = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    im = Image.fromarray(a)
    assert im.mode.startswith("I;16")
    arr = np.asarray(to_rgb(im))[..., 0]
    assert arr.tolist() == [[0, 255], [100, 200]]


def test_to_rgb_palette_and_numpy():
    p = Image.new("P", (2, 2))
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 1)
    assert np.asarray(to_rgb(p))[0, 0].tolist() == [200, 100, 50]
    assert to_rgb(np.zeros((5, 5), np.uint8)).mode == "RGB"
    assert to_rgb(np.zeros((5, 5, 4), np.uint8)).mode == "RGB"
    assert np.asarray(to_rgb(np.ones((2, 2), np.float32)))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("bad", ["image.png", None, 3, np.zeros((2, 2, 2, 2))])
def test_to_rgb_rejects_non_images(bad):
    with pytest.raises(ValueError):
        to_rgb(bad)


# ----------------------------------------------------------------------------------- dataset helpers
def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, format="PNG")
    return buf.getvalue()


def _ds(n, label_feature=None, labels=None, image_name="image", label_name="label"):
    labels = labels if labels is not None else [i % 2 for i in range(n)]
    feats = datasets.Features(
        {image_name: datasets.Image(), label_name: label_feature or datasets.ClassLabel(names=["a", "b"])}
    )
    return datasets.Dataset.from_dict(
        {image_name: [{"bytes": _png(10 * i % 255), "path": None} for i in range(n)], label_name: labels},
        features=feats,
    )


def _imagefolder(root, classes=("cat", "dog"), per_class=4):
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / c / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------ sources
def test_parquet_prefix_files_validation_held_out_never_the_test_split(tmp_path):
    _ds(20).to_parquet(str(tmp_path / "train-00000.parquet"))
    _ds(4).to_parquet(str(tmp_path / "test-00000.parquet"))
    dd, img, lbl, id2label = load_image_dataset(str(tmp_path), train_val_split=0.25)
    assert set(dd) == {"train", "validation", "test"}
    # The test split stays the test split; the schedule's validation split is held out from train (stratified).
    assert (len(dd["train"]), len(dd["validation"]), len(dd["test"])) == (15, 5, 4)
    assert sorted(dd["train"]["image"][i].getpixel((0, 0)) for i in range(15)) != sorted(
        dd["validation"]["image"][i].getpixel((0, 0)) for i in range(5)
    )
    assert dd.split_sources == {
        "train": "train (the other 15 rows)",
        "validation": "held out from train (5 of 20 rows, train_val_split=0.25, seed 0)",
        "test": "test",
    }
    assert (img, lbl) == ("image", "label")
    assert id2label == {0: "a", 1: "b"}


def test_parquet_subfolders_validation_preferred_over_test(tmp_path):
    for split, n in (("train", 6), ("validation", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        _ds(n).to_parquet(str(tmp_path / split / "data.parquet"))
    dd, *_ = load_image_dataset(str(tmp_path))
    assert (len(dd["train"]), len(dd["validation"]), len(dd["test"])) == (6, 3, 2)
    assert dd.split_sources == {"train": "train", "validation": "validation", "test": "test"}


def test_parquet_train_only_is_split_stratified(tmp_path):
    _ds(40).to_parquet(str(tmp_path / "train.parquet"))
    dd, *_ = load_image_dataset(str(tmp_path), train_val_split=0.25, seed=1)
    assert (len(dd["train"]), len(dd["validation"])) == (30, 10)
    assert sorted(dd["validation"]["label"]) == [0] * 5 + [1] * 5
    dd2, *_ = load_image_dataset(str(tmp_path), train_val_split=0.25, seed=1)
    assert dd2["validation"].to_dict()["label"] == dd["validation"].to_dict()["label"]


def test_integer_labels_and_column_detection_by_name(tmp_path):
    ds = _ds(6, label_feature=datasets.Value("int64"), labels=[0, 1, 2, 0, 1, 2], image_name="img", label_name="labels")
    ds.to_parquet(str(tmp_path / "train.parquet"))
    dd, img, lbl, id2label = load_image_dataset(str(tmp_path), train_val_split=0.5)
    assert (img, lbl) == ("img", "labels")
    assert id2label == {0: "0", 1: "1", 2: "2"}


def test_imagefolder_dirs(tmp_path):
    train = _imagefolder(tmp_path / "tr")
    val = _imagefolder(tmp_path / "va", per_class=2)
    dd, img, lbl, id2label = load_image_dataset(train_dir=str(train), validation_dir=str(val))
    assert (len(dd["train"]), len(dd["validation"])) == (8, 4)
    assert sorted(id2label.values()) == ["cat", "dog"]
    dd, *_ = load_image_dataset(str(train), train_val_split=0.5)
    assert (len(dd["train"]), len(dd["validation"])) == (4, 4)


# ------------------------------------------------------------------------------------------- errors
def test_error_missing_path():
    with pytest.raises(ValueError, match="neither an existing local folder"):
        load_image_dataset("/definitely/not/here")
    with pytest.raises(ValueError, match="neither an existing local folder"):
        load_image_dataset("nobody-xyz/no-such-dataset-123")
    with pytest.raises(ValueError, match="not an existing folder"):
        load_image_dataset(train_dir="/definitely/not/here")


def test_error_missing_column_lists_columns(tmp_path):
    _ds(4).to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(ValueError, match=r"columns \['image', 'label'\]"):
        load_image_dataset(str(tmp_path), image_column_name="pixels")
    with pytest.raises(ValueError, match=r"columns \['image', 'label'\]"):
        load_image_dataset(str(tmp_path), label_column_name="target")
    nolabel = datasets.Dataset.from_dict(
        {"image": [{"bytes": _png(1), "path": None}] * 3, "caption": ["x"] * 3},
        features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")}),
    )
    (tmp_path / "nl").mkdir()
    nolabel.to_parquet(str(tmp_path / "nl" / "train.parquet"))
    with pytest.raises(ValueError, match=r"No label column.*\['image', 'caption'\]"):
        load_image_dataset(str(tmp_path / "nl"))


def test_error_float_label(tmp_path):
    _ds(4, label_feature=datasets.Value("float32"), labels=[0.0, 1.0, 0.5, 1.0]).to_parquet(
        str(tmp_path / "train.parquet")
    )
    with pytest.raises(ValueError, match="float32"):
        load_image_dataset(str(tmp_path))


def test_error_fewer_than_two_classes_names_the_split(tmp_path):
    _ds(6, labels=[1] * 6).to_parquet(str(tmp_path / "train.parquet"))
    _ds(2).to_parquet(str(tmp_path / "validation.parquet"))
    with pytest.raises(ValueError) as error:
        load_image_dataset(str(tmp_path))
    assert str(error.value) == (
        "The training split has 6 rows of 1 class(es) only (label 1 ('b')): InfoDisent needs at least two classes in "
        "the training split (column 'label')."
    )


@pytest.mark.parametrize("cut", [0, 40])
def test_error_corrupt_image_names_the_file(tmp_path, cut):
    """A zero-byte or truncated image fails with one line naming its file, wherever it is decoded."""
    train = _imagefolder(tmp_path / "tr", per_class=3)
    bad = train / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:cut])
    dd, img, lbl, _ = load_image_dataset(train_dir=str(train), validation_dir=str(_imagefolder(tmp_path / "va")))
    index = next(
        i
        for i, row in enumerate(dd["train"].cast_column(img, datasets.Image(decode=False))[img])
        if row["path"] == str(bad)
    )
    transformed = dd["train"].with_transform(make_transform(_processor(), img, lbl))
    with pytest.raises(ValueError, match=rf"^Cannot read the image file '{bad}': .*\. Remove or replace it\.$"):
        transformed[[index]]
    assert transformed[[i for i in range(len(dd["train"])) if i != index]]["pixel_values"]  # the others still load


def test_error_empty_split(tmp_path):
    _ds(4).to_parquet(str(tmp_path / "train.parquet"))
    _ds(0, labels=[]).to_parquet(str(tmp_path / "test.parquet"))
    with pytest.raises(ValueError, match="empty"):
        load_image_dataset(str(tmp_path))


# --------------------------------------------------------------------------------------- transforms
def _processor(channels=3):
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * channels, image_std=[0.5] * channels)


def test_make_transform_gives_a_grayscale_backbone_one_channel():
    """A processor normalising one channel (a num_channels=1 backbone's) gets grayscale images, whatever their mode;
    a processor that contradicts the backbone's channel count is refused."""
    rgba = Image.new("RGBA", (8, 8), (200, 100, 0, 255))
    ds = datasets.Dataset.from_dict(
        {"image": [rgba, Image.new("L", (8, 8), 77)], "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    gray = ds.with_transform(make_transform(_processor(1), "image", "label"))[[0, 1]]["pixel_values"]
    assert [tuple(p.shape) for p in gray] == [(1, 16, 16), (1, 16, 16)]
    expected = (np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32)[0, 0] / 255 - 0.5) / 0.5
    assert float(gray[0][0, 0, 0]) == pytest.approx(float(expected), abs=1e-6)
    assert float(gray[1][0, 0, 0]) == pytest.approx((77 / 255 - 0.5) / 0.5, abs=1e-6)
    with pytest.raises(
        ValueError, match=r"^The backbone takes 1-channel images but its image processor normalises 3 channels"
    ):
        make_transform(_processor(3), "image", "label", num_channels=1)
    assert tuple(ds.with_transform(make_transform(_processor(3), "image", "label"))[[1]]["pixel_values"][0].shape) == (
        3,
        16,
        16,
    )
    with pytest.raises(ValueError, match="4-channel"):
        make_transform(_processor(), "image", "label", num_channels=4)


def test_make_transform_and_collate():
    from transformers import ViTImageProcessor

    proc = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ds = _ds(5)
    for augment in (False, True):
        t = ds.with_transform(make_transform(proc, "image", "label", augment=augment))
        ex = t[0]
        assert ex["pixel_values"].shape == (3, 16, 16) and ex["pixel_values"].dtype == torch.float32
        assert isinstance(ex["labels"], int)
        batch = collate_fn([t[i] for i in range(5)])
        assert batch["pixel_values"].shape == (5, 3, 16, 16)
        assert batch["labels"].tolist() == [0, 1, 0, 1, 0] and batch["labels"].dtype == torch.long
    # Without augmentation the transform is exactly the processor applied to the RGB image.
    t = ds.with_transform(make_transform(proc, "image", "label"))
    ref = proc(to_rgb(ds[3]["image"]), return_tensors="pt")["pixel_values"][0]
    assert torch.equal(t[3]["pixel_values"], ref)


def test_local_files_are_not_reported_as_a_download(tmp_path, monkeypatch, capfd):
    # datasets shows its pass over >= 16 files as a progress bar; for files already on disk it must not say
    # "Downloading". A fresh cache, so that the load really runs.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    for label in ("a", "b"):
        (tmp_path / "data" / "train" / label).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / "data" / "train" / label / f"{i}.png")
    dataset, *_ = load_image_dataset(str(tmp_path / "data"), train_val_split=0.2)
    assert len(dataset["train"]) + len(dataset["validation"]) == 20
    err = capfd.readouterr().err
    assert "Reading local files" in err and "Downloading" not in err
