"""The global explanation of one class: `render_class_sheet`, its prototypes by weight with the gallery patches of
both poles and the other classes that use each channel. It reads the model's weights, not an `Explanation`; it
draws with the shared helpers of `render_drawing`, and `render` re-exports it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .explanation_text import _class_name, _num, prototype_usage
from .gallery import PrototypeGallery
from .render_drawing import _DPI, AGAINST_COLOUR, FOR_COLOUR, _Canvas, _draw_patches, _literal_text, _short

__all__ = ["render_class_sheet"]


# ----------------------------------------------------------------------------------------------------------------
# Global explanation: a class sheet
# ----------------------------------------------------------------------------------------------------------------


@_literal_text
def render_class_sheet(
    model,
    class_id: int,
    gallery: PrototypeGallery | None,
    max_prototypes: int = 10,
    *,
    max_patches: int = 4,
    dpi: int = _DPI,
) -> Image.Image:
    """A class's prototypes by weight: one row per channel with a nonzero weight W[class, c] (largest first), with
    the gallery of its positive pole (evidence for the class when it fires) and of its negative pole (evidence
    against), and the other classes that use the channel."""
    weight = model.classifier_weight.detach().double().cpu()
    num_labels = weight.shape[0]
    if not 0 <= int(class_id) < num_labels:
        raise ValueError(f"Class {class_id} is out of range: the model has {num_labels} classes.")
    class_id = int(class_id)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    name = _short(_class_name(class_id, id2label))
    row = weight[class_id]
    channels = [int(c) for c in np.argsort(-row.numpy(), kind="stable") if row[c] != 0]
    used = len(channels)
    channels = channels[:max_prototypes]
    patches = min(max_patches, gallery.top_k) if gallery is not None else 0
    patch_size, patch_gap = 0.82, 0.07
    margin, text_w, row_h = 0.35, 2.7, 1.45
    group_w = patches * (patch_size + patch_gap) if patches else 2.8
    width = max(10.0, margin * 2 + text_w + 2 * group_w + 0.45)
    height = 1.5 + len(channels) * row_h + 0.7
    canvas = _Canvas(width, height, dpi)
    bias = float(model.classifier_bias.detach().double().cpu()[class_id])
    canvas.text(margin, 0.18, f"Class '{name}': its prototypes by weight", fontsize=14, weight="bold")
    total = float(row.sum())
    shown_share = float(row[channels].sum()) / total if total else 0.0
    canvas.text(
        margin,
        0.52,
        f"{len(channels)} of the {used} channels it uses ({100 * shown_share:.0f}% of its "
        f"total weight; {weight.shape[1] - used} pruned)   ·   bias {_num(bias)}",
        fontsize=10,
    )
    for_x = margin + text_w
    against_x = for_x + group_w + 0.45
    canvas.text(
        for_x,
        0.88,
        f"positive pole (+)\nwhen it fires: evidence FOR '{name}'",
        fontsize=9,
        weight="bold",
        color=FOR_COLOUR,
        record=False,
        linespacing=1.3,
    )
    canvas.text(
        against_x,
        0.88,
        f"negative pole (−)\nwhen it fires: evidence AGAINST '{name}'",
        fontsize=9,
        weight="bold",
        color=AGAINST_COLOUR,
        record=False,
        linespacing=1.3,
    )
    y = 1.5
    for rank, c in enumerate(channels):
        w = float(row[c])
        users = [(k, v) for k, v in prototype_usage(model, c) if k != class_id]
        user_text = ", ".join(f"{_short(_class_name(k, id2label), 16)} {v:.2f}" for k, v in users[:3])
        if len(users) > 3:
            user_text += f" (+{len(users) - 3})"
        canvas.text(margin, y + 0.05, f"#{rank + 1}  ·  channel {c}", fontsize=10.5, weight="bold", record=False)
        canvas.text(margin, y + 0.3, f"channel {c} weight {w:.3f}", fontsize=9.5)
        canvas.text(
            margin,
            y + 0.55,
            "also used by:\n" + (user_text or "no other class"),
            fontsize=8,
            color="#444444",
            record=False,
            wrap=True,
            linespacing=1.3,
        )
        _draw_patches(canvas, for_x, y, gallery, c, 1, patches, patch_size, patch_gap)
        _draw_patches(canvas, against_x, y, gallery, c, -1, patches, patch_size, patch_gap)
        y += row_h
    canvas.text(
        margin,
        y + 0.05,
        "Patches: the training images where the pole fires most (class · activation). A "
        "channel's contribution to the logit is weight × (positive pole activation − negative pole "
        "activation).",
        fontsize=8,
        color="#555555",
        record=False,
    )
    return canvas.to_image()
