"""Arguments checked at the door (issue 26): every range of the training script's arguments is refused when the
command line is read, in one line naming the flag and the allowed range, before torch / transformers / datasets are
imported; misspelt options get "did you mean"; what needs the data is refused right after the data is loaded,
before any extraction; an output folder that cannot be written is refused up front, naming --output_dir."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT
from training.arguments import did_you_mean, parse_args
from training.checks import UsageError, check_against_data, validate_args

# (argv, the exact message): issue 26's cases first, then every bounded flag at one bad value.
BAD_ARGUMENTS = [
    (
        ["--train_batch_size", "100000000000"],
        "argument --train_batch_size: must be an integer in [1, 1,048,576], got 100,000,000,000",
    ),
    (
        ["--num_train_epochs", "1e12"],
        "argument --num_train_epochs: must be a finite number in (0, 1,000,000], got 1,000,000,000,000",
    ),
    (["--warmup_ratio", "-1"], "argument --warmup_ratio: must be a finite number in [0, 1), got -1"),
    (["--warmup_ratio", "5"], "argument --warmup_ratio: must be a finite number in [0, 1), got 5"),
    (["--warmup_ratio", "1"], "argument --warmup_ratio: must be a finite number in [0, 1), got 1"),
    (["--gumbel_temperature_start", "0"], "argument --gumbel_temperature_start: must be a finite number > 0, got 0"),
    (["--gumbel_temperature_end", "inf"], "argument --gumbel_temperature_end: must be a finite number > 0, got inf"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 4,294,967,296), got -1"),
    (["--seed", "4294967296"], "argument --seed: must be an integer in [0, 4,294,967,296), got 4,294,967,296"),
    (["--sparsity_l1", "inf"], "argument --sparsity_l1: must be a finite number >= 0, got inf"),
    (["--sparsity_hoyer", "nan"], "argument --sparsity_hoyer: must be a finite number >= 0, got nan"),
    (["--weight_decay", "-0.1"], "argument --weight_decay: must be a finite number >= 0, got -0.1"),
    (["--learning_rate", "0"], "argument --learning_rate: must be a finite number > 0, got 0"),
    (["--finetune_learning_rate", "-1"], "argument --finetune_learning_rate: must be a finite number > 0, got -1"),
    (["--distill_temperature", "0"], "argument --distill_temperature: must be a finite number > 0, got 0"),
    (["--distill_weight", "1.5"], "argument --distill_weight: must be a finite number in [0, 1], got 1.5"),
    (
        ["--per_device_train_batch_size", "0"],
        "argument --per_device_train_batch_size: must be an integer in [1, 1,048,576], got 0",
    ),
    (
        ["--per_device_eval_batch_size", "2000000"],
        "argument --per_device_eval_batch_size: must be an integer in [1, 1,048,576], got 2,000,000",
    ),
    (["--feature_batch_size", "0"], "argument --feature_batch_size: must be an integer in [1, 1,048,576], got 0"),
    (["--dataloader_num_workers", "-1"], "argument --dataloader_num_workers: must be an integer in [0, 64], got -1"),
    (
        ["--max_train_steps", "10000000000"],
        "argument --max_train_steps: must be an integer in [1, 1,000,000,000], got 10,000,000,000",
    ),
    (["--budget_epochs", "nan"], "argument --budget_epochs: must be a finite number in (0, 1,000,000], got nan"),
    (["--finetune_epochs", "-1"], "argument --finetune_epochs: must be a finite number in [0, 1,000,000], got -1"),
    (
        ["--max_prototypes_per_class", "-2"],
        "argument --max_prototypes_per_class: must be an integer in [0, 1,048,576], got -2",
    ),
    (["--pruning_tolerance", "2"], "argument --pruning_tolerance: must be a finite number in [0, 1], got 2"),
    (["--train_val_split", "0"], "argument --train_val_split: must be a finite number in (0, 1), got 0"),
    (["--gallery_top_k", "-1"], "argument --gallery_top_k: must be an integer in [0, 10,000], got -1"),
    (["--seed", "1.5"], "argument --seed: not an integer: '1.5'"),
    (["--trian_dir", "x"], "unrecognized arguments: --trian_dir x (did you mean --train_dir?)"),
    (["--outptu_dir=/tmp/x"], "unrecognized arguments: --outptu_dir=/tmp/x (did you mean --output_dir?)"),
    # a prefix of a flag is a typo, not an abbreviation (it once started a 30-minute run with the wrong flag)
    (["--num_train_epoch", "3"], "unrecognized arguments: --num_train_epoch 3 (did you mean --num_train_epochs?)"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_every_range_is_refused_when_read(argv, message):
    with pytest.raises(UsageError) as error:
        parse_args(argv)
    assert str(error.value) == message


def test_the_defaults_and_the_edges_of_each_range_are_accepted():
    args = parse_args([])
    validate_args(args)  # the defaults pass every check
    edges = parse_args(
        [
            "--seed",
            "4294967295",
            "--warmup_ratio",
            "0",
            "--sparsity_l1",
            "0",
            "--distill_weight",
            "1",
            "--train_batch_size",
            str(2**20),
            "--max_train_steps",
            str(10**9),
            "--train_val_split",
            "0.5",
        ]
    )
    assert (edges.seed, edges.warmup_ratio, edges.train_batch_size) == (2**32 - 1, 0.0, 2**20)


def test_did_you_mean_suggests_only_close_options():
    options = ["--train_dir", "--validation_dir", "--output_dir", "-h"]
    assert did_you_mean("unrecognized arguments: --valdiation_dir v", options).endswith(
        "(did you mean --validation_dir?)"
    )
    assert did_you_mean("unrecognized arguments: --colour red", options) == "unrecognized arguments: --colour red"
    both = did_you_mean("unrecognized arguments: --trian_dir a --ouput_dir b", options)
    assert both.endswith("(did you mean: --trian_dir -> --train_dir, --ouput_dir -> --output_dir?)")
    assert did_you_mean("argument --seed: not an integer", options) == "argument --seed: not an integer"


def _door(argv, env=None):
    """`python training/train.py ARGV` as the user runs it; reports whether torch / transformers / datasets were
    imported before the script exited (they must not be, for a bad argument)."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['training/train.py', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_path('training/train.py', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    heavy = sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules)\n"
        "    print('HEAVY', heavy, 'EXIT', exit_.code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--seed", "-1"], "error: argument --seed: must be an integer in [0, 4,294,967,296), got -1"),
        (["--trian_dir", "x"], "error: unrecognized arguments: --trian_dir x (did you mean --train_dir?)"),
        (
            ["--output_dir", "/proc/infodisent-x"],
            "error: --output_dir: '/proc/infodisent-x' cannot be written: creating a folder in '/proc' fails "
            "(No such file or directory).",
        ),
    ],
)
def test_a_bad_argument_is_one_line_before_torch_is_imported(argv, line):
    if "/proc" in " ".join(argv) and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc")
    done = _door(argv)
    assert done.stderr == line + "\n"
    assert done.stdout.strip() == "HEAVY [] EXIT 2"


def test_only_rank_0_prints_the_door_error():
    done = _door(["--seed", "-1"], env={"RANK": "1"})
    assert done.stderr == "" and done.stdout.strip() == "HEAVY [] EXIT 2"


def test_unwritable_output_dir_names_the_flag_not_a_staging_path(tmp_path):
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc")
    with pytest.raises(UsageError) as error:
        validate_args(parse_args(["--output_dir", "/proc/x"]))
    assert str(error.value).startswith("--output_dir: '/proc/x' cannot be written")
    assert ".tmp-" not in str(error.value)
    validate_args(parse_args(["--output_dir", str(tmp_path / "new" / "out")]))  # creatable: fine, nothing made
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "rows, batch, per_device, processes, epochs, message",
    [
        (
            600,
            100_000,
            None,
            1,
            None,
            "--train_batch_size 100,000 is larger than the 600 training rows; use at most 600.",
        ),
        (
            300,
            256,
            200,
            2,
            None,
            "--per_device_train_batch_size 200 x 2 processes = 400 is larger than the 300 training rows; "
            "use at most 300.",
        ),
        (
            1_000_000,
            2,
            None,
            1,
            5000.0,
            "--num_train_epochs 5000 plans 2.5e+09 steps of 2 rows over 1,000,000 training "
            "rows; at most 1,000,000,000 steps (2e+03 epochs).",
        ),
    ],
)
def test_what_needs_the_data_is_checked_against_it(rows, batch, per_device, processes, epochs, message):
    args = SimpleNamespace(
        train_batch_size=batch, per_device_train_batch_size=per_device, num_train_epochs=epochs, finetune_epochs=None
    )
    with pytest.raises(UsageError) as error:
        check_against_data(args, rows, processes)
    assert str(error.value) == message


def test_tiny_datasets_keep_the_default_batch():
    args = SimpleNamespace(
        train_batch_size=256, per_device_train_batch_size=None, num_train_epochs=3.0, finetune_epochs=1.0
    )
    check_against_data(args, 24, 1)  # 24 rows, batch 256: allowed (the endless stream repeats rows)
    check_against_data(args, None, 1)  # a stream of unknown length: nothing to check


def _exit_line(parse, argv, capsys):
    with pytest.raises((SystemExit, UsageError)) as caught:
        parse(argv)
    if isinstance(caught.value, SystemExit):
        assert caught.value.code == 2
        return capsys.readouterr().err.strip()
    return f"error: {caught.value}"


def test_every_command_line_says_did_you_mean(capsys):
    """The project's other command lines: the explain CLI, the backbone pretraining, the benchmarks, the Space."""
    from modeling_infodisent.explain import parse_args as explain_args
    from training.pretrain_backbone import parse_args as pretrain_args

    assert _exit_line(explain_args, ["--model", "m", "--out", "o", "--topk", "3"], capsys) == (
        "error: unrecognized arguments: --topk (did you mean --top_k?) (see --help)"
    )  # (3: an IMAGE)
    # a misspelt required option: argparse would only say "required: --model, --out"; the typo is named first
    assert _exit_line(explain_args, ["--modle", "m", "--out", "o", "x.png"], capsys) == (
        "error: unrecognized arguments: --modle (did you mean --model?) (see --help)"
    )
    with pytest.raises(UsageError, match=r"^unrecognized arguments: --train_dri \(did you mean --train_dir\?\)$"):
        from training.arguments import OneLineParser

        parser = OneLineParser()
        parser.add_argument("--train_dir", required=True)
        parser.parse_args(["--train_dri", "x"])
    assert _exit_line(pretrain_args, ["--lerning_rate", "0.1", "--sed", "1"], capsys) == (
        "error: unrecognized arguments: --lerning_rate 0.1 --sed 1 "
        "(did you mean: --lerning_rate -> --learning_rate, --sed -> --seed?)"
    )
    from benchmarks.run import parse_args as benchmark_args

    assert _exit_line(benchmark_args, ["--quikc"], capsys) == (
        "error: unrecognized arguments: --quikc (did you mean --quick?)"
    )
    from spaces.app import main as space_main

    assert _exit_line(space_main, ["--modle", "x"], capsys) == (
        "error: unrecognized arguments: --modle x (did you mean --model?)"
    )


@pytest.mark.parametrize("module", ["modeling_infodisent.explain", "spaces.app", "training.pretrain_backbone"])
def test_no_cli_takes_a_prefix_of_an_option_for_the_option(module):
    """argparse's default accepts any unambiguous prefix (--num_train_epoch for --num_train_epochs); every command
    line of the project refuses it with a suggestion instead."""
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module(module))
    parser_classes = {"modeling_infodisent.explain": "_Parser", "spaces.app": "_Parser"}
    if module in parser_classes:
        parser = getattr(importlib.import_module(module), parser_classes[module])()
    else:
        assert "OneLineParser(" in source
        from training.arguments import OneLineParser as parser_class

        parser = parser_class()
    parser.add_argument("--num_train_epochs", type=float)
    assert parser.allow_abbrev is False
    with pytest.raises((UsageError, SystemExit)):
        parser.parse_args(["--num_train_epoch", "3"])
