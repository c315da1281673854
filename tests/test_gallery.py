"""The prototype gallery: brute-force check of the top-k, the patch rule, byte-identical save/load, errors."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, ConvNextImageProcessor, ViTImageProcessor

from conftest import tiny_resnet_config
from modeling_infodisent import InfoDisentForImageClassification
from modeling_infodisent.gallery import (
    GALLERY_INDEX_NAME,
    GALLERY_WEIGHTS_NAME,
    PrototypeGallery,
    box_from_map,
    compute_gallery,
    crop_patch,
    to_rgb,
    visible_region,
)
from modeling_infodisent.loading import load_model_and_gallery

SIZE = 96  # 3x3 feature grid for the tiny ResNet
TOP_K = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(
        tiny_resnet_config(), id2label={0: "cat", 1: "dog", 2: "bird"}
    ).eval()
    # A far-from-identity rotation, so that negative poles fire too (the backbone's map is >= 0 after its ReLU).
    with torch.no_grad():
        model.head.rotation.generator.normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def processor():
    return ViTImageProcessor(size={"height": SIZE, "width": SIZE})


def make_images(n=14, seed=0):
    """Images of different sizes and modes, with bright blobs so that poles peak at different places."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        h, w = 60 + 7 * (i % 5), 90 - 5 * (i % 4)
        array = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        r, c = rng.integers(0, h - 20), rng.integers(0, w - 20)
        array[r : r + 20, c : c + 20] = rng.integers(150, 256, 3, dtype=np.uint8)
        image = Image.fromarray(array)
        images.append(image.convert("L") if i % 3 == 0 else image)
    return images


def brute_force(model, processor, images):
    """Per image, on its own: pole activations (2, N, D) and locations (2, N, D, 2) from the model's forward."""
    acts, locs = [], []
    with torch.no_grad():
        for image in images:
            out = model(processor(to_rgb(image), return_tensors="pt")["pixel_values"])
            acts.append(torch.stack((out.pos_activations[0], out.neg_activations[0])).double().numpy())
            locs.append(torch.stack((out.pos_locations[0], out.neg_locations[0])).numpy())
    return np.stack(acts, axis=1), np.stack(locs, axis=1)


def test_gallery_is_the_brute_force_top_k(model, processor):
    images = make_images()
    labels = [i % 3 for i in range(len(images))]
    dataset = [{"image": im, "label": y} for im, y in zip(images, labels)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    gallery = compute_gallery(model, dataset, processor, top_k=TOP_K, batch_size=4, progress=False)
    assert model.training, "the model's mode must be restored"
    model.eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed during the gallery pass"

    acts, locs = brute_force(model, processor, images)
    assert gallery.num_channels == acts.shape[2] == model.config.num_features
    assert gallery.top_k == TOP_K and gallery.num_images == len(images)
    checked_dead = checked_alive = 0
    for sign_row, sign in ((0, 1), (1, -1)):
        for channel in range(gallery.num_channels):
            column = acts[sign_row, :, channel]
            firing = np.sort(column[column > 0])[::-1]
            entries = gallery.entries(channel, sign)
            if firing.size == 0:
                assert gallery.is_dead(channel, sign) and entries == []
                checked_dead += 1
                continue
            checked_alive += 1
            assert not gallery.is_dead(channel, sign)
            assert len(entries) == min(TOP_K, firing.size)
            # The stored activations are the k largest over the dataset, strongest first ...
            np.testing.assert_allclose([e.activation for e in entries], firing[: len(entries)], rtol=1e-5, atol=1e-6)
            for rank, entry in enumerate(entries):
                i = entry.source_id
                assert entry.rank == rank and entry.channel == channel and entry.sign == sign
                # ... and each really is that source image's activation, label and peak location.
                np.testing.assert_allclose(entry.activation, column[i], rtol=1e-5, atol=1e-6)
                assert entry.label == labels[i] and entry.label_name == ["cat", "dog", "bird"][labels[i]]
                assert entry.location == tuple(locs[sign_row, i, channel])
                # The patch shows exactly its box of the RGB source, and the box contains the peak cell's centre.
                source = to_rgb(images[i])
                np.testing.assert_array_equal(
                    np.asarray(entry.image), crop_patch(source, entry.box, gallery.patch_size)
                )
                left, top, right, bottom = entry.box
                row, col = entry.location
                cx, cy = (col + 0.5) * source.width / 3, (row + 0.5) * source.height / 3
                assert left <= cx <= right and top <= cy <= bottom
                assert right - left == bottom - top or right - left == source.width or bottom - top == source.height
    assert checked_alive > 0 and checked_dead >= 0
    assert gallery.max_activation(0, 1) == (gallery.entries(0, 1)[0].activation if not gallery.is_dead(0, 1) else 0.0)


def test_gallery_from_datasets_with_ids_and_class_names(model, processor):
    datasets = pytest.importorskip("datasets")
    images = make_images(8, seed=1)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["shirt", "shoe", "bag"]),
            "name": datasets.Value("string"),
        }
    )
    dataset = datasets.Dataset.from_dict(
        {"image": images, "label": [i % 3 for i in range(8)], "name": [f"img_{i:02d}" for i in range(8)]},
        features=features,
    )
    small = compute_gallery(model, dataset, processor, top_k=2, batch_size=3, id_column="name", progress=False)
    whole = compute_gallery(model, dataset, processor, top_k=2, batch_size=64, id_column="name", progress=False)
    found = 0
    for channel in range(model.config.num_features):
        for sign in (1, -1):
            a, b = small.entries(channel, sign), whole.entries(channel, sign)
            # The batch size does not change the result (ties are broken by dataset index).
            assert [(e.source_id, e.box) for e in a] == [(e.source_id, e.box) for e in b]
            for entry in a:
                index = int(entry.source_id.split("_")[1])
                assert entry.label == index % 3 and entry.label_name == ["shirt", "shoe", "bag"][index % 3]
                found += 1
    assert found > 0


def test_save_load_save_is_byte_identical(model, processor, tmp_path):
    dataset = [{"image": im, "label": 1} for im in make_images(6, seed=2)]
    gallery = compute_gallery(model, dataset, processor, top_k=2, batch_size=4, progress=False)
    assert PrototypeGallery.load(tmp_path / "nothing") is None
    gallery.save(tmp_path / "a")
    loaded = PrototypeGallery.load(tmp_path / "a")
    loaded.save(tmp_path / "b")
    for name in (GALLERY_INDEX_NAME, GALLERY_WEIGHTS_NAME):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not [f for f in os.listdir(tmp_path / "a") if f.endswith(".tmp")]
    for channel in range(gallery.num_channels):
        for sign in (1, -1):
            before, after = gallery.entries(channel, sign), loaded.entries(channel, sign)
            assert [(e.source_id, e.activation, e.box, e.location, e.label) for e in before] == [
                (e.source_id, e.activation, e.box, e.location, e.label) for e in after
            ]
            for x, y in zip(before, after):
                np.testing.assert_array_equal(np.asarray(x.image), np.asarray(y.image))
            assert gallery.is_dead(channel, sign) == loaded.is_dead(channel, sign)
    index = json.loads((tmp_path / "a" / GALLERY_INDEX_NAME).read_text())
    assert index["top_k"] == 2 and index["rule"]["threshold"] == 0.5 and len(index["poles"]) == 2 * gallery.num_channels


def test_load_rejects_broken_galleries(tmp_path):
    (tmp_path / GALLERY_INDEX_NAME).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="patch images"):
        PrototypeGallery.load(tmp_path)
    (tmp_path / GALLERY_WEIGHTS_NAME).write_bytes(b"")
    with pytest.raises(ValueError, match="not an InfoDisent prototype gallery"):
        PrototypeGallery.load(tmp_path)
    (tmp_path / GALLERY_INDEX_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid gallery index"):
        PrototypeGallery.load(tmp_path)


def test_box_rule_on_constructed_maps():
    maps = torch.zeros(3, 4, 4)
    maps[0, 1, 1], maps[0, 3, 3] = 1.0, 0.9  # two separate blobs: only the one around the peak counts
    maps[1, 0, 0], maps[1, 0, 1] = 1.0, 0.8  # a blob over two cells
    maps[2, 2, 2] = 1.0  # one cell, widened to the minimum box
    boxes = box_from_map(maps, (64, 64), min_box_fraction=0.0)
    np.testing.assert_allclose(boxes[0], [16, 16, 32, 32])
    np.testing.assert_allclose(boxes[1], [0, 0, 30, 16])
    boxes = box_from_map(maps, (64, 64), min_box_fraction=0.5)
    np.testing.assert_allclose(boxes[2], [24, 24, 56, 56])  # 32 px wide, centred on the cell's blob at 32..48


@pytest.mark.parametrize(
    "processor, size",
    [
        (ViTImageProcessor(size={"height": 32, "width": 32}, do_rescale=False, do_normalize=False), (80, 60)),
        (
            ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.5, do_rescale=False, do_normalize=False),
            (80, 60),
        ),
        (
            CLIPImageProcessor(
                size={"shortest_edge": 40},
                crop_size={"height": 24, "width": 32},
                do_rescale=False,
                do_normalize=False,
                do_convert_rgb=True,
            ),
            (60, 90),
        ),
    ],
)
def test_visible_region_matches_the_processor(processor, size):
    """Encode x and y in the pixel values, run the real processor, read back which source pixels the input shows."""
    width, height = size
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    array = np.stack([xs * 2, ys * 2, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    pixels = processor(Image.fromarray(array), return_tensors="pt")["pixel_values"][0].double().numpy()
    left, top, right, bottom = visible_region(processor, (width, height))
    in_h, in_w = pixels.shape[1:]
    # Centre of the first / last input pixel, in source coordinates (pixel centres at +0.5).
    sx, sy = (right - left) / in_w, (bottom - top) / in_h
    assert pixels[0, :, 0].mean() / 2 == pytest.approx(left + 0.5 * sx - 0.5, abs=1.0)
    assert pixels[0, :, -1].mean() / 2 == pytest.approx(right - 0.5 * sx - 0.5, abs=1.0)
    assert pixels[1, 0, :].mean() / 2 == pytest.approx(top + 0.5 * sy - 0.5, abs=1.0)
    assert pixels[1, -1, :].mean() / 2 == pytest.approx(bottom - 0.5 * sy - 0.5, abs=1.0)


def test_compute_gallery_rejects_bad_input(model, processor):
    with pytest.raises(ValueError, match="empty"):
        compute_gallery(model, [], processor, progress=False)
    with pytest.raises(ValueError, match="top_k"):
        compute_gallery(model, [{"image": make_images(1)[0], "label": 0}], processor, top_k=0, progress=False)
    with pytest.raises(KeyError, match="'label'"):
        compute_gallery(model, [{"image": make_images(1)[0], "y": 0}], processor, progress=False)


def test_load_model_and_gallery(model, processor, tmp_path):
    dataset = [{"image": im, "label": i % 3} for i, im in enumerate(make_images(5, seed=3))]
    gallery = compute_gallery(model, dataset, processor, top_k=2, progress=False)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded_model, loaded_processor, loaded_gallery = load_model_and_gallery(tmp_path)
    assert loaded_gallery is None  # not saved yet
    gallery.save(tmp_path)
    loaded_model, loaded_processor, loaded_gallery = load_model_and_gallery(str(tmp_path))
    assert not loaded_model.training
    assert loaded_processor.size["height"] == SIZE
    x = processor(make_images(1)[0].convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(loaded_model(x).logits, model(x).logits)
    assert loaded_gallery._index_text() == gallery._index_text()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_and_gallery(str(tmp_path / "missing" / "model"))


def test_load_model_and_gallery_hub_id_offline():
    # Tests run with HF_HUB_OFFLINE=1: a Hub id that is not in the cache fails with a message, not a traceback deep
    # inside huggingface_hub.
    with pytest.raises(FileNotFoundError, match="could not be downloaded from the Hugging Face Hub"):
        load_model_and_gallery("nobody-here/no-such-infodisent-model")


def test_unused_channels_are_skipped_and_patch_size_follows_small_images(model, processor, tmp_path):
    images = [im.resize((24, 30)) for im in make_images(6, seed=4)]
    dataset = [{"image": im, "label": i % 3} for i, im in enumerate(images)]
    full = compute_gallery(model, dataset, processor, top_k=2, skip_unused=False, progress=False)
    mask = model.head.classifier.prototype_mask
    saved = mask.clone()
    try:
        with torch.no_grad():
            mask[:, [1, 5]] = 0.0  # no class uses channels 1 and 5 any more
            mask[0, 7] = 0.0  # channel 7 is still used by classes 1 and 2
        pruned = compute_gallery(model, dataset, processor, top_k=2, progress=False)
    finally:
        with torch.no_grad():
            mask.copy_(saved)
    assert full.patch_size == pruned.patch_size == 24  # the first image's shorter side (< 64)
    assert pruned.unused_channels == {1, 5} and not full.unused_channels
    pruned.save(tmp_path)
    assert PrototypeGallery.load(tmp_path).unused_channels == {1, 5}
    for channel in range(model.config.num_features):
        for sign in (1, -1):
            if channel in (1, 5):
                assert pruned.is_unused(channel) and pruned.entries(channel, sign) == []
                assert not pruned.is_dead(channel, sign)
            else:
                assert not pruned.is_unused(channel)
                assert [(e.source_id, e.box) for e in pruned.entries(channel, sign)] == [
                    (e.source_id, e.box) for e in full.entries(channel, sign)
                ]


def test_weights_fingerprint_travels_with_the_gallery_and_a_mismatch_is_refused(model, processor, tmp_path):
    import copy

    from modeling_infodisent.loading import GalleryMismatchError, weights_fingerprint

    dataset = [{"image": im, "label": i % 3} for i, im in enumerate(make_images(4, seed=5))]
    gallery = compute_gallery(model, dataset, processor, top_k=1, progress=False)
    assert gallery.weights_fingerprint == weights_fingerprint(model)
    assert gallery.weights_fingerprint.startswith("sha256:") and len(gallery.weights_fingerprint) == 7 + 64
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    gallery.save(tmp_path)
    index = json.loads((tmp_path / GALLERY_INDEX_NAME).read_text())
    assert index["weights_fingerprint"] == gallery.weights_fingerprint
    loaded, _, loaded_gallery = load_model_and_gallery(tmp_path)
    assert weights_fingerprint(loaded) == loaded_gallery.weights_fingerprint == gallery.weights_fingerprint

    # One head weight changed (a run that rewrote model.safetensors and died before the gallery): refused.
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.classifier.bias[0] += 1e-3
    assert weights_fingerprint(other) != gallery.weights_fingerprint
    other.save_pretrained(tmp_path)
    with pytest.raises(GalleryMismatchError, match="was computed with other weights than its model.safetensors"):
        load_model_and_gallery(tmp_path)

    # A gallery written before fingerprints existed still loads (nothing to check it against).
    del index["weights_fingerprint"]
    (tmp_path / GALLERY_INDEX_NAME).write_text(json.dumps(index))
    _, _, legacy = load_model_and_gallery(tmp_path)
    assert legacy.weights_fingerprint is None


def test_weights_fingerprint_is_the_same_for_a_half_precision_model_saved_and_loaded(model, tmp_path):
    import copy

    from modeling_infodisent.loading import weights_fingerprint

    half = copy.deepcopy(model).to(torch.bfloat16)
    half.save_pretrained(tmp_path)
    loaded = InfoDisentForImageClassification.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert weights_fingerprint(loaded) == weights_fingerprint(half) != weights_fingerprint(model)
