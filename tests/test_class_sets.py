"""Data whose classes cannot train a classifier is refused naming the folder (issue 26, training/class_sets.py):
splits with different class sets, one class, no images, empty class folders."""

import pytest
from PIL import Image

from training.data import load_image_dataset


def _imagefolder(root, classes, per_class=2, empty=()):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(0 if name in empty else per_class):
            Image.new("RGB", (8, 8), (40 * i, 90, 10 * len(name))).save(root / name / f"{i}.png")
    return str(root)


def _refused(**kwargs) -> str:
    with pytest.raises(ValueError) as error:
        load_image_dataset(**kwargs)
    return str(error.value)


def test_a_validation_class_that_train_lacks_is_refused(tmp_path):
    train = _imagefolder(tmp_path / "train", ["cat", "dog", "owl"])
    val = _imagefolder(tmp_path / "val", ["cat", "dog", "owl", "yak"])
    assert _refused(train_dir=train, validation_dir=val) == (
        f"The classes of --train_dir {train!r} and --validation_dir {val!r} differ (only in --validation_dir {val!r}: "
        "'yak'); every split needs the same classes (a class the training split lacks is never learnt). Rename or "
        "move the class folders so that they match."
    )


def test_a_test_folder_missing_a_class_is_refused(tmp_path):
    train = _imagefolder(tmp_path / "train", ["cat", "dog", "owl"])
    test = _imagefolder(tmp_path / "test", ["cat", "dog"])
    message = _refused(train_dir=train, test_dir=test)
    assert message.startswith(
        f"The classes of --train_dir {train!r} and --test_dir {test!r} differ (only in --train_dir {train!r}: 'owl');"
    )


def test_matching_folders_load(tmp_path):
    train = _imagefolder(tmp_path / "train", ["cat", "dog"])
    val = _imagefolder(tmp_path / "val", ["cat", "dog"])
    dataset, _, _, id2label = load_image_dataset(train_dir=train, validation_dir=val)
    assert id2label == {0: "cat", 1: "dog"} and len(dataset["validation"]) == 4


def test_one_class_folder_needs_two_classes(tmp_path):
    train = _imagefolder(tmp_path / "train", ["cat"])
    assert _refused(train_dir=train) == (
        f"--train_dir {train!r} has one class folder ('cat'): InfoDisent needs at least two classes; expected one "
        "sub-folder of images per class (PNG, JPEG, WebP, BMP, GIF or TIFF files)."
    )
    data = tmp_path / "data"
    _imagefolder(data / "train", ["cat"])
    _imagefolder(data / "test", ["cat", "dog"])
    assert _refused(dataset_name=str(data)).startswith(
        f"--dataset_name {str(data)!r}, split folder 'train' has one class folder ('cat'): InfoDisent needs at least "
        "two classes;"
    )


def test_a_folder_of_other_files_or_empty_class_folders_is_named(tmp_path):
    csv = tmp_path / "csv"
    (csv / "a").mkdir(parents=True)
    (csv / "a" / "rows.csv").write_text("x,y\n1,2\n")
    (csv / "notes.txt").write_text("hello")
    assert _refused(train_dir=str(csv)) == (
        f"--train_dir {str(csv)!r} holds no images (found 2 other files (.csv, .txt)); expected one sub-folder of "
        "images per class (PNG, JPEG, WebP, BMP, GIF or TIFF files)."
    )
    train = _imagefolder(tmp_path / "train", ["cat", "dog", "owl", "yak"], empty=("owl", "yak"))
    assert _refused(train_dir=train).startswith(
        f"--train_dir {train!r}: the class folder(s) 'owl', 'yak' hold no images; expected one sub-folder"
    )
