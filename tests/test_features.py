"""The frozen-backbone feature cache (training/features.py) and the evaluation / linear probe on it
(training/fit.py)."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import tiny_resnet_config

datasets = pytest.importorskip("datasets")
from PIL import Image  # noqa: E402
from transformers import ResNetForImageClassification, ViTImageProcessor  # noqa: E402

import training.features as features_module  # noqa: E402
from modeling_infodisent import InfoDisentForImageClassification  # noqa: E402
from modeling_infodisent.metrics import explanation_size  # noqa: E402
from training.data import make_transform, to_rgb  # noqa: E402
from training.evaluation import evaluate, train_linear_probe  # noqa: E402
from training.features import _shard_bounds, get_or_extract_features  # noqa: E402

LABELS = {0: "red", 1: "green", 2: "blue"}


def make_images(n_per_class: int, seed: int, size: int = 24):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in LABELS:
        for _ in range(n_per_class):
            array = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
            array[..., label] += 150
            image = Image.fromarray(array)
            images.append(image.convert("L") if len(images) % 5 == 0 else image)  # some greyscale: converted to RGB
            labels.append(label)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(LABELS.values()))})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    head_model = ResNetForImageClassification(
        tiny_resnet_config(num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    ).eval()
    model = InfoDisentForImageClassification.from_backbone(head_model, id2label=LABELS).eval()
    processor = ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    dataset = make_images(7, seed=1)
    return model, head_model, processor, dataset


def extract(setup, cache_dir, dataset=None, processor=None, head=True, **kwargs):
    model, head_model, default_processor, default_dataset = setup
    processor = processor or default_processor
    dataset = dataset if dataset is not None else default_dataset
    return get_or_extract_features(
        model,
        dataset,
        processor,
        "image",
        "label",
        make_transform(processor, "image", "label"),
        cache_dir=str(cache_dir),
        head_model=head_model if head else None,
        batch_size=8,
        **kwargs,
    )


def test_cache_holds_exactly_what_the_model_computes(setup, tmp_path):
    model, head_model, processor, dataset = setup
    cache = extract(setup, tmp_path)
    assert not cache.reused and len(cache) == len(dataset) == 21
    pixel_values = processor([to_rgb(im) for im in dataset["image"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.extract_features(pixel_values)
        expected_logits = head_model(pixel_values=pixel_values).logits
    got = cache.__getitems__(list(range(len(cache))))
    assert got["features"].shape == expected.shape == (21, 32, 2, 2)
    torch.testing.assert_close(got["features"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["teacher_logits"], expected_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["labels"].numpy(), np.array(dataset["label"]))
    np.testing.assert_array_equal(got["index"].numpy(), np.arange(21))
    np.testing.assert_allclose(cache.array("pooled"), expected.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    # Stored as plain .npy arrays (no pickle) plus JSON metadata.
    meta = json.load(open(os.path.join(cache.folder, "meta.json")))
    assert meta["num_rows"] == 21 and meta["feature_shape"] == [32, 2, 2]
    assert sorted(f for f in os.listdir(cache.folder) if f.endswith(".npy")) == [
        f"shard-00000-of-00001.{name}.npy" for name in ("features", "labels", "logits", "pooled")
    ]
    arr = np.load(os.path.join(cache.folder, "shard-00000-of-00001.features.npy"), mmap_mode="r", allow_pickle=False)
    assert isinstance(arr, np.memmap)


def test_dataloader_workers_extract_the_same_rows_in_the_same_order(setup, tmp_path):
    plain = extract(setup, tmp_path / "plain")
    workers = extract(setup, tmp_path / "workers", num_workers=2)
    rows = list(range(len(plain)))
    a, b = plain.__getitems__(rows), workers.__getitems__(rows)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_extraction_runs_channels_last_and_gives_the_weights_back_contiguous(setup, tmp_path, monkeypatch):
    """Channels-last convolutions are faster (benchmarks/extraction_speed.py); the weights must come back in the
    default layout, or save_pretrained (safetensors) would refuse them."""
    model, head_model, *_ = setup
    seen = []
    original = model.extract_features

    def spy(pixel_values):
        weight = next(w for w in model.backbone.parameters() if w.dim() == 4)  # the stem's convolution
        seen.append((pixel_values.is_contiguous(memory_format=torch.channels_last), weight.is_contiguous()))
        return original(pixel_values)

    monkeypatch.setattr(model, "extract_features", spy)
    extract(setup, tmp_path, head=False)
    assert seen and all(inputs_cl and not weights_default for inputs_cl, weights_default in seen)
    for module in (model, head_model):
        assert all(t.is_contiguous() for t in module.parameters())
        # Extraction runs in inference mode; the weights it handed back must still take gradients (Grad-CAM, input x
        # gradient and fine-tuning run through the backbone after it, in the same process).
        assert not any(t.is_inference() for t in (*module.parameters(), *module.buffers()))
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    model.extract_features(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    model.save_pretrained(tmp_path / "saved")  # safetensors: contiguous tensors only


def test_cache_is_reused_and_invalidated(setup, tmp_path, monkeypatch):
    model, head_model, processor, dataset = setup
    first = extract(setup, tmp_path)
    mtimes = {f: os.stat(os.path.join(first.folder, f)).st_mtime_ns for f in os.listdir(first.folder)}

    calls = []
    real_extract = features_module._extract_block
    monkeypatch.setattr(features_module, "_extract_block", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    again = extract(setup, tmp_path)
    assert again.reused and again.folder == first.folder and calls == []
    assert {f: os.stat(os.path.join(first.folder, f)).st_mtime_ns for f in os.listdir(first.folder)} == mtimes

    # Different preprocessing (normalisation), different data, a backbone with other weights: never the old cache.
    other_processor = ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.4] * 3, image_std=[0.5] * 3)
    by_processor = extract(setup, tmp_path, processor=other_processor)
    by_data = extract(setup, tmp_path, dataset=dataset.select(range(20)))
    torch.manual_seed(1)
    other_head = ResNetForImageClassification(tiny_resnet_config(num_labels=3)).eval()
    other_model = InfoDisentForImageClassification.from_backbone(other_head, id2label=LABELS).eval()
    by_backbone = extract((other_model, other_head, processor, dataset), tmp_path)
    without_head = extract(setup, tmp_path, head=False)
    folders = {first.folder, by_processor.folder, by_data.folder, by_backbone.folder, without_head.folder}
    assert len(folders) == 5 and len(calls) == 4
    assert not any(c.reused for c in (by_processor, by_data, by_backbone, without_head))
    assert not without_head.has_teacher and "logits" not in os.listdir(without_head.folder)
    assert not np.allclose(by_processor.array("pooled"), first.array("pooled"))


def test_interrupted_extraction_is_redone(setup, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(features_module, "_extract_block", crash)
    with pytest.raises(KeyboardInterrupt):
        extract(setup, tmp_path)
    monkeypatch.undo()
    cache = extract(setup, tmp_path)  # no meta.json was written: the half-written folder is not trusted
    assert not cache.reused and len(cache) == 21


def test_concurrent_extractions_of_one_split_do_not_collide(setup, tmp_path, monkeypatch):
    """Two runs extracting the same split into one cache at the same time (a sweep): the second starts and finishes
    while the first is half-way; both succeed with the same features and only the complete folder remains. (Before
    staging folders, the second deleted the first's half-written files: "No such file or directory ...tmp.npy".)"""
    real_write, nested = features_module._ShardWriter.write, []

    def write_then_let_another_run_extract(self, batch):
        real_write(self, batch)
        if not nested:
            nested.append(None)  # the other run's own writes go straight through
            nested[0] = extract(setup, tmp_path)

    monkeypatch.setattr(features_module._ShardWriter, "write", write_then_let_another_run_extract)
    first = extract(setup, tmp_path)
    second = nested[0]
    assert first.folder == second.folder and not first.reused and not second.reused
    for name in ("features", "pooled", "labels", "logits"):
        np.testing.assert_array_equal(first.array(name), second.array(name))
    assert os.listdir(tmp_path) == [os.path.basename(first.folder)]


def test_abandoned_staging_folders_are_removed_only_when_their_run_is_gone(setup, tmp_path):
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(gone.stdout), os.getppid()
    probe = extract(setup, tmp_path / "probe")  # the key of this split
    key = os.path.basename(probe.folder)
    host = socket.gethostname()
    killed = tmp_path / f"{key}.partial-{host}-{dead_pid}-0123abcd"
    running = tmp_path / f"{key}.partial-{host}-{live_pid}-0123abcd"
    elsewhere = tmp_path / f"{key}.partial-another-host-{dead_pid}-0123abcd"
    for folder in (killed, running, elsewhere):
        folder.mkdir()
        (folder / "shard-00000-of-00001.features.tmp.npy").write_bytes(b"half")
    cache = extract(setup, tmp_path)
    assert not cache.reused and len(cache) == 21
    assert not killed.exists() and running.exists() and elsewhere.exists()


def test_pooled_only_cache_and_shard_bounds(setup, tmp_path):
    cache = extract(setup, tmp_path, pooled_only=True)
    assert not cache.has_feature_maps and cache.feature_shape == (32,)
    assert "features" not in cache.__getitems__([0, 5])
    for n, world in ((21, 2), (5, 3), (2, 4), (0, 2)):
        blocks = [_shard_bounds(n, r, world) for r in range(world)]
        assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(n))


def test_evaluate_matches_independent_computation(setup, tmp_path):
    model, head_model, processor, dataset = setup
    cache = extract(setup, tmp_path)
    result = evaluate(model, cache, batch_size=4)
    pixel_values = processor([to_rgb(im) for im in dataset["image"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values).logits
        teacher = head_model(pixel_values=pixel_values).logits
    labels = torch.tensor(dataset["label"])
    assert result["num_examples"] == 21
    np.testing.assert_array_equal(result["predictions"], logits.argmax(-1).numpy())
    assert result["accuracy"] == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))
    assert result["backbone_head_accuracy"] == pytest.approx(float((teacher.argmax(-1) == labels).float().mean()))
    assert result["agreement"] == pytest.approx(float((teacher.argmax(-1) == logits.argmax(-1)).float().mean()))
    sizes = [explanation_size(e) for e in model.explain(pixel_values)]
    assert result["explanation_size_median"] == float(np.median(sizes))
    assert result["explanation_size_p90"] == pytest.approx(float(np.percentile(sizes, 90)))


class _Pooled:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def array(self, name):
        return {"pooled": self.x, "labels": self.y}[name]


def test_linear_probe_on_known_problems():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 6)) * 5
    y = rng.integers(0, 3, 90)
    x = (centers[y] + rng.normal(size=(90, 6))).astype(np.float32)
    y_eval = rng.integers(0, 3, 30)
    x_eval = (centers[y_eval] + rng.normal(size=(30, 6))).astype(np.float32)
    assert train_linear_probe(_Pooled(x, y), _Pooled(x_eval, y_eval)) == {"accuracy": 1.0, "num_examples": 30}
    # Features carrying no information: the probe can do no better than the majority class on these labels.
    noise = _Pooled(np.zeros((90, 6), np.float32), y)
    flipped = train_linear_probe(noise, _Pooled(np.zeros((30, 6), np.float32), y_eval))
    assert flipped["accuracy"] == pytest.approx(float((y_eval == np.bincount(y).argmax()).mean()))


def test_one_backbone_pass_per_batch_and_fallback(setup, tmp_path, monkeypatch):
    """With a head, the backbone runs once per batch (after a first-batch check against model.extract_features);
    when the head's pass does not reproduce the feature map, extraction falls back to two passes, still exact."""
    model, head_model, processor, dataset = setup
    calls = []
    handle = model.backbone.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        cache = extract(setup, tmp_path / "a")  # 21 rows in batches of 8: 3 batches
    finally:
        handle.remove()
    assert len(calls) == 1  # only the first batch's check ran InfoDisent's own copy of the backbone
    reference = cache.__getitems__(list(range(21)))

    def wrong_pass(model, head_model, pixel_values):
        return torch.zeros_like(model.extract_features(pixel_values)), head_model(pixel_values=pixel_values).logits

    monkeypatch.setattr(features_module, "_one_pass", wrong_pass)
    fallback = extract(setup, tmp_path / "b").__getitems__(list(range(21)))
    for key in ("features", "teacher_logits"):
        torch.testing.assert_close(fallback[key], reference[key])


def test_non_finite_features_are_refused_and_never_cached(setup, tmp_path, monkeypatch):
    """NaN/inf anywhere in a split (here the second batch of 8) stops the extraction with a message naming the
    backbone and the rows; no cache folder is left, so nothing non-finite is ever read back."""
    from training.checks import UsageError

    model = setup[0]
    original = type(model).extract_features
    calls = []

    def poisoned(self, pixel_values):
        calls.append(1)
        out = original(self, pixel_values)
        if len(calls) == 2:
            out = out.clone()
            out[1] = float("inf")  # the second image of the second batch: row 9
        return out

    monkeypatch.setattr(type(model), "extract_features", poisoned)
    with pytest.raises(UsageError) as error:
        extract(setup, tmp_path, head=False, backbone_name="my/backbone")
    assert str(error.value) == (
        "The backbone 'my/backbone' gives non-finite feature maps (rows 8-15 of the train split): 128 of 1024 values "
        "are NaN or infinite; nothing was cached."
    )  # one image of the batch: 32 channels x 2x2 map
    assert os.listdir(tmp_path) == []


def test_non_finite_head_logits_are_refused(setup, tmp_path, monkeypatch):
    original = features_module._one_pass
    calls = []

    def poisoned(model, head_model, pixel_values):
        features, logits = original(model, head_model, pixel_values)
        calls.append(1)
        return features, (logits * float("nan") if len(calls) == 3 else logits)  # the third batch: rows 16-20

    monkeypatch.setattr(features_module, "_one_pass", poisoned)
    with pytest.raises(
        ValueError,
        match=r"^The classifier head of the backbone '\S+' gives non-finite logits \(rows "
        r"16-20 of the validation split\): 15 of 15 values are NaN or infinite; nothing was cached\.$",
    ):
        extract(setup, tmp_path, split_name="validation")
    assert os.listdir(tmp_path) == []
