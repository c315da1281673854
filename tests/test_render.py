"""The pictures: the numbers printed come from the Explanation and add up to the logit; pruned prototypes never
appear; HTML is self-contained."""

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessor

from conftest import tiny_resnet_config
from modeling_infodisent import InfoDisentForImageClassification
from modeling_infodisent.gallery import compute_gallery
from modeling_infodisent.render import (
    TEXT_KEY,
    contrast_table,
    explanation_table,
    prototype_usage,
    render_class_sheet,
    render_contrast,
    render_explanation,
    sum_terms,
)
from modeling_infodisent.report_html import explanation_html

NAMES = {0: "cat", 1: "dog", 2: "bird"}
FLOAT = r"[+-]?\d+\.\d+"


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(tiny_resnet_config(), id2label=NAMES).eval()
    with torch.no_grad():
        model.head.rotation.generator.normal_(0.0, 0.5)  # both poles fire
        model.head.classifier.bias.copy_(torch.tensor([0.25, -0.5, 0.125]))
        # Prune a few (class, channel) pairs: they must vanish from every picture.
        model.head.classifier.prototype_mask[:, :4] = 0.0
        model.head.classifier.prototype_mask[1, 4:8] = 0.0
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(6)]
    gallery = compute_gallery(
        model, [{"image": im, "label": i % 3} for i, im in enumerate(images)], processor, top_k=2, progress=False
    )
    image = Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8))
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    return model, processor, gallery, image, pixel_values


def drawn_lines(figure):
    text = figure.info[TEXT_KEY]
    assert text, "the figure records the text it drew"
    return text.split("\n")


def check_sum_line(line, logit):
    """The printed terms add up to the printed logit (up to the rounding of 3 decimals per term)."""
    left, right = line.split(" = ")
    terms = [float(v) for v in re.findall(rf"({FLOAT}) \(", left)]
    total = float(re.match(FLOAT, right.strip()).group(0))
    assert total == pytest.approx(round(logit, 3), abs=1e-9)
    assert sum(terms) == pytest.approx(total, abs=0.0005 * (len(terms) + 1))
    return terms


@pytest.mark.parametrize("top_k", [None, 5])
def test_figure_numbers_match_the_explanation(setup, top_k):
    model, processor, gallery, image, pixel_values = setup
    explanation = model.explain(pixel_values, top_k=top_k)[0]
    assert explanation.positive and explanation.negative
    figure = render_explanation(
        explanation, image, gallery, max_prototypes=3, id2label=NAMES, image_processor=processor
    )
    assert figure.mode == "RGB" and figure.width > 800 and figure.height > 600
    lines = drawn_lines(figure)
    # The rows: evidence for (strongest first), then against, each with its exact contribution.
    rows = [re.match(rf"^(\d+[+-]) contribution ({FLOAT})$", line) for line in lines]
    rows = [(m.group(1), float(m.group(2))) for m in rows if m]
    shown = explanation.positive[:3] + explanation.negative[:2]
    assert [name for name, _ in rows] == [p.name for p in shown]
    for (_, printed), p in zip(rows, shown):
        assert printed == pytest.approx(round(p.contribution, 3), abs=1e-9)
    # The addition printed under the figure closes on the logit ...
    (sum_line,) = [line for line in lines if "(logit of 'cat'" in line or "(logit of" in line]
    terms = check_sum_line(sum_line, explanation.logit)
    # ... its "shown" terms are the rows' values, and the exact terms add up to the logit.
    assert terms[1] == pytest.approx(sum(v for _, v in rows if v > 0), abs=0.0005 * len(rows))
    assert terms[2] == pytest.approx(sum(v for _, v in rows if v < 0), abs=0.0005 * len(rows))
    exact = sum_terms(explanation, shown)
    assert sum(v for _, v in exact[:-1]) == pytest.approx(explanation.logit, abs=1e-5)
    assert f"logit {explanation.logit:.3f}" in lines


def test_prototype_rows_outline_the_relevant_pixels_only_when_the_explanation_has_them(setup):
    model, processor, gallery, image, pixel_values = setup
    plain = model.explain(pixel_values)[0]
    located = model.explain(pixel_values, relevance_top_k=1)[0]  # only the strongest positive prototype gets a map
    assert located.positive[0].relevance is not None and located.positive[1].relevance is None
    kwargs = dict(max_prototypes=3, id2label=NAMES, image_processor=processor)
    a = np.asarray(render_explanation(plain, image, gallery, **kwargs)).astype(int)
    b = np.asarray(render_explanation(located, image, gallery, **kwargs)).astype(int)
    assert a.shape == b.shape
    diff = np.abs(a - b).sum(axis=2) > 0
    changed = np.flatnonzero(diff.any(axis=1))
    # Only the first prototype's row changes, not the header or the other rows: the outline on its image panel (the
    # figure's left column, before the rows' text starts at ~14% of the width) and its note.
    height, width = diff.shape
    assert 0.25 * height < changed.min() and changed.max() < 0.45 * height, (changed.min(), changed.max(), height)
    assert diff[:, : int(0.14 * width)].sum() > 20
    lines = drawn_lines(render_explanation(located, image, gallery, **kwargs))
    assert lines == drawn_lines(render_explanation(plain, image, gallery, **kwargs))  # the recorded numbers


def test_table_is_the_decomposition_and_skips_pruned(setup):
    model, _, _, _, pixel_values = setup
    for target in range(3):
        explanation = model.explain(pixel_values, target=target)[0]
        table = explanation_table(explanation)
        assert len(table) == len(explanation.prototypes)
        assert explanation.bias + sum(r["contribution"] for r in table) == pytest.approx(explanation.logit, abs=1e-5)
        weight = model.classifier_weight[target].detach()
        for row in table:
            assert row["channel"] >= 4 and weight[row["channel"]] != 0
            assert row["contribution"] == pytest.approx(row["sign"] * row["weight"] * row["activation"])
            assert row["evidence"] == ("for" if row["contribution"] > 0 else "against")
        if target == 1:
            assert all(r["channel"] >= 8 for r in table)


def test_prototype_usage(setup):
    model = setup[0]
    weight = model.classifier_weight.detach()
    for channel in (0, 5, 20):
        usage = prototype_usage(model, channel)
        expected = sorted(
            ((k, float(weight[k, channel])) for k in range(3) if weight[k, channel] != 0), key=lambda kw: -kw[1]
        )
        assert [k for k, _ in usage] == [k for k, _ in expected]
        np.testing.assert_allclose([w for _, w in usage], [w for _, w in expected], rtol=1e-6)
    assert prototype_usage(model, 0) == []
    assert 1 not in [k for k, _ in prototype_usage(model, 5)]
    with pytest.raises(IndexError):
        prototype_usage(model, 10_000)


def test_contrast_adds_up(setup):
    model, processor, gallery, image, pixel_values = setup
    a, b = model.explain(pixel_values, target=[0])[0], model.explain(pixel_values, target=[2])[0]
    rows = contrast_table(a, b)
    assert (a.bias - b.bias) + sum(r["difference"] for r in rows) == pytest.approx(a.logit - b.logit, abs=1e-5)
    for r in rows:
        assert r["difference"] == pytest.approx(r["a"] - r["b"])
    figure = render_contrast(a, b, image, gallery, id2label=NAMES, image_processor=processor)
    lines = drawn_lines(figure)
    (line,) = [x for x in lines if "(logit 'cat' − logit 'bird')" in x]
    left, right = line.split(" = ")
    terms = [float(v) for v in re.findall(rf"({FLOAT}) \(", left)]
    assert float(re.match(FLOAT, right).group(0)) == pytest.approx(round(a.logit - b.logit, 3), abs=1e-9)
    assert sum(terms) == pytest.approx(a.logit - b.logit, abs=0.002)
    printed = [float(m.group(1)) for x in lines if (m := re.match(rf"^\d+[+-] difference ({FLOAT})$", x))]
    favour_a = [r for r in rows if r["difference"] > 0][:4]
    favour_b = [r for r in rows if r["difference"] < 0][:4]
    np.testing.assert_allclose(printed, [round(r["difference"], 3) for r in favour_a + favour_b], atol=1e-9)


def test_class_sheet_lists_the_heaviest_unpruned_channels(setup):
    model, _, gallery, _, _ = setup
    for class_id in (0, 1):
        sheet = render_class_sheet(model, class_id, gallery, max_prototypes=5)
        lines = drawn_lines(sheet)
        printed = [
            (int(m.group(1)), float(m.group(2)))
            for x in lines
            if (m := re.match(r"^channel (\d+) weight (\d+\.\d+)$", x))
        ]
        weight = model.classifier_weight[class_id].detach().numpy()
        expected = [c for c in np.argsort(-weight, kind="stable") if weight[c] != 0][:5]
        assert [c for c, _ in printed] == [int(c) for c in expected]
        for c, w in printed:
            assert w == pytest.approx(round(float(weight[c]), 3), abs=1e-9)
    render_class_sheet(model, 2, None)  # without a gallery it still draws the weights
    with pytest.raises(ValueError, match="out of range"):
        render_class_sheet(model, 3, gallery)


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.text = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.sources.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_complete(setup):
    model, processor, gallery, image, pixel_values = setup
    explanation = model.explain(pixel_values)[0]
    other = model.explain(pixel_values, target=(explanation.target + 1) % 3)[0]
    page = explanation_html(
        explanation, image.convert("P"), gallery, id2label=NAMES, contrast=other, image_processor=processor
    )
    parser = _Collector()
    parser.feed(page)
    text = " ".join(parser.text)
    assert parser.sources and all(s.startswith("data:image/png;base64,") for s in parser.sources)
    assert len(parser.sources) >= 2 + 1  # figure, contrast, gallery thumbnails
    for p in explanation.prototypes:
        assert re.search(rf"\b{re.escape(p.name)}", text)
    assert f"{explanation.logit:.3f} (logit of '{explanation.label}')" in text
    for name in NAMES.values():
        assert name in text


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_any_image_mode_renders(setup, mode):
    model, processor, gallery, image, pixel_values = setup
    explanation = model.explain(pixel_values)[0]
    source = image.convert("L").convert(mode) if mode == "I;16" else image.convert(mode)
    figure = render_explanation(explanation, source, None, max_prototypes=2)
    assert figure.size[0] > 0 and figure.getbbox() is not None
