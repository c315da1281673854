"""Compact explanations: an L1 penalty on the nonnegative classifier, then a per-class prototype budget.

A dense InfoDisent head spreads each class's weight over almost every channel, so explaining 90% of a decision
takes most of the prototypes. Following the idea of SIDE (arXiv 2507.19321) — train with a sparsity pressure, prune,
fine-tune — the training script

1. optionally adds ``sparsity_l1 * l1_penalty(model)`` and/or ``sparsity_hoyer * hoyer_penalty(model)`` to the
   loss during the main epochs, to push each class's weight mass onto fewer channels before pruning (measured on
   the Fashion-MNIST default, both only mildly change the weight distribution: the budget does the real work);
2. calls ``prune_to_budget(model, M)``: each class keeps its M largest weights, every other entry of
   ``model.head.classifier.prototype_mask`` becomes 0 (so the weight is exactly zero in every forward pass, after
   any optimiser step and after save / load: the mask is a saved buffer);
3. fine-tunes for a few epochs with the mask fixed.

``explain()``, the gallery and the renderer only list prototypes with a nonzero weight, so an explanation of a
pruned model has at most M positive prototypes.
"""

from __future__ import annotations

import torch

__all__ = ["hoyer_penalty", "l1_penalty", "prune_to_budget", "sparsity_stats"]


def l1_penalty(model) -> torch.Tensor:
    """Mean over classes of the L1 norm of the class's weight row, ``mean_k sum_c |W_kc|`` (W >= 0, so it is the
    average weight mass per class). Differentiable; add ``coefficient * l1_penalty(model)`` to the loss."""
    return model.classifier_weight.abs().sum(dim=1).mean()


def hoyer_penalty(model) -> torch.Tensor:
    """Mean over classes of ``||W_k||_1 / ||W_k||_2``: 1 for a class using one channel, sqrt(D) for a flat row.
    Unlike L1 it is scale-invariant, so it cannot be lowered by shrinking every weight alike (what an L1 penalty on
    ``softplus``-parametrised weights mostly does under Adam): it rewards concentrating a class's mass."""
    weight = model.classifier_weight
    return (weight.abs().sum(dim=1) / weight.norm(dim=1).clamp_min(1e-12)).mean()


@torch.no_grad()
def prune_to_budget(model, max_prototypes_per_class: int) -> dict:
    """Keep each class's ``max_prototypes_per_class`` largest weights (among those not already pruned) and zero the
    others through ``model.head.classifier.prototype_mask``. Idempotent. Returns statistics::

        {"max_prototypes_per_class", "nonzero_before", "nonzero_after", "kept_weight_fraction" (mean over classes of
         the weight mass kept), "prototypes_per_class" (list), "distinct_channels_used"}
    """
    if max_prototypes_per_class < 1:
        raise ValueError(f"max_prototypes_per_class must be >= 1, got {max_prototypes_per_class}.")
    classifier = model.head.classifier
    weight = model.classifier_weight.detach()
    mask = classifier.prototype_mask
    budget = min(int(max_prototypes_per_class), weight.shape[1])
    # Masked entries have weight 0 and are never preferred over a live one of equal value: rank on (weight, mask).
    score = torch.where(mask > 0, weight, torch.full_like(weight, -1.0))
    keep = torch.zeros_like(mask)
    keep.scatter_(1, score.topk(budget, dim=1).indices, 1.0)
    keep *= (mask > 0).to(keep.dtype)
    total = weight.sum(dim=1).clamp_min(1e-12)
    kept = (weight * keep).sum(dim=1)
    before = int((weight != 0).sum())
    mask.copy_(keep)
    stats = sparsity_stats(model)
    stats.update(
        max_prototypes_per_class=budget,
        nonzero_before=before,
        nonzero_after=int((model.classifier_weight != 0).sum()),
        kept_weight_fraction=float((kept / total).mean()),
    )
    return stats


@torch.no_grad()
def sparsity_stats(model) -> dict:
    """How sparse W is: nonzero weights per class and the number of distinct channels any class uses (a channel
    carries two prototypes, its + and - pole; both share the weight W_kc)."""
    weight = model.classifier_weight.detach()
    nonzero = weight != 0
    per_class = nonzero.sum(dim=1).tolist()
    return {
        "prototypes_per_class": [int(n) for n in per_class],
        "max_prototypes_per_class_used": int(max(per_class)) if per_class else 0,
        "distinct_channels_used": int(nonzero.any(dim=0).sum()),
    }
