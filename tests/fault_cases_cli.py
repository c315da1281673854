"""The fault suite's cases for the explain command line (issue 13), category cli: bad arguments, a bad --out and
write errors (the disk filling up mid-run); each error is one ``error: ...`` line and nothing is lost or left
half-written in --out. Same machinery as the other `fault_cases_*` modules (`fault_kit`); `fault_cases.CASES`
includes these."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from fault_kit import (
    CLI_FAST,
    Case,
    DataLost,
    run_cli,
)

# ----------------------------------------------------------------------------------------------------------------
# Category: cli (arguments, --out, write errors)
# ----------------------------------------------------------------------------------------------------------------


def cli_cases() -> list[Case]:
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
