"""The fault suite's cases for bad inputs to the explainer (issue 13), by category: images (the bad-input corpus:
empty, truncated, mislabelled, bomb, oversized and exotic-mode files against `open_image` / `to_rgb`, the command
line and the Space) and labels (hostile class names against the renderer, the command line and the Space). Same
machinery as the other `fault_cases_*` modules (`fault_kit`); `fault_cases.CASES` includes these."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fault_kit import (
    CLI_FAST,
    HOSTILE,
    NAMES,
    Case,
    Context,
    DataLost,
    Outcome,
    expect_error,
    run_cli,
)

# ----------------------------------------------------------------------------------------------------------------
# Category: images (the corpus) against open_image / to_rgb, the command line and the Space
# ----------------------------------------------------------------------------------------------------------------


def _reference_logits(ctx: Context, folder: Path, image: Image.Image) -> np.ndarray:
    from modeling_infodisent.images import to_rgb
    from modeling_infodisent.loading import load_model_and_gallery

    model, processor, _ = load_model_and_gallery(folder)
    with torch.no_grad():
        return model(processor(images=to_rgb(image), return_tensors="pt")["pixel_values"]).logits[0].double().numpy()


def _first_frame(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.seek(0)
        image.load()
        return image.copy()


# name -> (expected size after decoding or None for an error, error fragments for open_image / CLI, Space fragment)
IMAGE_CASES = {
    "zero-byte.png": (None, "is empty (0 bytes)", "is an empty file (0 bytes)"),
    "truncated.png": (
        None,
        "looks like a PNG file but is damaged or truncated",
        "looks like a PNG file but is damaged or truncated",
    ),
    "truncated.jpg": (
        None,
        "looks like a JPEG file but is damaged or truncated",
        "looks like a JPEG file but is damaged or truncated",
    ),
    "text-named.png": (None, "is not an image file", "is not an image this app can read"),
    "bomb.png": (
        None,
        "refused as a possible decompression bomb",
        "is far too large (PIL refused it as a possible decompression bomb)",
    ),
    "oversized.png": (
        None,
        "is 9000x8000 = 72,000,000 pixels, over the limit of 50,000,000",
        "is 9000×8000 pixels (72 megapixels); this demo accepts images up to 36 megapixels",
    ),
    "one-pixel.png": ((1, 1), "", ""),
    "deep-i16.png": ((34, 30), "", ""),
    "alpha-rgba.png": ((48, 40), "", ""),
    "grey-alpha-la.png": ((48, 40), "", ""),
    "palette-p.png": ((48, 40), "", ""),
    "cmyk.jpg": ((48, 40), "", ""),
    "animated.gif": ((20, 20), "", ""),
}


def image_cases() -> list[Case]:
    from modeling_infodisent.images import UnreadableImage, open_image, to_rgb

    cases = []
    for name, (size, message, space_message) in IMAGE_CASES.items():
        expect = "result" if size else "error"

        def decode(ctx, name=name):
            return expect_error(lambda: open_image(ctx.corpus[name]), UnreadableImage)

        def check_decoded(ctx, outcome, name=name, size=size):
            image = outcome.value
            assert image.mode == "RGB" and image.size == size, (image.mode, image.size)
            reference = to_rgb(_first_frame(ctx.corpus[name]))  # the one conversion, on PIL's own decoding
            assert np.array_equal(np.asarray(image), np.asarray(reference))

        cases.append(
            Case(
                "images",
                f"open_image {name}",
                expect,
                decode,
                (message,) if message else (),
                check_decoded if size else None,
            )
        )

        def cli(ctx, name=name):
            ctx.last_out = ctx.fresh("cli") / "out"
            return run_cli(
                ["--model", str(ctx.model_dir), str(ctx.corpus[name]), "--out", str(ctx.last_out), *CLI_FAST]
            )

        def check_cli(ctx, outcome, name=name, size=size):
            stem = Path(name).stem
            if size is None:
                if ctx.last_out.exists():
                    raise DataLost(f"an error left {sorted(os.listdir(ctx.last_out))} in --out")
                return
            written = sorted(os.listdir(ctx.last_out))
            if written != [f"{stem}.html", f"{stem}.png"]:
                raise DataLost(f"--out holds {written}")
            logits = _reference_logits(ctx, ctx.model_dir, _first_frame(ctx.corpus[name]))
            assert f"predicted '{NAMES[int(np.argmax(logits))]}'" in outcome.message, outcome.message

        cases.append(Case("images", f"CLI {name}", expect, cli, (f"{name}: {message}",) if message else (), check_cli))

        def space(ctx, name=name):
            app = ctx.app
            return expect_error(
                lambda: app.explain_upload(ctx.explainer(ctx.model_dir), str(ctx.corpus[name]), app.PREDICTED),
                app.BadInput,
            )

        def check_space(ctx, outcome, name=name):
            explanation = outcome.value[0]
            logits = _reference_logits(ctx, ctx.model_dir, _first_frame(ctx.corpus[name]))
            assert explanation.target == int(np.argmax(logits))
            assert explanation.logit == pytest.approx(logits.max(), abs=1e-4)

        cases.append(
            Case(
                "images",
                f"Space {name}",
                expect,
                space,
                (f"“{name}” {space_message}",) if space_message else (),
                check_space if size else None,
            )
        )

    def huge(ctx):
        app = ctx.app
        return expect_error(lambda: app.read_image(str(ctx.corpus["huge-6000.png"])), app.BadInput)

    def check_huge(ctx, outcome):
        assert outcome.value.size == (ctx.app.MAX_SIDE, ctx.app.MAX_SIDE)
        assert outcome.value.getpixel((500, 500)) == (90, 90, 90)

    cases.append(Case("images", "Space 6000x6000 PNG is downscaled on decoding", "result", huge, (), check_huge))
    return cases


# ----------------------------------------------------------------------------------------------------------------
# Category: labels (hostile class names) against the renderer, the command line and the Space
# ----------------------------------------------------------------------------------------------------------------

# Characters of the hostile names that status and equation never contain themselves: none may appear there raw.
_MARKUP_IN_LABELS = ("<", ">", "](", "$", "`", "|", "\\", "![")


def label_cases() -> list[Case]:
    cases = []
    for k, label in HOSTILE.items():

        def render(ctx, k=k):
            from modeling_infodisent.loading import load_model_and_gallery
            from modeling_infodisent.render import render_class_sheet, render_contrast, render_explanation

            model, processor, gallery = load_model_and_gallery(ctx.hostile_dir)
            image = Image.open(ctx.corpus["alpha-rgba.png"])
            pixel_values = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
            explanation = model.explain(pixel_values, target=k)[0]
            other = model.explain(pixel_values, target=(k + 1) % len(HOSTILE))[0]
            figure = render_explanation(explanation, image, gallery, 2, HOSTILE, max_patches=1, dpi=30)
            contrast = render_contrast(explanation, other, image, gallery, id2label=HOSTILE, max_patches=1, dpi=30)
            sheet = render_class_sheet(model, k, gallery, max_patches=1, dpi=30)
            return Outcome("result", "", (figure, contrast, sheet))

        def check_render(ctx, outcome, label=label):
            from modeling_infodisent.render import TEXT_KEY

            figure = outcome.value[0]
            assert (label if len(label) <= 32 else label[:31]) in figure.info[TEXT_KEY]  # literally, not mathtext
            assert all(image.width > 100 for image in outcome.value)

        cases.append(Case("labels", f"renderer {label[:24]!r}", "result", render, (), check_render))

        def space(ctx, k=k):
            app = ctx.app
            explainer = ctx.explainer(ctx.hostile_dir)
            image = Image.open(ctx.corpus["alpha-rgba.png"]).convert("RGB")
            explanation, _ = explainer.explain(image, k)
            predicted = int(np.argmax(explanation.probabilities))
            markdown = [app.status_markdown(explanation, explainer.id2label, 0.1), app.equation_markdown(explanation)]
            page = [app.contribution_chart(explanation)]
            page += [app.prototype_card(i + 1, p, explainer, 1.0) for i, p in enumerate(explanation.prototypes[:3])]
            table, _, _ = ctx.demo_fn("class_view")(explainer.class_choices[k])
            page.append(table)
            proto = explanation.prototypes[0].name
            text, _ = ctx.demo_fn("prototype_view")(proto)
            page.append(text)
            return Outcome("result", "", (markdown, page, predicted))

        def check_space(ctx, outcome, label=label):
            markdown, page, _ = outcome.value
            assert ctx.app.md_text(label) in markdown[0] and ctx.app.md_text(label) in markdown[1]
            for text in markdown:  # status and equation: no syntax of any class name reaches the Markdown raw
                assert not [c for c in _MARKUP_IN_LABELS if c in text], text
            assert html.escape(label) in page[0] and html.escape(label) in page[-2]  # chart and class table
            for text in page:
                assert "<img" not in text and "<script" not in text and "<svg" not in text, text

        cases.append(Case("labels", f"Space {label[:24]!r}", "result", space, (), check_space))

    def cli_global(ctx):
        ctx.last_out = ctx.fresh("cli-labels") / "out"
        return run_cli(
            [
                "--model",
                str(ctx.hostile_dir),
                str(ctx.corpus["alpha-rgba.png"]),
                "--global",
                "--contrast",
                "1",
                "--out",
                str(ctx.last_out),
                *CLI_FAST,
            ]
        )

    def check_cli_global(ctx, outcome):
        written = sorted(os.listdir(ctx.last_out))
        sheets = [f for f in written if f.startswith("class_")]
        assert len(sheets) == len(HOSTILE), written  # every sheet, none lost to a mathtext error
        page = (ctx.last_out / "alpha-rgba.html").read_text(encoding="utf-8")
        assert "<img src=http" not in page and "<script>alert" not in page
        for label in HOSTILE.values():  # no label's markup reaches the page unescaped
            assert "<" not in label or label not in page, label
        assert html.escape(HOSTILE[1]) in page or html.escape(HOSTILE[1], quote=False) in page

    cases.append(
        Case("labels", "CLI --global --contrast with hostile names", "result", cli_global, (), check_cli_global)
    )
    return cases
