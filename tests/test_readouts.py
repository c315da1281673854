"""The auditor's API: `model.reset_head(seed)` re-draws every head tensor (mask included) deterministically; a
Prototype's peak cell / centre / box and map; an Explanation's class map at both resolutions; the localisation scores
(pointing game with a tolerance, energy in a box), checked against Quantus where it is installed."""

import numpy as np
import pytest
import torch

from modeling_infodisent import InfoDisentForImageClassification
from modeling_infodisent.localisation import energy_in_box, pointing_hit, region_mask

HEAD_TENSORS = (
    "head.rotation.generator",
    "head.classifier.weight_raw",
    "head.classifier.bias",
    "head.classifier.prototype_mask",
)


def _head_state(model) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {k: state[k].clone() for k in HEAD_TENSORS}


def _train_like(model) -> None:
    """What training leaves: moved U, W and b, and a pruning mask with zeros."""
    with torch.no_grad():
        model.head.rotation.generator.add_(0.3)
        model.head.classifier.weight_raw.add_(1.0)
        model.head.classifier.bias.add_(0.5)
        model.head.classifier.prototype_mask[:, ::2] = 0.0


@pytest.mark.parametrize("reload", [False, True])
def test_reset_head_redraws_every_head_tensor(tiny_model, tmp_path, reload):
    model = tiny_model
    _train_like(model)
    if reload:  # after from_pretrained every loaded tensor is flagged _is_hf_initialized: the case that went wrong
        model.save_pretrained(tmp_path / "m")
        model = InfoDisentForImageClassification.from_pretrained(tmp_path / "m").eval()
    trained = _head_state(model)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    torch.manual_seed(123)
    caller_rng = torch.get_rng_state()

    first = _head_state(model.reset_head(seed=7))
    assert torch.equal(torch.get_rng_state(), caller_rng)  # the caller's random stream is untouched
    for key in HEAD_TENSORS:
        assert not torch.equal(first[key], trained[key]), key
    assert torch.equal(
        first["head.classifier.prototype_mask"], torch.ones_like(trained["head.classifier.prototype_mask"])
    )
    assert torch.equal(first["head.classifier.bias"], torch.zeros_like(trained["head.classifier.bias"]))
    assert (model.classifier_weight > 0).all()  # every (class, channel) pair is back
    u = model.rotation_matrix()
    assert torch.allclose(u @ u.T, torch.eye(u.shape[0]), atol=1e-5)
    assert torch.equal(u, model.head.rotation.matrix())  # no stale cached U
    for k, v in model.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, backbone[k]), k  # the backbone (and original classifier) are untouched

    second = _head_state(model.reset_head(seed=7))
    other = _head_state(model.reset_head(seed=8))
    for key in HEAD_TENSORS:
        assert torch.equal(first[key], second[key]), key  # same seed, same tensors
    for key in ("head.rotation.generator", "head.classifier.weight_raw"):
        assert not torch.equal(first[key], other[key]), key


def test_reset_head_riemannian_redraws_u(tiny_backbone_config, tmp_path):
    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(
        tiny_backbone_config, id2label={0: "a", 1: "b"}, rotation_parametrization="riemannian"
    )
    model.save_pretrained(tmp_path / "r")
    loaded = InfoDisentForImageClassification.from_pretrained(tmp_path / "r")
    before = loaded.head.rotation.weight.detach().clone()
    after = loaded.reset_head(seed=1).head.rotation.weight.detach().clone()
    assert not torch.equal(before, after)
    assert torch.allclose(after @ after.T, torch.eye(after.shape[0]), atol=1e-5)
    assert torch.equal(after, loaded.reset_head(seed=1).head.rotation.weight)


def test_prototype_readouts_agree_with_the_grid(tiny_model):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 96, 64)  # a non-square input: rows and columns scale differently
    explanation = tiny_model.explain(x, top_k=None)[0]
    h, w = explanation.feature_grid
    H, W = explanation.image_size
    assert (H, W) == (96, 64)
    for p in explanation.prototypes:
        assert p.activation_map.shape == (h, w)
        r, c = p.peak_cell
        assert (r, c) == tuple(np.unravel_index(np.argmax(p.activation_map), (h, w)))  # the map's own peak
        assert np.isclose(p.activation_map[r, c], p.activation, rtol=1e-5)
        y, x_ = p.peak_center_px
        assert (y, x_) == ((r + 0.5) * H / h, (c + 0.5) * W / w)
        x0, y0, x1, y1 = p.peak_box_px
        assert (x0, y0, x1, y1) == (c * W // w, r * H // h, (c + 1) * W // w, (r + 1) * H // h)
        assert pointing_hit(p.peak_center_px, p.peak_box_px)  # the centre lies in its own cell's box
    low = explanation.class_map()
    assert low.shape == (h, w)
    expected = sum(p.sign * p.weight * p.activation_map for p in explanation.prototypes)
    assert np.allclose(low, expected, atol=1e-5)
    assert np.allclose(explanation.class_map(upsampled=True), explanation.class_heatmap(), atol=1e-6)
    peaks = explanation.class_map(where="peaks")
    assert np.isclose(peaks.sum(), explanation.logit - explanation.bias, atol=1e-4)


def test_pointing_hit_points_boxes_masks_and_tolerance():
    box = [10, 20, 30, 40]  # x in [10, 30), y in [20, 40)
    assert pointing_hit((20, 10), box) and pointing_hit((39.9, 29.9), box)
    assert not pointing_hit((40, 20), box) and not pointing_hit((25, 30), box)  # exclusive ends
    assert not pointing_hit((25, 35), box) and pointing_hit((25, 35), box, tolerance_px=5)
    assert not pointing_hit((45, 35), box, tolerance_px=7) and pointing_hit((44, 34), box, tolerance_px=7.3)
    mask = region_mask(box, (50, 50))
    assert mask.sum() == 20 * 20 and mask[20, 10] and not mask[40, 10]
    for point in [(20, 10), (39.9, 29.9), (40, 20), (25, 35), (0.0, 0.0), (49.5, 49.5)]:
        assert pointing_hit(point, mask) == pointing_hit(point, box), point
        assert pointing_hit(point, mask, tolerance_px=3) == pointing_hit(point, box, tolerance_px=3), point
    saliency = np.zeros((50, 50))
    saliency[25, 12] = 1.0
    assert pointing_hit(saliency, box) and pointing_hit(saliency, mask)
    saliency[25, 12], saliency[5, 5] = 0.0, 1.0
    assert not pointing_hit(saliency, box) and pointing_hit(saliency, box, tolerance_px=20)
    with pytest.raises(ValueError, match="empty"):
        pointing_hit((1, 1), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="same size"):
        pointing_hit(np.ones((4, 4)), np.ones((5, 5), bool))


def test_energy_in_box():
    saliency = np.zeros((10, 10))
    saliency[2:4, 2:4] = 1.0
    saliency[8, 8] = 4.0
    assert energy_in_box(saliency, [2, 2, 4, 4]) == 0.5
    assert energy_in_box(saliency, region_mask([2, 2, 4, 4], (10, 10))) == 0.5
    assert energy_in_box(np.full((10, 10), 2.0), [0, 0, 5, 10]) == 0.5  # a uniform map: the box's share of the image
    saliency[0, 0] = -100.0  # negative evidence is no mass: clipped, not cancelled
    assert energy_in_box(saliency, [2, 2, 4, 4]) == 0.5
    assert energy_in_box(-np.ones((3, 3)), [0, 0, 1, 1]) == 0.0


def test_matches_quantus_on_random_maps():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(0)
    n, size = 12, 16
    maps = rng.random((n, size, size)) ** 3
    maps[::3] = np.round(maps[::3], 1)  # ties at the maximum, as a coarse map upsampled has
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        y, x = rng.integers(0, size - 4, 2)
        masks[i, y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = True
        if i % 2:  # half the maps peak on their region (hits), the rest wherever their noise peaks (mostly misses)
            maps[i, y + 1, x + 1] = 2.0
    x_batch = np.zeros((n, 1, size, size), np.float32)
    y_batch = np.zeros(n, int)
    kwargs = dict(
        model=None, x_batch=x_batch, y_batch=y_batch, a_batch=maps[:, None], s_batch=masks[:, None].astype(float)
    )
    theirs_pg = quantus.PointingGame(disable_warnings=True)(**kwargs)
    theirs_rma = quantus.RelevanceMassAccuracy(disable_warnings=True)(**kwargs)
    ours_pg = [pointing_hit(maps[i], masks[i]) for i in range(n)]
    ours_rma = [energy_in_box(maps[i], masks[i]) for i in range(n)]
    assert [bool(v) for v in theirs_pg] == ours_pg
    assert np.allclose(theirs_rma, ours_rma, atol=1e-6)
    assert 0 < sum(ours_pg) < n  # hits and misses both exercised
