"""The fault suite's table (issue 13): one `Case` per bad input or fault and entry point, by category (images,
labels, pickles, loading, cli). Each case acts through an entry point and states its exact expected outcome; see
`fault_kit` for the machinery and `test_faults` for the tests."""

from __future__ import annotations

import errno
import html
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
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
    space_main,
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


def _image_cases() -> list[Case]:
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


def _label_cases() -> list[Case]:
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


# ----------------------------------------------------------------------------------------------------------------
# Category: pickles (never unpickled)
# ----------------------------------------------------------------------------------------------------------------


class _Marker:
    """Unpickling this creates the file `path` (what a malicious pytorch_model.bin could do, harmlessly)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_folder(ctx: Context, keep_safetensors: bool) -> tuple[Path, Path]:
    folder = ctx.copy_model("pickle")
    marker = folder.parent / "UNPICKLED"
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"backbone.model.embedder.embedder.convolution.weight": _Marker(str(marker))}, handle)
    if not keep_safetensors:
        (folder / "model.safetensors").unlink()
    return folder, marker


def _pickle_cases() -> list[Case]:
    from modeling_infodisent import InfoDisentForImageClassification
    from modeling_infodisent.loading import load_model_and_gallery

    no_weights = "has no model weights: neither model.safetensors nor model.safetensors.index.json"

    def never_unpickled(ctx, outcome):
        if ctx.last_marker.exists():
            raise DataLost("the pickle was executed: its marker file exists")

    def loader(entry: str):
        def act(ctx, keep=False):
            folder, ctx.last_marker = _pickle_folder(ctx, keep)
            if entry == "from_pretrained":
                return expect_error(lambda: InfoDisentForImageClassification.from_pretrained(folder), OSError)
            if entry == "AutoModelForImageClassification":
                from transformers import AutoModelForImageClassification

                return expect_error(lambda: AutoModelForImageClassification.from_pretrained(folder), OSError)
            if entry == "load_model_and_gallery":
                return expect_error(lambda: load_model_and_gallery(folder), OSError)
            if entry == "CLI":
                return run_cli(
                    ["--model", str(folder), str(ctx.corpus["one-pixel.png"]), "--out", str(folder.parent / "out")]
                )
            return space_main(ctx, folder)

        return act

    cases = []
    for entry in ("from_pretrained", "AutoModelForImageClassification", "load_model_and_gallery", "CLI", "Space"):
        cases.append(
            Case(
                "pickles",
                f"{entry}: gallery .safetensors + pickle pytorch_model.bin",
                "error",
                loader(entry),
                (no_weights, "pytorch_model.bin is not read"),
                never_unpickled,
            )
        )

    def beside(ctx):
        folder, ctx.last_marker = _pickle_folder(ctx, keep_safetensors=True)
        return expect_error(lambda: load_model_and_gallery(folder), OSError)

    cases.append(Case("pickles", "pickle beside model.safetensors is ignored", "result", beside, (), never_unpickled))
    return cases


# ----------------------------------------------------------------------------------------------------------------
# Category: loading (broken or mismatched model folders)
# ----------------------------------------------------------------------------------------------------------------


def _edit_weights(folder: Path, edit: Callable[[dict], None]) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


BACKBONE_KEY = "backbone.model.encoder.stages.3.layers.0.layer.1.convolution.weight"


def _retrained_head(folder: Path) -> None:
    """Fault 1: a run into the same folder rewrote model.safetensors (another head) and died before the gallery."""
    _edit_weights(folder, lambda t: t.__setitem__("head.classifier.weight_raw", t["head.classifier.weight_raw"] + 0.5))


def _loading_cases() -> list[Case]:
    from modeling_infodisent import InfoDisentForImageClassification
    from modeling_infodisent.loading import load_model_and_gallery

    def drop(t):
        del t[BACKBONE_KEY]

    def extra(t):
        t["head.extra.weight"] = torch.zeros(2)

    def reshape(t):
        t[BACKBONE_KEY] = torch.zeros(3)

    def empty(name):
        return lambda folder: (folder / name).write_bytes(b"")

    def truncate(name, size):
        return lambda folder: os.truncate(folder / name, size)

    def other_channels(folder):
        import json

        index = json.loads((folder / "prototype_gallery.json").read_text())
        index["num_channels"] = 16
        (folder / "prototype_gallery.json").write_text(json.dumps(index))

    faults = {
        "backbone tensor missing (fault 3)": (
            lambda f: _edit_weights(f, drop),
            ("missing from the checkpoint", BACKBONE_KEY),
        ),
        "unexpected tensor": (
            lambda f: _edit_weights(f, extra),
            ("in the checkpoint but not in the model", "head.extra.weight"),
        ),
        "tensor of the wrong shape": (lambda f: _edit_weights(f, reshape), ("wrong shape", BACKBONE_KEY, "(3,)")),
        "gallery of other weights (fault 1)": (_retrained_head, ("was computed with other weights",)),
        "gallery of another channel count": (other_channels, ("channels but the model has 32",)),
        "0-byte model.safetensors": (empty("model.safetensors"), ("not a readable safetensors file",)),
        "0-byte prototype_gallery.json": (empty("prototype_gallery.json"), ("prototype_gallery.json is not a valid",)),
        "truncated prototype_gallery.safetensors": (
            truncate("prototype_gallery.safetensors", 100),
            ("prototype_gallery.safetensors is not a readable",),
        ),
        "config.json not JSON": (lambda f: (f / "config.json").write_text("{oops"), ("config.json",)),
        "preprocessor_config.json not an object": (
            lambda f: (f / "preprocessor_config.json").write_text("[1]"),
            ("preprocessor_config.json is not a valid image processor",),
        ),
        "no preprocessor_config.json": (
            lambda f: (f / "preprocessor_config.json").unlink(),
            ("has no image processor",),
        ),
    }
    cases = []
    for name, (break_it, fragments) in faults.items():
        weights_only = name.split(" (")[0] in (
            "backbone tensor missing",
            "unexpected tensor",
            "tensor of the wrong shape",
        )

        def broken(ctx, break_it=break_it, name=name):
            folder = ctx.copy_model(name.split()[0])
            break_it(folder)
            ctx.last_files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
            ctx.last_folder = folder
            return folder

        def untouched(ctx, outcome):
            now = {p.name: p.read_bytes() for p in ctx.last_folder.iterdir() if p.is_file()}
            if now != ctx.last_files:
                raise DataLost("the model folder was changed by a failed load")
            out = ctx.last_folder.parent / "out"
            if out.exists():
                raise DataLost(f"an error left {sorted(os.listdir(out))} in --out")

        if weights_only:
            cases.append(
                Case(
                    "loading",
                    f"from_pretrained: {name}",
                    "error",
                    lambda ctx, broken=broken: expect_error(
                        lambda: InfoDisentForImageClassification.from_pretrained(broken(ctx)), OSError
                    ),
                    fragments,
                    untouched,
                )
            )
        cases.append(
            Case(
                "loading",
                f"load_model_and_gallery: {name}",
                "error",
                lambda ctx, broken=broken: expect_error(
                    lambda: load_model_and_gallery(broken(ctx)), OSError, ValueError
                ),
                fragments,
                untouched,
            )
        )

        def cli(ctx, broken=broken):
            folder = broken(ctx)
            return run_cli(
                ["--model", str(folder), str(ctx.corpus["one-pixel.png"]), "--out", str(folder.parent / "out")]
            )

        cases.append(Case("loading", f"CLI: {name}", "error", cli, ("error: --model",) + fragments, untouched))
        cases.append(
            Case(
                "loading",
                f"Space: {name}",
                "error",
                lambda ctx, broken=broken: space_main(ctx, broken(ctx)),
                ("error: cannot load the model",) + fragments,
                untouched,
            )
        )

    for target in ("CLI", "Space"):

        def missing(ctx, target=target):
            folder = ctx.fresh("missing") / "no_model"
            if target == "CLI":
                return run_cli(
                    ["--model", str(folder), str(ctx.corpus["one-pixel.png"]), "--out", str(folder.parent / "out")]
                )
            return space_main(ctx, folder)

        cases.append(Case("loading", f"{target}: a model folder that does not exist", "error", missing, ("no_model",)))

    def intact(ctx):
        return expect_error(lambda: load_model_and_gallery(ctx.model_dir), OSError, ValueError)

    def check_intact(ctx, outcome):
        model, _, gallery = outcome.value
        from modeling_infodisent.loading import weights_fingerprint

        assert gallery.weights_fingerprint == weights_fingerprint(model)

    cases.append(
        Case("loading", "an intact folder loads, its gallery fingerprint matching", "result", intact, (), check_intact)
    )
    return cases


# ----------------------------------------------------------------------------------------------------------------
# Category: cli (arguments, --out, write errors)
# ----------------------------------------------------------------------------------------------------------------


def _cli_cases() -> list[Case]:
    def args(*argv, image="one-pixel.png", out=True):
        def act(ctx):
            ctx.last_out = ctx.fresh("cli-args") / "out"
            extra = ["--out", str(ctx.last_out)] if out else []
            images = [str(ctx.corpus[image])] if image else []
            return run_cli(["--model", str(ctx.model_dir), *images, *extra, *argv])

        return act

    def nothing_written(ctx, outcome):
        if ctx.last_out.exists():
            raise DataLost(f"an error left {sorted(os.listdir(ctx.last_out))} in --out")

    cases = [
        Case("cli", "--top_k 0", "error", args("--top_k", "0"), ("error: --top_k must be >= 1",), nothing_written),
        Case(
            "cli",
            "--dpi 5000",
            "error",
            args("--dpi", "5000"),
            ("error: --dpi must be between 30 and 400",),
            nothing_written,
        ),
        Case(
            "cli",
            "unknown option",
            "error",
            args("--colour", "red"),
            ("error: unrecognized arguments: --colour",),
            nothing_written,
        ),
        Case("cli", "no --out", "error", args(out=False), ("error: the following arguments are required: --out",)),
        Case(
            "cli",
            "no image and no --global",
            "error",
            args(image=None),
            ("error: give at least one IMAGE, or --global",),
            nothing_written,
        ),
        Case(
            "cli",
            "--device nonsense",
            "error",
            args("--device", "gpu9000"),
            ("error: --device 'gpu9000'",),
            nothing_written,
        ),
        Case(
            "cli",
            "--target not a class",
            "error",
            args("--target", "zebra"),
            ("error: --target 'zebra' is not a class of this model", "0=cat, 1=dog, 2=bird"),
            nothing_written,
        ),
        Case(
            "cli",
            "--max_pixels 0",
            "error",
            args("--max_pixels", "0"),
            ("error: --max_pixels must be >= 1",),
            nothing_written,
        ),
    ]

    def same_stem(ctx):
        ctx.last_out = ctx.fresh("stem") / "out"
        folder = ctx.last_out.parent
        Image.new("RGB", (9, 9)).save(folder / "a.png")
        Image.new("RGB", (9, 9)).save(folder / "a.jpg")
        return run_cli(
            ["--model", str(ctx.model_dir), str(folder / "a.png"), str(folder / "a.jpg"), "--out", str(ctx.last_out)]
        )

    cases.append(
        Case(
            "cli", "two images with the same stem", "error", same_stem, ("would write the same a.png",), nothing_written
        )
    )

    def out_is_file(ctx):
        ctx.last_out = ctx.fresh("outfile") / "results.txt"
        ctx.last_out.write_text("my notes")
        return run_cli(["--model", str(ctx.model_dir), str(ctx.corpus["one-pixel.png"]), "--out", str(ctx.last_out)])

    def notes_kept(ctx, outcome):
        if ctx.last_out.read_text() != "my notes":
            raise DataLost("--out's file was overwritten")

    cases.append(Case("cli", "--out is a file", "error", out_is_file, ("exists and is not a folder",), notes_kept))

    def unwritable(ctx):
        try:  # /sys refuses new entries even to root (a chmod'ed folder would not stop root)
            os.rmdir(tempfile.mkdtemp(dir="/sys"))
            pytest.skip("needs a /sys that refuses new entries (Linux)")
        except OSError:
            pass
        ctx.last_out = Path("/sys/infodisent-fault-suite/out")
        return run_cli(["--model", str(ctx.model_dir), str(ctx.corpus["one-pixel.png"]), "--out", str(ctx.last_out)])

    cases.append(
        Case(
            "cli",
            "unwritable --out (fault 11)",
            "error",
            unwritable,
            ("error: --out /sys/infodisent-fault-suite/out: cannot write there",),
            nothing_written,
        )
    )

    def write_error(ctx):
        """Fault 11: the disk fills up while writing b.html; a.* and the previous b.* must survive intact."""
        import modeling_infodisent.explain as explain

        folder = ctx.fresh("enospc")
        ctx.last_out = folder / "out"
        ctx.last_out.mkdir()
        for stem in ("a", "b"):
            shutil.copy(ctx.corpus["one-pixel.png"], folder / f"{stem}.png")
        (ctx.last_out / "b.png").write_bytes(b"the previous run's figure")
        (ctx.last_out / "b.html").write_bytes(b"the previous run's report")

        def full_disk_open(path, mode="r", *a, **k):
            if "w" in mode and ".b.html.tmp" in str(path):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return open(path, mode, *a, **k)

        explain.open = full_disk_open
        try:
            return run_cli(
                [
                    "--model",
                    str(ctx.model_dir),
                    str(folder / "a.png"),
                    str(folder / "b.png"),
                    "--out",
                    str(ctx.last_out),
                    *CLI_FAST,
                ]
            )
        finally:
            del explain.open

    def pairs_intact(ctx, outcome):
        out = ctx.last_out
        names = sorted(os.listdir(out))
        if names != ["a.html", "a.png", "b.html", "b.png"]:
            raise DataLost(f"--out holds {names} (a half-written pair or a temporary file)")
        if (out / "b.png").read_bytes() != b"the previous run's figure":
            raise DataLost("b.png was replaced although b.html could not be written")
        if (out / "b.html").read_bytes() != b"the previous run's report":
            raise DataLost("the previous b.html was lost")
        with Image.open(out / "a.png") as figure:
            assert figure.width > 100
        assert "<html" in (out / "a.html").read_text(encoding="utf-8")

    cases.append(
        Case(
            "cli",
            "disk full while writing the 2nd image (fault 11)",
            "error",
            write_error,
            ("cannot write", "b.html: No space left on device"),
            pairs_intact,
        )
    )
    return cases


def all_cases() -> list[Case]:
    from fault_cases_limits import limit_cases  # issue 26: arguments, output, checkpoints, data, weights, load

    return _image_cases() + _label_cases() + _pickle_cases() + _loading_cases() + _cli_cases() + limit_cases()


CASES = all_cases()
