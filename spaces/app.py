#!/usr/bin/env python
"""InfoDisent explorer: a Gradio Space that shows *why* an image classifier predicts what it does.

InfoDisent (Struski, Rymarczyk, Tabor, arXiv 2409.10329) puts a rotation, a sparse pooling and a nonnegative linear
layer on top of a frozen pretrained backbone, so that every class score is an exact sum:

    logit(class) = bias + sum over prototypes (weight x activation, signed by the prototype's pole)

This app shows that sum for any image and any class, with where each prototype fires in the image and the training
patches that activate it most (the gallery stored with the model).

    python spaces/app.py                          # the bundled demo model (spaces/model), http://127.0.0.1:7860
    python spaces/app.py --model org/infodisent-cub   # or INFODISENT_MODEL=...: any InfoDisent Hub id or folder

The named API endpoint `explain` (for `gradio_client`):

    from gradio_client import Client, handle_file
    probabilities, explanation = Client("http://127.0.0.1:7860/").predict(handle_file("shoe.png"), api_name="/explain")

`probabilities` is the top-5 `gr.Label` value; `explanation` the JSON of `explanation_json` (all class probabilities,
the explained class, its logit, bias and every prototype's contribution).
"""

from __future__ import annotations

import argparse
import ctypes
import html
import logging
import os
import time
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
import torch

from modeling_infodisent import Explanation, render
from modeling_infodisent.explain import did_you_mean
from modeling_infodisent.images import to_rgb  # noqa: F401 (to_rgb: for callers)

# The sibling modules. Imported as `spaces.app` (the installed project: the tests, the benchmarks) they are the
# package's; run as a script (`python spaces/app.py`, or app.py at the root of a Hugging Face Space) they are
# top-level modules next to this file, whose folder is then sys.path[0].
if __package__:
    from .explainer import (  # (for callers of the app module)
        DEFAULT_MODEL,
        DISPLAY_SIZE,
        MAX_FILE_MB,
        MAX_SIDE,
        PREDICTED,
        BadInput,
        Explainer,
        explanation_json,
        read_image,
    )
    from .uploads import UploadLeases
    from .views import (  # (the page's pictures and HTML; the tests call them through this module)
        NUM_BARS,
        annotated_overview,
        contribution_chart,
        equation_markdown,
        md_text,
        prototype_card,
        prototype_overlay,
        relevance_rings,
        signed_bar,
        status_markdown,
    )
else:
    from explainer import (  # noqa: F401  (for callers of the app module)
        DEFAULT_MODEL,
        DISPLAY_SIZE,
        MAX_FILE_MB,
        MAX_SIDE,
        PREDICTED,
        BadInput,
        Explainer,
        explanation_json,
        read_image,
    )
    from uploads import UploadLeases
    from views import (  # noqa: F401  (the page's pictures and HTML; the tests call them through this module)
        NUM_BARS,
        annotated_overview,
        contribution_chart,
        equation_markdown,
        md_text,
        prototype_card,
        prototype_overlay,
        relevance_rings,
        signed_bar,
        status_markdown,
    )

HERE = Path(__file__).resolve().parent

logger = logging.getLogger("infodisent.space")

EXAMPLES_DIR = HERE / "examples"
NUM_SLOTS = 6  # prototype cards shown in the local explanation
# The heavy event handlers share one queue slot pool of this size, so memory is bounded per app, not per handler.
CONCURRENCY = 2


def resolve_model_ref(cli_value: str | None = None) -> str:
    """--model, then INFODISENT_MODEL, then the bundled demo model."""
    ref = cli_value or os.environ.get("INFODISENT_MODEL") or DEFAULT_MODEL
    if ref == DEFAULT_MODEL and not os.path.isdir(ref):
        raise SystemExit(
            f"The bundled demo model {DEFAULT_MODEL} is missing (build it with spaces/build_demo_model.sh), or pass "
            "--model / INFODISENT_MODEL with an InfoDisent Hub id or folder."
        )
    return ref


def _return_freed_memory_to_the_os() -> bool:
    """Fix glibc's mmap threshold at 1 MiB. By default glibc raises it after a large block is freed, so the 16 MiB
    blocks PIL decodes into then come from the heap of whichever worker thread decoded, and each of Gradio's
    threads keeps the peak of its largest decode (measured: 8 uploads of 6000 x 6000, +590 MiB instead of +200).
    Mapped blocks go back to the system when freed. No-op off glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20))  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


# Uploads are deleted from Gradio's cache this many seconds after they arrive (checked every DELETE_EVERY_S): the page
# re-reads an upload when the class changes, so it is kept for a while; an API call's upload is deleted sooner, once
# nobody may still need it (uploads.UploadLeases: identical uploads share one path).
DELETE_EVERY_S, DELETE_AFTER_S = 300, 1800


# ----------------------------------------------------------------------------------------------------------------
# Reading an upload
# ----------------------------------------------------------------------------------------------------------------


def explain_upload(
    explainer: Explainer, image_path, class_choice, relevance: int = 0
) -> tuple[Explanation, torch.Tensor, dict]:
    """(explanation, pixel_values, probabilities by class choice) of an uploaded file; `BadInput` for a bad upload or
    class. What every view and the API call; `relevance` as in `Explainer.explain`."""
    image = read_image(image_path)
    explanation, pixel_values = explainer.explain(image, explainer.class_id(class_choice), relevance=relevance)
    probabilities = {explainer.class_choices[k]: float(p) for k, p in enumerate(explanation.probabilities)}
    return explanation, pixel_values, probabilities


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------


def _path_preprocess(payload):
    """Replacement for `gr.Image.preprocess` on the upload widget: pass the uploaded file's path through, untouched.

    The stock method opens every upload with PIL before the app sees it, so a text file or a decompression bomb fails
    inside Gradio with a generic error; here the path goes straight to `read_image`, which explains the problem.
    (Set on the instance: subclassing a Gradio component would make Gradio write a .pyi stub next to this file.)
    """
    if payload is None:
        return None
    return str(payload.path) if payload.path else None


def upload_widget(**kwargs) -> gr.Image:
    image = gr.Image(type="filepath", **kwargs)
    image.preprocess = _path_preprocess
    return image


def _example_paths() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.png")) if EXAMPLES_DIR.is_dir() else []


CSS = """
#input-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.proto-card { font-size: 0.95em; line-height: 1.45; padding: 4px 8px; }
.contrib-chart td { padding: 1px 6px; border: none !important; }
.contrib-chart tr.total td { border-top: 2px solid var(--body-text-color) !important; }
#status-box { min-height: 1.5em; }
"""


def build_demo(model_ref: str | None = None, explainer: Explainer | None = None) -> gr.Blocks:
    """The Blocks app for one model (a Hub id or folder; default `resolve_model_ref()`)."""
    _return_freed_memory_to_the_os()
    explainer = explainer or Explainer(model_ref or resolve_model_ref())
    examples = _example_paths()
    config = explainer.model.config
    backbone = config.backbone_config.model_type
    n_used = int((explainer.weight > 0).sum(axis=1).mean())

    def explain_core(image_path, class_choice, relevance: int = 0):
        return explain_upload(explainer, image_path, class_choice, relevance)

    # -- the API endpoint: probabilities + explanation JSON ----------------------------------------------------------

    def explain_api(image, explain_class=PREDICTED):
        """Explain one image: returns the class probabilities and the JSON decomposition of the explained class's
        logit (bias + every prototype's contribution). `explain_class`: a class name, or "Predicted class"."""
        # The call owns its upload until it is done; the file goes once no other call may need it (see uploads.py).
        with leases.hold(image):
            try:
                explanation, _, probabilities = explain_core(image, explain_class)
            except BadInput as error:
                message = html.escape(str(error))
                raise gr.Error(message, title="Cannot explain this upload", print_exception=False) from None
        return probabilities, explanation_json(explanation, explainer.id2label, explainer.model_ref)

    # -- the page's view ------------------------------------------------------------------------------------------

    def empty_view(status: str):
        updates = [status, None, None, "", "", None]
        for _ in range(NUM_SLOTS):
            updates += [gr.update(visible=False), None, "", []]
        return updates

    def explain_view(image_path, class_choice):
        started = time.perf_counter()
        leases.keep(image_path)  # the visitor re-reads it when they change the class
        try:
            explanation, pixel_values, probabilities = explain_core(image_path, class_choice, relevance=NUM_SLOTS)
        except BadInput as error:
            gr.Warning(html.escape(str(error)), title="Cannot explain this upload")  # a toast renders HTML
            return empty_view(f"⚠️ **Cannot explain this upload.** {md_text(error)}")
        base = explainer.model_view(pixel_values)
        shown = explanation.prototypes[:NUM_SLOTS]
        scale = max([abs(p.contribution) for p in shown] + [1e-9])
        status = status_markdown(explanation, explainer.id2label, time.perf_counter() - started)
        updates = [
            status,
            probabilities,
            annotated_overview(base, shown),
            equation_markdown(explanation),
            contribution_chart(explanation),
            explanation_json(explanation, explainer.id2label, explainer.model_ref),
        ]
        for i in range(NUM_SLOTS):
            if i < len(shown):
                p = shown[i]
                gallery = explainer.gallery_items(p.channel, p.sign)
                updates += [
                    gr.update(visible=True),
                    prototype_overlay(base, p),
                    prototype_card(i + 1, p, explainer, scale),
                    gallery,
                ]
            else:
                updates += [gr.update(visible=False), None, "", []]
        return updates

    def figure_view(image_path, class_choice):
        """The project's printable figures (render.py): seconds of matplotlib, so only on request."""
        leases.keep(image_path)
        try:
            image = read_image(image_path)
            explanation, pixel_values = explainer.explain(image, explainer.class_id(class_choice), relevance=NUM_SLOTS)
        except BadInput as error:
            gr.Warning(html.escape(str(error)), title="Cannot explain this upload")
            return None, gr.update(value=None, visible=False)
        common = dict(id2label=explainer.id2label, image_processor=explainer.processor)
        figure = render.render_explanation(explanation, image, explainer.gallery, **common)
        predicted = int(np.argmax(explanation.probabilities))
        if predicted == explanation.target:
            return figure, gr.update(value=None, visible=False)
        predicted_explanation, _ = explainer.explain(image, predicted, relevance=NUM_SLOTS)
        contrast = render.render_contrast(predicted_explanation, explanation, image, explainer.gallery, **common)
        return figure, gr.update(value=contrast, visible=True)

    # -- the global view --------------------------------------------------------------------------------------------

    @lru_cache(maxsize=64)
    def class_sheet(class_id: int):
        # A matplotlib figure takes seconds on a small CPU: render each class once.
        return render.render_class_sheet(explainer.model, class_id, explainer.gallery)

    def class_view(class_choice):
        k = explainer.class_id(class_choice)
        k = 0 if k is None else k
        protos = explainer.class_prototypes(k)
        scale = max([w for _, w in protos] + [1e-9])
        rows = "".join(
            f"<tr><td><b>{c}+</b></td><td>{signed_bar(w, scale)}</td><td style='text-align:right'>{w:.3f}</td>"
            f"<td style='opacity:.8'>also used by {len(explainer.prototype_usage(c)) - 1} other classes</td></tr>"
            for c, w in protos
        )
        n_nonzero = int((explainer.weight[k] > 0).sum())
        table = (
            f"<div>“{html.escape(explainer.id2label[k])}” uses {n_nonzero} of {explainer.num_features} channels. "
            f"Its largest weights (when a channel's + pole fires it argues for the class, its − pole against it, "
            f"with the same weight):</div><table class='contrib-chart'>{rows}</table>"
        )
        # Inspect the strongest prototype that has a gallery (a pole that never fired on the gallery images has none).
        alive = [c for c, _ in protos if not explainer.is_dead(c, +1)]
        first = f"{(alive or [c for c, _ in protos])[0]}+" if protos else None
        return table, class_sheet(k), gr.update(value=first) if first else gr.update()

    def prototype_view(proto_choice):
        if not proto_choice:
            return "", []
        channel, sign = int(proto_choice[:-1]), (1 if proto_choice.endswith("+") else -1)
        users = explainer.prototype_usage(channel)
        scale = max([w for _, w in users] + [1e-9])
        verb = "for" if sign > 0 else "against"
        rows = "".join(
            f"<tr><td>{html.escape(explainer.id2label[k])}</td><td>{signed_bar(w, scale)}</td>"
            f"<td style='text-align:right'>{w:.3f}</td></tr>"
            for k, w in users
        )
        dead = " It never fired on the training set." if explainer.is_dead(channel, sign) else ""
        text = (
            f"<div>Prototype <b>{proto_choice}</b> (pole {'+' if sign > 0 else '−'} of channel {channel}) is evidence "
            f"<b>{verb}</b> the {len(users)} classes below, in proportion to their weight.{dead}</div>"
            f"<table class='contrib-chart'>{rows}</table>"
        )
        return text, explainer.gallery_items(channel, sign)

    # -- layout -------------------------------------------------------------------------------------------------------

    with gr.Blocks(title="InfoDisent explorer", delete_cache=(DELETE_EVERY_S, DELETE_AFTER_S)) as demo:
        # Who may delete an API call's upload; never the files Gradio keeps (the examples' copies in its cache).
        kept_by_gradio = lambda: [p for b in demo.blocks.values() for p in getattr(b, "keep_in_cache", ())]  # noqa: E731
        leases = demo.upload_leases = UploadLeases(demo.GRADIO_CACHE, protected=kept_by_gradio)
        gr.Markdown(
            "# InfoDisent explorer\n"
            "Why does the classifier say what it says? InfoDisent "
            "([arXiv 2409.10329](https://arxiv.org/abs/2409.10329)) rewrites a frozen pretrained classifier so that "
            "every class score is an **exact sum** of *prototypes*: directions of its last feature map that fire at "
            "one place in the image. Upload a picture (or click an example), then change the class to ask "
            "“why not that one?”."
        )
        with gr.Tab("Explain an image"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    image_input = upload_widget(
                        sources=["upload", "clipboard"], label="Image", height=280, elem_id="input-image"
                    )
                    class_choice = gr.Dropdown(
                        [PREDICTED] + explainer.class_choices,
                        value=PREDICTED,
                        label="Class to explain",
                        elem_id="class-choice",
                        info="The predicted class, or any other: why not B?",
                    )
                    run_button = gr.Button("Explain", variant="primary", elem_id="explain-button")
                    status = gr.Markdown(elem_id="status-box", latex_delimiters=[])
                    if examples:
                        gr.Examples(
                            examples=examples,
                            inputs=[image_input],
                            label="Examples (Fashion-MNIST test images)",
                            examples_per_page=12,
                            cache_examples=False,
                        )
                with gr.Column(scale=2):
                    probabilities = gr.Label(num_top_classes=5, label="Top-5 classes", elem_id="probabilities")
                    equation = gr.Markdown(elem_id="equation", latex_delimiters=[])
                    with gr.Row():
                        overview = gr.AnnotatedImage(
                            label="Where the top prototypes fire (hover the legend)", height=320, elem_id="overview"
                        )
                        chart = gr.HTML(elem_id="contributions")
            gr.Markdown("### The strongest prototypes, and the training patches that activate each most")
            slot_components = []
            for i in range(NUM_SLOTS):
                with gr.Row(visible=False, elem_classes=["proto-row"]) as row:
                    heat = gr.Image(
                        label=f"#{i + 1} in this image",
                        type="pil",
                        height=200,
                        width=200,
                        interactive=False,
                        elem_classes=["proto-heatmap"],
                        scale=0,
                        min_width=200,
                    )
                    card = gr.HTML(min_height=120)
                    gallery = gr.Gallery(
                        label="Most activating training patches",
                        columns=4,
                        rows=1,
                        height=200,
                        object_fit="contain",
                        allow_preview=True,
                        elem_classes=["proto-gallery"],
                        scale=2,
                    )
                slot_components += [row, heat, card, gallery]
            with gr.Accordion("The explanation as a figure (PNG), and “why A and not B?”", open=False):
                figure_button = gr.Button("Draw the figures", elem_id="figure-button")
                with gr.Row():
                    figure = gr.Image(
                        label="Explanation", show_label=False, type="pil", interactive=False, elem_id="figure"
                    )
                    contrast_figure = gr.Image(
                        label="Why the predicted class and not the explained one",
                        show_label=False,
                        type="pil",
                        interactive=False,
                        visible=False,
                        elem_id="contrast-figure",
                    )
            with gr.Accordion("Explanation as JSON (what the `explain` API returns)", open=False):
                explanation_out = gr.JSON(label="Explanation")

        with gr.Tab("Global: classes and prototypes"):
            gr.Markdown(
                "A class is explained by the prototypes it weighs most; a prototype by the classes that use it and "
                "by its gallery: the training patches where it fires most strongly."
            )
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    global_class = gr.Dropdown(
                        explainer.class_choices, value=explainer.class_choices[0], label="Class", elem_id="global-class"
                    )
                    class_table = gr.HTML(elem_id="class-table")
                    proto_choices = explainer.prototype_choices()
                    global_proto = gr.Dropdown(
                        proto_choices,
                        value=proto_choices[0] if proto_choices else None,
                        label="Inspect a prototype",
                        elem_id="global-prototype",
                        info="e.g. 17+ is the positive pole of channel 17",
                    )
                    proto_text = gr.HTML(elem_id="prototype-text")
                    proto_gallery = gr.Gallery(
                        label="Its gallery", columns=4, height="auto", object_fit="contain", elem_id="prototype-gallery"
                    )
                with gr.Column(scale=2):
                    class_sheet_image = gr.Image(
                        label="The class's prototypes by weight, with their galleries",
                        show_label=False,
                        type="pil",
                        interactive=False,
                        elem_id="class-sheet",
                    )

        with gr.Tab("About this model"):
            gr.Markdown(
                f"- Model: {md_text(explainer.model_ref)}\n"
                f"- Backbone: {md_text(backbone)}, frozen; feature map of {explainer.num_features} channels\n"
                f"- {explainer.num_labels} classes; each uses {n_used} channels on average "
                f"({2 * explainer.num_features} prototypes: a + and a − pole per channel)\n"
                f"- Gallery of training patches: {'yes' if explainer.gallery is not None else 'not in this model'}\n"
                f"{explainer.results_line()}"
                "- The score of class *k* is `b_k + Σ_c W_kc·pos_c − Σ_c W_kc·neg_c`, with `W ≥ 0`; `pos_c` / "
                "`neg_c` are the strongest positive / negative response of rotated channel *c* anywhere in the image."
            )

        view_outputs = [status, probabilities, overview, equation, chart, explanation_out] + slot_components
        gr.on(
            [run_button.click, class_choice.input],
            explain_view,
            inputs=[image_input, class_choice],
            outputs=view_outputs,
            api_visibility="private",
            concurrency_id="model",
        )
        # Upload, example click and clear all change the image: explain what is there (or clear the view).
        image_input.change(
            lambda path, choice: explain_view(path, choice) if path else empty_view(""),
            inputs=[image_input, class_choice],
            outputs=view_outputs,
            api_visibility="private",
            trigger_mode="always_last",
            concurrency_id="model",
        )
        # The API endpoint, with a trigger of its own that the page never fires, so that its outputs stay
        # (probabilities, explanation) and its errors are exceptions for the client.
        api_trigger = gr.Button(visible=False)
        api_trigger.click(
            explain_api,
            inputs=[image_input, class_choice],
            outputs=[probabilities, explanation_out],
            api_name="explain",
            concurrency_id="model",
        )
        figure_button.click(
            figure_view,
            inputs=[image_input, class_choice],
            outputs=[figure, contrast_figure],
            api_visibility="private",
            concurrency_id="model",
        )
        class_outputs = [class_table, class_sheet_image, global_proto]
        global_class.change(class_view, inputs=[global_class], outputs=class_outputs, api_visibility="private")
        global_proto.change(
            prototype_view, inputs=[global_proto], outputs=[proto_text, proto_gallery], api_visibility="private"
        )
        demo.load(class_view, inputs=[global_class], outputs=class_outputs, api_visibility="private")
        demo.load(prototype_view, inputs=[global_proto], outputs=[proto_text, proto_gallery], api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=32)
    return demo


LAUNCH_DEFAULTS = {"max_file_size": f"{MAX_FILE_MB}mb", "css": CSS}


def launch(demo: gr.Blocks, **kwargs):
    """`demo.launch` with the app's settings (upload size limit, CSS); keyword arguments override them."""
    return demo.launch(**{**LAUNCH_DEFAULTS, **kwargs})


class _Parser(argparse.ArgumentParser):
    """One line ``error: ...`` (exit 2) with "did you mean --model?" instead of the usage block."""

    def __init__(self, *args, **kwargs):
        # No prefix matching: a typo such as --num_train_epoch must be refused with "did you mean", not silently
        # taken as --num_train_epochs (or another flag it happens to abbreviate).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {did_you_mean(message, list(self._option_string_actions))}\n")


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(description="InfoDisent explorer (Gradio).")
    parser.add_argument(
        "--model", default=None, help="InfoDisent Hub id or folder (default: $INFODISENT_MODEL, else spaces/model)"
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    ref = resolve_model_ref(args.model)
    try:
        explainer = Explainer(ref)
    except (OSError, ValueError) as error:  # a broken or mismatched model folder: one line, no traceback
        raise SystemExit(f"error: cannot load the model {ref}: {' '.join(str(error).split())}") from None
    demo = build_demo(ref, explainer=explainer)
    launch(demo, server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
