"""Evaluation of the InfoDisent head and the linear-probe baseline (the training script, `training.fit` and the
benchmarks call them).

* ``evaluate(model, data, ...) -> dict``: accuracy, agreement with the backbone's own head, explanation sizes, every
  example counted once across processes.
* ``train_linear_probe(train_data, eval_data, ...) -> dict``: the linear-probe baseline on average-pooled features.
* ``live_featurizer(model, head_model=None)``: what turns a batch of images into (feature map, backbone-head logits)
  when the data is ``training.features.LiveImages`` instead of a feature cache.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modeling_infodisent.metrics import class_contributions, explanation_sizes
from training.features import collate_batch

__all__ = ["cached_featurizer", "evaluate", "live_featurizer", "train_linear_probe"]


def cached_featurizer(batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    return batch["features"], batch.get("teacher_logits")


def live_featurizer(model, head_model=None) -> Callable:
    """Featurizer for LiveImages batches: runs the frozen backbone (and its own head, for distillation and
    agreement)."""

    @torch.no_grad()
    def featurize(batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        pixel_values = batch["pixel_values"]
        teacher = head_model(pixel_values=pixel_values).logits.float() if head_model is not None else None
        return model.extract_features(pixel_values), teacher

    return featurize


# ---------------------------------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate(
    model,
    data,
    batch_size: int = 256,
    accelerator=None,
    featurizer: Callable | None = None,
    fraction: float = 0.9,
    show_progress: bool = False,
) -> dict:
    """Evaluate the InfoDisent model (eval mode: exact max pooling) on a FeatureCache or LiveImages.

    Every example is counted exactly once across processes (``gather_for_metrics`` drops the padding duplicates;
    the rows are put back in split order by their index). Returns ``accuracy``, ``num_examples``, ``predictions``,
    ``labels`` (numpy, split order), the explanation sizes (prototypes needed for ``fraction`` of the predicted
    class's positive evidence: ``explanation_size_median`` / ``_p90`` / ``_mean``), and, when the data carries the
    backbone head's logits, ``backbone_head_accuracy`` and ``agreement`` (top-1 of InfoDisent == top-1 of the head).
    """
    featurizer = featurizer or cached_featurizer
    streamed = hasattr(data, "eval_batches")  # a `training.streaming.StreamSplit`: each process reads its shard
    loader = (
        data.eval_batches(batch_size, accelerator)
        if streamed
        else DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_batch)
    )
    if accelerator is not None and not streamed:
        from accelerate.data_loader import prepare_data_loader

        # The module-level helper (not accelerator.prepare) so that repeated evaluations do not pile up in the
        # accelerator's list of data loaders that save_state / load_state walk through.
        loader = prepare_data_loader(
            loader,
            accelerator.device,
            num_processes=accelerator.num_processes,
            process_index=accelerator.process_index,
            put_on_device=True,
        )
    head = model.head
    was_training = head.training
    head.eval()
    weight = model.classifier_weight.detach()
    gathered: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in tqdm(loader, desc="eval", disable=not show_progress, leave=False):
            features, teacher = featurizer(batch)
            out = head(features)
            predictions = out.logits.argmax(dim=-1)
            contributions = class_contributions(weight, out.pos_activations, out.neg_activations, predictions)
            sizes = torch.as_tensor(explanation_sizes(contributions.cpu(), fraction))
            row = {"index": batch["index"], "labels": batch["labels"], "predictions": predictions, "sizes": sizes}
            if teacher is not None:
                row["teacher"] = teacher.argmax(dim=-1)
            row = {k: v.to(predictions.device) for k, v in row.items()}
            if accelerator is not None and not streamed:
                row = accelerator.gather_for_metrics(row)
            for k, v in row.items():
                gathered.setdefault(k, []).append(v.cpu())
    finally:
        head.train(was_training)
    cat = {k: torch.cat(v).numpy() for k, v in gathered.items()}
    if streamed:  # the shards may differ in length: gathered once, at the end
        cat = data.gather_rows(cat, accelerator)
    order = np.argsort(cat["index"], kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    if not np.array_equal(cat["index"], np.arange(len(data))):
        # Guards the multi-process bookkeeping: every example exactly once, none dropped, none duplicated.
        raise RuntimeError(
            f"Evaluation saw {len(cat['index'])} rows ({len(np.unique(cat['index']))} distinct) for "
            f"a split of {len(data)}."
        )
    result = {
        "accuracy": float((cat["predictions"] == cat["labels"]).mean()),
        "num_examples": int(len(cat["labels"])),
        "indices": cat["index"],
        "predictions": cat["predictions"],
        "labels": cat["labels"],
        "explanation_size_median": float(np.median(cat["sizes"])),
        "explanation_size_p90": float(np.percentile(cat["sizes"], 90)),
        "explanation_size_mean": float(cat["sizes"].mean()),
    }
    if "teacher" in cat:
        result["backbone_head_accuracy"] = float((cat["teacher"] == cat["labels"]).mean())
        result["agreement"] = float((cat["teacher"] == cat["predictions"]).mean())
    return result


# ------------------------------------------------------------------------------------------------ linear probe
def train_linear_probe(
    train_data,
    eval_data,
    epochs: int = 100,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> dict:
    """The linear-probe baseline: multinomial logistic regression on the average-pooled frozen features (stored in
    the cache as ``pooled``), trained on the same training rows, full-batch L-BFGS on standardised features.
    Deterministic: every process gets the same answer. Returns ``{"accuracy", "num_examples"}``."""
    x_train = torch.from_numpy(train_data.array("pooled")).double()
    y_train = torch.from_numpy(train_data.array("labels")).long()
    x_eval = torch.from_numpy(eval_data.array("pooled")).double()
    y_eval = torch.from_numpy(eval_data.array("labels")).long()
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_eval = (x_train - mean) / std, (x_eval - mean) / std
    num_labels = int(max(y_train.max(), y_eval.max())) + 1
    torch.manual_seed(seed)
    linear = torch.nn.Linear(x_train.shape[1], num_labels).double()
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(
        linear.parameters(), lr=1.0, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x_train), y_train) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        accuracy = float((linear(x_eval).argmax(-1) == y_eval).double().mean())
    return {"accuracy": accuracy, "num_examples": int(len(y_eval))}
