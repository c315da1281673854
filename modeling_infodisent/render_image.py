"""The figures of one image's explanation: `render_explanation` (why the model gives a class its logit: evidence
map, contributions, one row per prototype with its heatmap and gallery, the addition) and `render_contrast` (why
class A and not class B). Both draw with the shared helpers of `render_drawing`; `render` re-exports them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .explanation_text import _class_name, _num, _split, _sum_line, contrast_table, original_classifier_line, sum_terms
from .gallery import PrototypeGallery
from .render_drawing import (
    _DPI,
    AGAINST_COLOUR,
    FOR_COLOUR,
    NEUTRAL_COLOUR,
    _bars,
    _Canvas,
    _display_view,
    _draw_patches,
    _header_images,
    _literal_text,
    _overlay_prototype,
    _probabilities,
    _short,
)

__all__ = ["render_contrast", "render_explanation"]

# Geometry of both figures (inches): a fixed-width header, then one row per prototype whose gallery patches fill the
# width left by the heatmap and the text.
_MARGIN, _CELL, _TEXT_W, _WIDTH, _HEADER_H = 0.35, 1.25, 2.75, 12.4, 3.35


def _row_geometry(gallery: PrototypeGallery | None, max_patches: int) -> tuple[int, float, float, float]:
    """(gallery patches per row, patch side, gap between patches, row height) of a figure's prototype rows."""
    patches = min(max_patches, gallery.top_k) if gallery is not None else 0
    patch_size, patch_gap = 0.9, 0.08
    if patches:
        patch_size = min(1.15, (_WIDTH - 2 * _MARGIN - _CELL - 0.2 - _TEXT_W) / patches - patch_gap)
    return patches, patch_size, patch_gap, max(_CELL, patch_size + 0.3) + 0.2


def _prototype_row(canvas, view, p, colour, y, headline, detail, gallery, patches, patch_size, patch_gap) -> None:
    """One prototype's row: its heatmap on the image, its name, a headline (kept in the figure's text), the detail
    lines, and its most activating training patches (or the gallery's absence said)."""
    ax = canvas.axes(_MARGIN, y + 0.05, _CELL, _CELL)
    _overlay_prototype(ax, view, p, colour)
    x = _MARGIN + _CELL + 0.2
    canvas.text(x, y + 0.08, f"prototype {p.name}", fontsize=10.5, weight="bold", color=colour, record=False)
    canvas.text(x, y + 0.34, headline, fontsize=9.5)
    canvas.text(x, y + 0.58, detail, fontsize=8, color="#444444", record=False, linespacing=1.35)
    if patches or gallery is None:
        _draw_patches(canvas, x + _TEXT_W, y + 0.05, gallery, p.channel, p.sign, patches, patch_size, patch_gap)


# ----------------------------------------------------------------------------------------------------------------
# Local explanation
# ----------------------------------------------------------------------------------------------------------------


@_literal_text
def render_explanation(
    explanation,
    image,
    gallery: PrototypeGallery | None = None,
    max_prototypes: int = 6,
    id2label: dict | None = None,
    *,
    max_negative: int | None = None,
    max_patches: int = 5,
    image_processor: Any = None,
    dpi: int = _DPI,
) -> Image.Image:
    """The explanation of one class logit as a figure (PIL RGB image).

    Top: the image, the class evidence map (`Explanation.class_heatmap`, red for / blue against), the contribution
    of each shown prototype, the top-5 probabilities. Then one row per prototype, evidence for the class first and
    evidence against it second, each ranked by |contribution|: its heatmap and peak box on the image, its numbers
    (``contribution = weight x activation``) and its gallery patches. Bottom: ``bias + contributions = logit``.

    Args:
        image: the explained image (any PIL mode); `image_processor` (optional) crops it as the model saw it.
        max_prototypes: rows of evidence for; `max_negative` rows of evidence against (default half as many).
        id2label: class names for the probabilities (default: only the explained class is named).
    The text drawn is in ``result.info["infodisent_text"]``.
    """
    positive, negative = _split(explanation, max_prototypes, max_negative)
    shown = positive + negative
    terms = sum_terms(explanation, shown)
    size = tuple(explanation.image_size)
    view = _display_view(image, image_processor, size)
    name = _short(explanation.label)
    margin, cell, text_w, width, header_h = _MARGIN, _CELL, _TEXT_W, _WIDTH, _HEADER_H
    patches, patch_size, patch_gap, row_h = _row_geometry(gallery, max_patches)
    section_h = 0.62
    n_sections = (1 if positive else 0) + (1 if negative else 0)
    height = header_h + n_sections * section_h + len(shown) * row_h + (0.4 if not shown else 0) + 1.25
    canvas = _Canvas(width, height, dpi)
    predicted = int(np.argmax(explanation.probabilities))
    predicted_name = _short(_class_name(predicted, id2label, name if predicted == explanation.target else None))
    verdict = f"Predicted: {predicted_name} ({100 * float(explanation.probabilities[predicted]):.1f}%)" + (
        f"   ·   explaining class: {name}" if predicted != explanation.target else ""
    )
    canvas.text(margin, 0.18, f"Why '{name}'?  InfoDisent explanation", fontsize=14, weight="bold")
    original = original_classifier_line(explanation, id2label)
    verdict += f"   ·   {original}" if original else ""
    canvas.text(margin, 0.5, verdict + f"   ·   logit of '{name}': {_num(explanation.logit, False)}", fontsize=10)

    # Header panels.
    top, panel = 0.95, 2.0
    bar_x = _header_images(
        canvas,
        view,
        size,
        explanation.class_heatmap(),
        f"Evidence map for '{name}'",
        "← against · for →",
        margin,
        top,
        panel,
    )
    ax = canvas.axes(bar_x, top, 2.5, panel)
    labels = [p.name for p in shown]
    values = [p.contribution for p in shown]
    colours = [FOR_COLOUR if v > 0 else AGAINST_COLOUR for v in values]
    for label, v in terms[3:-1]:  # what the prototypes without a row add, lighter
        if v != 0.0:
            labels.append(f"{label.split()[0]} others ({'+' if v > 0 else '−'})")
            values.append(v)
            colours.append("#e8a39b" if v > 0 else "#9ebedb")
    labels.append("bias")
    values.append(explanation.bias)
    colours.append(NEUTRAL_COLOUR)
    _bars(ax, labels, values, colours, "Contributions to the logit")
    ax = canvas.axes(bar_x + 2.5 + 1.35, top, width - (bar_x + 2.5 + 1.35) - margin, panel * 0.75)
    _probabilities(ax, explanation, id2label, (explanation.target,))

    # Prototype rows.
    y = header_h
    canvas.lines.append(f"logit {_num(explanation.logit, False)}")
    for title, group, colour in (
        (f"Evidence FOR '{name}'  (prototypes that raise its logit, strongest first)", positive, FOR_COLOUR),
        (f"Evidence AGAINST '{name}'  (prototypes that lower its logit, strongest first)", negative, AGAINST_COLOUR),
    ):
        if not group:
            continue
        canvas.text(margin, y + 0.06, title, fontsize=11, weight="bold", color=colour, record=False)
        if patches:
            canvas.text(
                margin + cell + 0.2 + text_w,
                y + 0.38,
                "its most activating training patches (class · activation on that image)",
                fontsize=8,
                color="#555555",
                record=False,
            )
        y += section_h
        for p in group:
            pole = "positive" if p.sign > 0 else "negative"
            detail = (
                f"= weight {p.weight:.3f} × activation {p.activation:.3f}\n"
                f"{pole} pole of channel {p.channel}\npeak at feature cell {tuple(p.location)}"
                + ("\noutlined: the pixels that make it fire" if p.relevance is not None else "")
            )
            headline = f"{p.name} contribution {_num(p.contribution)}"
            _prototype_row(canvas, view, p, colour, y, headline, detail, gallery, patches, patch_size, patch_gap)
            y += row_h
    if not shown:
        canvas.text(margin, y + 0.05, "No prototype contributes to this logit: it is the bias alone.", fontsize=10)
        y += 0.4

    # The addition, and how to read the figure.
    y += 0.12
    line = _sum_line(terms, name)
    canvas.text(margin, y, "bias + Σ contributions = logit:", fontsize=9.5, weight="bold", record=False)
    canvas.text(margin, y + 0.24, line, fontsize=9, family="monospace", wrap=True)
    canvas.text(
        margin,
        y + 0.6,
        "Heatmaps: where the prototype fires on this image (dark = silent, bright = its peak), box = its strongest "
        "feature cell. Red = evidence for, blue = evidence against.\nContribution = class weight × activation "
        "(the prototype's peak value); a prototype is one pole (+/−) of one rotated channel of the frozen backbone.",
        fontsize=8,
        color="#555555",
        record=False,
        linespacing=1.4,
    )
    return canvas.to_image()


# ----------------------------------------------------------------------------------------------------------------
# Contrast: why A and not B
# ----------------------------------------------------------------------------------------------------------------


@_literal_text
def render_contrast(
    expl_a,
    expl_b,
    image,
    gallery: PrototypeGallery | None = None,
    max_prototypes: int = 4,
    *,
    id2label: dict | None = None,
    max_patches: int = 4,
    image_processor: Any = None,
    dpi: int = _DPI,
) -> Image.Image:
    """Why class A and not class B, for one image: ``logit_A - logit_B = (bias_A - bias_B) + sum over prototypes
    of (contribution to A - contribution to B)``. Shows the difference map, the largest differences as bars, and a
    row per prototype favouring A (red) and favouring B (blue), with its gallery patches."""
    rows = contrast_table(expl_a, expl_b)
    name_a, name_b = _short(expl_a.label), _short(expl_b.label)
    favour_a = [r for r in rows if r["difference"] > 0][:max_prototypes]
    favour_b = [r for r in rows if r["difference"] < 0][:max_prototypes]
    shown = favour_a + favour_b
    size = tuple(expl_a.image_size)
    view = _display_view(image, image_processor, size)
    margin, width, header_h = _MARGIN, _WIDTH, _HEADER_H
    patches, patch_size, patch_gap, row_h = _row_geometry(gallery, max_patches)
    height = header_h + (bool(favour_a) + bool(favour_b)) * 0.42 + len(shown) * row_h + 1.2
    canvas = _Canvas(width, height, dpi)
    gap = expl_a.logit - expl_b.logit
    canvas.text(margin, 0.18, f"Why '{name_a}' and not '{name_b}'?", fontsize=14, weight="bold")
    canvas.text(
        margin,
        0.5,
        f"logit '{name_a}' {_num(expl_a.logit, False)}  −  logit '{name_b}' "
        f"{_num(expl_b.logit, False)}  =  {_num(gap)}   ·   probabilities {100 * expl_a.probability:.1f}% vs "
        f"{100 * expl_b.probability:.1f}%",
        fontsize=10,
    )
    canvas.lines.append(f"difference {_num(gap)}")

    top, panel = 0.95, 2.0
    bar_x = _header_images(
        canvas,
        view,
        size,
        expl_a.class_heatmap() - expl_b.class_heatmap(),
        f"'{name_a}' minus '{name_b}' evidence",
        f"← {name_b} · {name_a} →",
        margin,
        top,
        panel,
    )
    ax = canvas.axes(bar_x, top, width - bar_x - margin - 0.5, panel)
    top_rows = rows[:10]
    labels = [r["prototype"] for r in top_rows]
    values = [r["difference"] for r in top_rows]
    rest = sum(r["difference"] for r in rows[10:]) + (expl_a.residual - expl_b.residual)
    bias_gap = expl_a.bias - expl_b.bias
    if rest != 0.0:
        labels.append(f"{len(rows) - len(top_rows)} others")
        values.append(rest)
    labels.append("bias A − B")
    values.append(bias_gap)
    colours = [FOR_COLOUR if v > 0 else AGAINST_COLOUR for v in values[:-1]] + [NEUTRAL_COLOUR]
    _bars(ax, labels, values, colours, f"Contribution to '{name_a}' − contribution to '{name_b}'")

    y = header_h
    for title, group, colour in (
        (f"Prototypes favouring '{name_a}'", favour_a, FOR_COLOUR),
        (f"Prototypes favouring '{name_b}'", favour_b, AGAINST_COLOUR),
    ):
        if not group:
            continue
        canvas.text(margin, y + 0.08, title, fontsize=11, weight="bold", color=colour, record=False)
        y += 0.42
        for r in group:
            p = r["_proto"]
            headline = f"{p.name} difference {_num(r['difference'])}"
            detail = f"to '{name_a}': {_num(r['a'])}\nto '{name_b}': {_num(r['b'])}"
            _prototype_row(canvas, view, p, colour, y, headline, detail, gallery, patches, patch_size, patch_gap)
            y += row_h
    y += 0.12
    shown_sum = sum(r["difference"] for r in shown)
    others = gap - bias_gap - shown_sum
    line = (
        f"{_num(bias_gap, False)} (bias A − B) {_num(shown_sum)} ({len(shown)} shown) {_num(others)} "
        f"({len(rows) - len(shown)} others) = {_num(gap)} (logit '{name_a}' − logit '{name_b}')"
    )
    canvas.text(margin, y, "Difference of the logits, term by term:", fontsize=9.5, weight="bold", record=False)
    canvas.text(margin, y + 0.24, line, fontsize=9, family="monospace")
    canvas.text(
        margin,
        y + 0.6,
        "A prototype favours A when it adds more to A's logit than to B's (its weight for A "
        "is larger, or it is a negative pole weighing more on B).",
        fontsize=8,
        color="#555555",
        record=False,
    )
    return canvas.to_image()
