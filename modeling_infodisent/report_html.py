"""A self-contained HTML report of an InfoDisent explanation (every image embedded as a base64 PNG), readable
without the code: the verdict, the figures of `render`, the addition and the table of every contributing prototype
with its gallery thumbnails. Labels and file names are data: all text goes through `html.escape`."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from PIL import Image

from .explanation_text import _class_name, _num, _sum_line, explanation_table, original_classifier_line, sum_terms
from .gallery import PrototypeGallery
from .render_image import render_contrast, render_explanation

__all__ = ["explanation_html"]


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .9em; } td, th { padding: 3px 9px; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.for { color: #c0392b; } .against { color: #2166ac; } .muted { color: #666; font-size: .9em; }
.sum { font-family: monospace; background: #f7f7f7; padding: .6em .8em; border-radius: 4px; }
img.figure { max-width: 100%; border: 1px solid #ddd; } img.patch { width: 48px; height: 48px; margin-right: 2px;
image-rendering: pixelated; border: 1px solid #ccc; }
"""


def explanation_html(
    explanation,
    image,
    gallery: PrototypeGallery | None = None,
    max_prototypes: int = 6,
    id2label: dict | None = None,
    *,
    contrast=None,
    image_processor: Any = None,
    title: str | None = None,
    max_patch_rows: int = 24,
    figure: Image.Image | None = None,
    contrast_figure: Image.Image | None = None,
) -> str:
    """A self-contained HTML report (all images embedded as base64 PNG), readable without the code: the verdict,
    the top-5 probabilities, the figure of `render_explanation`, the addition ``bias + contributions = logit``,
    the table of every contributing prototype (with gallery thumbnails for the first `max_patch_rows`), and, when
    `contrast` (an `Explanation` of another class of the same image) is given, the "why A and not B" figure.
    `figure` / `contrast_figure`: already rendered figures to embed (they are rendered here otherwise)."""
    esc = html.escape
    name = explanation.label
    if figure is None:
        figure = render_explanation(
            explanation, image, gallery, max_prototypes, id2label, image_processor=image_processor
        )
    terms = sum_terms(explanation)
    probabilities = np.asarray(explanation.probabilities, dtype=np.float64)
    predicted = int(np.argmax(probabilities))
    predicted_name = _class_name(predicted, id2label, name if predicted == explanation.target else None)
    original = original_classifier_line(explanation, id2label)
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title or f'InfoDisent explanation: {name}')}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title or f'Why “{name}”?')}</h1>",
        f"<p>The model predicts <b>{esc(predicted_name)}</b> with probability "
        f"<b>{100 * probabilities[predicted]:.1f}%</b>. This page explains the score (logit) of class "
        f"<b>{esc(name)}</b>: <b>{_num(explanation.logit, False)}</b>.</p>",
        f"<p>{esc(original)}.</p>" if original else "",
        "<p class='muted'>How to read it: the model looks at the image through <i>prototypes</i>. Each prototype "
        "fires at one place of the image (its heatmap and box) and adds <i>weight × activation</i> to the class "
        "score — <span class='for'>red</span> prototypes argue <span class='for'>for</span> the class, "
        "<span class='against'>blue</span> ones <span class='against'>against</span> it. The small pictures are the "
        "training patches where each prototype fires most, so you can see what it responds to. The score is "
        "exactly the bias plus the sum of all contributions.</p>",
        "<h2>Top-5 probabilities</h2><table><tr><th>class</th><th>probability</th></tr>",
    ]
    for k in np.argsort(-probabilities, kind="stable")[:5]:
        k = int(k)
        label = _class_name(k, id2label, name if k == explanation.target else None)
        bold = ("<b>", "</b>") if k == explanation.target else ("", "")
        parts.append(
            f"<tr><td>{bold[0]}{esc(label)}{bold[1]}</td><td class='num'>{100 * probabilities[k]:.2f}%</td></tr>"
        )
    parts.append("</table>")
    parts.append(f"<h2>Explanation</h2><img class='figure' alt='explanation figure' src='{_png_data_uri(figure)}'>")
    parts.append("<h2>The score adds up</h2><p class='sum'>" + esc(_sum_line(terms, name)) + "</p>")
    if explanation.residual:
        parts.append(
            f"<p class='muted'>The explanation was truncated: the prototypes not listed add "
            f"{_num(explanation.residual)} (included in the sum above).</p>"
        )
    parts.append(
        "<h2>All contributing prototypes</h2><table><tr><th>#</th><th>prototype</th><th>evidence</th>"
        "<th>weight</th><th>activation</th><th>contribution</th><th>peak (row, col)</th>"
        "<th>most activating training patches</th></tr>"
    )
    for row in explanation_table(explanation):
        thumbs = ""
        if gallery is not None and row["rank"] < max_patch_rows:
            if gallery.is_dead(row["channel"], row["sign"]):
                thumbs = "<span class='muted'>never fired on the gallery images</span>"
            for entry in gallery.entries(row["channel"], row["sign"])[: min(5, gallery.top_k)]:
                caption = esc(f"{entry.label_name} · activation {entry.activation:.3f} · image {entry.source_id}")
                thumbs += f"<img class='patch' title='{caption}' alt='{caption}' src='{_png_data_uri(entry.image)}'>"
        cls = row["evidence"]
        parts.append(
            f"<tr><td>{row['rank'] + 1}</td><td>{esc(row['prototype'])}</td><td class='{cls}'>{cls}</td>"
            f"<td class='num'>{row['weight']:.3f}</td><td class='num'>{row['activation']:.3f}</td>"
            f"<td class='num {cls}'>{_num(row['contribution'])}</td><td>{row['location']}</td><td>{thumbs}</td></tr>"
        )
    parts.append(
        f"<tr><td></td><td>bias</td><td></td><td></td><td></td><td class='num'>{_num(explanation.bias)}</td>"
        "<td></td><td></td></tr></table>"
    )
    if contrast is not None:
        if contrast_figure is None:
            contrast_figure = render_contrast(
                explanation, contrast, image, gallery, id2label=id2label, image_processor=image_processor
            )
        parts.append(
            f"<h2>Why “{esc(name)}” and not “{esc(contrast.label)}”?</h2>"
            f"<img class='figure' alt='contrast figure' src='{_png_data_uri(contrast_figure)}'>"
        )
    parts.append(
        "<p class='muted'>Generated by InfoDisent (Struski, Rymarczyk, Tabor, arXiv 2409.10329).</p></body></html>\n"
    )
    return "\n".join(parts)
