"""Compactness and disentanglement: explanation size, poles never used, RV coefficients raw → rotated."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import Bench
from modeling_infodisent.metrics import class_contributions, explanation_sizes, fraction_unused_poles, mean_pairwise_rv


@torch.no_grad()
def _head_outputs(model, data, batch_size: int = 256):
    """Head outputs over a FeatureCache: raw maps I (kept for the first `keep` rows), pooled poles, logits."""
    from torch.utils.data import DataLoader

    from training.features import collate_batch

    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_batch)
    pos, neg, logits = [], [], []
    for batch in loader:
        out = model.head(batch["features"].to(model.device))
        pos.append(out.pos_activations.cpu())
        neg.append(out.neg_activations.cpu())
        logits.append(out.logits.cpu())
    return torch.cat(pos), torch.cat(neg), torch.cat(logits)


def section_compactness(bench: Bench, cache: dict) -> dict:
    """Explanation size, unused poles and RV coefficients for the default model and the dense head (seed 0)."""
    out = {
        "definitions": {
            "explanation_size": "prototypes (channel poles) needed for 90% of the predicted class's positive evidence",
            "unused_poles": "share of the 2D poles in no test image's 90% explanation set (positive evidence); "
            "'_any_sign' builds the sets on |contribution| so that evidence against a class counts too",
            "rv_spatial": "mean over channel pairs of the RV coefficient between the channels' (N, h*w) "
            "feature maps over the test images; raw = backbone map I, rotated = J = U I",
            "rv_pooled": "same on pooled per-channel scalars (= mean squared correlation): "
            "max(ReLU(x)) - max(ReLU(-x)) of each raw channel vs of each rotated channel (InfoDisent's v = pos - neg)",
        }
    }
    seed = bench.args.seeds[0]
    n_rv = 1000
    features = torch.from_numpy(
        np.asarray(bench.report_cache.__getitems__(np.arange(min(n_rv, len(bench.report_cache))))["features"])
    )
    for kind in ("default", "dense"):
        model = cache.get("models", {}).get((kind, seed))
        if model is None:
            model = bench.train(
                seed, fit=None if kind == "default" else {"sparsity_l1": 0.0, "max_prototypes_per_class": 0}
            )[0]
            cache.setdefault("models", {})[(kind, seed)] = model
        pos, neg, logits = _head_outputs(model, bench.report_cache)
        predictions = logits.argmax(-1)
        contributions = class_contributions(model.classifier_weight.detach().cpu(), pos, neg, predictions)
        sizes = explanation_sizes(contributions)
        with torch.no_grad():
            rotated = model.head.rotate(features.to(model.device)).cpu()
        raw_pooled = features.flatten(2).clamp_min(0).amax(-1) - (-features).flatten(2).clamp_min(0).amax(-1)
        rot_pooled = rotated.flatten(2).clamp_min(0).amax(-1) - (-rotated).flatten(2).clamp_min(0).amax(-1)
        out[kind] = {
            "seed": seed,
            "num_images": int(len(sizes)),
            "num_poles": int(contributions.shape[1]),
            "explanation_size_median": float(np.median(sizes)),
            "explanation_size_p90": float(np.percentile(sizes, 90)),
            "explanation_size_max": int(sizes.max()),
            "unused_poles": fraction_unused_poles(contributions),
            "unused_poles_any_sign": fraction_unused_poles(contributions, absolute=True),
            "rv_spatial_raw": mean_pairwise_rv(features),
            "rv_spatial_rotated": mean_pairwise_rv(rotated),
            "rv_pooled_raw": mean_pairwise_rv(raw_pooled),
            "rv_pooled_rotated": mean_pairwise_rv(rot_pooled),
            "rv_images": int(features.shape[0]),
        }
    return out
