"""What a training run publishes: the output folder is one unit (written aside, swapped in; a run killed while saving
leaves the previous model byte for byte), its files are world-readable and name no path of this machine, and its
model card is right (gallery files, dataset name, a usage example that runs as written, pipeline with the package
import or with trust_remote_code)."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from tiny_assets import run_script, train_args, write_backbone, write_imagefolder

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from huggingface_hub import ModelCard  # noqa: E402

from training import model_folder, publish  # noqa: E402
from training import train as train_script  # noqa: E402
from training.model_card import HUB_IGNORE_PATTERNS  # noqa: E402


def _snapshot(folder) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder)] = open(path, "rb").read()
    return files


def _siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(folder.name + "."))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A run on the dataset "digits" (`digits/train`, `digits/test`), its folder named `infodisent-digits`, written
    under a umask of 077 (which alone would make every file private)."""
    root = tmp_path_factory.mktemp("publish")
    data = write_imagefolder(root / "digits")
    backbone = write_backbone(root / "backbone")
    output_dir = root / "infodisent-digits"
    previous = os.umask(0o077)
    try:
        results = train_script.main(train_args(data, backbone, output_dir, root / "cache"))
    finally:
        os.umask(previous)
    return root, output_dir, results


def test_card_says_where_the_gallery_is_and_names_the_dataset(published):
    root, output_dir, results = published
    text = (output_dir / "README.md").read_text()
    assert "gallery/" not in text
    for name in ("prototype_gallery.json", "prototype_gallery.safetensors"):
        assert f"`{name}`" in text and (output_dir / name).is_file()
    card = ModelCard(text)
    assert [r.dataset_name for r in card.data.eval_results] == ["digits", "digits"]  # accuracy, agreement
    assert card.data.datasets is None  # a local dataset is no Hub id
    assert 'pipeline("image-classification", model="infodisent-digits", trust_remote_code=True)' in text


def test_card_usage_example_runs_as_written(published, monkeypatch, capsys):
    """The card's first Python block, executed unchanged from the folder's parent (where the repo id
    "infodisent-digits" is the local folder)."""
    root, output_dir, results = published
    snippet = re.search(r"```python\n(.*?)\n```", (output_dir / "README.md").read_text(), re.S).group(1)
    assert 'from_pretrained("infodisent-digits")' in snippet and "image = Image.new(" in snippet
    monkeypatch.chdir(root)
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    top3 = eval(printed[0])  # the classifier's output: a list of {label, score}
    assert [set(p) for p in top3] == [{"label", "score"}] * 3 and {p["label"] for p in top3} == {"blue", "green", "red"}
    # One line per prototype of the predicted class (4: --max_prototypes_per_class 4): name, contribution, location.
    assert len(printed) == 1 + 4
    assert all(re.fullmatch(r"\d+[+-] [-+0-9.e]+ \(\d+, \d+\)", line) for line in printed[1:]), printed


def test_no_path_of_this_machine_in_any_file(published):
    root, output_dir, results = published
    machine_paths = {str(root), os.path.realpath(root), REPO_ROOT, os.path.expanduser("~") + "/"}
    for name, data in _snapshot(output_dir).items():
        for path in machine_paths:
            assert path.encode() not in data, (name, path)
    config = json.load(open(output_dir / "config.json"))
    assert config["backbone_config"]["_name_or_path"] == ".../publish0/backbone"
    saved = json.load(open(output_dir / "all_results.json"))
    assert saved["backbone"] == ".../publish0/backbone" and saved["dataset"] == ".../digits/train"
    assert saved["command"].startswith("accelerate launch training/train.py --train_dir .../digits/train ")
    assert "--output_dir .../publish0/infodisent-digits" in saved["command"]


def test_every_file_is_world_readable(published):
    root, output_dir, results = published
    modes = {}
    for dirpath, dirs, files in os.walk(output_dir):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            modes[os.path.relpath(path, output_dir)] = os.stat(path).st_mode & 0o777
    assert modes["model.safetensors"] == 0o644
    assert {m for n, m in modes.items() if os.path.isfile(output_dir / n)} == {0o644}
    assert os.stat(output_dir).st_mode & 0o777 == 0o755


def test_pipeline_after_import(published):
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    import modeling_infodisent  # noqa: F401

    root, output_dir, results = published
    image = Image.open(root / "digits" / "test" / "red" / "0.png")
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    expected = pipeline("image-classification", model=model, image_processor=str(output_dir))(image)
    assert pipeline("image-classification", model=str(output_dir))(image) == expected


PIPELINE_WITHOUT_PACKAGE = """
import sys
from PIL import Image
from transformers import pipeline
classifier = pipeline("image-classification", model={folder!r}, trust_remote_code=True)
assert "modeling_infodisent" not in sys.modules, "the package was imported"
print(type(classifier.model).__module__)
print(classifier(Image.open({image!r}))[0]["label"])
"""


@pytest.mark.slow
def test_pipeline_with_trust_remote_code_and_no_package(published, tmp_path):
    """The code files in the folder are enough: a process that never imports the package."""
    from PIL import Image
    from transformers import pipeline

    import modeling_infodisent  # noqa: F401

    root, output_dir, results = published
    image = str(root / "digits" / "test" / "green" / "1.png")
    code = PIPELINE_WITHOUT_PACKAGE.format(folder=str(output_dir), image=image)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    module, label = done.stdout.split()
    assert module.startswith("transformers_modules.") and module.endswith(".modeling_infodisent")
    assert label == pipeline("image-classification", model=str(output_dir))(Image.open(image))[0]["label"]


# ------------------------------------------------------------------------------------------ the folder is one unit
@pytest.mark.slow
def test_kill_during_the_final_save_keeps_the_previous_model(published, tmp_path):
    """A second run into the same folder, SIGKILLed right after writing its new weights: the previous model is
    still there byte for byte (weights, gallery, results, card). The next run clears the leftover and replaces it."""
    root, _, _ = published
    output_dir = tmp_path / "model"
    args = train_args(str(root / "digits"), root / "backbone", output_dir, root / "cache")
    first = train_script.main(args + ["--checkpointing_steps", "epoch"])
    before = _snapshot(output_dir)
    assert {
        "model.safetensors",
        "prototype_gallery.json",
        "all_results.json",
        "README.md",
        "epoch_0/infodisent_state.json",
    } <= set(before)

    # A folder holding a model is replaced only when asked (--overwrite_output_dir).
    killed = run_script(args + ["--seed", "1", "--overwrite_output_dir"], timeout=600, hooks={"kill_during_save": True})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert _snapshot(output_dir) == before
    (staging,) = _siblings(output_dir)
    assert staging.startswith("model.tmp-") and os.path.exists(tmp_path / staging / "model.safetensors")

    second = train_script.main(args + ["--seed", "1", "--overwrite_output_dir"])
    assert _siblings(output_dir) == []  # the dead run's staging folder is gone
    assert second["eval_accuracy"] == json.load(open(output_dir / "all_results.json"))["eval_accuracy"]
    new = _snapshot(output_dir)
    assert new["model.safetensors"] != before["model.safetensors"]
    checkpoints = {n: data for n, data in before.items() if n.startswith("epoch_")}
    assert {n: data for n, data in new.items() if n.startswith("epoch_")} == checkpoints  # carried over
    assert first["global_step"] == second["global_step"]


def test_swap_without_renameat2_and_recovery(tmp_path, monkeypatch):
    """The fallback swap (rename aside, rename in, delete) carries the checkpoints over; a kill between its two
    renames is repaired by the next run (the previous model is put back)."""
    target, staging = tmp_path / "out", tmp_path / "out.tmp-1"
    for folder, text in ((target, "old"), (staging, "new")):
        (folder / "sub").mkdir(parents=True)
        (folder / "model.safetensors").write_text(text)
    (target / "step_4").mkdir()
    (target / "step_4" / "state.json").write_text("{}")
    (target / "logs").mkdir()
    (target / "stale_gallery.json").write_text("old gallery")
    monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    publish.swap_into_place(str(staging), str(target))
    assert sorted(os.listdir(target)) == ["logs", "model.safetensors", "step_4", "sub"]
    assert (target / "model.safetensors").read_text() == "new" and _siblings(target) == []

    # Killed between the renames: the model sits at out.old-<pid of a dead process>, out is missing.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    os.rename(target, tmp_path / f"out.old-{dead_pid}")
    (tmp_path / f"out.tmp-{dead_pid}").mkdir()
    (tmp_path / f"out.tmp-{os.getpid()}").mkdir()  # a live run's staging folder: left alone
    publish.recover_interrupted_swap(str(target))
    assert (target / "model.safetensors").read_text() == "new"
    assert _siblings(target) == [f"out.tmp-{os.getpid()}"]


def test_exchange_is_atomic_where_available(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not publish._exchange(str(a), str(b)):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_public_names():
    assert publish.public_name("microsoft/resnet-50") == "microsoft/resnet-50"
    assert publish.public_name(os.path.join(REPO_ROOT, "training", "embedded", "fashion_mnist_resnet")) == (
        "training/embedded/fashion_mnist_resnet"
    )
    assert publish.public_name("/home/someone/data/digits/train") == ".../digits/train"
    assert publish.public_name("~/models/resnet") == ".../models/resnet"
    assert publish.public_command(["--backbone=/srv/x/y/bb", "--seed", "3", "--output_dir", "/tmp/a b/c"]) == (
        "accelerate launch training/train.py --backbone=.../y/bb --seed 3 --output_dir '.../a b/c'"
    )
    assert "step_*" in HUB_IGNORE_PATTERNS and publish.CARRIED_OVER.fullmatch("epoch_12")


def test_dataset_title():
    def title(**kwargs):
        args = train_script.parse_args(sum(([f"--{k}", v] for k, v in kwargs.items()), []))
        return model_folder.dataset_title(args)

    assert title(dataset_name="owner/flowers") == "owner/flowers"
    assert title(train_dir=os.path.join(REPO_ROOT, "tests")) == "tests"
    assert title() == "fashion_mnist_subset"
