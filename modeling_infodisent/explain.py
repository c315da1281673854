"""Explain images with an InfoDisent model, from the command line.

    python -m modeling_infodisent.explain --model DIR_OR_HUB_ID IMAGE [IMAGE ...] --out DIR
        [--target CLASS] [--contrast CLASS] [--top_k N] [--global] [--max_patches N] [--dpi DPI] [--compact]

For each image it prints the predicted class and the top-5 probabilities, and writes ``DIR/<stem>.png`` (the
explanation figure, its numbers also stored as PNG text) and ``DIR/<stem>.html`` (a self-contained report).
``--global`` writes one class sheet per class, ``DIR/class_<id>_<name>.png``.

Every user error (a bad argument, a missing / unreadable / corrupt / non-image / oversized file, a model folder that
is not one or does not fit its gallery, an --out that cannot be written) is one line ``error: ...`` naming the file
or argument, exit code 2, no traceback. The arguments, the model folder, --out and every image are checked before
the model is loaded; an image's PNG and HTML are both written to temporary files and renamed into place together,
so a failure (a full disk, a permission change mid-way) never leaves a half-written file or a ``.png`` without its
``.html``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .defaults import SHOWN_PROTOTYPES
from .images import DEFAULT_MAX_PIXELS, UnreadableImage, open_image, pixel_values_for


class InputError(Exception):
    """A problem with what the user gave us, reported as is (no traceback)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the project's one line ``error: ...`` (exit 2) instead of usage + message."""

    def __init__(self, *args, **kwargs):
        # No prefix matching: a typo such as --num_train_epoch must be refused with "did you mean", not silently
        # taken as --num_train_epochs (or another flag it happens to abbreviate).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)  # for `error` (see below)
        return super().parse_known_args(args, namespace)

    def _unknown_first(self, message: str) -> str:
        """argparse reports missing required arguments before unknown ones, so ``--modle x`` would only say
        "required: --model": name the unknown option instead, where "did you mean" can follow."""
        if not message.startswith("the following arguments are required"):
            return message
        unknown = [a.split("=")[0] for a in getattr(self, "_given", []) if a.startswith("--")]
        unknown = [a for a in unknown if a not in self._option_string_actions]
        return f"unrecognized arguments: {' '.join(unknown)}" if unknown else message

    def error(self, message: str):
        message = self._unknown_first(message)
        self.exit(2, f"error: {did_you_mean(message, list(self._option_string_actions))} (see --help)\n")


def did_you_mean(message: str, options: list[str]) -> str:
    """`message` with "did you mean --top_k?" after a misspelt option (also the Space's command line). The training
    script has its own copy (training.arguments.did_you_mean): it runs before torch is imported, which importing this
    package does."""
    if "unrecognized arguments" not in message:
        return message
    unknown = [u.split("=")[0] for u in re.findall(r"(?<![\w-])(--[\w-]+)", message.split(":", 1)[-1])]
    names = {o[2:]: o for o in options if o[:2] == "--"}  # compared without the dashes, at 0.75 ("--colour" != "--out")
    hints = {u: names[m[0]] for u in unknown if (m := difflib.get_close_matches(u[2:], list(names), 1, 0.75))}
    if len(hints) == 1:
        return f"{message} (did you mean {next(iter(hints.values()))}?)"
    return f"{message} (did you mean: {', '.join(f'{u} -> {m}' for u, m in hints.items())}?)" if hints else message


def parse_args(argv=None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m modeling_infodisent.explain",
        description="Explain image classifications with an InfoDisent model: a PNG figure and an HTML report per "
        "image (prototypes ranked by contribution, their heatmaps and training patches, and the bias + "
        "contributions = logit addition), or the class sheets with --global.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="Image files (any format and mode PIL reads).")
    parser.add_argument("--model", required=True, help="A saved InfoDisent model folder, or a Hugging Face Hub id.")
    parser.add_argument("--out", required=True, help="Output folder (created if needed).")
    parser.add_argument("--target", default=None, help="Class to explain (id or name); default the predicted one.")
    parser.add_argument(
        "--contrast",
        default=None,
        help="Also explain why --target (or the prediction) and not this class (id or name).",
    )
    parser.add_argument(
        "--top_k",
        type=int,
        default=SHOWN_PROTOTYPES,
        help="Prototype rows of evidence for the "
        "class in the figure (evidence against gets half as many; the HTML table lists all); the API's "
        f"model.explain(x, relevance_top_k=N) gives the same rows' pixel maps. Default {SHOWN_PROTOTYPES}.",
    )
    parser.add_argument(
        "--global",
        dest="global_sheets",
        action="store_true",
        help="Write one class sheet per class (its prototypes by weight with gallery patches).",
    )
    parser.add_argument("--max_patches", type=int, default=5, help="Gallery patches per prototype (default 5).")
    parser.add_argument(
        "--no_relevance",
        action="store_true",
        help="Do not outline the pixels that make each shown "
        "prototype fire (one backward pass through the backbone per row of evidence for the class).",
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"Refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS:,}).",
    )
    parser.add_argument(
        "--dpi",
        type=int,
        default=100,
        help="Resolution of the figures (default 100; 70-80 gives smaller files, e.g. for a README).",
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="Write 256-colour PNGs (about 4x smaller, slight banding in the heatmaps), e.g. for a README.",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu).")
    args = parser.parse_args(argv)
    if not args.images and not args.global_sheets:
        parser.error("give at least one IMAGE, or --global for the class sheets")
    if args.top_k < 1:
        parser.error(f"--top_k must be >= 1, got {args.top_k}")
    if args.max_patches < 0:
        parser.error(f"--max_patches must be >= 0, got {args.max_patches}")
    if not 30 <= args.dpi <= 400:
        parser.error(f"--dpi must be between 30 and 400, got {args.dpi}")
    if args.max_pixels < 1:
        parser.error(f"--max_pixels must be >= 1, got {args.max_pixels}")
    if args.device is not None:
        import torch

        try:
            torch.device(args.device)
        except (RuntimeError, ValueError):
            parser.error(f"--device {args.device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Inputs, checked before anything is written
# ----------------------------------------------------------------------------------------------------------------


def load_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Open, fully decode and convert one image to RGB (`images.open_image`); InputError naming the file otherwise."""
    try:
        return open_image(path, max_pixels=max_pixels)
    except UnreadableImage as error:
        hint = "; raise it with --max_pixels if you trust the file" if "decompression-bomb" in str(error) else ""
        raise InputError(f"{path}: {error}{hint}") from None


def check_out(out: Path) -> str | None:
    """Why `out` cannot receive the outputs (None when it can): probed by creating a temporary entry, so it also
    catches read-only file systems and permissions that `os.access` misjudges (e.g. as root)."""
    if out.exists() and not out.is_dir():
        return f"--out {out}: exists and is not a folder"
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"--out {out}: {existing} is a file, so no folder can be created under it"
    try:
        probe = tempfile.mkdtemp(prefix=".infodisent-probe-", dir=existing)
        os.rmdir(probe)
    except OSError as error:
        return f"--out {out}: cannot write there ({error.strerror or error})"
    return None


def _local_labels(ref: str) -> dict | None:
    """The classes of a local model folder, read from its config.json (None for a Hub id or an unreadable file)."""
    import json

    try:
        with open(os.path.join(ref, "config.json"), encoding="utf-8") as handle:
            labels = json.load(handle).get("id2label")
        return {int(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) and labels else None
    except (OSError, ValueError, AttributeError):
        return None


def check_model(ref: str) -> str | None:
    """Why `ref` cannot be a model (None when it may be): a local folder gets the cheap checks of
    `loading.check_model_folder`; a missing path that is not a Hub id (owner/name) is named."""
    from .loading import check_model_folder

    if os.path.isdir(ref):
        try:
            check_model_folder(ref)
        except OSError as error:
            return f"--model {ref}: {error}"
        return None
    if os.path.exists(ref):
        return f"--model {ref}: is a file, not a model folder"
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or (os.sep != "/" and os.sep in ref) or "/" not in ref:
        return f"--model {ref}: no such model folder (and not a Hub id of the form owner/name)"
    return None


def resolve_class(value: str | None, id2label: dict, option: str) -> int | None:
    """A class given as an id or a name (case-insensitive) -> its id; InputError listing the classes otherwise."""
    if value is None:
        return None
    labels = {int(k): str(v) for k, v in id2label.items()}
    text = str(value).strip()
    if re.fullmatch(r"\d+", text) and int(text) in labels:
        return int(text)
    matches = [k for k, v in labels.items() if v.lower() == text.lower()]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())[:30])
    more = " ..." if len(labels) > 30 else ""
    raise InputError(f"{option} {value!r} is not a class of this model; the classes are: {listing}{more}")


def _slug(text: str, limit: int = 48) -> str:
    """A class name as part of a file name: safe characters only, and short (a file name has at most 255 bytes)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:limit].strip("_.") or "class"


def _write_together(files: list[tuple[Path, bytes]]) -> None:
    """Write several files as one unit: all to temporary files first (where a full disk or a permission problem
    shows), then renamed into place; on any failure the temporaries, and the files of this unit already renamed,
    are removed, so a figure never stays without its report."""
    temps: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    current = None
    try:
        for path, data in files:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            temps.append((tmp, path))
            current = path
            with open(tmp, "wb") as handle:
                handle.write(data)
        for tmp, path in temps:
            current = path
            os.replace(tmp, path)
            placed.append(path)
    except BaseException as error:
        for leftover in [tmp for tmp, _ in temps] + placed:
            with contextlib.suppress(OSError):  # e.g. a name too long to create is too long to unlink
                leftover.unlink(missing_ok=True)
        if isinstance(error, OSError) and current is not None:  # name the file the user asked for, not the temp
            raise OSError(error.errno, error.strerror or str(error), str(current)) from error
        raise


def _write_atomic(path: Path, data: bytes) -> None:
    _write_together([(path, data)])


def _png_bytes(image, compact: bool = False) -> bytes:
    """PNG bytes of a rendered figure, its drawn numbers kept as a PNG text chunk (readable with any PNG tool)."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from .render_drawing import TEXT_KEY

    info = PngInfo()
    if image.info.get(TEXT_KEY):
        info.add_itxt(TEXT_KEY, image.info[TEXT_KEY])
    info.add_text("Software", "InfoDisent (python -m modeling_infodisent.explain)")
    buffer = io.BytesIO()
    if compact:  # an adaptive 256-colour palette, no dithering (dithered flat areas compress badly)
        from PIL import Image

        image = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    image.save(buffer, format="PNG", pnginfo=info, optimize=compact)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def _fail(problems: list[str]) -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    # 1. Every input, before anything is loaded or written: the model folder and --out first (cheap), the images.
    problems = [p for p in (check_model(args.model), check_out(Path(args.out))) if p]
    images = []
    for path in args.images:
        try:
            images.append((path, load_image(path, args.max_pixels)))
        except InputError as error:
            problems.append(str(error))
    stems: dict[str, str] = {}
    for path, _ in images:
        stem = Path(path).stem
        if stem in stems:
            problems.append(f"{path}: would write the same {stem}.png / {stem}.html as {stems[stem]}; rename one")
        stems.setdefault(stem, path)
    out = Path(args.out)
    id2label = _local_labels(args.model)
    if id2label is not None:  # a local folder: the classes are in config.json, check them before loading
        for value, option in ((args.target, "--target"), (args.contrast, "--contrast")):
            try:
                resolve_class(value, id2label, option)
            except InputError as error:
                problems.append(str(error))
    if problems:
        return _fail(problems)

    # 2. The model, its image processor and gallery.
    import torch
    from transformers.utils import logging as transformers_logging

    from .loading import load_model_and_gallery

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    transformers_logging.disable_progress_bar()  # one line of our own says what was loaded, and how fast
    try:
        model, image_processor, gallery = load_model_and_gallery(args.model, device=device)
    except Exception as error:  # noqa: BLE001 - any loading failure is reported in one line, no traceback
        return _fail([f"--model {args.model}: cannot load the model: {' '.join(str(error).split())}"])
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    try:
        target = resolve_class(args.target, id2label, "--target")
        contrast = resolve_class(args.contrast, id2label, "--contrast")
    except InputError as error:
        return _fail([str(error)])
    print(
        f"Loaded {args.model} in {time.perf_counter() - start:.1f} s "
        f"({len(id2label)} classes, {model.config.num_features} channels, "
        + (f"gallery of top-{gallery.top_k} patches)" if gallery is not None else "no prototype gallery)")
    )
    if gallery is not None and gallery.weights_fingerprint is None:
        print(
            "note: the prototype gallery has no weights fingerprint (written by an older version), so it cannot "
            "be checked against the weights",
            file=sys.stderr,
        )
    try:
        _write(lambda: out.mkdir(parents=True, exist_ok=True), args.out)
        return _explain_all(args, out, images, model, image_processor, gallery, id2label, target, contrast)
    except InputError as error:
        return _fail([str(error)])


def _write(action, out: str) -> None:
    """Run a write; an OSError (a full disk, a permission changed mid-way) becomes an InputError naming the file.
    What was written before is complete (see `_write_together`)."""
    try:
        action()
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        raise InputError(f"--out {out}: cannot write{where}: {error.strerror or error}") from None


def _explain_all(args, out: Path, images, model, image_processor, gallery, id2label, target, contrast) -> int:
    from .render_class import render_class_sheet
    from .render_image import render_contrast, render_explanation
    from .report_html import explanation_html

    device = next(model.parameters()).device

    # 3. One explanation per image.
    for path, image in images:
        start = time.perf_counter()
        pixel_values = pixel_values_for(image, image_processor).to(device)
        explanation = model.explain(
            pixel_values, target=target, relevance_top_k=0 if args.no_relevance else args.top_k
        )[0]
        other = None
        if contrast is not None:
            if contrast == explanation.target:
                print(f"{path}: --contrast is the explained class itself ({id2label[contrast]}); no contrast drawn")
            else:
                other = model.explain(pixel_values, target=contrast)[0]
        explain_s = time.perf_counter() - start
        figure = render_explanation(
            explanation,
            image,
            gallery,
            args.top_k,
            id2label,
            max_patches=args.max_patches,
            image_processor=image_processor,
            dpi=args.dpi,
        )
        contrast_figure = None
        if other is not None:
            contrast_figure = render_contrast(
                explanation,
                other,
                image,
                gallery,
                id2label=id2label,
                max_patches=args.max_patches,
                image_processor=image_processor,
                dpi=args.dpi,
            )
        page = explanation_html(
            explanation,
            image,
            gallery,
            args.top_k,
            id2label,
            contrast=other,
            image_processor=image_processor,
            figure=figure,
            contrast_figure=contrast_figure,
            title=f"{Path(path).name}: why “{explanation.label}”?",
        )
        stem = Path(path).stem
        files = [(out / f"{stem}.png", _png_bytes(figure, args.compact)), (out / f"{stem}.html", page.encode("utf-8"))]
        if contrast_figure is not None:
            files.append((out / f"{stem}_vs_{_slug(other.label)}.png", _png_bytes(contrast_figure, args.compact)))
        _write(lambda: _write_together(files), args.out)
        written = [p for p, _ in files]
        total_s = time.perf_counter() - start
        probabilities = np.asarray(explanation.probabilities)
        predicted = int(probabilities.argmax())
        top5 = np.argsort(-probabilities, kind="stable")[:5]
        print(
            f"{path}: predicted {id2label[predicted]!r} ({100 * probabilities[predicted]:.1f}%)"
            + (f", explaining {explanation.label!r}" if explanation.target != predicted else "")
        )
        print("  top-5: " + " | ".join(f"{id2label[int(k)]} {100 * probabilities[k]:.1f}%" for k in top5))
        print(
            f"  logit {explanation.logit:.3f} = bias {explanation.bias:+.3f} + {len(explanation.prototypes)} "
            f"prototype contributions; explained in {explain_s:.2f} s, rendered in {total_s - explain_s:.2f} s"
        )
        print("  wrote " + ", ".join(str(p) for p in written))

    # 4. Class sheets.
    if args.global_sheets:
        if gallery is None:
            print("note: this model has no prototype gallery: the class sheets show weights only", file=sys.stderr)
        start = time.perf_counter()
        for class_id, name in sorted(id2label.items()):
            sheet = render_class_sheet(model, class_id, gallery, max_patches=args.max_patches, dpi=args.dpi)
            path = out / f"class_{class_id:0{len(str(len(id2label) - 1))}d}_{_slug(name)}.png"
            data = _png_bytes(sheet, args.compact)
            _write(lambda: _write_atomic(path, data), args.out)
        print(f"Wrote {len(id2label)} class sheets to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and args.max_pixels > Image.MAX_IMAGE_PIXELS:
        # PIL refuses more than twice its own limit inside Image.open, before our check: follow --max_pixels
        # (process-wide, which is right for a command line).
        Image.MAX_IMAGE_PIXELS = args.max_pixels
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
