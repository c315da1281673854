"""The numbers of an InfoDisent explanation as rows and text: one source for the figures (`render`), the HTML report
(`report_html`) and the tests. `explanation_table` and `sum_terms` compute the rows and the addition
``bias + contributions = logit`` once; every picture prints what they return."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["contrast_table", "explanation_table", "original_classifier_line", "prototype_usage", "sum_terms"]


def _class_name(class_id: int, id2label: dict | None, fallback: str | None = None) -> str:
    if id2label:
        for key in (class_id, str(class_id)):
            if key in id2label:
                return str(id2label[key])
    return fallback if fallback is not None else str(class_id)


def _num(value: float, signed: bool = True) -> str:
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def explanation_table(explanation) -> list[dict]:
    """One row per prototype of the explanation, in its order (by |contribution|): rank, prototype name, channel,
    sign (+1/-1), evidence ("for" / "against"), activation, weight, contribution, location (row, col), box."""
    rows = []
    for rank, p in enumerate(explanation.prototypes):
        rows.append(
            {
                "rank": rank,
                "prototype": p.name,
                "channel": int(p.channel),
                "sign": int(p.sign),
                "evidence": "for" if p.contribution > 0 else "against",
                "activation": float(p.activation),
                "weight": float(p.weight),
                "contribution": float(p.contribution),
                "location": tuple(int(v) for v in p.location),
                "box": tuple(int(v) for v in p.box),
            }
        )
    return rows


def _split(explanation, max_prototypes: int, max_negative: int | None):
    """The prototypes shown: the strongest `max_prototypes` for and `max_negative` against (never pruned ones)."""
    positive = [p for p in explanation.positive if p.weight != 0][: max(0, max_prototypes)]
    negative_cap = max(1, math.ceil(max_prototypes / 2)) if max_negative is None else max_negative
    negative = [p for p in explanation.negative if p.weight != 0][: max(0, negative_cap)]
    return positive, negative


def sum_terms(explanation, shown: Sequence | None = None) -> list[tuple[str, float]]:
    """The addition printed under a figure: ``[(label, value), ...]`` whose values add up to the logit (the last
    term, labelled ``"logit"``, is the sum). Terms: bias, the shown prototypes for / against, and what the other
    prototypes (and `Explanation.residual`) add, for / against, so that nothing is hidden."""
    shown_ids = {id(p) for p in (shown if shown is not None else explanation.prototypes)}
    shown_for = sum(p.contribution for p in explanation.prototypes if id(p) in shown_ids and p.contribution > 0)
    shown_against = sum(p.contribution for p in explanation.prototypes if id(p) in shown_ids and p.contribution < 0)
    rest = [p for p in explanation.prototypes if id(p) not in shown_ids]
    rest_for = sum(p.contribution for p in rest if p.contribution > 0)
    rest_against = sum(p.contribution for p in rest if p.contribution < 0)
    n_for = sum(1 for p in explanation.prototypes if id(p) in shown_ids and p.contribution > 0)
    n_against = sum(1 for p in explanation.prototypes if id(p) in shown_ids and p.contribution < 0)
    terms = [("bias", float(explanation.bias)), (f"{n_for} shown for", float(shown_for))]
    terms.append((f"{n_against} shown against", float(shown_against)))
    if rest or explanation.residual:
        # `residual` is what explain(top_k=...) already summed away: it joins the others of its sign.
        n_rest_for = sum(1 for p in rest if p.contribution > 0)
        n_rest_against = sum(1 for p in rest if p.contribution < 0)
        terms.append((f"{n_rest_for} others for", float(rest_for + max(explanation.residual, 0.0))))
        terms.append((f"{n_rest_against} others against", float(rest_against + min(explanation.residual, 0.0))))
    terms.append(("logit", float(explanation.logit)))
    return terms


def original_classifier_line(explanation, id2label: dict | None = None) -> str | None:
    """What the explained black box itself decides, when the model carries its original classifier (else None)."""
    if getattr(explanation, "original_prediction", None) is None:
        return None
    name = _class_name(explanation.original_prediction, id2label, explanation.original_label)
    if explanation.agrees:
        return f"Original classifier: also '{name}' (agrees)"
    return f"Original classifier: '{name}' (DISAGREES: this explains InfoDisent's score, not the original's decision)"


def _sum_line(terms: list[tuple[str, float]], class_name: str) -> str:
    parts = [f"{_num(v, signed=i > 0)} ({label})" for i, (label, v) in enumerate(terms[:-1])]
    return " ".join(parts) + f" = {_num(terms[-1][1], signed=False)} (logit of '{class_name}')"


def contrast_table(expl_a, expl_b) -> list[dict]:
    """Per prototype (channel, sign), its contribution to class A, to class B and the difference A - B, ordered by
    |difference|. ``logit_A - logit_B = (bias_A - bias_B) + sum(differences) + (residual_A - residual_B)``."""
    if expl_a.image_size != expl_b.image_size or expl_a.feature_grid != expl_b.feature_grid:
        raise ValueError("The two explanations are not of the same image (their sizes differ).")
    by_key: dict[tuple[int, int], dict] = {}
    for which, expl in (("a", expl_a), ("b", expl_b)):
        for p in expl.prototypes:
            row = by_key.setdefault(
                (p.channel, p.sign),
                {"prototype": p.name, "channel": p.channel, "sign": p.sign, "a": 0.0, "b": 0.0, "_proto": p},
            )
            row[which] = float(p.contribution)
    rows = []
    for row in by_key.values():
        row["difference"] = row["a"] - row["b"]
        if row["difference"] != 0.0:
            rows.append(row)
    rows.sort(key=lambda r: (-abs(r["difference"]), r["channel"], -r["sign"]))
    return rows


def prototype_usage(model, channel: int) -> list[tuple[int, float]]:
    """The classes that use rotated channel `channel` (both its poles), as ``[(class_id, weight), ...]`` by weight,
    largest first; pruned (zero) weights are left out."""
    weight = model.classifier_weight.detach().double().cpu()
    if not 0 <= int(channel) < weight.shape[1]:
        raise IndexError(f"Channel {channel} is out of range: the model has {weight.shape[1]} channels.")
    column = weight[:, int(channel)]
    used = [(int(k), float(column[k])) for k in range(column.shape[0]) if column[k] != 0]
    return sorted(used, key=lambda kw: (-kw[1], kw[0]))
