"""The metric code (issues 7 and 8) on constructed cases with known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from modeling_infodisent.metrics import (
    class_contributions,
    deletion_insertion_auc,
    explanation_size,
    explanation_sizes,
    fraction_unused_poles,
    mean_pairwise_rv,
    road_scores,
    rv_coefficient,
)

# ------------------------------------------------------------------------------------------------------------
# Explanation size
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 7, 10, 20, 33, 128])
def test_one_hot_has_size_one(n):
    c = np.zeros(n)
    c[n // 2] = 3.7
    assert explanation_size(c) == 1


@pytest.mark.parametrize("n", list(range(1, 41)) + [100, 128, 2048])
def test_uniform_needs_ceil_ninety_percent(n):
    expected = (9 * n + 9) // 10  # ceil(0.9 n) in integer arithmetic
    assert explanation_size(torch.full((n,), 0.25)) == expected
    assert explanation_size([1.0] * n) == expected


def test_negative_evidence_is_ignored_and_order_does_not_matter():
    # Positive total 10, 90% = 9: 5 + 3 = 8 is short, 5 + 3 + 2 = 10 reaches it -> 3 prototypes.
    assert explanation_size([2.0, -100.0, 5.0, 3.0, -1.0]) == 3
    assert explanation_size([3.0, 5.0, 2.0]) == 3
    assert explanation_size([3.0, 5.0, 2.0], fraction=0.5) == 1  # 5 >= 0.5 * 10
    assert explanation_size([3.0, 5.0, 2.0], fraction=0.8) == 2  # 8 >= 0.8 * 10 exactly
    assert explanation_size([-1.0, -2.0]) == 0
    assert explanation_size([]) == 0


def test_batched_sizes_match_the_single_version():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(50, 30)) * rng.random((50, 1)) * 10
    assert explanation_sizes(c).tolist() == [explanation_size(row) for row in c]


def test_explanation_size_errors():
    with pytest.raises(ValueError, match="fraction"):
        explanation_size([1.0], fraction=0.0)
    with pytest.raises(ValueError, match="1-D"):
        explanation_size(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        explanation_size([1.0, float("nan")])
    with pytest.raises(TypeError, match="numeric"):
        explanation_size(["a", "b"])


def test_size_of_an_explanation_object_and_class_contributions(tiny_model):
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    explanations = tiny_model.explain(x)
    out = tiny_model(x)
    targets = out.logits.argmax(-1)
    contributions = class_contributions(tiny_model.classifier_weight, out.pos_activations, out.neg_activations, targets)
    d = tiny_model.config.num_features
    assert contributions.shape == (3, 2 * d)
    bias = tiny_model.classifier_bias.detach()[targets]
    torch.testing.assert_close(contributions.sum(1) + bias, out.logits.detach()[torch.arange(3), targets])
    for e, row in zip(explanations, contributions):
        assert explanation_size(e) == explanation_size(row)  # same evidence, two routes
        assert explanation_size(e) >= 1
    cut = tiny_model.explain(x[:1], top_k=2)[0]
    if cut.residual != 0.0:
        with pytest.raises(ValueError, match="top_k"):
            explanation_size(cut)


def test_class_contributions_errors():
    w, p = torch.ones(3, 4), torch.ones(2, 4)
    with pytest.raises(ValueError, match="same D"):
        class_contributions(w, torch.ones(2, 5), torch.ones(2, 5), [0, 1])
    with pytest.raises(ValueError, match="targets"):
        class_contributions(w, p, p, [0])
    with pytest.raises(ValueError, match="class indices"):
        class_contributions(w, p, p, [0, 3])


def test_fraction_unused_poles():
    c = np.zeros((3, 8))
    c[0, 0] = 1.0  # pole 0
    c[1, 1] = 2.0  # pole 1
    c[2, 0], c[2, 5] = 1.0, -4.0  # pole 0 again; pole 5 is evidence against
    assert fraction_unused_poles(c) == pytest.approx(1 - 2 / 8)
    # On |contribution|, row 2 needs pole 5 (4 of 5 = 80% < 90%) and pole 0: 3 poles used.
    assert fraction_unused_poles(c, absolute=True) == pytest.approx(1 - 3 / 8)
    uniform = np.ones((1, 10))
    assert fraction_unused_poles(uniform) == pytest.approx(0.1)  # 9 of 10 needed


# ------------------------------------------------------------------------------------------------------------
# RV coefficient
# ------------------------------------------------------------------------------------------------------------


def test_rv_identical_rotated_and_scaled_is_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert rv_coefficient(x, x) == pytest.approx(1.0, abs=1e-12)
    assert rv_coefficient(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-12)


def test_rv_independent_is_near_zero_and_single_columns_give_squared_correlation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5000, 3)), rng.normal(size=(5000, 4))
    assert rv_coefficient(x, y) < 0.01
    a = rng.normal(size=300)
    b = 0.5 * a + rng.normal(size=300)
    assert rv_coefficient(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1] ** 2, rel=1e-10)


def test_rv_errors():
    with pytest.raises(ValueError, match="same number of rows"):
        rv_coefficient(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="constant"):
        rv_coefficient(np.ones((5, 2)), np.arange(10.0).reshape(5, 2))


def test_mean_pairwise_rv_matches_pairwise_brute_force():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 4, 3, 2))
    f[:, 1] = 2 * f[:, 0]  # channels 0 and 1 share everything
    f[:, 3] = 7.0  # a constant channel: left out
    channels = [f[:, c].reshape(40, -1) for c in range(3)]
    pairs = [rv_coefficient(channels[i], channels[j]) for i in range(3) for j in range(3) if i != j]
    assert mean_pairwise_rv(f) == pytest.approx(np.mean(pairs), rel=1e-9)
    assert mean_pairwise_rv(torch.from_numpy(f.reshape(40, 4, 6))) == pytest.approx(np.mean(pairs), rel=1e-9)
    pooled = rng.normal(size=(100, 2))
    assert mean_pairwise_rv(pooled) == pytest.approx(np.corrcoef(pooled.T)[0, 1] ** 2, rel=1e-9)
    with pytest.raises(ValueError, match="shape"):
        mean_pairwise_rv(np.ones(5))


# ------------------------------------------------------------------------------------------------------------
# Deletion / insertion, ROAD
# ------------------------------------------------------------------------------------------------------------


class InformativePatchModel(nn.Module):
    """Two classes; logit 0 = scale * mean of the pixels in `patch` (all channels), logit 1 = 0. Nothing else
    matters."""

    def __init__(self, patch, scale=6.0):
        super().__init__()
        self.patch = patch
        self.scale = scale
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        (r0, r1), (c0, c1) = self.patch
        s = self.scale * x[:, :, r0:r1, c0:c1].mean(dim=(1, 2, 3))
        return torch.stack((s, torch.zeros_like(s)), dim=1)


def trapezoid(curve, dx):
    return float(sum((a + b) / 2 * dx for a, b in zip(curve[:-1], curve[1:])))


def test_deletion_and_insertion_auc_exact_on_a_constructed_model():
    model = InformativePatchModel(((0, 2), (0, 2)))  # the 4 informative pixels of a 4x4 image
    image = torch.ones(1, 2, 4, 4)
    good = torch.zeros(1, 4, 4)
    good[0, :2, :2] = 1.0
    inverse = 1.0 - good
    p_full = float(torch.sigmoid(torch.tensor(6.0)))  # softmax([6, 0])[0]
    half = 0.5  # patch fully removed: softmax([0, 0])
    kwargs = dict(steps=4, baseline=0.0)  # 4 pixels per step: step 1 removes exactly the patch for `good`

    del_good, curve = deletion_insertion_auc(model, image, good, [0], mode="deletion", return_curves=True, **kwargs)
    np.testing.assert_allclose(curve[0], [p_full, half, half, half, half], rtol=1e-6)
    assert del_good[0] == pytest.approx(trapezoid([p_full, half, half, half, half], 0.25), rel=1e-6)
    del_bad = deletion_insertion_auc(model, image, inverse, [0], mode="deletion", **kwargs)
    assert del_bad[0] == pytest.approx(trapezoid([p_full, p_full, p_full, p_full, half], 0.25), rel=1e-6)
    assert del_good[0] < del_bad[0]  # lower deletion AUC is better

    ins_good = deletion_insertion_auc(model, image, good, [0], mode="insertion", **kwargs)
    ins_bad = deletion_insertion_auc(model, image, inverse, [0], mode="insertion", **kwargs)
    assert ins_good[0] == pytest.approx(trapezoid([half, p_full, p_full, p_full, p_full], 0.25), rel=1e-6)
    assert ins_bad[0] == pytest.approx(trapezoid([half, half, half, half, p_full], 0.25), rel=1e-6)
    assert ins_good[0] > ins_bad[0]  # higher insertion AUC is better


def test_deletion_ranks_a_larger_image_batch_and_tensor_baseline():
    torch.manual_seed(0)
    model = InformativePatchModel(((3, 6), (2, 5)))
    images = torch.rand(3, 3, 12, 12) + 0.5
    good = torch.zeros(3, 12, 12)
    good[:, 3:6, 2:5] = torch.rand(3, 3, 3) + 1.0
    random_map = torch.rand(3, 12, 12)
    d_good = deletion_insertion_auc(model, images, good, [0, 0, 0], steps=16, baseline=torch.zeros(3, 1, 1))
    d_rand = deletion_insertion_auc(model, images, random_map, [0, 0, 0], steps=16, baseline=torch.zeros(3, 1, 1))
    d_inv = deletion_insertion_auc(model, images, -good, [0, 0, 0], steps=16, baseline=0.0)
    assert d_good.shape == (3,)
    assert (d_good < d_rand).all() and (d_rand < d_inv).all()
    # Ties (the flat 0 region of `good`) are broken at random but reproducibly.
    np.testing.assert_array_equal(d_good, deletion_insertion_auc(model, images, good, [0, 0, 0], steps=16))


def test_deletion_insertion_errors():
    model = InformativePatchModel(((0, 1), (0, 1)))
    x = torch.ones(2, 1, 4, 4)
    with pytest.raises(ValueError, match="mode"):
        deletion_insertion_auc(model, x, np.zeros((2, 4, 4)), [0, 0], mode="both")
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        deletion_insertion_auc(model, x, np.zeros((2, 5, 4)), [0, 0])
    with pytest.raises(ValueError, match="targets"):
        deletion_insertion_auc(model, x, np.zeros((2, 4, 4)), [0])
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion_auc(model, x, np.zeros((2, 4, 4)), [0, 0], steps=0)


def test_road_scores_rank_a_constructed_heatmap_and_run_on_a_tiny_infodisent(tiny_model):
    pytest.importorskip("pytorch_grad_cam")
    # A bright patch on a dark background; removing it (imputed from dark neighbours) removes the evidence.
    model = InformativePatchModel(((5, 9), (6, 10)))
    image = torch.zeros(1, 3, 16, 16)
    image[:, :, 5:9, 6:10] = 1.0
    good = torch.zeros(1, 16, 16)
    good[0, 5:9, 6:10] = 1.0
    percentiles = (50, 90)
    s_good = road_scores(model, image, good, [0], percentiles=percentiles)
    s_bad = road_scores(model, image, 1.0 - good, [0], percentiles=percentiles)
    assert s_good["morf"][0] < s_bad["morf"][0]  # most relevant first: the good map destroys more confidence
    assert s_good["combined"][0] > s_bad["combined"][0]
    np.testing.assert_allclose(s_good["combined"], (s_good["lerf"] - s_good["morf"]) / 2)

    x = torch.randn(2, 3, 32, 32)
    heat = np.stack([e.class_heatmap() for e in tiny_model.explain(x)])
    scores = road_scores(tiny_model, x, heat, [0, 1], percentiles=(20, 80))
    assert set(scores) == {"morf", "lerf", "combined"}
    for value in scores.values():
        assert value.shape == (2,) and np.isfinite(value).all()
    again = road_scores(tiny_model, x, heat, [0, 1], percentiles=(20, 80))
    np.testing.assert_array_equal(scores["morf"], again["morf"])  # seeded imputation noise


# ------------------------------------------------------------------------------------------------------------
# Benchmark plumbing: Grad-CAM on the same model, the README table markers
# ------------------------------------------------------------------------------------------------------------


def _benchmarks():
    import sys

    from conftest import REPO_ROOT

    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from benchmarks import report, speed

    return report, speed


def test_grad_cam_on_the_same_model_leaves_the_backbone_frozen(tiny_model):
    pytest.importorskip("pytorch_grad_cam")
    _, speed = _benchmarks()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    for stop_gradient in (False, True):
        maps = speed.grad_cam_maps(tiny_model, x, targets=[0, 2], stop_gradient=stop_gradient)
        assert maps.shape == (2, 64, 64)
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert not any(p.requires_grad for p in tiny_model.backbone.parameters())
    assert all(p.grad is None for p in tiny_model.parameters())
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    # Both variants differentiate the same logit with respect to the same map: same Grad-CAM.
    full = speed.grad_cam_maps(tiny_model, x, targets=[0, 2])
    cheap = speed.grad_cam_maps(tiny_model, x, targets=[0, 2], stop_gradient=True)
    np.testing.assert_allclose(full, cheap, atol=1e-5)


def test_readme_table_is_replaced_between_markers_only(tmp_path):
    report, _ = _benchmarks()
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{report.README_START}\nold table\n{report.README_END}\n\nfooter\n")
    report.write_readme(str(readme), "| new | table |\n")
    assert readme.read_text() == (
        f"# Title\n\nintro\n\n{report.README_START}\n| new | table |\n{report.README_END}\n\nfooter\n"
    )
    fresh = tmp_path / "other.md"
    report.write_readme(str(fresh), "x\n")
    assert f"{report.README_START}\nx\n{report.README_END}" in fresh.read_text()


def test_deletion_auc_on_a_model_with_trainable_parameters(tiny_model):
    # The InfoDisent head's parameters require grad: the metric must not build (or trip over) an autograd graph.
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    heat = np.stack([e.class_heatmap() for e in tiny_model.explain(x)])
    aucs = deletion_insertion_auc(lambda batch: tiny_model(batch).logits, x, heat, [0, 1], steps=4)
    assert aucs.shape == (2,) and np.all((aucs >= 0) & (aucs <= 1))


# ------------------------------------------------------------------------------------------------------------
# Against a known answer: pointing game, energy in box, paired bootstrap, Spearman of maps
# ------------------------------------------------------------------------------------------------------------
from modeling_infodisent.metrics import (  # noqa: E402
    box_masks,
    energy_in_region,
    heatmap_peaks,
    map_spearman,
    paired_bootstrap,
    pointing_game,
    region_centre,
    subcell_peak,
)


def _off_centre_boxes(n, size=84, side=20, seed=0):
    """Boxes that never contain the canvas centre (the object sits in one of the four corners' quadrants)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        x0 = int(rng.choice([rng.integers(0, size // 2 - side - 1), rng.integers(size // 2 + 1, size - side)]))
        y0 = int(rng.integers(0, size - side))
        boxes.append([x0, y0, x0 + side, y0 + side])
    return np.array(boxes)


def test_a_map_that_points_into_the_box_scores_one_and_the_centre_prior_scores_zero_off_centre():
    size = 84
    boxes = _off_centre_boxes(50, size)
    masks = box_masks(boxes, (size, size))
    inside = masks.astype(np.float32)  # all the mass on the box
    assert pointing_game(heatmap_peaks(inside), boxes).all()
    np.testing.assert_allclose(energy_in_region(inside, masks), 1.0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    centre = np.broadcast_to(np.exp(-(xx**2 + yy**2) / (2 * 21.0**2)), (50, size, size))
    assert not pointing_game(heatmap_peaks(centre), boxes).any()
    energy = energy_in_region(centre, masks)
    # A 20×20 box off centre holds little of a σ = 21 Gaussian (at most 12% when it touches the centre).
    assert energy.mean() < 0.06 and energy.max() < 0.15
    # A uniform map's energy is the box's share of the image.
    np.testing.assert_allclose(energy_in_region(np.ones((50, size, size)), masks), 400 / size**2)


def test_pointing_game_edges_and_errors():
    boxes = [[10, 20, 30, 40]] * 4
    hits = pointing_game([[10, 20], [29.9, 39.9], [30, 25], [15, 40]], boxes)
    assert hits.tolist() == [True, True, False, False]  # x1 / y1 are exclusive
    with pytest.raises(ValueError, match="Got 1 points for 4 boxes"):
        pointing_game([[0, 0]], boxes)
    with pytest.raises(ValueError, match="x1 > x0"):
        box_masks([[5, 5, 5, 9]], (10, 10))
    assert heatmap_peaks(np.zeros((1, 4, 5))).tolist() == [[0, 0]]  # a flat map names the first pixel
    peaks = heatmap_peaks(np.eye(5)[None] * np.arange(5)[None, :, None])
    assert peaks.tolist() == [[4, 4]]
    np.testing.assert_array_equal(energy_in_region(-np.ones((1, 3, 3)), np.ones((1, 3, 3), bool)), [0.0])


def test_paired_bootstrap_of_identical_methods_contains_zero_and_resolves_a_real_difference():
    rng = np.random.default_rng(1)
    a = rng.random(200)
    same = paired_bootstrap(a, a.copy())
    assert same["difference"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0 and not same["excludes_zero"]
    noisy = paired_bootstrap(a, a + rng.normal(0, 0.1, 200))  # no real difference, only noise
    assert noisy["low"] < 0 < noisy["high"] and not noisy["excludes_zero"]
    better = paired_bootstrap(a + 0.1, a + rng.normal(0, 0.05, 200))
    assert better["low"] > 0 and better["excludes_zero"]
    assert better["mean_a"] == pytest.approx(a.mean() + 0.1) and better["n"] == 200
    assert paired_bootstrap(a + 0.1, a, seed=3) == paired_bootstrap(a + 0.1, a, seed=3)  # seeded
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1, 2], [1, 2, 3])


def test_map_spearman_is_rank_based_and_nan_for_flat_maps():
    rng = np.random.default_rng(0)
    m = rng.random((3, 6, 6))
    np.testing.assert_allclose(map_spearman(m, np.exp(5 * m)), 1.0)  # monotone transform: same ranks
    np.testing.assert_allclose(map_spearman(m, -m), -1.0)
    rho = map_spearman(np.concatenate([m[:1], np.ones((1, 6, 6))]), np.concatenate([m[:1], m[1:2]]))
    assert rho[0] == pytest.approx(1.0) and np.isnan(rho[1])


def test_subcell_peak_recovers_the_vertex_of_a_sampled_parabola_and_keeps_borders_and_plateaus_at_the_centre():
    # A separable concave quadratic sampled on an 11×11 grid, true maximum at (row 4.3, col 6.8): the parabola through
    # three samples is the function itself, so the estimate is exact (and the cell argmax says (4, 7)).
    rows, cols = np.mgrid[:11, :11]
    m = 10 - (rows - 4.3) ** 2 - 2 * (cols - 6.8) ** 2
    assert np.unravel_index(m.argmax(), m.shape) == (4, 7)
    assert subcell_peak(m) == pytest.approx((4.3, 6.8), abs=1e-9)
    # A peak between two equal cells lies on their boundary: half a cell from either.
    flat_pair = np.zeros((5, 5))
    flat_pair[2, 1] = flat_pair[2, 2] = 1.0
    assert subcell_peak(flat_pair) == pytest.approx((2.0, 1.5))
    assert subcell_peak(flat_pair, location=(2, 2)) == pytest.approx((2.0, 1.5))
    # On the border there is no neighbour on one side: that axis stays at the cell's centre; a plateau also does.
    edge = np.zeros((5, 5))
    edge[0, 3], edge[1, 3], edge[0, 4] = 1.0, 0.5, 0.9
    assert subcell_peak(edge) == pytest.approx((0.0, 3.0 + (0.0 - 0.9) / (2 * (0.0 - 2 + 0.9))))
    assert subcell_peak(np.ones((3, 3))) == (0.0, 0.0) and subcell_peak(np.ones((3, 3)), (1, 1)) == (1.0, 1.0)
    # The offset never leaves the peak cell (a neighbour larger than the "peak" is clipped to half a cell).
    assert subcell_peak(np.array([[0.0, 1.0, 3.0]]), location=(0, 1)) == (0.0, 1.0)  # not concave: no shift
    assert subcell_peak(np.array([[0.0, 2.0, 1.9]]), location=(0, 1))[1] == pytest.approx(1.0 + 1.9 / 4.2)
    with pytest.raises(ValueError, match="outside the"):
        subcell_peak(np.zeros((3, 3)), location=(3, 0))
    with pytest.raises(ValueError, match="non-empty"):
        subcell_peak(np.zeros(4))


def test_region_centre_is_the_weighted_centre_of_the_top_region_around_the_maximum():
    yy, xx = np.mgrid[:84, :84] + 0.5  # pixel centres
    blob = lambda x, y, s, a: a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s**2))  # noqa: E731
    # One symmetric blob: its centre, to well under a pixel (the maximum of the map names only a pixel).
    one = blob(30.3, 52.8, 4.0, 1.0)
    np.testing.assert_allclose(region_centre(one[None]), [[30.3, 52.8]], atol=0.05)
    # Two blobs above the 95th percentile: the point stays in the one holding the maximum, not between them.
    two = blob(20.0, 20.0, 3.0, 1.0) + blob(60.0, 60.0, 3.0, 0.9)
    np.testing.assert_allclose(region_centre(two[None]), [[20.0, 20.0]], atol=0.05)
    # A flat map has no rise above its threshold: the plain centre of the (whole) region.
    np.testing.assert_allclose(region_centre(np.ones((1, 10, 6))), [[3.0, 5.0]])
    # A map upsampled from an 11×11 grid whose peak cell has a strong right neighbour: the point moves from the peak
    # cell's centre towards the neighbour (the maximum of the upsampled map stays on the cell centre).
    low = np.zeros((11, 11), np.float32)
    low[4, 7], low[4, 8] = 1.0, 0.8
    import torch.nn.functional as F

    up = F.interpolate(torch.from_numpy(low)[None, None], size=(84, 84), mode="bilinear", align_corners=False)[0, 0]
    cell_x = (7 + 0.5) * 84 / 11
    assert heatmap_peaks(up.numpy()[None])[0, 0] + 0.5 == pytest.approx(cell_x, abs=0.5)
    x, y = region_centre(up.numpy()[None])[0]
    assert cell_x + 1.5 < x < (8 + 0.5) * 84 / 11 and y == pytest.approx((4 + 0.5) * 84 / 11, abs=0.5)
    with pytest.raises(ValueError, match="quantile"):
        region_centre(one[None], quantile=1.0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        region_centre(one)
