"""training/train.py as a command line: every user error is one `error: ...` line naming the problem, exit status 2,
no traceback and nothing half-written; the backbone's head is used for agreement only when it predicts the dataset's
classes; the Hub is never switched off by the script."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from tiny_assets import accelerate_launcher, run_script, train_args, write_backbone, write_imagefolder

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from training import train as train_script  # noqa: E402
from training.checks import head_label_match  # noqa: E402

N_TRAIN = 8  # per class: 24 training images


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_assets")
    write_imagefolder(root / "colours", n_train=N_TRAIN)
    write_backbone(root / "backbone")
    return root


def _bad_input(case, assets, tmp):
    """(arguments, the exact error line) for one bad input."""
    args = train_args(str(assets / "colours"), assets / "backbone", tmp / "out", tmp / "cache")

    def replace(flag, value):
        args[args.index(flag) + 1] = str(value)

    if case == "empty_train_dir":
        os.makedirs(tmp / "empty")
        replace("--train_dir", tmp / "empty")
        return (
            args,
            f"error: --train_dir: the folder '{tmp / 'empty'}' is empty (expected one sub-folder of images per class).",
        )
    if case == "missing_train_dir":
        replace("--train_dir", tmp / "nowhere")
        return args, f"error: --train_dir: the folder '{tmp / 'nowhere'}' does not exist."
    if case == "missing_dataset_path":
        args[args.index("--train_dir") : args.index("--train_dir") + 4] = ["--dataset_name", str(tmp / "no" / "data")]
        return args, f"error: --dataset_name: the folder '{tmp / 'no' / 'data'}' does not exist."
    if case == "wrong_image_column":
        return args + ["--image_column_name", "picture"], (
            "error: Image column 'picture' not found; the dataset has columns ['image', 'label']."
        )
    if case == "zero_epochs":
        replace("--num_train_epochs", "0")
        return args, "error: argument --num_train_epochs: must be a finite number in (0, 1,000,000], got 0"
    if case == "negative_gallery":
        replace("--gallery_top_k", "-1")
        return args, "error: argument --gallery_top_k: must be an integer in [0, 10,000], got -1"
    if case == "output_dir_is_a_file":
        (tmp / "file.txt").write_text("not a folder")
        replace("--output_dir", tmp / "file.txt")
        return args, f"error: --output_dir: '{tmp / 'file.txt'}' is a file, not a folder."
    if case == "unknown_flag":
        return args + [
            "--num_epochs",
            "3",
        ], "error: unrecognized arguments: --num_epochs 3 (did you mean --num_train_epochs?)"
    if case == "resume_latest_without_output":
        return args + ["--resume_from_checkpoint", "latest"], (
            f"error: --resume_from_checkpoint latest: the output folder '{tmp / 'out'}' does not exist."
        )
    if case == "missing_backbone_path":
        replace("--backbone", tmp / "my-backbone")
        return args, f"error: --backbone: the folder '{tmp / 'my-backbone'}' does not exist."
    if case == "backbone_without_config":
        os.makedirs(tmp / "weights_only")
        replace("--backbone", tmp / "weights_only")
        return args, (
            f"error: --backbone: the folder '{tmp / 'weights_only'}' has no config.json: it is not a Hugging Face "
            "model folder."
        )
    if case == "text_model":
        from transformers import BertConfig

        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(
            tmp / "bert"
        )
        replace("--backbone", tmp / "bert")  # no preprocessor_config.json either: "not an image model" comes first
        return args, (
            f"error: --backbone: '{tmp / 'bert'}' is a 'bert' model, not an image model; InfoDisent explains vision "
            "backbones (ResNet, ConvNeXt, ViT, DINOv2, ...)."
        )
    if case == "no_image_processor":
        write_backbone(tmp / "bare")
        os.remove(tmp / "bare" / "preprocessor_config.json")
        replace("--backbone", tmp / "bare")
        return args, (
            f"error: --backbone: '{tmp / 'bare'}' has no image processor (preprocessor_config.json), so its "
            "preprocessing is unknown. Save one next to it (e.g. "
            "AutoImageProcessor.from_pretrained(...).save_pretrained(folder))."
        )
    if case == "nan_features":
        replace("--backbone", write_backbone(tmp / "nan_features", nan="features"))
        # 24 training images, 32 channels on a 1x1 map (32 px input): the first batch is the whole split.
        return args, (
            f"error: The backbone '{tmp / 'nan_features'}' gives non-finite feature maps (rows 0-23 of the train "
            "split): 768 of 768 values are NaN or infinite; nothing was cached."
        )
    if case == "nan_head":
        replace("--backbone", write_backbone(tmp / "nan_head", nan="head"))
        return args, (
            f"error: The classifier head of the backbone '{tmp / 'nan_head'}' gives non-finite logits (rows 0-23 of "
            "the train split): 72 of 72 values are NaN or infinite; nothing was cached."
        )
    if case == "distill_with_generic_head":
        replace("--backbone", write_backbone(tmp / "generic", labels=["LABEL_0", "LABEL_1", "LABEL_2"]))
        return args + ["--distill_weight", "0.5"], (
            "error: --distill_weight > 0 needs a backbone whose own classifier predicts the dataset's classes: the "
            "backbone's classifier head has generic labels (LABEL_0, LABEL_1, ...); pass "
            "--backbone_head_matches_labels if it predicts the dataset's classes in the dataset's order."
        )
    if case == "head_says_match_but_count_differs":
        replace("--backbone", write_backbone(tmp / "two_classes", labels=["cat", "dog"]))
        return args + ["--backbone_head_matches_labels"], (
            "error: --backbone_head_matches_labels: the backbone's classifier head predicts 2 classes, the dataset "
            "has 3."
        )
    raise AssertionError(case)


BAD_INPUTS = [
    "empty_train_dir",
    "missing_train_dir",
    "missing_dataset_path",
    "wrong_image_column",
    "zero_epochs",
    "negative_gallery",
    "output_dir_is_a_file",
    "unknown_flag",
    "resume_latest_without_output",
    "missing_backbone_path",
    "backbone_without_config",
    "text_model",
    "no_image_processor",
    "nan_features",
    "nan_head",
    "distill_with_generic_head",
    "head_says_match_but_count_differs",
]


def _siblings(tmp):
    return sorted(p.name for p in tmp.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(case, assets, tmp_path, capfd):
    args, expected = _bad_input(case, assets, tmp_path)
    capfd.readouterr()
    assert train_script.cli(args) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == expected, err[-2000:]
    assert err.count("error: ") == 1 and "Traceback" not in err
    # Nothing half-written: no output folder, no staging folder, nothing in the feature cache.
    assert not (tmp_path / "out").exists() and _siblings(tmp_path) == []
    if (tmp_path / "cache").exists():
        assert os.listdir(tmp_path / "cache") == [] or case not in ("nan_features", "nan_head")
        for key in os.listdir(
            tmp_path / "cache"
        ):  # only complete, finite caches (the validation split is never reached)
            assert os.path.exists(tmp_path / "cache" / key / "meta.json"), key


def test_errors_before_anything_heavy(assets, tmp_path, monkeypatch):
    """Argument problems are found before the dataset or the backbone's weights are loaded."""
    import training.train

    def fail(*args, **kwargs):
        raise AssertionError("loaded before the arguments were checked")

    monkeypatch.setattr(training.train, "load_image_dataset", fail)
    monkeypatch.setattr(training.train, "load_backbone_weights", fail)
    for case in ("zero_epochs", "output_dir_is_a_file", "missing_backbone_path", "text_model", "no_image_processor"):
        folder = tmp_path / case
        folder.mkdir()
        args, expected = _bad_input(case, assets, folder)
        with pytest.raises(ValueError) as error:
            training.train.main(args)
        assert "error: " + str(error.value) == expected


def test_unloadable_hub_id_says_the_hub_is_off(assets, tmp_path, capfd):
    """A name that is not a local path is tried as a Hub id; with HF_HUB_OFFLINE=1 (set by the tests) the message
    says the Hub is off."""
    args = train_args(str(assets / "colours"), "someone/no-such-model", tmp_path / "out", tmp_path / "cache")
    assert train_script.cli(args) == 2
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "error: --backbone: cannot load 'someone/no-such-model' (the Hub is switched off: HF_HUB_OFFLINE is set): it "
        "is neither a local model folder nor a Hub model id that could be loaded ("
    ), line
    assert not (tmp_path / "out").exists()


def test_existing_output_folder_survives_a_failing_run(assets, tmp_path, capfd):
    """A run that fails leaves an existing output folder as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous model")
    args, expected = _bad_input("nan_features", assets, tmp_path)
    assert train_script.cli(args) == 2
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "previous model"
    assert _siblings(tmp_path) == []


@pytest.mark.slow
# ---------------------------------------------------------------------------------------- as the user runs it
@pytest.mark.slow
@pytest.mark.parametrize("launched", ["python", "accelerate"])
def test_whole_stderr_is_the_error_line(assets, tmp_path, launched):
    """`python training/train.py` and the README's `accelerate launch --config_file training/accelerate_config.yaml
    -q training/train.py`: the error line is ALL of stderr (no launcher warnings, no traceback). The launcher turns
    the script's status 2 into its own status 1."""
    args, expected = _bad_input("zero_epochs", assets, tmp_path)
    done = run_script(args, launcher=accelerate_launcher() if launched == "accelerate" else None, timeout=300)
    assert done.stderr == expected + "\n"
    assert done.returncode == (2 if launched == "python" else 1)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_data_error_under_accelerate_launch_is_one_line(assets, tmp_path):
    """An error found after loading started (NaN features): the log lines of the run, then the error as the last
    line, and no traceback."""
    args, expected = _bad_input("nan_features", assets, tmp_path)
    done = run_script(args, launcher=accelerate_launcher(), timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.rstrip("\n").splitlines()[-1] == expected
    assert "Traceback" not in done.stderr and done.stderr.count("error: ") == 1
    assert not (tmp_path / "out").exists() and _siblings(tmp_path) == []


# ----------------------------------------------------------------------------------------- the backbone's head
def test_head_label_match_rules():
    from transformers import PretrainedConfig

    def head(names):
        return PretrainedConfig(id2label=dict(enumerate(names)))

    classes = {0: "Blue", 1: "green", 2: "red"}
    assert head_label_match(head(["blue", "Green", "RED"]), classes) == (True, None)
    generic = head(["LABEL_0", "LABEL_1", "LABEL_2"])
    matches, reason = head_label_match(generic, classes)
    assert not matches and reason.startswith(
        "the backbone's classifier head has generic labels (LABEL_0, LABEL_1, ...)"
    )
    assert head_label_match(generic, classes, user_says_it_matches=True) == (True, None)
    assert head_label_match(head(["red", "green", "blue"]), classes) == (
        False,
        "the backbone's classifier head's labels ['red', 'green', 'blue'] are not the dataset's classes "
        "['Blue', 'green', 'red']; pass --backbone_head_matches_labels if they are the same classes in the same order",
    )
    assert (
        head_label_match(head(["a", "b"]), classes)[1]
        == "the backbone's classifier head predicts 2 classes, the dataset has 3"
    )
    assert train_script.head_matches_labels(generic, classes) is False


def test_generic_head_is_not_used_unless_the_user_says_so(assets, tmp_path):
    generic = write_backbone(tmp_path / "generic", labels=["LABEL_0", "LABEL_1", "LABEL_2"])
    args = train_args(str(assets / "colours"), generic, tmp_path / "out", tmp_path / "cache") + ["--gallery_top_k", "0"]
    results = train_script.main(args)
    saved = json.load(open(tmp_path / "out" / "all_results.json"))
    assert saved["agreement"] is None and saved["backbone_head_accuracy"] is None
    assert saved["agreement_missing_reason"] == (
        "the backbone's classifier head has generic labels (LABEL_0, LABEL_1, ...); pass "
        "--backbone_head_matches_labels if it predicts the dataset's classes in the dataset's order"
    )
    assert results["agreement_missing_reason"] == saved["agreement_missing_reason"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "type: agreement" not in card  # no agreement metric in the card's metadata
    assert (
        f"The backbone's own classifier is not compared with this model: {saved['agreement_missing_reason']}." in card
    )

    told = train_script.main(
        args[:-2] + ["--gallery_top_k", "0", "--output_dir", str(tmp_path / "told"), "--backbone_head_matches_labels"]
    )
    assert isinstance(told["agreement"], float) and isinstance(told["backbone_head_accuracy"], float)
    assert "agreement_missing_reason" not in told
    # The saved model keeps the original classifier (and its Explanations say what it decides) exactly when the
    # agreement was measured: one rule for both.
    assert json.load(open(tmp_path / "out" / "config.json"))["original_head"] is False
    assert json.load(open(tmp_path / "told" / "config.json"))["original_head"] is True


# ---------------------------------------------------------------------------------------------- the Hub switch
@pytest.mark.slow
def test_script_does_not_switch_the_hub_off(tmp_path):
    code = (
        "import os, training.train, huggingface_hub.constants as c; "
        "print(os.environ.get('HF_HUB_OFFLINE'), c.HF_HUB_OFFLINE)"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["PYTHONPATH"] = REPO_ROOT
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", "False"]


NO_NETWORK = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError(101, "Network is unreachable")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
socket.create_connection = refuse
sys.path.insert(0, {repo!r})
from training import train
from training.data import DEFAULT_BACKBONE, DEFAULT_DATASET, load_image_dataset
config, processor = train.inspect_backbone(DEFAULT_BACKBONE)  # the embedded default's folders
backbone, image_processor, has_head = train.load_backbone(DEFAULT_BACKBONE)
train._no_usage_ping_for_local_data(train.parse_args([]))  # what the script does before loading the default data
dataset = load_image_dataset(DEFAULT_DATASET)[0]
status = train.cli({args!r})
print("STATUS", status, "ATTEMPTS", len(attempts), attempts[:3])
"""


@pytest.mark.slow
def test_local_folders_work_with_no_network_and_no_variable(assets, tmp_path):
    """HF_HUB_OFFLINE unset, every connection refused: the embedded default's folders load and a whole run on local
    folders succeeds without trying the network."""
    args = train_args(str(assets / "colours"), assets / "backbone", tmp_path / "out", tmp_path / "cache")
    code = NO_NETWORK.format(repo=REPO_ROOT, args=args)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf_home"))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "STATUS 0 ATTEMPTS 0 []" in done.stdout, (done.stdout, done.stderr[-3000:])
    assert (tmp_path / "out" / "model.safetensors").exists()
