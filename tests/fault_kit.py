"""The fault suite's machinery (issue 13): outcomes, cases, verdicts, the shared context (model folders, the
bad-input corpus, the Space) and the entry points as outcomes. The cases are in `fault_cases`, the tests in
`test_faults`, the tally in `fault_table.py`."""

from __future__ import annotations

import contextlib
import io
import shutil
import struct
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from conftest import tiny_resnet_config

NAMES = {0: "cat", 1: "dog", 2: "bird"}
TRAP = "http://127.0.0.1:9"  # nothing listens there: a label must never make anything fetch it
HOSTILE = {
    0: "Shirt $\\undefinedcmd$",
    1: f"<img src={TRAP}/x>",
    2: "<script>alert(1)</script>",
    3: "long" + "x" * 296,
    4: "\u202eRTL שלום",
    5: f"![p]({TRAP}/md) **b** $$x^2$$ | t |",
}
CLI_FAST = ["--dpi", "30", "--top_k", "1", "--max_patches", "1"]


# ----------------------------------------------------------------------------------------------------------------
# The machinery: outcomes, cases, verdicts
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # "result", "error" (the clear kind the entry point promises), or "traceback"
    message: str = ""
    value: Any = None


class DataLost(AssertionError):
    """Something the user had (a file, a model) is gone or was overwritten, or a half-written file was left."""


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    expect: str  # "result" or "error"
    act: Callable[[Context], Outcome]
    fragments: tuple[str, ...] = ()  # what the error message must say (names the problem / file)
    verify: Callable[[Context, Outcome], None] | None = None  # result checks; raise DataLost for lost data

    @property
    def id(self) -> str:
        return f"{self.category}:{self.name}"


VERDICTS = ("right result", "clear error", "traceback", "wrong result", "data lost")


def judge(case: Case, ctx: Context) -> tuple[str, str]:
    """(verdict, detail) of one case: one of `VERDICTS`."""
    try:
        outcome = case.act(ctx)
    except Exception:  # noqa: BLE001 - an exception escaping the entry point is what we count
        return "traceback", traceback.format_exc(limit=-3)
    if outcome.kind == "traceback":
        return "traceback", outcome.message
    if outcome.kind != case.expect:
        return "wrong result", f"expected {case.expect}, got {outcome.kind}: {outcome.message[:500]}"
    missing = [f for f in case.fragments if f not in outcome.message]
    if missing:
        return "wrong result", f"the message does not say {missing}: {outcome.message[:500]}"
    try:
        if case.verify is not None:
            case.verify(ctx, outcome)
    except DataLost as error:
        return "data lost", str(error)
    except AssertionError as error:
        return "wrong result", f"{error}"
    return ("right result" if outcome.kind == "result" else "clear error"), ""


# ----------------------------------------------------------------------------------------------------------------
# The context: model folders, the corpus, the Space (built once)
# ----------------------------------------------------------------------------------------------------------------


def _build_model(folder: Path, id2label: dict, seed: int = 0, gallery: bool = True) -> Path:
    from transformers import ViTImageProcessor

    from modeling_infodisent import InfoDisentForImageClassification
    from modeling_infodisent.gallery import compute_gallery

    torch.manual_seed(seed)
    model = InfoDisentForImageClassification.from_backbone(tiny_resnet_config(image_size=32), id2label=id2label)
    model.eval()
    with torch.no_grad():
        model.head.rotation.generator.normal_(0.0, 0.5)
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if gallery:
        rng = np.random.default_rng(seed)
        data = [
            {"image": Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)), "label": i % len(id2label)}
            for i in range(2 * len(id2label))
        ]
        compute_gallery(model, data, processor, top_k=1, patch_size=8, progress=False).save(folder)
    return folder


def _png_with_header_size(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _corpus(folder: Path) -> dict[str, Path]:
    """The bad-input corpus: one file per kind."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    files: dict[str, Path] = {}

    def put(name: str, data: bytes | None = None, image: Image.Image | None = None, **save) -> None:
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        else:
            image.save(path, **save)
        files[name] = path

    put("zero-byte.png", b"")
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    put("truncated.png", png.getvalue()[: len(png.getvalue()) // 2])
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(jpeg, format="JPEG", quality=95)
    put("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    put("text-named.png", b"Dear diary, this is not a picture.\n")
    put("one-pixel.png", image=Image.new("RGB", (1, 1), (200, 10, 10)))
    put("deep-i16.png", image=Image.fromarray(rng.integers(0, 65535, (30, 34), dtype=np.uint16)))
    alpha = rgb.convert("RGBA")
    alpha.putalpha(Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)))
    put("alpha-rgba.png", image=alpha)
    put("grey-alpha-la.png", image=rgb.convert("LA"))
    put("palette-p.png", image=rgb.convert("P"))
    put("cmyk.jpg", image=rgb.convert("CMYK"))
    frames = [Image.new("L", (20, 20), v) for v in (30, 220)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    files["animated.gif"] = folder / "animated.gif"
    put("bomb.png", _png_with_header_size(40_000, 40_000))
    put("oversized.png", _png_with_header_size(9_000, 8_000))
    # A 6000 x 6000 picture that compresses to a few KB: cheap to upload, expensive to decode at full size.
    put("huge-6000.png", image=Image.new("L", (6000, 6000), 90), optimize=True)
    return files


class Context:
    """Everything the cases share: built once (a few seconds), read-only for the cases."""

    def __init__(self, root: Path):
        self.root = root
        self.model_dir = _build_model(root / "model", NAMES)
        self.hostile_dir = _build_model(root / "hostile", HOSTILE)
        self.corpus = _corpus(root / "corpus")
        self._count = 0
        self._app = None
        self._explainers: dict[str, Any] = {}
        self._demo = None

    def fresh(self, name: str) -> Path:
        """A new empty folder for one case."""
        self._count += 1
        path = self.root / "cases" / f"{self._count:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def copy_model(self, name: str, source: Path | None = None) -> Path:
        target = self.fresh(name) / "model"
        shutil.copytree(source or self.model_dir, target)
        return target

    @property
    def app(self):
        if self._app is None:
            from test_space import load_app

            self._app = load_app()
        return self._app

    def explainer(self, folder: Path):
        key = str(folder)
        if key not in self._explainers:
            self._explainers[key] = self.app.Explainer(key)
        return self._explainers[key]

    @property
    def hostile_demo(self):
        if self._demo is None:
            self._demo = self.app.build_demo(explainer=self.explainer(self.hostile_dir))
        return self._demo

    def demo_fn(self, name: str):
        (fn,) = [f.fn for f in self.hostile_demo.fns.values() if f.name == name][:1]
        return fn


# ----------------------------------------------------------------------------------------------------------------
# Entry points as outcomes
# ----------------------------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> Outcome:
    """`python -m modeling_infodisent.explain ARGV` in-process: exit 0 = result; exit 2 with only ``error: ...``
    lines = error; anything else (another code, a traceback, an unprefixed line) = traceback."""
    from modeling_infodisent.explain import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    text = err.getvalue()
    errors = [line for line in text.splitlines() if line.strip() and "Loading weights" not in line]
    if code == 0:
        return Outcome("result", out.getvalue(), value=text)
    if code == 2 and errors and all(line.startswith("error: ") for line in errors) and "Traceback" not in text:
        return Outcome("error", text)
    return Outcome("traceback", f"exit {code}: {text}")


def expect_error(fn: Callable, *kinds: type[BaseException]) -> Outcome:
    """Call fn: its return value is a result, one of `kinds` the clear error it promises."""
    try:
        return Outcome("result", "", fn())
    except kinds as error:
        return Outcome("error", str(error))


def space_main(ctx: Context, folder: Path) -> Outcome:
    """The Space's command line on a model folder, stopped before it serves anything."""
    app = ctx.app
    launched = []
    original = app.launch
    app.launch = lambda demo, **kwargs: launched.append(demo)
    try:
        app.main(["--model", str(folder)])
        return Outcome("result", "", launched)
    except SystemExit as exit_:
        message = str(exit_.code)
        return Outcome("error" if message.startswith("error: ") and "\n" not in message else "traceback", message)
    finally:
        app.launch = original
