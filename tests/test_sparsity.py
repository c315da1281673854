"""Compact explanations (training/sparsity.py): the L1 penalty, pruning to a per-class budget, and what pruning
guarantees downstream (exact zeros through training and save / load, explain() skips pruned prototypes)."""

import numpy as np
import pytest
import torch

from modeling_infodisent import InfoDisentForImageClassification
from modeling_infodisent.metrics import explanation_size
from training.fit import FitConfig, fit_head
from training.sparsity import hoyer_penalty, l1_penalty, prune_to_budget, sparsity_stats


@pytest.fixture
def spread_model(tiny_model):
    """tiny_model with distinct, known weights (no ties), so that the expected top-M sets are unambiguous."""
    torch.manual_seed(1)
    with torch.no_grad():
        raw = tiny_model.head.classifier.weight_raw
        raw.copy_(torch.randn_like(raw))
    return tiny_model


def test_l1_penalty_is_mean_class_mass(spread_model):
    weight = spread_model.classifier_weight.detach()
    assert float(l1_penalty(spread_model).detach()) == pytest.approx(float(weight.sum(dim=1).mean()), rel=1e-6)
    penalty = l1_penalty(spread_model)
    penalty.backward()
    assert spread_model.head.classifier.weight_raw.grad is not None
    assert (spread_model.head.classifier.weight_raw.grad > 0).all()  # gradient descent shrinks every weight


def test_hoyer_penalty_on_constructed_weights(spread_model):
    classifier = spread_model.head.classifier
    with torch.no_grad():  # relu constraint: W = raw exactly, so rows can be one-hot / flat
        classifier.constraint = "relu"
        classifier.weight_raw.zero_()
        classifier.weight_raw[0, 3] = 2.0  # one channel: ||w||_1 / ||w||_2 = 1
        classifier.weight_raw[1] = 0.5  # flat over D = 32 channels: sqrt(32)
        classifier.weight_raw[2, :4] = 1.0  # flat over 4: 2
    assert float(hoyer_penalty(spread_model).detach()) == pytest.approx((1 + 32**0.5 + 2) / 3, rel=1e-6)
    classifier.weight_raw.data[1] *= 10  # scale-invariant
    assert float(hoyer_penalty(spread_model).detach()) == pytest.approx((1 + 32**0.5 + 2) / 3, rel=1e-6)


def test_prune_keeps_each_class_top_weights(spread_model):
    before = spread_model.classifier_weight.detach().clone()
    stats = prune_to_budget(spread_model, 5)
    after = spread_model.classifier_weight.detach()
    mask = spread_model.head.classifier.prototype_mask
    for k in range(before.shape[0]):
        expected = set(before[k].topk(5).indices.tolist())
        assert set(torch.nonzero(after[k]).flatten().tolist()) == expected
        assert torch.equal(after[k][sorted(expected)], before[k][sorted(expected)])  # kept weights unchanged
    assert int((after == 0).sum()) == after.numel() - 3 * 5 and set(mask.unique().tolist()) == {0.0, 1.0}
    kept = np.mean([float(before[k].topk(5).values.sum() / before[k].sum()) for k in range(3)])
    assert stats["kept_weight_fraction"] == pytest.approx(kept, rel=1e-6)
    assert stats["prototypes_per_class"] == [5, 5, 5] and stats["nonzero_before"] == 96 and stats["nonzero_after"] == 15
    assert stats["distinct_channels_used"] == len(set(torch.nonzero(after)[:, 1].tolist()))
    # Idempotent; a tighter budget only removes; a looser one never revives a pruned weight.
    assert prune_to_budget(spread_model, 5)["nonzero_after"] == 15
    assert prune_to_budget(spread_model, 40)["prototypes_per_class"] == [5, 5, 5]
    assert prune_to_budget(spread_model, 2)["prototypes_per_class"] == [2, 2, 2]
    with pytest.raises(ValueError, match="max_prototypes_per_class must be >= 1"):
        prune_to_budget(spread_model, 0)


def test_pruned_weights_stay_zero_through_training_and_save_load(spread_model, tmp_path):
    prune_to_budget(spread_model, 4)
    zero = spread_model.classifier_weight.detach() == 0
    spread_model.train()
    optimizer = torch.optim.Adam(spread_model.head.parameters(), lr=0.1)
    features = torch.randn(16, 32, 2, 2)
    labels = torch.randint(0, 3, (16,))
    for _ in range(5):
        loss = spread_model.head(features, labels).loss + 0.1 * l1_penalty(spread_model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    weight = spread_model.classifier_weight.detach()
    assert (weight[zero] == 0).all() and (weight[~zero] != 0).all()
    spread_model.eval().save_pretrained(tmp_path)
    reloaded = InfoDisentForImageClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.classifier_weight, weight)
    assert sparsity_stats(reloaded)["prototypes_per_class"] == [4, 4, 4]


def test_explain_on_pruned_model_lists_only_kept_prototypes(spread_model):
    prune_to_budget(spread_model, 3)
    weight = spread_model.classifier_weight.detach()
    torch.manual_seed(0)
    pixel_values = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        logits = spread_model(pixel_values).logits
    for target in range(3):
        for i, explanation in enumerate(spread_model.explain(pixel_values, target=target)):
            kept = set(torch.nonzero(weight[target]).flatten().tolist())
            assert {p.channel for p in explanation.prototypes} <= kept
            assert all(p.weight == pytest.approx(float(weight[target, p.channel])) for p in explanation.prototypes)
            assert explanation.total == pytest.approx(float(logits[i, target]), abs=1e-5)
            assert explanation_size(explanation) <= 3


def test_fit_head_prunes_then_finetunes_within_budget(tiny_model):
    """fit_head's schedule on random cached features: after training, each class uses exactly M prototypes, every
    explanation uses at most M, and the mask was applied before the fine-tuning steps."""

    class Data(torch.utils.data.Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.labels = torch.randint(0, 3, (n,), generator=g)
            self.features = torch.randn(n, 32, 2, 2, generator=g) + self.labels[:, None, None, None] * 0.5

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"features": self.features[i], "labels": self.labels[i], "index": torch.tensor(i)}

    config = FitConfig(
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        sparsity_l1=1e-2,
        max_prototypes_per_class=4,
        finetune_epochs=1,
        eval_steps=5,
        show_progress=False,
    )
    result = fit_head(tiny_model, Data(40, 0), Data(12, 1), config)
    assert result["global_step"] == 3 * 5  # 2 main epochs + 1 fine-tuning epoch of 5 batches of 8
    assert result["pruning"]["nonzero_after"] == 12 and result["sparsity"]["prototypes_per_class"] == [4, 4, 4]
    assert result["explanation_size_p90"] <= 4
    assert [(r["phase"], r["step"]) for r in result["history"]] == [
        ("main", 5),
        ("main", 10),
        ("pruned", 10),
        ("finetune", 15),
    ]
