"""The Space's pictures and HTML: the prototype overlays, the contribution chart, the equation and the prototype
cards, built from one `Explanation` (what `spaces/app.py` puts on the page). Labels and file names are data: every
one is escaped (`md_text`, `html.escape`)."""

from __future__ import annotations

import html
import string
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFilter

from modeling_infodisent import Explanation, render
from modeling_infodisent.metrics import relevance_pixels
from modeling_infodisent.modeling_infodisent import upsample_map

if TYPE_CHECKING:  # only an annotation: at run time views.py needs no sibling module
    from spaces.explainer import Explainer

NUM_BARS = 10  # prototypes listed one by one in the contribution chart (the rest are summed)
# The project's colours (modeling_infodisent.render): red = evidence for the explained class, blue = against it.
POS_COLOR = render.FOR_COLOUR
NEG_COLOR = render.AGAINST_COLOUR

# ----------------------------------------------------------------------------------------------------------------
# Pictures and HTML
# ----------------------------------------------------------------------------------------------------------------


def md_text(text) -> str:
    """`text` (a class name, a file name: data) to show literally inside Markdown: every ASCII punctuation
    character becomes an HTML character reference, so none can open an element (``<img src=...>``), a link or
    image (``![](url)``), emphasis, code, a table or math (``$$``); newlines become spaces."""
    return "".join(f"&#{ord(c)};" if c in string.punctuation else (" " if c in "\r\n" else c) for c in str(text))


def _colormap(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] -> (H, W, 3) floats in the project's prototype colour map (render.PROTOTYPE_CMAP)."""
    return colormaps[render.PROTOTYPE_CMAP](values)[..., :3]


def relevance_rings(size: tuple[int, int], relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Two (H, W) bool masks at display `size` (width, height): a 2-px white ring and, inside it, a 1-px black ring
    just outside the pixels that make the prototype fire (`metrics.relevance_pixels`: the top 1% of its relevance
    map, what the renderer outlines and where the ground-truth benchmark locates a prototype).
    None when the map is all zero."""
    top = relevance_pixels(relevance)
    if top is None:
        return None
    mask = Image.fromarray(top.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    inside = np.asarray(mask) > 0
    near = np.asarray(mask.filter(ImageFilter.MaxFilter(3))) > 0
    far = np.asarray(mask.filter(ImageFilter.MaxFilter(7))) > 0
    return far & ~near, near & ~inside


def display_box(prototype, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The prototype's peak cell (`Prototype.peak_box_px`, in the model's input pixels) on a picture of ``size``
    (width, height), as ``[x0, y0, x1, y1)``: the page shows the model's view at its own display size."""
    (H, W), (width, height) = prototype.image_size, size
    x0, y0, x1, y1 = prototype.peak_box_px
    return (x0 * width / W, y0 * height / H, x1 * width / W, y1 * height / H)


def prototype_overlay(base: Image.Image, prototype) -> Image.Image:
    """The input with one prototype's map (normalised to its peak) blended on top and its peak cell boxed; when the
    explanation carries the prototype's pixel relevance, the pixels that make it fire are ringed (a feature cell sees
    far more than its box)."""
    width, height = base.size
    heat = upsample_map(prototype.activation_map, (height, width))
    peak = float(prototype.activation_map.max()) or 1.0
    heat = np.clip(heat / peak, 0, 1)
    grey = np.asarray(base.convert("L"), dtype=np.float64)[..., None] / 255.0
    alpha = 0.25 + 0.6 * heat[..., None]
    blended = (1 - alpha) * grey + alpha * _colormap(heat)
    image = Image.fromarray((np.clip(blended, 0, 1) * 255).round().astype(np.uint8))
    x0, y0, x1, y1 = display_box(prototype, (width, height))
    box = (x0, y0, x1 - 1, y1 - 1)  # PIL's rectangle includes its far edge
    ImageDraw.Draw(image).rectangle(box, outline=POS_COLOR if prototype.sign > 0 else NEG_COLOR, width=3)
    rings = relevance_rings(image.size, prototype.relevance) if prototype.relevance is not None else None
    if rings is not None:
        pixels = np.array(image)
        pixels[rings[0]], pixels[rings[1]] = 255, 0
        image = Image.fromarray(pixels)
    return image


def annotated_overview(base: Image.Image, prototypes) -> tuple[Image.Image, list]:
    """`gr.AnnotatedImage` value: the input and, per prototype, the feature-grid cell where it peaks (hover a legend
    entry to isolate one). The heatmaps themselves are in the prototype cards below."""
    width, height = base.size
    annotations = []
    for rank, p in enumerate(prototypes, start=1):
        box = tuple(round(v) for v in display_box(p, (width, height)))
        annotations.append((box, f"#{rank} {p.name} ({p.contribution:+.2f})"))
    return base, annotations


def signed_bar(value: float, scale: float, width_px: int = 160) -> str:
    """A signed horizontal bar around a zero axis: right in red (evidence for), left in blue (evidence against)."""
    frac = abs(value) / scale if scale > 0 else 0.0
    clipped = frac > 1.0
    half = width_px // 2
    length = max(1, round(min(frac, 1.0) * half)) if value != 0 else 0
    color = POS_COLOR if value >= 0 else NEG_COLOR
    left = half if value >= 0 else half - length
    # A clipped bar ends in a dashed edge: it goes on beyond the chart.
    edge = f"border-{'right' if value >= 0 else 'left'}:3px dashed var(--body-text-color);" if clipped else ""
    return (
        f'<div style="position:relative;width:{width_px}px;height:14px;display:inline-block;vertical-align:middle">'
        f'<div style="position:absolute;left:{half}px;top:0;bottom:0;'
        f'border-left:1px solid var(--body-text-color-subdued)"></div>'
        f'<div style="position:absolute;left:{left}px;width:{length}px;top:2px;height:10px;background:{color};'
        f'{edge}box-sizing:border-box;border-radius:2px"></div></div>'
    )


def contribution_chart(explanation: Explanation, limit: int = NUM_BARS) -> str:
    """HTML table: the largest contributions one by one, the others summed, the bias, and their total, the logit."""
    shown = explanation.prototypes[:limit]
    rest = explanation.prototypes[limit:]
    rest_sum = sum(p.contribution for p in rest) + explanation.residual
    # Scale by the individual terms: the summed rest can be much larger and is clipped (its number is exact).
    scale = max([abs(p.contribution) for p in shown] + [abs(explanation.bias), 1e-9])
    rows = []
    for rank, p in enumerate(shown, start=1):
        tip = f"activation {p.activation:.3f} × weight {p.weight:.3f}"
        rows.append(
            f'<tr title="{tip}"><td>#{rank}</td><td><b>{p.name}</b> '
            f'<span style="opacity:.7">{"for" if p.sign > 0 else "against"}</span></td>'
            f'<td>{signed_bar(p.contribution, scale)}</td><td style="text-align:right">{p.contribution:+.3f}</td></tr>'
        )
    if rest:
        rows.append(
            f"<tr><td></td><td>{len(rest)} other prototypes</td><td>{signed_bar(rest_sum, scale)}</td>"
            f'<td style="text-align:right">{rest_sum:+.3f}</td></tr>'
        )
    rows.append(
        f"<tr><td></td><td>bias</td><td>{signed_bar(explanation.bias, scale)}</td>"
        f'<td style="text-align:right">{explanation.bias:+.3f}</td></tr>'
    )
    rows.append(
        f'<tr class="total"><td></td><td><b>= logit</b></td><td></td>'
        f'<td style="text-align:right"><b>{explanation.logit:+.3f}</b></td></tr>'
    )
    return (
        f'<div class="contrib-chart"><div style="font-weight:600;margin-bottom:4px">Why '
        f"“{html.escape(explanation.label)}”: each prototype's contribution to the class score</div>"
        f'<table style="border-collapse:collapse;font-size:0.9em;width:auto">{"".join(rows)}</table></div>'
    )


def status_markdown(explanation: Explanation, id2label: dict[int, str], seconds: float) -> str:
    """The status line above the results (class names escaped: they are data, not Markdown)."""
    predicted = int(np.argmax(explanation.probabilities))
    which = (
        "the predicted class"
        if explanation.target == predicted
        else (f"not the predicted class ({md_text(id2label[predicted])}): why not?")
    )
    status = (
        f"Explaining **{md_text(explanation.label)}**, {which} — "
        f"{len(explanation.prototypes)} prototypes contribute; computed in {seconds:.2f} s."
    )
    if explanation.original_prediction is not None:  # what the explained black box itself decides
        original = md_text(id2label[explanation.original_prediction])
        status += (
            f" The original classifier also says **{original}**."
            if explanation.agrees
            else f" ⚠️ **The original classifier says {original}**: this explains InfoDisent's score, not its decision."
        )
    return status


def equation_markdown(explanation: Explanation) -> str:
    """The one-line exact decomposition: bias + contributions = logit."""
    pos = sum(p.contribution for p in explanation.positive)
    neg = sum(p.contribution for p in explanation.negative)
    total = explanation.bias + pos + neg + explanation.residual
    return (
        f"**logit({md_text(explanation.label)})** = bias **{explanation.bias:+.3f}** "
        f"+ {len(explanation.positive)} prototypes for **{pos:+.3f}** "
        f"+ {len(explanation.negative)} prototypes against **{neg:+.3f}** "
        f"= **{total:.3f}** (model logit {explanation.logit:.3f}; p = {explanation.probability:.1%})"
    )


def prototype_card(rank: int, p, explainer: Explainer, scale: float) -> str:
    users = explainer.prototype_usage(p.channel)
    top_users = ", ".join(html.escape(explainer.id2label[k]) for k, _ in users[:4])
    more = f" and {len(users) - 4} more" if len(users) > 4 else ""
    role = "evidence <b>for</b>" if p.sign > 0 else "evidence <b>against</b>"
    dead = ""
    if explainer.is_dead(p.channel, p.sign):
        dead = "<br><i>This pole never fired on the training set: no gallery.</i>"
    return (
        f'<div class="proto-card"><div style="font-size:1.1em;font-weight:600">#{rank} · prototype {p.name}</div>'
        f"<div>{role} the class</div>"
        f'<div style="margin:6px 0">{signed_bar(p.contribution, scale, 200)} <b>{p.contribution:+.3f}</b></div>'
        f"<div>= {'' if p.sign > 0 else '− '}weight {p.weight:.3f} × activation {p.activation:.3f}</div>"
        f"<div>peak at row {p.location[0]}, column {p.location[1]} of the "
        f"{p.activation_map.shape[0]}×{p.activation_map.shape[1]} feature grid"
        f"{'; ringed: the pixels that make it fire there' if p.relevance is not None else ''}</div>"
        f'<div style="opacity:.8">channel {p.channel} is used by: {top_users}{more}</div>{dead}</div>'
    )
