"""The fault suite's cases for model folders (issue 13), by category: pickles (a hostile pytorch_model.bin is
never unpickled, at any loader) and loading (broken or mismatched model folders at `from_pretrained`,
`load_model_and_gallery`, the command line and the Space: the error names the problem and the folder is left
untouched). Same machinery as the other `fault_cases_*` modules (`fault_kit`); `fault_cases.CASES` includes
these."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from fault_kit import (
    Case,
    Context,
    DataLost,
    expect_error,
    run_cli,
    space_main,
)

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


def pickle_cases() -> list[Case]:
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


def loading_cases() -> list[Case]:
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
