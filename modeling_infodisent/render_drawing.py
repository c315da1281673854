"""The drawing layer shared by the InfoDisent figures (`render_image`: one image's explanation and contrast;
`render_class`: a class sheet): the colours, the inch-based `_Canvas` that records the text it draws, and the panels
the figures are built from (the image and its evidence map, a prototype's heatmap, gallery patches, bar charts).

Colours: evidence **for** the explained class is red (``FOR_COLOUR``), evidence **against** it is blue
(``AGAINST_COLOUR``). Each rendered PIL image carries the text it drew in ``image.info[TEXT_KEY]`` (one line per
printed number). matplotlib is used through `matplotlib.figure.Figure` and the Agg canvas directly, so importing
this module does not change the user's pyplot backend.
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

from .explanation_text import _class_name, _num
from .gallery import model_view, to_rgb
from .metrics import relevance_pixels

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
