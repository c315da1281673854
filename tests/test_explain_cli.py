"""The command line: PNG + HTML for images of every mode, class sheets, and clean failures that write nothing."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessor

from conftest import REPO_ROOT, tiny_resnet_config
from modeling_infodisent import InfoDisentForImageClassification
from modeling_infodisent.explain import main
from modeling_infodisent.gallery import compute_gallery
from modeling_infodisent.render import TEXT_KEY

NAMES = {0: "cat", 1: "dog", 2: "bird"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny InfoDisent model folder with its image processor and prototype gallery."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(tiny_resnet_config(), id2label=NAMES).eval()
    with torch.no_grad():
        model.head.rotation.generator.normal_(0.0, 0.5)
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    rng = np.random.default_rng(0)
    data = [
        {"image": Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)), "label": i % 3} for i in range(6)
    ]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    compute_gallery(model, data, processor, top_k=2, progress=False).save(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """One image file per mode: L, RGB, RGBA, P (GIF) and I;16 (16-bit PNG)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8))
    paths = {}
    for mode, name in (("L", "grey.png"), ("RGB", "colour.jpg"), ("RGBA", "alpha.png"), ("P", "palette.gif")):
        image = rgb.convert(mode)
        if mode == "RGBA":
            image.putalpha(Image.fromarray(rng.integers(0, 256, (36, 44), dtype=np.uint8)))
        image.save(folder / name)
        paths[mode] = folder / name
    Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)).save(folder / "deep.png")
    paths["I;16"] = folder / "deep.png"
    for mode, path in paths.items():
        assert Image.open(path).mode == mode
    return paths


def test_cli_writes_png_and_html_for_every_mode(model_dir, images, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "modeling_infodisent.explain",
        "--model",
        str(model_dir),
        *map(str, images.values()),
        "--out",
        str(out),
        "--contrast",
        "dog",
        "--global",
        "--top_k",
        "2",
        "--max_patches",
        "2",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    for path in images.values():
        stem = path.stem
        png, html = out / f"{stem}.png", out / f"{stem}.html"
        assert png.stat().st_size > 5_000 and html.stat().st_size > 5_000
        with Image.open(png) as figure:
            assert figure.format == "PNG" and figure.width > 800
            text = figure.text[TEXT_KEY]
        # The numbers drawn on the figure travel with it, and they add up.
        (line,) = [x for x in text.split("\n") if "(logit of" in x]
        left, right = line.split(" = ")
        terms = [float(v) for v in re.findall(r"([+-]?\d+\.\d+) \(", left)]
        assert sum(terms) == pytest.approx(float(right.split()[0]), abs=0.0005 * (len(terms) + 1))
        page = html.read_text()
        assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
        assert re.search(r"src=['\"](?!data:)", page) is None  # nothing loaded from elsewhere
        assert "predicted " in result.stdout and str(path) in result.stdout
        if not (out / f"{stem}_vs_dog.png").exists():  # when the predicted class is dog itself
            assert f"{path}: --contrast is the explained class itself" in result.stdout
    assert result.stdout.count("top-5: ") == len(images)
    assert sorted(p.name for p in out.glob("class_*.png")) == ["class_0_cat.png", "class_1_dog.png", "class_2_bird.png"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def _fails_cleanly(argv, tmp_path, capsys, expected, code=2):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == code
    err = capsys.readouterr().err
    for fragment in expected:
        assert fragment in err, err
    assert not out.exists(), "nothing may be written when an input is bad"
    assert "Traceback" not in err and all(line.startswith("error: ") for line in err.splitlines()), err
    return err


def test_cli_rejects_bad_files_before_writing(model_dir, images, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    data = (images["RGB"].parent / "grey.png").read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    missing = tmp_path / "missing.jpg"
    good = str(images["RGB"])
    model = ["--model", str(model_dir)]
    _fails_cleanly(
        [*model, good, str(corrupt)],
        tmp_path,
        capsys,
        [f"{corrupt}: looks like a PNG file but is damaged or truncated"],
    )
    _fails_cleanly([*model, good, str(text)], tmp_path, capsys, [f"{text}: is not an image file"])
    _fails_cleanly([*model, good, str(missing)], tmp_path, capsys, [f"{missing}: no such file"])
    # All problems are reported at once.
    err = _fails_cleanly([*model, str(missing), str(text), good], tmp_path, capsys, ["no such file", "not an image"])
    assert len(err.splitlines()) == 2
    _fails_cleanly([*model, str(tmp_path)], tmp_path, capsys, ["is a folder, not an image file"])
    _fails_cleanly(
        [*model, good, "--max_pixels", "100"],
        tmp_path,
        capsys,
        [
            f"{good}: is 44x36 = 1,584 pixels, over the limit of 100 (a decompression-bomb guard); "
            "raise it with --max_pixels"
        ],
    )
    _fails_cleanly([*model, good, str(images["RGB"])], tmp_path, capsys, ["would write the same colour.png"])
    _fails_cleanly(
        [*model, good, "--target", "zebra"],
        tmp_path,
        capsys,
        ["--target 'zebra' is not a class of this model", "0=cat, 1=dog, 2=bird"],
    )
    _fails_cleanly(
        ["--model", str(tmp_path / "no_model"), good],
        tmp_path,
        capsys,
        [f"error: --model {tmp_path / 'no_model'}: no such model folder"],
    )


def test_cli_target_by_name_and_id(model_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--model", str(model_dir), str(images["L"]), "--out", str(out), "--target", "BIRD"]) == 0
    with Image.open(out / "grey.png") as figure:
        assert "(logit of 'bird')" in figure.text[TEXT_KEY]
    assert (
        main(
            [
                "--model",
                str(model_dir),
                str(images["L"]),
                "--out",
                str(out),
                "--target",
                "1",
                "--top_k",
                "2",
                "--compact",
            ]
        )
        == 0
    )
    with Image.open(out / "grey.png") as figure:
        text = figure.text[TEXT_KEY]
        assert figure.mode == "P"  # --compact: a 256-colour palette, the numbers still stored
    assert "(logit of 'dog')" in text
    assert len(re.findall(r"^\d+\+ contribution", text, flags=re.M)) <= 2
    assert "top-5: " in capsys.readouterr().out


def test_cli_outlines_the_relevant_pixels_unless_told_not_to(model_dir, images, tmp_path):
    figures = {}
    for flags in ([], ["--no_relevance"]):
        out = tmp_path / ("plain" if flags else "outlined")
        assert main(["--model", str(model_dir), str(images["RGB"]), "--out", str(out), "--top_k", "2", *flags]) == 0
        (png,) = out.glob("*.png")
        with Image.open(png) as figure:
            figures[bool(flags)] = (np.asarray(figure.convert("RGB")).astype(int), figure.text[TEXT_KEY])
    (outlined, text_a), (plain, text_b) = figures[False], figures[True]
    assert text_a == text_b and outlined.shape == plain.shape  # the same numbers ...
    assert (np.abs(outlined - plain).sum(axis=2) > 0).sum() > 20  # ... and outlines on the prototype panels


def test_cli_subprocess_error_exit_code(model_dir, tmp_path):
    missing = tmp_path / "nope.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeling_infodisent.explain",
            "--model",
            str(model_dir),
            str(missing),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT),
        timeout=300,
    )
    assert result.returncode == 2
    assert f"error: {missing}: no such file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
