"""The Gradio Space (spaces/app.py) through its public API, with gradio_client against a locally launched app.

The app runs the bundled demo model (spaces/model) when it is there, else a tiny random InfoDisent model with a
gallery built here. Expected numbers are recomputed in the test from the model's plain forward pass (not through
`explain()`), so the endpoint is checked against an independent computation.
"""

import dataclasses
import importlib.util
import io
import json
import os
import socket
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, tiny_resnet_config

SPACE_DIR = os.path.join(REPO_ROOT, "spaces")
BUNDLED_MODEL = os.path.join(SPACE_DIR, "model")
EXAMPLES_DIR = os.path.join(SPACE_DIR, "examples")
FASHION_MNIST = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers (the browser test imports them too)
# ----------------------------------------------------------------------------------------------------------------


def load_app():
    """spaces/app.py as the installed project's module `spaces.app`."""
    return importlib.import_module("spaces.app")


def example_paths() -> list[str]:
    return sorted(os.path.join(EXAMPLES_DIR, f) for f in os.listdir(EXAMPLES_DIR) if f.endswith(".png"))


def build_tiny_space_model(folder: str, labels: list[str] = FASHION_MNIST) -> str:
    """A tiny random InfoDisent model on the Fashion-MNIST labels (or 10 others), with its image processor and a
    gallery computed on the bundled example images: the same kind of folder as spaces/model, small enough for a
    test."""
    from transformers import ViTImageProcessor

    from modeling_infodisent import InfoDisentForImageClassification
    from modeling_infodisent.gallery import compute_gallery

    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(
        tiny_resnet_config(image_size=32), id2label=dict(enumerate(labels))
    ).eval()
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    data = [{"image": Image.open(p), "label": int(os.path.basename(p).split("_")[0])} for p in example_paths()]
    gallery = compute_gallery(model, data, processor, top_k=2, patch_size=16, progress=False)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    gallery.save(folder)
    return folder


def space_model_dir(tmp_path_factory) -> str:
    """The bundled demo model when it exists, else a tiny one (CI always has the bundled one)."""
    if os.path.isfile(os.path.join(BUNDLED_MODEL, "config.json")):
        return BUNDLED_MODEL
    return build_tiny_space_model(str(tmp_path_factory.mktemp("tiny_space_model")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_outputs(model_dir: str, image: Image.Image) -> tuple[np.ndarray, dict]:
    """Logits of the plain forward pass on the RGB image, and id2label: the numbers the app must reproduce."""
    from modeling_infodisent.images import to_rgb
    from modeling_infodisent.loading import load_model_and_gallery

    model, processor, _ = load_model_and_gallery(model_dir)
    pixel_values = processor(images=to_rgb(image), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values).logits[0].double().numpy()
    return logits, {int(k): v for k, v in model.config.id2label.items()}


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims width x height (a decompression bomb as far as the header goes)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8  # after the signature: length (4) + "IHDR" (4) + data (13) + crc (4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 21])) & 0xFFFFFFFF
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


# ----------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return space_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def space(app, model_dir, tmp_path_factory):
    """(url, client) of the app launched in this process on a free port; uploads go to a temp folder."""
    from gradio_client import Client

    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio_tmp"))
    before = _tree(SPACE_DIR)
    had_dot_gradio = os.path.exists(os.path.join(REPO_ROOT, ".gradio"))
    demo = app.build_demo(model_dir)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield url, Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("client_downloads")))
    finally:
        demo.close()
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
    # The app writes nothing next to itself (no .pyi stub, no cached examples, no flagged data): only temp folders.
    assert _tree(SPACE_DIR) == before
    assert os.path.exists(os.path.join(REPO_ROOT, ".gradio")) == had_dot_gradio


def _tree(root: str) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, f), root)
        for d, dirs, files in os.walk(root)
        for f in files
        if "__pycache__" not in d
    }


# ----------------------------------------------------------------------------------------------------------------
# The explain endpoint
# ----------------------------------------------------------------------------------------------------------------


def test_explain_endpoint_probabilities_and_exact_decomposition(space, model_dir):
    from gradio_client import handle_file

    _, client = space
    path = os.path.join(EXAMPLES_DIR, "4_coat.png")
    top5, explanation = client.predict(handle_file(path), api_name="/explain")

    logits, id2label = reference_outputs(model_dir, Image.open(path))
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    probabilities = [p["probability"] for p in explanation["probabilities"]]
    assert len(probabilities) == 10
    assert [p["label"] for p in explanation["probabilities"]] == [id2label[k] for k in range(10)]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)

    predicted = int(np.argmax(logits))
    assert explanation["model"] == ("bundled demo model (spaces/model)" if model_dir == BUNDLED_MODEL else model_dir)
    assert explanation["predicted_class"]["id"] == predicted
    assert explanation["explained_class"]["id"] == predicted  # default: explain the predicted class
    assert explanation["logit"] == pytest.approx(logits[predicted], abs=1e-4)
    contributions = [p["contribution"] for p in explanation["prototypes"]]
    assert explanation["residual"] == 0.0
    assert explanation["bias"] + sum(contributions) == pytest.approx(explanation["logit"], abs=1e-4)
    for p in explanation["prototypes"]:  # contribution = pole sign x weight x activation
        sign = 1 if p["pole"] == "+" else -1
        assert p["contribution"] == pytest.approx(sign * p["weight"] * p["activation"], rel=1e-9)
        assert p["weight"] > 0 and p["activation"] > 0
    assert [abs(c) for c in contributions] == sorted((abs(c) for c in contributions), reverse=True)

    # The Label output: the top 5, the same numbers, largest first.
    assert top5["label"] == id2label[predicted]
    assert len(top5["confidences"]) == 5
    top = np.argsort(-expected)[:5]
    assert [c["label"] for c in top5["confidences"]] == [id2label[int(k)] for k in top]
    np.testing.assert_allclose([c["confidence"] for c in top5["confidences"]], expected[top], rtol=1e-4)


def test_explain_any_class_why_not(space, model_dir):
    from gradio_client import handle_file

    _, client = space
    path = os.path.join(EXAMPLES_DIR, "7_sneaker.png")
    logits, id2label = reference_outputs(model_dir, Image.open(path))
    other = int(np.argsort(logits)[0])  # the least likely class: "why not that one?"
    _, explanation = client.predict(handle_file(path), id2label[other], api_name="/explain")
    assert explanation["explained_class"] == {
        "id": other,
        "label": id2label[other],
        "probability": pytest.approx(explanation["probabilities"][other]["probability"]),
    }
    assert explanation["predicted_class"]["id"] == int(np.argmax(logits))
    assert explanation["logit"] == pytest.approx(logits[other], abs=1e-4)
    assert explanation["bias"] + sum(p["contribution"] for p in explanation["prototypes"]) == pytest.approx(
        logits[other], abs=1e-4
    )


@pytest.mark.parametrize(
    "mode",
    ["I;16", "CMYK", "P", "LA", "RGBA", "1", "F"],
)
def test_odd_image_modes_are_explained_like_their_rgb_conversion(space, model_dir, tmp_path, mode):
    from gradio_client import handle_file

    from modeling_infodisent.gallery import to_rgb

    _, client = space
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(24, 20), dtype=np.uint8)
    if mode == "I;16":
        image = Image.fromarray(grey.astype("<u2") * 257)  # uint16 -> mode I;16
    elif mode == "F":
        image = Image.fromarray(grey.astype(np.float32) / 255.0)  # float32 -> mode F
    elif mode == "LA":
        image = Image.merge("LA", (Image.fromarray(grey), Image.fromarray(255 - grey)))
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([grey, grey[::-1], 255 - grey, grey // 2]))  # 4 channels -> RGBA
    else:
        image = Image.fromarray(np.dstack([grey, grey[:, ::-1], 255 - grey])).convert(mode)
    path = tmp_path / ("odd.tiff" if mode in ("I;16", "F", "CMYK") else "odd.png")
    image.save(path)
    reloaded = Image.open(path)
    assert reloaded.mode == mode
    _, explanation = client.predict(handle_file(str(path)), api_name="/explain")
    logits, _ = reference_outputs(model_dir, reloaded)  # reference: the project's to_rgb, then the processor
    assert explanation["logit"] == pytest.approx(logits.max(), abs=1e-4)
    assert to_rgb(reloaded).size == (20, 24)


# ----------------------------------------------------------------------------------------------------------------
# Bad uploads: a readable message, and the app keeps serving
# ----------------------------------------------------------------------------------------------------------------


def _bad_files(tmp_path) -> list[tuple[str, str]]:
    good = open(os.path.join(EXAMPLES_DIR, "9_ankle_boot.png"), "rb").read()
    cases = {
        "notes.txt": (b"these are not pixels\n", "is not an image this app can read"),
        "renamed.png": (b"%PDF-1.4 not really a png", "is not an image this app can read"),
        "empty.png": (b"", "is an empty file"),
        "truncated.png": (good[: len(good) // 2], "damaged or truncated"),
        "huge.png": (png_with_header_size(8000, 6000), "48 megapixels"),
        "bomb.png": (png_with_header_size(40000, 40000), "decompression bomb"),
    }
    paths = []
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append((str(tmp_path / name), message))
    return paths


def test_bad_uploads_get_a_friendly_error_and_the_app_keeps_serving(space, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    _, client = space
    for path, message in _bad_files(tmp_path):
        with pytest.raises(AppError, match=message) as error:
            client.predict(handle_file(path), api_name="/explain")
        assert os.path.basename(path) in str(error.value)  # names the file
    with pytest.raises(AppError, match="Giraffe is not in the list of choices"):  # Gradio's own check
        client.predict(handle_file(os.path.join(EXAMPLES_DIR, "8_bag.png")), "Giraffe", api_name="/explain")
    _, explanation = client.predict(handle_file(os.path.join(EXAMPLES_DIR, "8_bag.png")), api_name="/explain")
    assert len(explanation["probabilities"]) == 10


def test_read_image_messages(app, tmp_path):
    for path, message in _bad_files(tmp_path):
        with pytest.raises(app.BadInput, match=message):
            app.read_image(path)
    with pytest.raises(app.BadInput, match="No image yet"):
        app.read_image(None)
    image = app.read_image(os.path.join(EXAMPLES_DIR, "1_trouser.png"))
    assert image.mode == "RGB" and image.size == (28, 28)
    # An animated GIF: the first frame is explained.
    frames = [Image.new("L", (10, 10), v) for v in (30, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    first = app.read_image(tmp_path / "anim.gif")
    assert np.asarray(first)[0, 0].tolist() == [30, 30, 30]
    # A phone photo with its rotation in EXIF: the model sees it upright, as the browser shows it.
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    Image.new("L", (20, 10), 128).save(tmp_path / "phone.jpg", exif=exif)
    assert app.read_image(tmp_path / "phone.jpg").size == (10, 20)


def test_page_view_has_one_card_per_top_prototype(app, model_dir):
    """The function behind the page (not the API): its outputs line up with the explanation."""
    explainer = app.Explainer(model_dir)
    image = Image.open(os.path.join(EXAMPLES_DIR, "0_t_shirt_top.png"))
    explanation, pixel_values = explainer.explain(app.to_rgb(image), None)
    shown = explanation.prototypes[: app.NUM_SLOTS]
    base = explainer.model_view(pixel_values)
    assert max(base.size) == app.DISPLAY_SIZE
    _, annotations = app.annotated_overview(base, shown)
    assert [label.split(" ")[1] for _, label in annotations] == [p.name for p in shown]
    chart = app.contribution_chart(explanation)
    assert f"{explanation.logit:+.3f}" in chart and f"{explanation.bias:+.3f}" in chart
    overlay = app.prototype_overlay(base, shown[0])
    assert overlay.size == base.size and overlay.mode == "RGB"
    results_path = os.path.join(model_dir, "all_results.json")
    if os.path.isfile(results_path):  # the About tab quotes the training script's numbers
        with open(results_path) as f:
            results = json.load(f)
        if results.get("test_accuracy") is not None:
            assert f"Test accuracy {results['test_accuracy']:.1%}" in explainer.results_line()
        else:
            assert f"Validation accuracy {results['eval_accuracy']:.1%}" in explainer.results_line()
    else:
        assert explainer.results_line() == ""
    if explainer.gallery is not None:
        items = explainer.gallery_items(shown[0].channel, shown[0].sign)
        entries = explainer.gallery.entries(shown[0].channel, shown[0].sign)
        assert [caption for _, caption in items] == [f"{e.label_name} · {e.activation:.2f}" for e in entries]


def test_prototype_cards_ring_the_pixels_that_make_the_prototype_fire(app, model_dir):
    """The page asks for the relevance of its positive cards; the overlay rings the top 1% of that map (what the
    renderer outlines and the ground-truth benchmark locates) and changes no other pixel."""
    from modeling_infodisent.metrics import RELEVANCE_QUANTILE

    explainer = app.Explainer(model_dir)
    image = app.to_rgb(Image.open(os.path.join(EXAMPLES_DIR, "0_t_shirt_top.png")))
    explanation, pixel_values = explainer.explain(image, None, relevance=app.NUM_SLOTS)
    assert explainer.explain(image, None)[0].prototypes[0].relevance is None  # the API's path pays nothing
    shown = explanation.prototypes[: app.NUM_SLOTS]
    positive = [p for p in shown if p.sign > 0]
    assert positive and all(p.relevance is not None for p in positive)
    assert all(p.relevance is None for p in shown if p.sign < 0)
    base = explainer.model_view(pixel_values)
    p = max(positive, key=lambda q: float(np.max(q.relevance)))
    plain = np.asarray(app.prototype_overlay(base, dataclasses.replace(p, relevance=None)))
    ringed = np.asarray(app.prototype_overlay(base, p))
    white, black = app.relevance_rings(base.size, p.relevance)
    changed = (plain != ringed).any(-1)
    assert changed.any() and not (changed & ~(white | black)).any()
    assert (ringed[white] == 255).all() and (ringed[black] == 0).all()
    top = p.relevance >= np.quantile(p.relevance, RELEVANCE_QUANTILE)
    top = np.asarray(Image.fromarray(top.astype(np.uint8) * 255).resize(base.size, Image.Resampling.NEAREST)) > 0
    assert not (top & (white | black)).any()  # around the pixels, never over them
    padded = np.pad(top, 1)
    touching = np.zeros_like(top)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            touching |= padded[dy : dy + top.shape[0], dx : dx + top.shape[1]]
    assert (touching[black]).all() and not (touching[white]).any()  # black hugs them, white lies outside it
    assert "ringed" in app.prototype_card(1, p, explainer, 1.0)
    assert "ringed" not in app.prototype_card(1, dataclasses.replace(p, relevance=None), explainer, 1.0)
    assert app.relevance_rings(base.size, np.zeros((4, 4))) is None


def test_model_choice_cli_env_and_default(app, monkeypatch, tmp_path):
    monkeypatch.setenv("INFODISENT_MODEL", "org/from-env")
    assert app.resolve_model_ref("org/from-cli") == "org/from-cli"
    assert app.resolve_model_ref(None) == "org/from-env"
    monkeypatch.delenv("INFODISENT_MODEL")
    monkeypatch.setattr(app, "DEFAULT_MODEL", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="bundled demo model .* is missing"):
        app.resolve_model_ref(None)


# ----------------------------------------------------------------------------------------------------------------
# Resources: uploads are deleted, decoded pictures are bounded, the heavy handlers share one pool
# ----------------------------------------------------------------------------------------------------------------


# When an API call's upload is deleted (only once no other call may need it): tests/test_space_load.py.


def test_large_uploads_are_downscaled_right_after_decoding(app, tmp_path):
    Image.new("RGB", (3000, 1500), (10, 200, 30)).save(tmp_path / "wide.png")
    Image.new("L", (1200, 4000), 77).save(tmp_path / "tall.jpg", quality=90)
    wide = app.read_image(tmp_path / "wide.png")
    assert wide.size == (app.MAX_SIDE, app.MAX_SIDE // 2) and wide.getpixel((5, 5)) == (10, 200, 30)
    tall = app.read_image(tmp_path / "tall.jpg")
    assert tall.mode == "RGB" and max(tall.size) == app.MAX_SIDE and tall.size[0] in (306, 307)
    small = app.read_image(os.path.join(EXAMPLES_DIR, "1_trouser.png"))
    assert small.size == (28, 28)  # small pictures are left as they are


def test_heavy_handlers_share_one_concurrency_pool_and_the_cache_is_swept(app, model_dir):
    demo = app.build_demo(explainer=app.Explainer(model_dir))
    assert demo.delete_cache == (app.DELETE_EVERY_S, app.DELETE_AFTER_S)
    pooled = sorted(fn.name for fn in demo.fns.values() if fn.concurrency_id == "model")
    assert pooled == ["<lambda>", "explain_api", "explain_view", "figure_view"]
    # "default": the queue's default_concurrency_limit, which one shared concurrency_id makes a limit for all four.
    assert {fn.concurrency_limit for fn in demo.fns.values() if fn.concurrency_id == "model"} == {"default"}
    assert demo._queue.default_concurrency_limit == app.CONCURRENCY == 2


def test_results_line_names_the_split_its_figure_comes_from(tmp_path):
    """The About tab's accuracy: the held-out test split's when the run had one, else validation, said so."""
    from types import SimpleNamespace

    from spaces.explainer import Explainer

    folder = SimpleNamespace(folder=str(tmp_path))
    results = {"eval_accuracy": 0.9, "eval_num_examples": 750, "backbone_head_accuracy": 0.91}
    (tmp_path / "all_results.json").write_text(json.dumps(results))
    line = Explainer.results_line(folder)
    assert (
        line.startswith("- Validation accuracy 90.0% on 750 images (no test split:") and "own classifier: 91.0%" in line
    )
    results.update(test_accuracy=0.876, test_num_examples=1000, test_backbone_head_accuracy=None)
    (tmp_path / "all_results.json").write_text(json.dumps(results))
    line = Explainer.results_line(folder)
    assert line.startswith("- Test accuracy 87.6% on 1000 held-out images") and "own classifier" not in line
    (tmp_path / "all_results.json").write_text("{not json")
    assert Explainer.results_line(folder) == ""
