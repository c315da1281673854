"""Pictures of InfoDisent explanations: PNG figures (matplotlib, Agg canvas); the self-contained HTML report that
embeds them is `report_html.explanation_html`.

This module is the public face of the figures and only re-exports them; each job lives in its own module:
`render_image` (one image: `render_explanation`, `render_contrast`), `render_class` (one class of the model:
`render_class_sheet`) and `render_drawing` (the colours, the canvas and the panels both share). None of them
imports this module.

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
from .render_class import render_class_sheet
from .render_drawing import (  # noqa: F401  (re-exported: the colours and the text key are part of this API)
    AGAINST_COLOUR,
    EVIDENCE_CMAP,
    FOR_COLOUR,
    NEUTRAL_COLOUR,
    PROTOTYPE_CMAP,
    TEXT_KEY,
)
from .render_image import render_contrast, render_explanation

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
