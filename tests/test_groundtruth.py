"""The ground-truth benchmark: the generator (benchmarks/generate.py) and the benchmark's scoring."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

FMNIST = "/usr/share/datasets/fashion-mnist"
needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="needs Debian's dataset-fashion-mnist")


def _gen():
    sys.path.insert(0, REPO_ROOT)
    from benchmarks import generate

    return generate


@needs_fmnist
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


@needs_fmnist
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


@needs_fmnist
def test_cli_writes_loadable_parquet_and_rejects_bad_canvas(tmp_path):
    from training.data import load_image_dataset

    out = tmp_path / "gt"
    cmd = [sys.executable, os.path.join(REPO_ROOT, "benchmarks", "generate.py"), "--variant", "part", "--out", str(out)]
    # 40 training rows: every class is left in train once the loader holds part of it out (it refuses a test class
    # that train lacks)
    subprocess.run([*cmd, "--train", "40", "--test", "3"], check=True, capture_output=True, cwd=REPO_ROOT)
    ds, image_col, label_col, id2label = load_image_dataset(str(out))
    # train + test on disk: the loader holds part of train out for validation and keeps test for the final figure
    assert (len(ds["train"]) + len(ds["validation"]), len(ds["test"]), image_col, label_col) == (
        40,
        3,
        "image",
        "label",
    )
    assert id2label == {0: "plus", 1: "cross", 2: "ring", 3: "triangle", 4: "H"}
    assert "benchmarks/generate.py --variant part" in (out / "README.md").read_text()
    bad = subprocess.run([*cmd, "--canvas", "20"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["error: --canvas must be >= 56, got 20"]


@needs_fmnist
def test_write_draws_the_test_split_from_its_own_seed(tmp_path):
    import datasets

    g = _gen()
    g.write("part", str(tmp_path), train=4, test=3, seed=0, test_seed=2)
    on_disk = {s: datasets.Dataset.from_parquet(str(tmp_path / f"{s}-00000.parquet")) for s in ("train", "test")}
    image_bytes = lambda ds: [np.asarray(im).tobytes() for im in ds["image"]]  # noqa: E731
    assert image_bytes(on_disk["train"]) == image_bytes(g.make_part_defined("train", 4, seed=0))
    assert image_bytes(on_disk["test"]) == image_bytes(g.make_part_defined("test", 3, seed=2))
    assert image_bytes(on_disk["test"]) != image_bytes(g.make_part_defined("test", 3, seed=0))
    card = (tmp_path / "README.md").read_text()
    assert "seed 0 (train), 2 (test)" in card and "--seed 0 --test_seed 2" in card


def test_reported_figures_and_tuning_use_separate_test_seeds():
    gt = _bench_module()
    from benchmarks import groundtruth_failures

    assert len({gt.TRAIN_SEED, gt.TUNING_SEED, gt.TEST_SEED}) == 3
    quick, full = gt.settings(True), gt.settings(False)
    assert quick["test_seed"] == full["test_seed"] == gt.TEST_SEED
    assert gt.settings(True, test_seed=gt.TUNING_SEED)["test_seed"] == gt.TUNING_SEED
    # Enough images to resolve one point at ~96% pointing (10,000; 1,000 called a 1-point lead a tie); the costly
    # baselines on a prefix of them.
    assert (quick["test_rows"], quick["costly_images"], quick["randomisation_images"]) == (10000, 200, 300)
    assert full["test_rows"] >= quick["test_rows"] and full["costly_images"] <= full["test_rows"]
    with pytest.raises(SystemExit, match="is the reported test split's seed"):
        groundtruth_failures.analyse("part", 10, 5, test_seed=gt.TEST_SEED)


# ------------------------------------------------------------------------------------------------------------
# The model side: the original classifier inside the model, the peak evidence map, the rotation's initialisation
# ------------------------------------------------------------------------------------------------------------
import torch  # noqa: E402

from conftest import tiny_resnet_config  # noqa: E402

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _tiny_classifier():
    from transformers import ResNetForImageClassification

    torch.manual_seed(0)
    config = tiny_resnet_config(num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    return ResNetForImageClassification(config).eval()


def test_explanation_says_what_the_original_classifier_decides(tmp_path):
    from modeling_infodisent import InfoDisentForImageClassification

    original = _tiny_classifier()
    model = InfoDisentForImageClassification.from_backbone(original, id2label=LABELS).eval()
    assert model.config.original_head is True
    torch.manual_seed(1)
    x = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        expected = original(pixel_values=x).logits
        out = model(x)
    torch.testing.assert_close(out.original_logits, expected, rtol=1e-5, atol=1e-5)
    decided = expected.argmax(-1).tolist()
    for e, o in zip(model.explain(x), decided):
        assert (e.original_prediction, e.original_label, e.agrees) == (o, LABELS[o], e.target == o)
    other = [(o + 1) % 3 for o in decided]
    assert [e.agrees for e in model.explain(x, target=other)] == [False] * 6
    # Saved and loaded with the weights; never trained (buffers, not parameters).
    assert not any("original" in name for name, _ in model.named_parameters())
    model.save_pretrained(tmp_path)
    loaded = InfoDisentForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).original_logits, expected, rtol=1e-5, atol=1e-5)


def test_no_original_head_for_other_labels_or_a_head_that_is_not_avgpool_linear():
    from transformers import ConvNextConfig, ConvNextForImageClassification

    from modeling_infodisent import InfoDisentForImageClassification

    renamed = InfoDisentForImageClassification.from_backbone(_tiny_classifier(), id2label={0: "a", 1: "b", 2: "c"})
    assert renamed.config.original_head is False and renamed.original_classifier is None
    (e,) = renamed.explain(torch.randn(1, 3, 64, 64))
    assert (e.original_prediction, e.original_label, e.agrees) == (None, None, None)
    assert renamed(torch.randn(1, 3, 64, 64)).original_logits is None
    # ConvNeXt's head normalises the pooled map before its linear layer: not reproducible from the map alone.
    torch.manual_seed(0)
    convnext = ConvNextForImageClassification(
        ConvNextConfig(
            hidden_sizes=[8, 16],
            depths=[1, 1],
            num_stages=2,
            num_labels=3,
            id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()},
        )
    ).eval()
    assert InfoDisentForImageClassification.from_backbone(convnext, id2label=LABELS).config.original_head is False
    assert (
        InfoDisentForImageClassification.from_backbone(
            convnext, id2label=LABELS, keep_original_head=True
        ).config.original_head
        is False
    )  # vouching for the labels does not make a LayerNorm head avg-pool + linear


def test_original_head_with_generic_labels_only_when_the_caller_vouches_for_them():
    """Generic LABEL_i names say nothing about which classes a head predicts: kept only with keep_original_head=True
    (the training script passes it exactly when it measures agreement, e.g. --backbone_head_matches_labels)."""
    from transformers import ResNetForImageClassification

    from modeling_infodisent import InfoDisentForImageClassification

    torch.manual_seed(0)
    generic = ResNetForImageClassification(tiny_resnet_config(num_labels=3)).eval()
    assert generic.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert InfoDisentForImageClassification.from_backbone(generic, id2label=LABELS).config.original_head is False
    vouched = InfoDisentForImageClassification.from_backbone(generic, id2label=LABELS, keep_original_head=True)
    assert vouched.config.original_head is True
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(vouched(x).original_logits, generic(pixel_values=x).logits, rtol=1e-5, atol=1e-5)
    named = _tiny_classifier()
    assert (
        InfoDisentForImageClassification.from_backbone(
            named, id2label=LABELS, keep_original_head=False
        ).config.original_head
        is False
    )


def test_peak_evidence_map_puts_each_contribution_on_its_peak_cell():
    from modeling_infodisent import InfoDisentForImageClassification

    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(tiny_resnet_config(), id2label=LABELS).eval()
    x = torch.randn(2, 3, 64, 64)
    for e in model.explain(x):
        h, w = e.feature_grid
        e.image_size = (h, w)  # upsampling to the grid itself is the identity: the cells are visible as they are
        for p in e.prototypes:
            p.image_size = (h, w)
        peaks = e.class_heatmap("peaks")
        expected = np.zeros((h, w))
        for p in e.prototypes:
            expected[p.location] += p.contribution
        np.testing.assert_allclose(peaks, expected, rtol=1e-5, atol=1e-6)
        assert peaks.sum() == pytest.approx(e.logit - e.bias, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="`where` must be 'maps' or 'peaks', got 'box'"):
        e.class_heatmap("box")


def test_rotation_starts_far_from_the_identity():
    from modeling_infodisent import InfoDisentForImageClassification

    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(
        tiny_resnet_config(hidden_sizes=[8, 16, 24, 64]), id2label=LABELS
    )
    u = model.rotation.double()
    torch.testing.assert_close(u.T @ u, torch.eye(64, dtype=torch.float64), atol=1e-5, rtol=0)
    # Near I (the old initialisation) the diagonal is ~1; a random rotation's diagonal averages ~0.
    assert abs(float(u.diagonal().mean())) < 0.15 and float(u.diagonal().abs().mean()) < 0.3


# ------------------------------------------------------------------------------------------------------------
# The benchmark's scoring helpers (benchmarks/groundtruth.py)
# ------------------------------------------------------------------------------------------------------------
def _bench_module():
    sys.path.insert(0, REPO_ROOT)
    from benchmarks import groundtruth

    return groundtruth


def test_uniform_peak_reference_and_centre_prior():
    gt = _bench_module()
    # 11×11 grid on 84 px: a box holding exactly one cell centre, and the whole canvas.
    np.testing.assert_allclose(gt.cells_inside([[0, 0, 7, 7], [0, 0, 84, 84]], (11, 11), 84), [1 / 121, 1.0])
    centre = gt.centre_gaussian(2, 84)
    assert centre.shape == (2, 84, 84) and np.unravel_index(centre[0].argmax(), (84, 84)) in {
        (41, 41),
        (41, 42),
        (42, 41),
        (42, 42),
    }


def test_prototype_points_cell_centre_and_region_centre():
    from types import SimpleNamespace

    from modeling_infodisent.modeling_infodisent import Prototype

    gt = _bench_module()
    low = np.zeros((11, 11), np.float32)
    low[4, 7], low[4, 8] = 1.0, 0.8  # peak cell (4, 7) with a strong neighbour to its right

    def proto(contribution, location, activation_map):
        return Prototype(
            channel=0,
            sign=1,
            activation=1.0,
            weight=contribution,
            contribution=contribution,
            location=location,
            activation_map=activation_map,
            image_size=(84, 84),
        )

    other = np.zeros((11, 11), np.float32)
    other[1, 1] = 1.0
    e = SimpleNamespace(
        feature_grid=(11, 11), image_size=(84, 84), positive=[proto(2.0, (4, 7), low), proto(1.0, (1, 1), other)]
    )
    cell = gt.proto_points([e], 3, "cell")
    np.testing.assert_allclose(cell[0, :2], [[7.5 * 84 / 11, 4.5 * 84 / 11], [1.5 * 84 / 11, 1.5 * 84 / 11]])
    assert np.isnan(cell[0, 2]).all()  # fewer than k positive prototypes
    region = gt.proto_points([e], 1, "region")  # the readout before
    assert 7.5 * 84 / 11 + 1.5 < region[0, 0, 0] < 8.5 * 84 / 11
    # Completeness with either readout: a box around the region centre (not the peak cell's centre) holds 2/3.
    box = [[int(region[0, 0, 0]) - 1, 30, int(region[0, 0, 0]) + 3, 40]]
    np.testing.assert_allclose(gt.peak_share_inside([e], box), [2 / 3])
    np.testing.assert_allclose(gt.peak_share_inside([e], box, "cell"), [0.0])
    with pytest.raises(ValueError, match="locator must be one of"):
        gt.proto_points([e], 1, "centre")
    # The default: the weighted centre of the top 1% of the pixel relevance map, wherever the grid cell is.
    assert gt.DEFAULT_LOCATOR == "relevance"
    with pytest.raises(ValueError, match="relevance >= 1"):
        gt.proto_points([e], 1)
    relevance = np.zeros((84, 84), np.float32)
    relevance[60:63, 20:23] = 1.0  # a 3x3 blob (9 of 7,056 pixels: inside the top 1%) far from the peak cell
    relevance[61, 21] = 3.0
    e.positive[0].relevance = relevance
    np.testing.assert_allclose(gt.proto_points([e], 1)[0, 0], [21.5, 61.5])


def test_costly_baselines_on_a_prefix_are_compared_on_that_prefix_and_grid_readout_of_upsampled_maps():
    gt = _bench_module()
    boxes = np.array([[0, 0, 10, 10]] * 4)
    hit_map, miss_map = np.zeros((84, 84)), np.zeros((84, 84))
    hit_map[5, 5], miss_map[50, 50] = 1.0, 1.0
    maps = {"full": np.stack([hit_map, hit_map, miss_map, miss_map]), "prefix": np.stack([miss_map, hit_map])}
    loc = gt._localisation(maps, {}, boxes, 84, tol=0)
    assert loc["full"]["pointing"].tolist() == [1, 1, 0, 0] and loc["prefix"]["pointing"].tolist() == [0, 1]
    pair = gt._paired(loc["full"]["pointing"], loc["prefix"]["pointing"], seed=0)
    assert (pair["n"], pair["mean_a"], pair["mean_b"], pair["difference"]) == (2, 1.0, 0.5, 0.5)
    # Grad-CAM-style maps (upsampled from the 11×11 grid) read back at the cell centres with the sub-cell fit.
    import torch
    import torch.nn.functional as F

    rows, cols = np.mgrid[:11, :11]
    low = (10 - (rows - 4.3) ** 2 - 2 * (cols - 6.8) ** 2).astype(np.float32)
    up = F.interpolate(torch.from_numpy(low)[None, None], size=(88, 88), mode="bilinear", align_corners=False)[0, 0]
    # The map is sampled at the pixel holding each cell centre (half a pixel = 1/16 cell off it here), so the
    # recovered peak is within a tenth of a cell of the truth (the cell argmax is 0.2-0.3 cell off).
    np.testing.assert_allclose(gt.grid_subcell_points(up.numpy()[None], (11, 11), pixels=False), [[6.8, 4.3]], atol=0.1)
    np.testing.assert_allclose(gt.grid_subcell_points(up.numpy()[None], (11, 11)), [[7.3 * 8, 4.8 * 8]], atol=0.8)


def test_reinit_head_draws_a_fresh_head_and_can_restore_the_old_initialisation():
    from modeling_infodisent import InfoDisentForImageClassification

    gt = _bench_module()
    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(tiny_resnet_config(), id2label=LABELS).eval()
    with torch.no_grad():
        model.head.classifier.prototype_mask[:, 1:] = 0  # a pruned, "trained" head
    fresh = gt.reinit_head(model, seed=1)
    assert fresh.head.classifier.prototype_mask.min() == 1  # the mask is initialised again too
    assert not torch.equal(fresh.head.rotation.generator, model.head.rotation.generator)
    torch.testing.assert_close(fresh.backbone.state_dict(), model.backbone.state_dict())  # only the head changes
    old = gt.reinit_head(model, seed=1, old_init=True)
    assert float(old.rotation.diagonal().mean()) > 0.9  # U ≈ I (Cayley: twice the angle of exp for the same G)
    assert float(fresh.rotation.diagonal().mean()) < 0.5
    assert model.head.classifier.prototype_mask[:, 1:].sum() == 0  # the original is untouched


def test_groundtruth_section_is_skipped_with_a_note_without_fashion_mnist(monkeypatch):
    from types import SimpleNamespace

    from benchmarks import groundtruth_trust as gt
    from benchmarks.groundtruth_trust_report import markdown

    monkeypatch.setenv("FASHION_MNIST_DIR", "/nonexistent-fmnist")
    result = gt.section_groundtruth(SimpleNamespace(quick=True), None, None)
    assert set(result) == {"skipped"} and "dataset-fashion-mnist" in result["skipped"]
    assert markdown(result)[0].startswith("**Ground truth**: skipped — Fashion-MNIST idx files not found")
