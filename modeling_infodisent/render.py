"""Pictures of InfoDisent explanations: PNG figures (matplotlib, Agg canvas); the self-contained HTML report that
embeds them is `report_html.explanation_html` (which imports this module, never the other way round).

Everything printed on a picture comes from the `Explanation` (and the model's weights for the class sheets):
`explanation_text.explanation_table` and `sum_terms` compute the rows and the addition once, and both the figure and
the HTML read them. Each rendered PIL image also carries the text it drew in ``image.info["infodisent_text"]`` (one
line per printed number), which the command line writes into the PNG's metadata and the tests check.

Reading the pictures
--------------------
* Colours: evidence **for** the explained class is red (``FOR_COLOUR``), evidence **against** it is blue
  (``AGAINST_COLOUR``) — on the class evidence map (a diverging colour map centred at 0), the contribution bars
  and the prototype boxes alike.
* A prototype is one pole (``+`` or ``-``) of one rotated channel, named e.g. ``17+``. Its row shows where it fires
  on the image (its heatmap, 0 to its peak, with the peak's feature cell boxed), its contribution
  ``weight x activation`` to the class logit, and its gallery: the training patches where it fires most.
* Pruned prototypes (weight exactly 0) never appear: they cannot contribute.

matplotlib is used through `matplotlib.figure.Figure` and the Agg canvas directly, so importing this module does
not change the user's pyplot backend.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from .explanation_text import (  # noqa: F401  (re-exported: the numbers are part of this module's API)
    _class_name,
    _num,
    _split,
    _sum_line,
    contrast_table,
    explanation_table,
    original_classifier_line,
    prototype_usage,
    sum_terms,
)
from .gallery import PrototypeGallery, model_view, to_rgb
from .metrics import relevance_pixels

__all__ = [
    "AGAINST_COLOUR",
    "FOR_COLOUR",
    "contrast_table",
    "explanation_table",
    "prototype_usage",
    "render_class_sheet",
    "render_contrast",
    "render_explanation",
    "sum_terms",
]

FOR_COLOUR = "#c0392b"  # red: evidence for the explained class (the warm end of RdBu_r)
AGAINST_COLOUR = "#2166ac"  # blue: evidence against it
NEUTRAL_COLOUR = "#7f7f7f"
EVIDENCE_CMAP = "RdBu_r"
PROTOTYPE_CMAP = "inferno"
TEXT_KEY = "infodisent_text"
_DPI = 100


def _literal_text(function):
    """Draw every text of the figure literally: class names are data, so ``$...$`` in a label must not be parsed
    as matplotlib mathtext (``Shirt $\\undefinedcmd$`` would raise; ``$x^2$`` would be typeset). Tick labels are
    laid out when the figure is drawn, which happens inside `function` too (`_Canvas.to_image`)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with rc_context({"text.parse_math": False}):
            return function(*args, **kwargs)

    return wrapper


# ----------------------------------------------------------------------------------------------------------------
# Drawing helpers
# ----------------------------------------------------------------------------------------------------------------


class _Canvas:
    """A figure laid out in inches from the top-left corner (easier to reason about than nested grids)."""

    def __init__(self, width: float, height: float, dpi: int = _DPI):
        self.width, self.height, self.dpi = width, height, dpi
        self.figure = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
        FigureCanvasAgg(self.figure)
        self.lines: list[str] = []

    def axes(self, x: float, y: float, w: float, h: float, **kwargs):
        rect = (x / self.width, 1 - (y + h) / self.height, w / self.width, h / self.height)
        return self.figure.add_axes(rect, **kwargs)

    def text(self, x: float, y: float, s: str, record: bool = True, **kwargs):
        """Text at (x, y) inches from the top-left (top-aligned by default); recorded for the tests."""
        kwargs.setdefault("va", "top")
        kwargs.setdefault("ha", "left")
        shown = s
        if kwargs.get("wrap") and "$" in s:
            # matplotlib measures the lines of wrapped text as mathtext whenever they hold two `$`, whatever
            # parse_math says: escape them instead, and let it unescape `\$` to a plain `$` when drawing.
            shown, kwargs["parse_math"] = s.replace("$", r"\$"), True
        self.figure.text(x / self.width, 1 - y / self.height, shown, **kwargs)
        if record:
            self.lines.extend(s.split("\n"))

    def to_image(self) -> Image.Image:
        canvas = self.figure.canvas
        canvas.draw()
        image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy(), mode="RGB")
        image.info[TEXT_KEY] = "\n".join(self.lines)
        return image


def _display_view(image: Image.Image, image_processor: Any, size: tuple[int, int], max_side: int = 320) -> np.ndarray:
    """The part of the image the model saw, at a display resolution (nearest neighbour for small images, so their
    pixels stay crisp instead of blurring)."""
    view = model_view(to_rgb(image), image_processor)
    height, width = size
    scale = max_side / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.NEAREST if max(view.size) * 2 <= max(target) else Image.Resampling.LANCZOS
    return np.asarray(view.resize(target, resample))


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show_image(ax, view: np.ndarray, size: tuple[int, int], grey: bool = False) -> None:
    height, width = size
    if grey:  # a desaturated, slightly lighter base so the coloured overlay reads first
        view = (view.astype(np.float32) @ np.array([0.299, 0.587, 0.114]))[..., None].repeat(3, axis=-1)
        view = (0.35 * 255 + 0.65 * view).astype(np.uint8)
    ax.imshow(view, extent=(0, width, height, 0), interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    _clean(ax)


def _overlay_prototype(ax, view: np.ndarray, prototype, colour: str) -> None:
    """The prototype's heatmap on the image: colour from the map, opacity growing with the activation, so places
    where the prototype is silent show the image itself; the peak's feature cell is boxed. When the explanation
    carries the prototype's pixel relevance (`explain(..., relevance_top_k=k)`), the pixels that make it fire at that
    peak (the top 1% of the map, where the ground-truth benchmark locates a prototype) are outlined: a feature cell
    sees far more than its box, and a small part on the border of two cells makes the neighbouring cell peak."""
    height, width = prototype.image_size
    _show_image(ax, view, (height, width), grey=True)
    heat = np.asarray(prototype.heatmap, dtype=np.float32)
    peak = float(heat.max()) if heat.size else 0.0
    norm = heat / peak if peak > 0 else heat
    rgba = colormaps[PROTOTYPE_CMAP](norm)
    rgba[..., 3] = 0.15 + 0.7 * np.clip(norm, 0, 1)
    ax.imshow(rgba, extent=(0, width, height, 0), interpolation="bilinear")
    left, top, right, bottom = prototype.box
    ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor="white", linewidth=3.2))
    ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor=colour, linewidth=1.8))
    top_pixels = relevance_pixels(prototype.relevance) if prototype.relevance is not None else None
    if top_pixels is not None:
        xs, ys = np.arange(top_pixels.shape[1]) + 0.5, np.arange(top_pixels.shape[0]) + 0.5  # pixel centres (extent)
        for line_colour, line_width in (("white", 2.6), ("black", 1.2)):
            ax.contour(xs, ys, top_pixels.astype(np.float32), levels=[0.5], colors=[line_colour], linewidths=line_width)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.0)


def _draw_patches(
    canvas: _Canvas,
    x: float,
    y: float,
    gallery,
    channel: int,
    sign: int,
    count: int,
    size: float,
    gap: float,
    header: str | None = None,
) -> None:
    """A pole's gallery patches in a row starting at (x, y) inches, each captioned 'class · activation'."""
    if gallery is None:
        canvas.text(
            x,
            y + size / 2 - 0.1,
            "no prototype gallery saved with this model",
            record=False,
            fontsize=8,
            color=NEUTRAL_COLOUR,
            style="italic",
        )
        return
    if gallery.is_dead(channel, sign):
        canvas.text(
            x,
            y + size / 2 - 0.1,
            f"pole {channel}{'+' if sign > 0 else '-'} never fired on the {gallery.num_images} gallery images",
            record=False,
            fontsize=8,
            color=NEUTRAL_COLOUR,
            style="italic",
        )
        return
    if header:
        canvas.text(x, y - 0.17, header, record=False, fontsize=7.5, color="#444444")
    entries = gallery.entries(channel, sign)[:count]
    if not entries:
        return
    # One axes for the whole strip (an axes per patch is what makes matplotlib slow): patches with a thin grey
    # frame, separated by white gaps.
    pixels = entries[0].image.size[0] + 2
    gap_px = max(1, round(gap / size * pixels))
    strip = np.full((pixels, len(entries) * (pixels + gap_px) - gap_px, 3), 255, dtype=np.uint8)
    for i, entry in enumerate(entries):
        left = i * (pixels + gap_px)
        strip[:, left : left + pixels] = 187
        strip[1:-1, left + 1 : left + pixels - 1] = np.asarray(entry.image)
    ax = canvas.axes(x, y, size * strip.shape[1] / pixels, size)
    ax.imshow(strip, interpolation="nearest", aspect="auto")
    _clean(ax)
    for i, entry in enumerate(entries):
        label = entry.label_name if len(entry.label_name) <= 14 else entry.label_name[:13] + "…"
        canvas.text(
            x + i * (size + gap) + size / 2,
            y + size + 0.03,
            f"{label}\n{entry.activation:.3g}",
            record=False,
            fontsize=7.5,
            ha="center",
            color="#333333",
            linespacing=1.1,
        )


def _short(name: str, limit: int = 32) -> str:
    """Class names on figures are cut (ImageNet has names of 60+ characters); the HTML keeps them whole."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _evidence_map(
    ax,
    canvas: _Canvas,
    view,
    heat: np.ndarray,
    size,
    title: str,
    bar_label: str,
    cbar_rect: tuple[float, float, float, float],
) -> None:
    height, width = size
    _show_image(ax, view, size, grey=True)
    bound = float(np.abs(heat).max()) or 1.0
    norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    shown = ax.imshow(
        heat, cmap=EVIDENCE_CMAP, norm=norm, alpha=0.72, extent=(0, width, height, 0), interpolation="bilinear"
    )
    ax.set_title(title, fontsize=9.5)
    cax = canvas.axes(*cbar_rect)
    bar = canvas.figure.colorbar(shown, cax=cax)
    bar.set_label(bar_label, fontsize=8)
    bar.ax.tick_params(labelsize=7.5)


def _header_images(
    canvas: _Canvas, view, size, heat, title: str, bar_label: str, x: float, top: float, panel: float
) -> float:
    """The input and an evidence map with its colour bar, side by side; returns where the next panel may start."""
    ax = canvas.axes(x, top, panel, panel)
    _show_image(ax, view, size)
    ax.set_title("Input (as the model sees it)", fontsize=9.5)
    x += panel + 0.3
    ax = canvas.axes(x, top, panel, panel)
    _evidence_map(ax, canvas, view, heat, size, title, bar_label, (x + panel + 0.08, top, 0.12, panel))
    return x + panel + 0.08 + 0.12 + 0.75 + 0.95  # colour bar, its labels, the next panel's tick labels


def _bars(ax, labels: list[str], values: list[float], colours: list[str], title: str) -> None:
    y = np.arange(len(values))
    ax.barh(y, values, color=colours, height=0.68)
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7.5)
    ax.set_title(title, fontsize=9.5)
    lo, hi = min(0.0, min(values, default=0.0)), max(0.0, max(values, default=0.0))
    span = (hi - lo) or 1.0
    ax.set_xlim(lo - 0.3 * span, hi + 0.3 * span)
    for i, v in enumerate(values):
        ax.text(
            v + (0.02 * span if v >= 0 else -0.02 * span),
            i,
            _num(v),
            va="center",
            ha="left" if v >= 0 else "right",
            fontsize=7.5,
        )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _probabilities(ax, explanation, id2label, highlight: Sequence[int]) -> None:
    probabilities = np.asarray(explanation.probabilities, dtype=np.float64)
    top = np.argsort(-probabilities, kind="stable")[:5]
    names = [
        _short(_class_name(int(k), id2label, explanation.label if int(k) == explanation.target else None), 20)
        for k in top
    ]
    colours = ["#555555" if int(k) in highlight else "#bbbbbb" for k in top]
    y = np.arange(len(top))
    ax.barh(y, probabilities[top], color=colours, height=0.68)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.3)
    ax.set_xticks([0, 0.5, 1.0], ["0", "50%", "100%"])
    ax.tick_params(axis="x", labelsize=7.5)
    ax.set_title("Top-5 probabilities", fontsize=9.5)
    for i, k in enumerate(top):
        ax.text(probabilities[k] + 0.02, i, f"{100 * probabilities[k]:.1f}%", va="center", fontsize=7.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


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
    patches = min(max_patches, gallery.top_k) if gallery is not None else 0
    patch_size, patch_gap = 0.9, 0.08

    # Geometry (inches): a fixed-width header, rows whose gallery patches fill the width.
    margin, cell, text_w = 0.35, 1.25, 2.75
    width = 12.4
    if patches:
        patch_size = min(1.15, (width - 2 * margin - cell - 0.2 - text_w) / patches - patch_gap)
    row_h = max(cell, patch_size + 0.3) + 0.2
    header_h = 3.35
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
            ax = canvas.axes(margin, y + 0.05, cell, cell)
            _overlay_prototype(ax, view, p, colour)
            pole = "positive" if p.sign > 0 else "negative"
            canvas.text(
                margin + cell + 0.2,
                y + 0.08,
                f"prototype {p.name}",
                fontsize=10.5,
                weight="bold",
                color=colour,
                record=False,
            )
            canvas.text(
                margin + cell + 0.2,
                y + 0.34,
                f"{p.name} contribution {_num(p.contribution)}",
                fontsize=9.5,
                record=True,
            )
            canvas.text(
                margin + cell + 0.2,
                y + 0.58,
                f"= weight {p.weight:.3f} × activation {p.activation:.3f}\n"
                f"{pole} pole of channel {p.channel}\npeak at feature cell {tuple(p.location)}"
                + ("\noutlined: the pixels that make it fire" if p.relevance is not None else ""),
                fontsize=8,
                color="#444444",
                record=False,
                linespacing=1.35,
            )
            if patches or gallery is None:
                _draw_patches(
                    canvas,
                    margin + cell + 0.2 + text_w,
                    y + 0.05,
                    gallery,
                    p.channel,
                    p.sign,
                    patches,
                    patch_size,
                    patch_gap,
                )
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
    patches = min(max_patches, gallery.top_k) if gallery is not None else 0
    patch_size, patch_gap = 0.9, 0.08
    margin, cell, text_w, width = 0.35, 1.25, 2.75, 12.4
    if patches:
        patch_size = min(1.15, (width - 2 * margin - cell - 0.2 - text_w) / patches - patch_gap)
    row_h = max(cell, patch_size + 0.3) + 0.2
    header_h = 3.35
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
            ax = canvas.axes(margin, y + 0.05, cell, cell)
            _overlay_prototype(ax, view, p, colour)
            canvas.text(
                margin + cell + 0.2,
                y + 0.08,
                f"prototype {p.name}",
                fontsize=10.5,
                weight="bold",
                color=colour,
                record=False,
            )
            canvas.text(margin + cell + 0.2, y + 0.34, f"{p.name} difference {_num(r['difference'])}", fontsize=9.5)
            canvas.text(
                margin + cell + 0.2,
                y + 0.58,
                f"to '{name_a}': {_num(r['a'])}\nto '{name_b}': {_num(r['b'])}",
                fontsize=8,
                color="#444444",
                record=False,
                linespacing=1.35,
            )
            if patches or gallery is None:
                _draw_patches(
                    canvas,
                    margin + cell + 0.2 + text_w,
                    y + 0.05,
                    gallery,
                    p.channel,
                    p.sign,
                    patches,
                    patch_size,
                    patch_gap,
                )
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
