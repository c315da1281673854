"""The defaults `model.explain()` and the `explain` command line share (one place, so the two cannot drift apart).

Imports nothing: the command line reads these while it parses its arguments, before torch is imported. It travels
with the weights too (the modeling file imports it relatively).
"""

# `explain(top_k=...)`: how many prototypes an `Explanation` lists. None: every prototype that contributes, the exact
# decomposition ``logit == bias + sum(contributions)`` (with a number, the rest is summed in `residual`).
EXPLAIN_TOP_K: int | None = None
# `explain(relevance_top_k=...)`: how many of the strongest positive prototypes get a pixel relevance map. Each costs
# one backward pass through the backbone, so the Python API computes none unless asked.
EXPLAIN_RELEVANCE_TOP_K = 0
# How many prototypes a picture of an explanation shows: the command line's --top_k (rows of evidence for the class,
# each with its relevance map, i.e. ``model.explain(x, relevance_top_k=SHOWN_PROTOTYPES)``; the HTML table lists
# every prototype, as `explain()` does by default).
SHOWN_PROTOTYPES = 6
