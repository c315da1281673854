"""The FIRST ground-truth benchmark (issue 14), superseded by `benchmarks/groundtruth_trust.py` (issue 22).

Its sets have a model-free shortcut (`benchmarks/groundtruth_audit.py` rejects them) and it read InfoDisent through a
post-hoc pixel attribution but Grad-CAM at its maximum; `benchmarks/run.py` no longer runs it. Kept importable for
`benchmarks/groundtruth_failures.py` and the record of `benchmarks/results_groundtruth_*.json`.

Data from `benchmarks/generate.py` (Fashion-MNIST garments on 84×84 canvases): ``cluttered`` (the garment's box is the
answer) and ``part`` (the class is the shape of one small mark; its box is the answer, and the generator can render the
same image without it). The black boxes are the bundled ResNets of `benchmarks/gt_models/` (trained on these data by
`training/pretrain_backbone.py`; 11×11 feature grid). InfoDisent is trained on their feature maps by the training
script's own `fit_head`, with the training script's default recipe.

Every metric is per image, and every comparison a paired bootstrap CI over the images
(`modeling_infodisent.metrics.paired_bootstrap`):

- localisation: pointing game and energy-in-box of each map, and of the top prototypes' peaks;
- correctness: the generator removes the truth (the garment / the decisive mark) and the explanation's top prototypes
  must lose their contribution (more than the other prototypes do); completeness: the share of the positive evidence
  whose prototypes peak inside the truth;
- deletion / insertion AUC with black, mean and blurred baselines, and ROAD;
- the model-randomisation sanity check: Spearman between maps of the trained model and of a model whose head (or last
  backbone stage) is re-initialised, for InfoDisent and for Grad-CAM on the original classifier;
- prototype occlusion: the contribution a top prototype loses when its reported cell is occluded vs other cells.

Baselines: a centre Gaussian, the image's brightness, random maps; Grad-CAM, ScoreCAM and AblationCAM (`grad-cam`) on
the ORIGINAL classifier (the backbone with its own head); Grad-CAM on the InfoDisent model.

This module scores and runs the sections; the maps and prototype locators are in
`benchmarks/groundtruth_locators.py`, the sizes, seeds, data and models in `benchmarks/groundtruth_setup.py`.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from types import SimpleNamespace

import numpy as np
import torch

from benchmarks.common import Bench
from benchmarks.groundtruth_locators import (
    DEFAULT_LOCATOR,
    cells_inside,
    centre_gaussian,
    explain_all,
    input_x_gradient,
    last_stage,
    peak_share_inside,
    posthoc_maps,
    predictions,
    proto_points,
)
from benchmarks.groundtruth_locators import LOCATORS as LOCATORS
from benchmarks.groundtruth_locators import OriginalLogits as OriginalLogits
from benchmarks.groundtruth_locators import grid_subcell_points as grid_subcell_points
from benchmarks.groundtruth_maps import reinit_module
from benchmarks.groundtruth_report import BASELINES
from benchmarks.groundtruth_setup import GT_MODELS as GT_MODELS
from benchmarks.groundtruth_setup import OLD_ROTATION_STD as OLD_ROTATION_STD
from benchmarks.groundtruth_setup import TEST_SEED as TEST_SEED
from benchmarks.groundtruth_setup import TRAIN_SEED as TRAIN_SEED
from benchmarks.groundtruth_setup import TUNING_SEED as TUNING_SEED
from benchmarks.groundtruth_setup import _gt_bench, reinit_head, settings, train_variant
from modeling_infodisent.explanation import cell_box_px
from modeling_infodisent.metrics import (
    box_masks,
    deletion_insertion_auc,
    energy_in_region,
    heatmap_peaks,
    map_spearman,
    paired_bootstrap,
    pointing_game,
    region_centre,
    road_scores,
)

# The `X as X` imports above are re-exports: the docs, `benchmarks/groundtruth_failures.py` and the tests name them
# as `groundtruth.X`.

logger = logging.getLogger("benchmarks")

TOP_K = 3  # "top prototypes": the 3 largest positive contributions


# ------------------------------------------------------------------------------------------------------ sections
def _localisation(maps: dict, points: dict, boxes, size: int, tol: int) -> dict:
    grown = np.asarray(boxes) + np.array([-tol, -tol, tol, tol])
    grown = np.clip(grown, 0, size)
    region = box_masks(boxes, (size, size))
    out = {}
    for name, m in maps.items():  # a costly baseline may cover only the first len(m) images
        out[name] = {
            "pointing": pointing_game(heatmap_peaks(m) + 0.5, grown[: len(m)]).astype(float),
            "energy": energy_in_region(m, region[: len(m)]),
        }
    for name, pts in points.items():  # (N, k, 2) prototype peaks: share of the k inside the truth
        hits = np.stack([pointing_game(pts[:, j], grown[: len(pts)]) for j in range(pts.shape[1])], 1).astype(float)
        hits[np.isnan(pts[..., 0])] = np.nan
        out[name] = {"pointing": np.nanmean(hits, axis=1) if pts.shape[1] > 1 else hits[:, 0]}
    return out


def _paired(a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    n = min(len(a), len(b))
    return paired_bootstrap(np.nan_to_num(a[:n]), b[:n], seed=seed)


def _correctness(model, bench, variant, s, x, targets, explanations, seed) -> dict:
    """Remove the truth by the generator and re-explain the same class: the top prototypes' contribution drop."""
    from benchmarks.generate import make_cluttered, make_part_defined

    n = len(x)
    if variant == "part":  # the same test images (same seed, same indices) without their truth
        removed = make_part_defined("test", n, seed=s["test_seed"], without_part=True)
    else:
        removed = make_cluttered("test", n, seed=s["test_seed"], without_object=True)
    batch = bench.transform({bench.image_column: removed["image"], bench.label_column: removed["label"]})
    x_removed = torch.stack(batch["pixel_values"]).float().to(x.device)
    after = explain_all(model, x_removed, targets)
    drop_top, drop_rest, logit_drop = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
    for i, (e, a) in enumerate(zip(explanations, after)):
        now = {(p.channel, p.sign): p.contribution for p in a.prototypes}
        pos = e.positive
        top, rest = pos[:TOP_K], pos[TOP_K:]
        before_top = sum(p.contribution for p in top)
        if before_top > 0:
            drop_top[i] = 1 - sum(now.get((p.channel, p.sign), 0.0) for p in top) / before_top
        before_rest = sum(p.contribution for p in rest)
        if before_rest > 0:
            drop_rest[i] = 1 - sum(now.get((p.channel, p.sign), 0.0) for p in rest) / before_rest
        logit_drop[i] = e.logit - a.logit
    both = ~np.isnan(drop_top) & ~np.isnan(drop_rest)
    still = (predictions(model, x_removed) == torch.as_tensor(targets)).float().mean().item()
    return {
        "removed": "the decisive mark" if variant == "part" else "the garment (clutter kept)",
        "top_k": TOP_K,
        "top_drop": float(np.nanmean(drop_top)),
        "other_drop": float(np.nanmean(drop_rest)),
        "top_vs_other": paired_bootstrap(drop_top[both], drop_rest[both], seed=seed),
        "logit_drop_mean": float(logit_drop.mean()),
        "same_class_after_removal": still,
    }


def _occlusion(model, x: torch.Tensor, targets, fill: torch.Tensor) -> dict:
    """Occlude each feature-grid cell's pixels in turn (with `fill`); for each top prototype, the relative drop of its
    contribution when its own reported cell is occluded vs when another cell is."""
    own, others, best = [], [], []
    for i in range(len(x)):
        (e,) = model.explain(x[i : i + 1], target=int(targets[i]))
        top = e.positive[:TOP_K]
        if not top:
            continue
        h, w = e.feature_grid
        boxes = [cell_box_px((r, c), (h, w), e.image_size) for r in range(h) for c in range(w)]  # every cell
        batch = x[i].repeat(len(boxes), 1, 1, 1)
        for j, (x0, y0, x1, y1) in enumerate(boxes):
            batch[j, :, y0:y1, x0:x1] = fill[:, y0:y1, x0:x1]
        with torch.no_grad():
            out = model(batch)
        for p in top:
            act = (out.pos_activations if p.sign > 0 else out.neg_activations)[:, p.channel].cpu().numpy()
            drop = 1 - act / p.activation  # (h*w,) relative loss of this prototype's contribution
            k = p.peak_cell[0] * w + p.peak_cell[1]
            own.append(drop[k])
            others.append(np.median(np.delete(drop, k)))
            best.append(float(np.argmax(drop) == k))
    own, others = np.array(own), np.array(others)
    return {
        "prototypes": int(len(own)),
        "own_cell_drop_median": float(np.median(own)),
        "other_cell_drop_median": float(np.median(others)),
        "own_vs_other": paired_bootstrap(own, others),
        "own_cell_is_most_effective": float(np.mean(best)),
        "fill": "the test images' mean pixel",
    }


def _deletion(model_fns: dict, groups: dict, x, preds: dict, baselines: dict, s: dict, seed: int) -> dict:
    """Deletion / insertion AUC with each baseline and ROAD, each map on the model whose decision it explains."""
    out = {}
    n = min(s["deletion_images"], len(x))
    for model_name, maps in groups.items():
        fn, t = model_fns[model_name], preds[model_name][:n]
        for name, m in maps.items():
            entry = {}
            for base_name, base in baselines.items():
                for mode in ("deletion", "insertion"):
                    entry[f"{mode}_{base_name}"] = deletion_insertion_auc(
                        fn, x[:n], m[:n], t, mode=mode, steps=s["deletion_steps"], baseline=base[:n], seed=seed
                    )
            road = road_scores(fn, x[:n], m[:n], t, percentiles=s["road_percentiles"], seed=seed)
            entry["road_combined"] = road["combined"]
            out[f"{model_name}/{name}"] = entry
    return out


def run_variant(variant: str, args, device, timer, s: dict) -> dict:
    seed = args.seeds[0]
    folder = tempfile.mkdtemp(prefix=f"infodisent-gt-{variant}-")
    try:
        with timer(f"groundtruth_{variant}_data"):
            bench = _gt_bench(variant, args, device, timer, folder, s)
        try:
            return _run(variant, bench, s, seed)
        finally:
            bench.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(variant: str, bench: Bench, s: dict, seed: int) -> dict:
    from benchmarks.speed import grad_cam_maps

    test = bench.dataset[bench.report_split]
    x, labels = bench.eval_pixel_values(len(test))
    size = x.shape[-1]
    boxes = np.asarray(test["box"])
    raw = np.stack([np.asarray(im, dtype=np.float32) for im in test["image"]])
    original = bench.head_model.eval()
    orig_pred = predictions(original, x)
    n_costly, n_rand = min(s["costly_images"], len(x)), min(s["randomisation_images"], len(x))
    models, results = (
        {},
        {
            "settings": {
                "variant": variant,
                "test_images": int(len(x)),
                "target": "the true class",
                "pointing_tolerance_px": None,
                **s,
            }
        },
    )
    results["original_accuracy"] = float((orig_pred == labels).float().mean())
    results["models"] = {}
    for name, old in (("before", True), ("after", False)):
        models[name], summary = train_variant(bench, seed, old_init=old)
        results["models"][name] = summary
    logger.info("ground truth %s: models trained; maps", variant)
    # Maps of the true class (the pointing game's protocol).
    expl = {name: explain_all(m, x, labels, relevance=TOP_K) for name, m in models.items()}
    grid = expl["after"][0].feature_grid
    tol = int(round(size / grid[1] / 2))  # half a feature cell: the resolution every map here shares
    results["settings"]["pointing_tolerance_px"] = tol
    results["settings"]["prototype_locator"] = DEFAULT_LOCATOR
    maps = {
        "infodisent_before/maps": np.stack([e.class_heatmap() for e in expl["before"]]),
        "infodisent_after/maps": np.stack([e.class_heatmap() for e in expl["after"]]),
        "infodisent_after/peaks": np.stack([e.class_heatmap("peaks") for e in expl["after"]]),
        # In chunks: one Grad-CAM call keeps the whole batch's backbone graph (10,000 images: tens of GB).
        "grad_cam_infodisent": np.concatenate(
            [
                grad_cam_maps(models["after"], x[i : i + 64], targets=labels[i : i + 64].tolist())
                for i in range(0, len(x), 64)
            ]
        ),
        "input_x_gradient_original": input_x_gradient(original, x, labels.tolist()),
        **{f"{k}_original": v for k, v in posthoc_maps(original, x, labels.tolist(), ("grad_cam",)).items()},
        # ScoreCAM / AblationCAM: 64 masked forward passes per image, so only the first `costly_images`.
        **{
            f"{k}_original": v
            for k, v in posthoc_maps(
                original, x[:n_costly], labels[:n_costly].tolist(), ("score_cam", "ablation_cam")
            ).items()
        },
        "centre_prior": centre_gaussian(len(x), size),
        "brightness": raw,
        "random": np.random.default_rng(seed).random(raw.shape).astype(np.float32),
    }
    points = {f"infodisent_{k}/top1_prototype": proto_points(e, 1) for k, e in expl.items()}
    points.update({f"infodisent_{k}/top{TOP_K}_prototypes": proto_points(e, TOP_K) for k, e in expl.items()})
    # The readouts before (the upsampled map's region centre; before that, the peak cell's centre), on the same images.
    points["infodisent_after/top1_prototype_region"] = proto_points(expl["after"], 1, "region")
    points[f"infodisent_after/top{TOP_K}_prototypes_region"] = proto_points(expl["after"], TOP_K, "region")
    points["infodisent_after/top1_prototype_cell"] = proto_points(expl["after"], 1, "cell")
    points[f"infodisent_after/top{TOP_K}_prototypes_cell"] = proto_points(expl["after"], TOP_K, "cell")
    # The maps read out the same way as the prototypes (region centre instead of the maximum), so that the readout
    # alone cannot make the difference: the peak evidence map and, as a baseline, Grad-CAM on the original.
    points["infodisent_after/peaks_region"] = region_centre(maps["infodisent_after/peaks"])[:, None]
    points["grad_cam_original_region"] = region_centre(maps["grad_cam_original"])[:, None]
    loc = _localisation(maps, points, boxes, size, tol)
    results["localisation"] = {k: {m: float(np.nanmean(v)) for m, v in d.items()} for k, d in loc.items()}
    ours = [k for k in loc if k.startswith("infodisent")]
    results["comparisons"] = {  # paired on the images both were measured on (the costly baselines: the first ones)
        f"{a} vs {b}/{metric}": _paired(loc[a][metric], loc[b][metric], seed)
        for a in ours
        for b in BASELINES
        for metric in ("pointing", "energy")
        if metric in loc[a] and metric in loc[b]
    }
    logger.info("ground truth %s: correctness / completeness", variant)
    for k, e in expl.items():
        share = peak_share_inside(e, boxes)
        chance = cells_inside(boxes, grid, size)
        results.setdefault("completeness", {})[k] = {
            "share_inside": float(share.mean()),
            "uniform_peaks": float(chance.mean()),
            "vs_uniform": paired_bootstrap(share, chance, seed=seed),
        }
        results.setdefault("correctness", {})[k] = _correctness(
            models[k], bench, variant, s, x, labels.tolist(), e, seed
        )
    logger.info("ground truth %s: randomisation", variant)
    # Model randomisation: the trained maps vs maps of re-initialised heads / last backbone stage.
    rnd = {"images": n_rand}
    xr, lr = x[:n_rand], labels[:n_rand]
    for k in ("before", "after"):
        rho = {"maps": [], "peaks": []}
        for r in range(s["randomisation_seeds"]):
            e_r = explain_all(reinit_head(models[k], 1000 + r, old_init=k == "before"), xr, lr)
            rho["maps"].append(
                map_spearman(maps[f"infodisent_{k}/maps"][:n_rand], np.stack([e.class_heatmap() for e in e_r]))
            )
            if k == "after":
                peaks = np.stack([e.class_heatmap("peaks") for e in e_r])
                rho["peaks"].append(map_spearman(maps["infodisent_after/peaks"][:n_rand], peaks))
        for kind, vals in rho.items():
            if vals:
                v = np.stack(vals)
                rnd[f"head/infodisent_{k}/{kind}"] = {
                    "spearman": float(np.nanmean(v)),
                    "abs_spearman": float(np.nanmean(np.abs(v))),
                }
    head_copy = copy.deepcopy(original)
    rho = []
    for r in range(s["randomisation_seeds"]):
        reinit_module(head_copy.classifier, 1000 + r)
        rho.append(
            map_spearman(
                maps["grad_cam_original"][:n_rand], posthoc_maps(head_copy, xr, lr.tolist(), ("grad_cam",))["grad_cam"]
            )
        )
    rnd["head/grad_cam_original"] = {"spearman": float(np.nanmean(rho)), "abs_spearman": float(np.nanmean(np.abs(rho)))}
    stage_orig = copy.deepcopy(original)
    reinit_module(last_stage(stage_orig), 2000)
    rho = map_spearman(
        maps["grad_cam_original"][:n_rand], posthoc_maps(stage_orig, xr, lr.tolist(), ("grad_cam",))["grad_cam"]
    )
    rnd["last_stage/grad_cam_original"] = {
        "spearman": float(np.nanmean(rho)),
        "abs_spearman": float(np.nanmean(np.abs(rho))),
    }
    for k in ("before", "after"):
        m = copy.deepcopy(models[k])
        reinit_module(m.backbone.model.encoder.stages[-1], 2000)
        e_r = explain_all(m.eval(), xr, lr)
        rho = map_spearman(maps[f"infodisent_{k}/maps"][:n_rand], np.stack([e.class_heatmap() for e in e_r]))
        rnd[f"last_stage/infodisent_{k}/maps"] = {
            "spearman": float(np.nanmean(rho)),
            "abs_spearman": float(np.nanmean(np.abs(rho))),
        }
    results["randomisation"] = rnd
    logger.info("ground truth %s: occlusion", variant)
    fill = x.mean(dim=(0, 2, 3))[:, None, None].expand_as(x[0])
    n_occ = min(s["occlusion_images"], len(x))
    results["occlusion"] = {k: _occlusion(models[k], x[:n_occ], labels[:n_occ].tolist(), fill) for k in models}
    if variant in s["deletion_variants"]:
        logger.info("ground truth %s: deletion / insertion / ROAD", variant)
        results["deletion"] = _deletion_section(models, original, maps, x, s, seed)
    return results


def _deletion_section(models, original, maps, x, s, seed) -> dict:
    """Maps of each model's predicted class (the project's deletion protocol), scored on that model."""
    import torchvision.transforms.functional as TF

    from benchmarks.speed import grad_cam_maps

    n = min(s["deletion_images"], len(x))
    xs = x[:n]
    with torch.no_grad():
        preds = {
            "infodisent": models["after"](xs).logits.argmax(-1).cpu(),
            "infodisent_before": models["before"](xs).logits.argmax(-1).cpu(),
            "original": original(pixel_values=xs).logits.argmax(-1).cpu(),
        }
    e_after = explain_all(models["after"], xs, preds["infodisent"])
    e_before = explain_all(models["before"], xs, preds["infodisent_before"])
    size = xs.shape[-1]
    priors = {
        "centre_prior": maps["centre_prior"][:n],
        "brightness": maps["brightness"][:n],
        "random": maps["random"][:n],
    }
    groups = {
        "infodisent": {
            "infodisent_after/maps": np.stack([e.class_heatmap() for e in e_after]),
            "infodisent_after/peaks": np.stack([e.class_heatmap("peaks") for e in e_after]),
            "grad_cam_infodisent": grad_cam_maps(models["after"], xs, targets=preds["infodisent"].tolist()),
            **priors,
        },
        "infodisent_before": {"infodisent_before/maps": np.stack([e.class_heatmap() for e in e_before])},
        "original": {
            **{f"{k}_original": v for k, v in posthoc_maps(original, xs, preds["original"].tolist()).items()},
            **priors,
        },
    }
    fns = {
        "infodisent": lambda b: models["after"](b).logits,
        "infodisent_before": lambda b: models["before"](b).logits,
        "original": lambda b: original(pixel_values=b).logits,
    }
    sigma = size / 12
    baselines = {
        "black": torch.full_like(xs, float(xs.min())),  # the processor's encoding of black (the canvas background)
        "mean": xs.mean(dim=(0, 2, 3), keepdim=True).expand_as(xs).contiguous(),
        "blur": TF.gaussian_blur(xs, kernel_size=2 * int(3 * sigma) + 1, sigma=sigma),
    }
    scores = _deletion(fns, groups, xs, preds, baselines, s, seed)
    out = {"images": n, "steps": s["deletion_steps"], "sigma_blur_px": sigma, "scores": {}, "comparisons": {}}
    for key, entry in scores.items():
        out["scores"][key] = {m: float(np.mean(v)) for m, v in entry.items()}
    for ours in ("infodisent/infodisent_after/maps", "infodisent/infodisent_after/peaks"):
        for key, entry in scores.items():
            if key == ours:
                continue
            for m, theirs in entry.items():
                mine = scores[ours][m]
                # Positive difference = ours better: deletion AUC is better lower, the others higher.
                pair = (
                    paired_bootstrap(theirs, mine, seed=seed)
                    if m.startswith("deletion")
                    else paired_bootstrap(mine, theirs, seed=seed)
                )
                out["comparisons"][f"{ours} vs {key}/{m}"] = pair
    return out


def section_groundtruth(args, device, timer) -> dict:
    from training.build_fashion_mnist_subset import FashionMNISTMissing, load_fashion_mnist_idx

    s = settings(args.quick)
    out = {"settings": s}
    try:  # the generator draws garments from the Debian Fashion-MNIST files
        load_fashion_mnist_idx("test")
    except FashionMNISTMissing as error:
        logger.warning("ground truth skipped: %s", error)
        return {"skipped": str(error)}
    for variant in ("cluttered", "part"):
        with timer(f"groundtruth_{variant}"):
            out[variant] = run_variant(variant, args, device, timer, s)
    return out


if __name__ == "__main__":  # a quick look at one variant: python benchmarks/groundtruth.py cluttered
    import sys
    import time

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from benchmarks.common import Timer, _jsonable

    torch.set_num_threads(1)
    ns = SimpleNamespace(quick=True, seeds=[0], num_train_epochs=6, finetune_epochs=2)
    t = time.time()
    r = run_variant(sys.argv[1] if len(sys.argv) > 1 else "cluttered", ns, torch.device("cpu"), Timer(), settings(True))
    import json

    print(json.dumps(_jsonable(r), indent=1))
    print(f"{time.time() - t:.0f} s", file=sys.stderr)
