"""Faithfulness on the dataset's own test images: deletion / insertion AUC and ROAD of InfoDisent's class heatmap vs
Grad-CAM on the same model vs a random order (the ground-truth benchmark, `benchmarks/groundtruth.py`, adds priors,
post-hoc methods on the original classifier and several deletion baselines)."""

from __future__ import annotations

import math

import numpy as np
import torch

from benchmarks.common import Bench
from modeling_infodisent.metrics import deletion_insertion_auc, road_scores


def section_faithfulness(bench: Bench, cache: dict) -> dict:
    """Deletion / insertion AUC and ROAD of InfoDisent's class heatmap vs Grad-CAM (same model) vs random."""
    from benchmarks.speed import grad_cam_maps

    seed = bench.args.seeds[0]
    model = cache.get("models", {}).get(("default", seed)) or bench.train(seed)[0]
    model.eval()
    n = bench.args.faithfulness_images
    x, labels = bench.eval_pixel_values(n)
    from PIL import Image

    h, w = x.shape[-2:]
    black = Image.new("RGB", (w, h), (0, 0, 0))
    baseline = bench.image_processor(black, return_tensors="pt")["pixel_values"][0].to(x.device)
    with torch.no_grad():
        predictions = model(x).logits.argmax(-1).cpu()
    maps = {"infodisent": [], "grad_cam": []}
    for start in range(0, len(x), 32):
        chunk, targets = x[start : start + 32], predictions[start : start + 32]
        maps["infodisent"] += [e.class_heatmap() for e in model.explain(chunk, target=targets)]
        maps["grad_cam"] += list(grad_cam_maps(model, chunk, targets=targets.tolist()))
    maps = {k: np.stack(v) for k, v in maps.items()}
    maps["random"] = np.random.default_rng(seed).random(maps["infodisent"].shape)

    def logits_fn(batch):
        return model(batch).logits

    steps = 28
    out = {
        "settings": {
            "model": f"the default recipe, seed {seed}",
            "images": int(len(x)),
            "targets": "the predicted class",
            "score": "softmax probability of the target class",
            "steps": steps,
            "baseline": "the image processor's encoding of a black image (Fashion-MNIST's background)",
            "infodisent_map": "signed class heatmap (Explanation.class_heatmap()): most positive evidence first, "
            "evidence against last",
            "grad_cam_map": "pytorch_grad_cam.GradCAM on the same InfoDisent model, target layer = the explained "
            "feature map I (backbone parameters temporarily require grad); ties broken at random",
            "road_images": int(min(bench.args.road_images, len(x))),
            "road_percentiles": [20, 50, 80] if bench.args.quick else [10, 20, 30, 40, 50, 60, 70, 80, 90],
        },
        "accuracy_on_these_images": float((predictions == labels).float().mean()),
    }
    for name, heat in maps.items():
        entry = {}
        for mode in ("deletion", "insertion"):
            aucs = deletion_insertion_auc(
                logits_fn, x, heat, predictions, mode=mode, steps=steps, baseline=baseline, seed=seed
            )
            entry[f"{mode}_auc"] = float(aucs.mean())
            entry[f"{mode}_auc_sem"] = float(aucs.std(ddof=1) / math.sqrt(len(aucs))) if len(aucs) > 1 else 0.0
        k = out["settings"]["road_images"]
        road = road_scores(
            model, x[:k], heat[:k], predictions[:k], percentiles=out["settings"]["road_percentiles"], seed=seed
        )
        for key, values in road.items():
            entry[f"road_{key}"] = float(values.mean())
        out[name] = entry
    out["randomisation"] = head_randomisation(model, x, predictions, maps["infodisent"], seeds=3)
    return out


def head_randomisation(model, x, targets, trained_maps, seeds: int = 3) -> dict:
    """The model-randomisation sanity check (Adebayo et al. 2018) on the head: Spearman between the trained model's
    class heatmaps and those of copies whose head is initialised again (as the model initialises it now, random U;
    and as it did before, U ≈ I), mean over images and `seeds` re-initialisations; the same for the peak map."""
    from benchmarks.groundtruth import explain_all, reinit_head
    from modeling_infodisent.metrics import map_spearman

    trained = explain_all(model, x, targets)
    peaks = np.stack([e.class_heatmap("peaks") for e in trained])
    out = {}
    for key, old in (("head/class_heatmap", False), ("head/class_heatmap_old_init", True), ("head/peak_map", False)):
        rho = []
        for r in range(seeds):
            again = explain_all(reinit_head(model, 1000 + r, old_init=old), x, targets)
            if key == "head/peak_map":
                rho.append(map_spearman(peaks, np.stack([e.class_heatmap("peaks") for e in again])))
            else:
                rho.append(map_spearman(trained_maps, np.stack([e.class_heatmap() for e in again])))
        rho = np.stack(rho)
        out[key] = {
            "spearman": float(np.nanmean(rho)),
            "abs_spearman": float(np.nanmean(np.abs(rho))),
            "per_seed": np.nanmean(rho, axis=1).tolist(),
        }
    return out
