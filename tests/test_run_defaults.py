"""Safe, telling defaults of train.py (training/run_defaults.py): the backbone for your own data, the output folder's
name, and an existing model folder that is not replaced without --overwrite_output_dir."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from training import real_backbone
from training.arguments import parse_args
from training.checks import UsageError
from training.run_defaults import BUNDLED_BACKBONE, BUNDLED_OUTPUT_DIR, check_output_dir


def _imagefolder(root) -> str:
    for name in ("cat", "dog"):
        os.makedirs(os.path.join(root, "train", name), exist_ok=True)
        open(os.path.join(root, "train", name, "0.png"), "wb").close()
    return os.path.join(root, "train")


def test_bundled_data_gets_the_bundled_backbone_and_folder():
    args = parse_args([])
    assert args.backbone == BUNDLED_BACKBONE and args.output_dir == BUNDLED_OUTPUT_DIR


def test_output_dir_is_named_from_the_data_and_the_backbone(tmp_path):
    train_dir = _imagefolder(tmp_path / "Pets 2024")
    args = parse_args(["--train_dir", train_dir, "--backbone", "microsoft/resnet-50"])
    assert args.output_dir == os.path.join("outputs", "infodisent-pets-2024-resnet-50")
    other = parse_args(["--train_dir", train_dir, "--backbone", "facebook/dinov2-small"])
    assert other.output_dir != args.output_dir
    given = parse_args(["--train_dir", train_dir, "--backbone", "x/y", "--output_dir", str(tmp_path / "mine")])
    assert given.output_dir == str(tmp_path / "mine")


def test_own_data_defaults_to_the_real_imagenet_network_when_installed(tmp_path, monkeypatch):
    folder = tmp_path / "real"
    monkeypatch.setattr(real_backbone, "find", lambda: folder)
    args = parse_args(["--train_dir", _imagefolder(tmp_path / "pets")])
    assert args.backbone == str(folder) and "EfficientNet-Lite0" in args.backbone_source
    assert args.output_dir == os.path.join("outputs", "infodisent-pets-real")


def test_own_data_without_the_real_network_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(real_backbone, "find", lambda: None)
    with pytest.raises(UsageError, match=r"--backbone is needed for your own data: .*infodisent\[real\]"):
        parse_args(["--train_dir", _imagefolder(tmp_path / "pets")])
    # Never the Fashion-MNIST backbone on other data, whatever is installed: through the real command line.
    env = dict(os.environ, INFODISENT_REAL_BACKBONE=str(tmp_path / "absent"), PYTHONPATH=REPO_ROOT)
    code = (
        "import training.real_backbone as r; r.is_available = lambda: False; import runpy, sys; "
        "sys.argv = ['train.py', '--train_dir', sys.argv[1]]; runpy.run_path('training/train.py', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pets" / "train")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --backbone is needed for your own data"), done.stderr


def test_a_folder_holding_a_model_is_not_replaced_unless_asked(tmp_path):
    out = tmp_path / "out"
    args = parse_args(["--output_dir", str(out)])
    check_output_dir(args)  # absent: fine
    out.mkdir()
    (out / "step_3").mkdir()
    check_output_dir(args)  # checkpoints only: a run to resume, nothing to protect
    (out / "all_results.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds a trained model; pass --overwrite_output_dir"):
        check_output_dir(args)
    check_output_dir(parse_args(["--output_dir", str(out), "--overwrite_output_dir"]))
    check_output_dir(parse_args(["--output_dir", str(out), "--resume_from_checkpoint", "latest"]))
    done = subprocess.run(
        [sys.executable, "training/train.py", "--output_dir", str(out)],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --output_dir: {str(out)!r} already holds a trained model; pass --overwrite_output_dir to replace it, "
        "or choose another --output_dir."
    ]
    assert sorted(os.listdir(out)) == ["all_results.json", "step_3"]
