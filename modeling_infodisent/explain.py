"""Explain images with an InfoDisent model, from the command line.

    python -m modeling_infodisent.explain --model DIR_OR_HUB_ID IMAGE [IMAGE ...] --out DIR
        [--target CLASS] [--contrast CLASS] [--top_k N] [--global] [--max_patches N] [--dpi DPI] [--compact]

For each image it prints the predicted class and the top-5 probabilities, and writes ``DIR/<stem>.png`` (the
explanation figure, its numbers also stored as PNG text) and ``DIR/<stem>.html`` (a self-contained report).
``--global`` writes one class sheet per class, ``DIR/class_<id>_<name>.png``.

All inputs are checked before anything is written (missing, unreadable, corrupt, non-image or oversized files are
reported by name, exit code 2), and every output goes through a temporary file and a rename, so a failure never
leaves a half-written file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

#: Decompression-bomb guard: images with more pixels than this are refused (PIL's own check is set to match).
DEFAULT_MAX_PIXELS = 50_000_000


class InputError(Exception):
    """A problem with what the user gave us, reported as is (no traceback)."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_infodisent.explain",
        description="Explain image classifications with an InfoDisent model: a PNG figure and an HTML report per "
        "image (prototypes ranked by contribution, their heatmaps and training patches, and the bias + "
        "contributions = logit addition), or the class sheets with --global.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="Image files (any format and mode PIL reads).")
    parser.add_argument("--model", required=True, help="A saved InfoDisent model folder, or a Hugging Face Hub id.")
    parser.add_argument("--out", required=True, help="Output folder (created if needed).")
    parser.add_argument("--target", default=None, help="Class to explain (id or name); default the predicted one.")
    parser.add_argument("--contrast", default=None, help="Also explain why --target (or the prediction) and not "
                        "this class (id or name).")
    parser.add_argument("--top_k", type=int, default=6, help="Prototype rows of evidence for the class in the "
                        "figure (evidence against gets half as many); the HTML table lists all. Default 6.")
    parser.add_argument("--global", dest="global_sheets", action="store_true",
                        help="Write one class sheet per class (its prototypes by weight with gallery patches).")
    parser.add_argument("--max_patches", type=int, default=5, help="Gallery patches per prototype (default 5).")
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"Refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS:,}).")
    parser.add_argument("--dpi", type=int, default=100, help="Resolution of the figures (default 100; 70-80 "
                        "gives smaller files, e.g. for a README).")
    parser.add_argument("--compact", action="store_true", help="Write 256-colour PNGs (about 4x smaller, slight "
                        "banding in the heatmaps), e.g. for a README.")
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
    return args


# ----------------------------------------------------------------------------------------------------------------
# Inputs, checked before anything is written
# ----------------------------------------------------------------------------------------------------------------


def load_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Open, fully decode and convert one image to RGB; InputError naming the file and the problem otherwise."""
    from PIL import Image, UnidentifiedImageError

    from .gallery import to_rgb

    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not an image file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot be read (permission denied)")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: is empty (0 bytes)")
    # Image.open reads only the header: the size is checked against our limit before any pixel is decoded (PIL's
    # own guard, which would fire at twice its limit with a different message, is lifted meanwhile).
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InputError(
                        f"{path}: image of {width}x{height} = {width * height:,} pixels exceeds the limit of "
                        f"{max_pixels:,} (a decompression-bomb guard; raise it with --max_pixels)"
                    )
                image.load()  # decode everything now: a truncated or corrupt file fails here, not mid-way
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                rgb = to_rgb(image).copy()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{path}: refused as a possible decompression bomb ({error}); raise --max_pixels if you "
                         "trust it") from error
    except UnidentifiedImageError as error:
        raise InputError(f"{path}: not an image file (PIL cannot identify its format)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{path}: corrupt or truncated image ({error})") from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if rgb.width < 1 or rgb.height < 1:
        raise InputError(f"{path}: image has no pixels ({rgb.width}x{rgb.height})")
    return rgb


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "class"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _png_bytes(image, compact: bool = False) -> bytes:
    """PNG bytes of a rendered figure, its drawn numbers kept as a PNG text chunk (readable with any PNG tool)."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from .render import TEXT_KEY

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


def run(args: argparse.Namespace) -> int:
    # 1. Every input, before anything is loaded or written.
    problems, images = [], []
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
    if out.exists() and not out.is_dir():
        problems.append(f"--out {args.out}: exists and is not a folder")
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print("Nothing was written.", file=sys.stderr)
        return 2

    # 2. The model, its image processor and gallery.
    import torch

    from .gallery import load_model_and_gallery
    from .render import explanation_html, render_class_sheet, render_contrast, render_explanation

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    try:
        model, image_processor, gallery = load_model_and_gallery(args.model, device=device)
    except Exception as error:  # noqa: BLE001 - any loading failure is reported in one line, no traceback
        print(f"error: cannot load the model {args.model!r}: {error}", file=sys.stderr)
        print("Nothing was written.", file=sys.stderr)
        return 1
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    try:
        target = resolve_class(args.target, id2label, "--target")
        contrast = resolve_class(args.contrast, id2label, "--contrast")
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        print("Nothing was written.", file=sys.stderr)
        return 2
    print(f"Loaded {args.model} in {time.perf_counter() - start:.1f} s "
          f"({len(id2label)} classes, {model.config.num_features} channels, "
          + (f"gallery of top-{gallery.top_k} patches)" if gallery is not None else "no prototype gallery)"))
    out.mkdir(parents=True, exist_ok=True)

    # 3. One explanation per image.
    for path, image in images:
        start = time.perf_counter()
        pixel_values = image_processor(image, return_tensors="pt")["pixel_values"].to(device)
        explanation = model.explain(pixel_values, target=target)[0]
        other = None
        if contrast is not None:
            if contrast == explanation.target:
                print(f"{path}: --contrast is the explained class itself ({id2label[contrast]}); no contrast drawn")
            else:
                other = model.explain(pixel_values, target=contrast)[0]
        explain_s = time.perf_counter() - start
        figure = render_explanation(explanation, image, gallery, args.top_k, id2label,
                                    max_patches=args.max_patches, image_processor=image_processor, dpi=args.dpi)
        contrast_figure = None
        if other is not None:
            contrast_figure = render_contrast(explanation, other, image, gallery, id2label=id2label,
                                              max_patches=args.max_patches, image_processor=image_processor,
                                              dpi=args.dpi)
        page = explanation_html(explanation, image, gallery, args.top_k, id2label, contrast=other,
                                image_processor=image_processor, figure=figure, contrast_figure=contrast_figure,
                                title=f"{Path(path).name}: why “{explanation.label}”?")
        stem = Path(path).stem
        written = [out / f"{stem}.png", out / f"{stem}.html"]
        _write_atomic(written[0], _png_bytes(figure, args.compact))
        _write_atomic(written[1], page.encode("utf-8"))
        if contrast_figure is not None:
            written.append(out / f"{stem}_vs_{_slug(other.label)}.png")
            _write_atomic(written[-1], _png_bytes(contrast_figure, args.compact))
        total_s = time.perf_counter() - start
        probabilities = np.asarray(explanation.probabilities)
        predicted = int(probabilities.argmax())
        top5 = np.argsort(-probabilities, kind="stable")[:5]
        print(f"{path}: predicted {id2label[predicted]!r} ({100 * probabilities[predicted]:.1f}%)"
              + (f", explaining {explanation.label!r}" if explanation.target != predicted else ""))
        print("  top-5: " + " | ".join(f"{id2label[int(k)]} {100 * probabilities[k]:.1f}%" for k in top5))
        print(f"  logit {explanation.logit:.3f} = bias {explanation.bias:+.3f} + {len(explanation.prototypes)} "
              f"prototype contributions; explained in {explain_s:.2f} s, rendered in {total_s - explain_s:.2f} s")
        print("  wrote " + ", ".join(str(p) for p in written))

    # 4. Class sheets.
    if args.global_sheets:
        if gallery is None:
            print("note: this model has no prototype gallery: the class sheets show weights only", file=sys.stderr)
        start = time.perf_counter()
        for class_id, name in sorted(id2label.items()):
            sheet = render_class_sheet(model, class_id, gallery, max_patches=args.max_patches, dpi=args.dpi)
            path = out / f"class_{class_id:0{len(str(len(id2label) - 1))}d}_{_slug(name)}.png"
            _write_atomic(path, _png_bytes(sheet, args.compact))
        print(f"Wrote {len(id2label)} class sheets to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
