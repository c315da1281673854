"""The fault suite's cases for issue 26 ("holding under load and at the limits"), by category: arguments (the
training script's door), output (unwritable output folders), checkpoints (broken weights on resume), data (splits
and folders that cannot train a classifier), weights (NaN tensors at every loader) and load (concurrent identical
uploads to the Space). Same machinery as `fault_cases` (`fault_kit`); `fault_cases.CASES` includes these."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import torch
from PIL import Image

from fault_kit import Case, Context, DataLost, Outcome, expect_error, run_cli, space_main

# ----------------------------------------------------------------------------------------------------------------
# Category: arguments (training/train.py's door: one line naming the flag and its range, exit 2, <= 2 s, no torch)
# ----------------------------------------------------------------------------------------------------------------


def run_door(argv: list[str]) -> Outcome:
    """`training.arguments.door` as `python training/train.py ARGV` runs it first: exit 2 with one ``error: ...``
    line = error; anything else = traceback. The message carries the time it took."""
    from training.arguments import door

    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            door(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    seconds = time.perf_counter() - started
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code == 0:
        return Outcome("result", "", seconds)
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and seconds <= 2.0:
        return Outcome("error", lines[0], seconds)
    return Outcome("traceback", f"exit {code} after {seconds:.2f} s: {err.getvalue()}")


ARGUMENT_CASES = {
    "--train_batch_size 100000000000": ("--train_batch_size: must be an integer in [1, 1,048,576]",),
    "--num_train_epochs 1e12": ("--num_train_epochs: must be a finite number in (0, 1,000,000]",),
    "--warmup_ratio -1": ("--warmup_ratio: must be a finite number in [0, 1), got -1",),
    "--warmup_ratio 5": ("--warmup_ratio: must be a finite number in [0, 1), got 5",),
    "--gumbel_temperature_start 0": ("--gumbel_temperature_start: must be a finite number > 0",),
    "--seed -1": ("--seed: must be an integer in [0, 4,294,967,296)",),
    "--sparsity_l1 inf": ("--sparsity_l1: must be a finite number >= 0, got inf",),
    "--max_train_steps 10000000000": ("--max_train_steps: must be an integer in [1, 1,000,000,000]",),
    "--per_device_train_batch_size 0": ("--per_device_train_batch_size: must be an integer in [1, 1,048,576]",),
    "--trian_dir x": ("unrecognized arguments: --trian_dir x (did you mean --train_dir?)",),
    "--learning_rate nan": ("--learning_rate: must be a finite number > 0, got nan",),
}


def _argument_cases() -> list[Case]:
    cases = [
        Case("arguments", f"train.py {argv}", "error", lambda ctx, argv=argv: run_door(argv.split()), fragments)
        for argv, fragments in ARGUMENT_CASES.items()
    ]

    def no_torch(ctx, outcome):  # the door itself imports nothing heavy (checked in a fresh process by the tests)
        import training.arguments as arguments

        assert "torch" not in arguments.__dict__ and outcome.value <= 2.0

    cases.append(Case("arguments", "train.py defaults pass the door", "result", lambda ctx: run_door([]), (), no_torch))

    def too_big_for_the_data(ctx):
        from training.arguments import parse_args
        from training.checks import check_against_data

        args = parse_args(["--train_batch_size", "100000"])
        return expect_error(lambda: check_against_data(args, 4250, 1), ValueError)

    cases.append(
        Case(
            "arguments",
            "batch larger than the training rows (after loading, before extraction)",
            "error",
            too_big_for_the_data,
            ("--train_batch_size 100,000 is larger than the 4,250 training rows",),
        )
    )
    return cases


# ----------------------------------------------------------------------------------------------------------------
# Category: output (an output folder that cannot be written is refused up front, naming the flag)
# ----------------------------------------------------------------------------------------------------------------


def _proc_available() -> bool:
    return os.path.isdir("/proc/self")


def _output_cases() -> list[Case]:
    def nothing_made(ctx, outcome):
        if os.path.exists("/proc/infodisent-fault-suite"):
            raise DataLost("something was created under /proc")

    def train(ctx):
        if not _proc_available():
            return Outcome("error", "--output_dir: '/proc/infodisent-fault-suite' cannot be written (no /proc)")
        return run_door(["--output_dir", "/proc/infodisent-fault-suite"])

    def explain(ctx):
        return run_cli(
            ["--model", str(ctx.model_dir), str(ctx.corpus["one-pixel.png"]), "--out", "/proc/infodisent-fault-suite"]
        )

    return [
        Case(
            "output",
            "train.py --output_dir /proc/x (at the door, not after training)",
            "error",
            train,
            ("error: --output_dir: '/proc/infodisent-fault-suite' cannot be written",),
            nothing_made,
        ),
        Case(
            "output",
            "explain CLI --out /proc/x",
            "error",
            explain,
            ("error: --out /proc/infodisent-fault-suite",),
            nothing_made,
        ),
    ]


# ----------------------------------------------------------------------------------------------------------------
# Category: checkpoints (resume: truncated / NaN weights named and skipped)
# ----------------------------------------------------------------------------------------------------------------


def _checkpoints(ctx: Context, damage) -> Path:
    """An output folder with checkpoints step_10 (good) and step_20 (damaged by `damage`), in the layout of
    `training.fit` (accelerate's model.safetensors + training.checkpoints' files)."""
    from safetensors.torch import save_file

    from training.checkpoints import write_state

    out = ctx.fresh("ckpt") / "out"
    for step in (10, 20):
        folder = out / f"step_{step}"
        folder.mkdir(parents=True)
        save_file({"head.weight": torch.full((3, 4), float(step))}, str(folder / "model.safetensors"))
        write_state(str(folder), {"global_step": step, "phase": "main"}, {"seen": torch.zeros(5)})
    damage(out / "step_20" / "model.safetensors")
    ctx.last_out = out
    ctx.last_bytes = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return out


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _nan(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"head.weight": torch.full((3, 4), float("nan"))}, str(path))


def _checkpoint_cases() -> list[Case]:
    from training.checkpoints import find_latest_checkpoint, read_state

    def untouched(ctx, outcome):
        now = {p: p.read_bytes() for p in ctx.last_out.rglob("*") if p.is_file()}
        if now != ctx.last_bytes:
            raise DataLost("a checkpoint was changed or removed")

    cases = []
    for name, damage, why in (
        ("truncated", _truncate, "cannot be read (SafetensorError"),
        ("NaN", _nan, "holds 12 NaN or infinite values in 'head.weight'"),
    ):

        def latest(ctx, damage=damage):
            out = _checkpoints(ctx, damage)
            records = []
            handler = logging.Handler()
            handler.emit = records.append
            logging.getLogger("training.checkpoints").addHandler(handler)
            try:
                outcome = expect_error(lambda: find_latest_checkpoint(str(out)), ValueError)
            finally:
                logging.getLogger("training.checkpoints").removeHandler(handler)
            outcome.message = " ".join(r.getMessage() for r in records)
            return outcome

        def resumed_the_previous(ctx, outcome, why=why):
            assert outcome.value == str(ctx.last_out / "step_10"), outcome.value
            assert f"Skipping the checkpoint {ctx.last_out / 'step_20'}" in outcome.message and why in outcome.message
            untouched(ctx, outcome)

        cases.append(
            Case("checkpoints", f"latest skips a {name} model.safetensors", "result", latest, (), resumed_the_previous)
        )

        def named(ctx, damage=damage):
            out = _checkpoints(ctx, damage)
            return expect_error(lambda: read_state(str(out / "step_20")), ValueError)

        cases.append(
            Case(
                "checkpoints",
                f"a named checkpoint with a {name} model.safetensors",
                "error",
                named,
                ("step_20/model.safetensors", why),
                untouched,
            )
        )
    return cases


# ----------------------------------------------------------------------------------------------------------------
# Category: data (splits whose classes disagree; folders that cannot train a classifier)
# ----------------------------------------------------------------------------------------------------------------


def _folder(root: Path, classes, empty=()) -> str:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(0 if name in empty else 2):
            Image.new("RGB", (8, 8), (60 * i, 20, 30)).save(root / name / f"{i}.png")
    return str(root)


def _data_cases() -> list[Case]:
    from training.data import load_image_dataset

    def load(**kwargs):
        return expect_error(lambda: load_image_dataset(**kwargs), ValueError)

    def extra_val_class(ctx):
        root = ctx.fresh("data")
        return load(train_dir=_folder(root / "train", "abc"), validation_dir=_folder(root / "val", "abcd"))

    def one_class(ctx):
        return load(train_dir=_folder(ctx.fresh("data") / "train", "a"))

    def csv_only(ctx):
        root = ctx.fresh("data") / "train"
        (root / "a").mkdir(parents=True)
        (root / "a" / "rows.csv").write_text("x\n1\n")
        return load(train_dir=str(root))

    def empty_classes(ctx):
        return load(train_dir=_folder(ctx.fresh("data") / "train", "abc", empty="bc"))

    def test_lacks_class(ctx):
        root = ctx.fresh("data")
        return load(train_dir=_folder(root / "train", "abc"), test_dir=_folder(root / "test", "ab"))

    return [
        Case(
            "data",
            "validation folder with a class train lacks",
            "error",
            extra_val_class,
            ("The classes of --train_dir", "--validation_dir", "only in --validation_dir", "'d'"),
        ),
        Case(
            "data",
            "test folder missing a class",
            "error",
            test_lacks_class,
            ("The classes of --train_dir", "--test_dir", "only in --train_dir", "'c'"),
        ),
        Case(
            "data",
            "one class folder",
            "error",
            one_class,
            ("/train' has one class folder ('a')", "needs at least two classes"),
        ),
        Case(
            "data",
            "a folder of CSV files",
            "error",
            csv_only,
            ("/train' holds no images (found 1 other files (.csv))", "expected one sub-folder of images per class"),
        ),
        Case("data", "empty class folders", "error", empty_classes, ("the class folder(s) 'b', 'c' hold no images",)),
    ]


# ----------------------------------------------------------------------------------------------------------------
# Category: weights (NaN tensors, refused by every loader whatever the gallery says)
# ----------------------------------------------------------------------------------------------------------------


def _weight_cases() -> list[Case]:
    from fault_cases_loading import _edit_weights
    from modeling_infodisent import InfoDisentForImageClassification
    from modeling_infodisent.loading import load_model_and_gallery

    def nan_folder(ctx):
        folder = ctx.copy_model("nan")
        _edit_weights(folder, lambda t: t["head.classifier.bias"].fill_(float("nan")))
        ctx.last_folder = folder
        return folder

    fragment = "hold NaN or infinite values, refusing to load them: head.classifier.bias (3 of 3)"
    entries = {
        "from_pretrained": lambda ctx: expect_error(
            lambda: InfoDisentForImageClassification.from_pretrained(nan_folder(ctx)), OSError
        ),
        "load_model_and_gallery": lambda ctx: expect_error(lambda: load_model_and_gallery(nan_folder(ctx)), OSError),
        "CLI": lambda ctx: run_cli(
            [
                "--model",
                str(nan_folder(ctx)),
                str(ctx.corpus["one-pixel.png"]),
                "--out",
                str(ctx.last_folder.parent / "out"),
            ]
        ),
        "Space": lambda ctx: space_main(ctx, nan_folder(ctx)),
    }

    def nothing_written(ctx, outcome):
        if (ctx.last_folder.parent / "out").exists():
            raise DataLost("an explanation of a NaN model was written")

    return [
        Case("weights", f"{entry}: NaN weights with a gallery", "error", act, (fragment,), nothing_written)
        for entry, act in entries.items()
    ]


# ----------------------------------------------------------------------------------------------------------------
# Category: load (the Space's API: many concurrent calls holding one cached upload)
# ----------------------------------------------------------------------------------------------------------------


def _load_cases() -> list[Case]:
    def same_upload(ctx):
        """16 threads call the `explain` API function on the one path Gradio gives identical uploads."""
        demo = ctx.hostile_demo
        upload = Path(demo.GRADIO_CACHE) / "fault-suite-shared" / "shirt.png"
        upload.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ctx.corpus["alpha-rgba.png"], upload)
        api = ctx.demo_fn("explain_api")
        start, results = threading.Barrier(16), []

        def call():
            start.wait()
            try:
                results.append(api(str(upload))[1]["predicted_class"]["id"])
            except Exception as error:  # noqa: BLE001 - counted below
                results.append(f"{type(error).__name__}: {error}")

        threads = [threading.Thread(target=call) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ctx.last_upload = upload
        return Outcome("result", "", results)

    def all_explained(ctx, outcome):
        assert len(outcome.value) == 16 and len(set(outcome.value)) == 1, outcome.value
        assert isinstance(outcome.value[0], int), outcome.value[0]
        assert ctx.last_upload.exists()  # within the grace period a queued call may still need it
        demo = ctx.hostile_demo
        demo.upload_leases.sweep(now=time.time() + 3600)
        assert not ctx.last_upload.exists()  # and afterwards it is deleted

    return [
        Case("load", "Space API: 16 concurrent calls on one cached upload", "result", same_upload, (), all_explained)
    ]


def limit_cases() -> list[Case]:
    return _argument_cases() + _output_cases() + _checkpoint_cases() + _data_cases() + _weight_cases() + _load_cases()
