"""Every backbone family from a folder laid out as its Hub repository (tests/hub_folders.py): taken apart the same way
whether given as a model instance, a folder or a Hub id; and end to end — train.py → output folder → explain CLI →
AutoModel / pipeline → the Space's loader → the card's snippet as written."""

from __future__ import annotations

import importlib
import json
import re

import huggingface_hub.constants
import pytest
import torch
from PIL import Image

from hub_folders import (
    FAMILIES,
    HEAD_PREDICTS_DATA_CLASSES,
    NO_HEAD,
    hub_repo_id,
    install_in_hub_cache,
    write_hub_folder,
)
from tiny_assets import CLASSES, train_args, write_imagefolder

pytest.importorskip("timm")

ID2LABEL = dict(enumerate(CLASSES))
# Whose own classifier is one linear layer on the average-pooled explained map AND predicts the data's classes, so
# the InfoDisent model keeps it (ConvNeXt's has a LayerNorm first; ViT's reads the CLS token; the others are
# ImageNet's).
KEPT_HEAD = {"swin", "timm_cnn"}


def _backbone_state(model) -> dict[str, torch.Tensor]:
    # A classifier's base model has no pooler (ViT): the adapter's is freshly drawn and never used.
    return {
        k: v
        for k, v in model.state_dict().items()
        if k.startswith(("backbone.", "original_classifier.")) and not k.startswith("backbone.model.pooler.")
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_instance_folder_and_hub_id_take_one_path(family, tmp_path, monkeypatch):
    from transformers import AutoModel, AutoModelForImageClassification

    from modeling_infodisent import InfoDisentForImageClassification

    folder = write_hub_folder(tmp_path / "repo", family, CLASSES)
    install_in_hub_cache(folder, tmp_path / "hub", hub_repo_id(family))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at each call
    instance = (AutoModel if family in NO_HEAD else AutoModelForImageClassification).from_pretrained(str(folder))
    models = [
        InfoDisentForImageClassification.from_backbone(source, id2label=ID2LABEL)
        for source in (instance, str(folder), hub_repo_id(family))
    ]
    reference = _backbone_state(models[0])
    assert any(k.startswith("backbone.") for k in reference)
    for model in models[1:]:
        state = _backbone_state(model)
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert [m.config.original_head for m in models] == [family in KEPT_HEAD] * 3
    # The backbone weights are those the folder loads to, bit for bit (not a fresh initialisation). transformers 5
    # renames some tensors between file and model (ViT's q_proj), so the loaded instance is the reference.
    loaded = instance.state_dict() if family.startswith("timm") else instance.base_model.state_dict()
    adapter_state = {k: v for k, v in models[1].backbone.model.state_dict().items() if not k.startswith("pooler.")}
    assert adapter_state.keys() <= loaded.keys() and len(adapter_state) > 0.9 * len(loaded)
    assert all(torch.equal(tensor, loaded[key]) for key, tensor in adapter_state.items())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("data"), n_train=6, n_test=2)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_end_to_end(family, data, tmp_path, monkeypatch, capsys, caplog):
    from transformers import AutoImageProcessor, AutoModel, pipeline

    import training.train as train_script
    from modeling_infodisent.explain import main as explain_main
    from training.publish import public_name

    repo_name = hub_repo_id(family).split("/")[1]
    backbone = write_hub_folder(tmp_path / repo_name, family, CLASSES)
    out = tmp_path / "runs" / f"infodisent-{family}"
    with caplog.at_level("INFO"):
        results = train_script.main(train_args(data, backbone, out, tmp_path / "cache"))
    # Named at start-up, with its source (as the card names paths: no path of this machine).
    assert f"Backbone: {public_name(str(backbone))}, from a local folder" in caplog.text

    # 1. A working image processor, whatever the family wrote (timm writes none: its config.json holds it).
    image = Image.open(f"{data}/test/red/0.png").convert("RGB")
    original = AutoImageProcessor.from_pretrained(str(backbone))
    saved = AutoImageProcessor.from_pretrained(str(out))
    assert type(saved) is type(original)
    assert torch.equal(
        saved(image, return_tensors="pt")["pixel_values"], original(image, return_tensors="pt")["pixel_values"]
    )

    # 2. The backbone's own head: agreement measured, or the true reason it is not.
    reason = results.get("agreement_missing_reason")
    if family in HEAD_PREDICTS_DATA_CLASSES:
        assert reason is None and 0.0 <= results["agreement"] <= 1.0 and results["backbone_head_accuracy"] is not None
    elif family in NO_HEAD:
        assert reason == "the backbone has no classifier head" and results["agreement"] is None
    else:  # an ImageNet-1k classifier
        assert reason == "the backbone's classifier head predicts 1000 classes, the dataset has 3"
    card = (out / "README.md").read_text()
    assert reason is None or reason in card
    # No test split here (validation only): the results and the card say so, and how to hold one out.
    assert "--test_dir" in results["splits"]["no_test_split"] and "**No test split: every figure" in card
    assert json.loads((out / "all_results.json").read_text()).get("agreement_missing_reason") == reason

    # 3. The explain CLI.
    assert explain_main(["--model", str(out), "--out", str(tmp_path / "explained"), f"{data}/test/red/0.png"]) == 0
    assert (tmp_path / "explained" / "0.png").is_file() and (tmp_path / "explained" / "0.html").is_file()

    # 4. AutoModel and pipeline (the package registers the model type).
    importlib.import_module("modeling_infodisent")
    model = AutoModel.from_pretrained(str(out))
    assert model.config.id2label == ID2LABEL and model.config.original_head == (family in KEPT_HEAD)
    predictions = pipeline("image-classification", model=str(out))(image)
    assert {p["label"] for p in predictions} == set(CLASSES)

    # 5. The Space's loader.
    from spaces.explainer import Explainer

    explainer = Explainer(str(out))
    explanation, pixel_values = explainer.explain(image, None)
    assert (
        explanation.label in CLASSES
        and pixel_values.shape[-2:] == saved(image, return_tensors="pt")["pixel_values"].shape[-2:]
    )
    assert explainer.gallery is not None

    # 6. The card's snippet, as written, from the folder's parent.
    snippet = re.search(r"```python\n(.*?)\n```", card, re.S).group(1)
    monkeypatch.chdir(out.parent)
    capsys.readouterr()
    exec(compile(snippet, "README.md", "exec"), {})
    assert {p["label"] for p in eval(capsys.readouterr().out.splitlines()[0])} == set(CLASSES)


@pytest.mark.parametrize("source_size", [(300, 200), (200, 333)])
def test_timm_processor_visible_region_is_what_the_model_sees(source_size, tmp_path):
    """The explanation's and gallery's geometry follows a timm processor's resize + centre crop: the source region
    `visible_region` names, resized to the input, is the processor's output (a 8-pixel shift is not)."""
    import numpy as np
    from transformers import AutoImageProcessor

    from modeling_infodisent.patches import visible_region

    processor = AutoImageProcessor.from_pretrained(str(write_hub_folder(tmp_path / "timm", "timm_cnn", CLASSES)))
    width, height = source_size
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack(
        [127 + 120 * np.sin(xx / 17), 127 + 120 * np.cos(yy / 23), 127 + 120 * np.sin((xx + yy) / 31)], -1
    )
    image = Image.fromarray(smooth.astype(np.uint8))
    mean, std = (torch.tensor(processor.data_config[k]).view(3, 1, 1) for k in ("mean", "std"))
    seen = ((processor(image)["pixel_values"][0] * std + mean) * 255).permute(1, 2, 0).numpy()
    left, top, right, bottom = visible_region(processor, source_size)
    size = seen.shape[1], seen.shape[0]

    def error(shift: int) -> float:
        crop = image.crop((round(left + shift), round(top), round(right + shift), round(bottom))).resize(
            size, Image.BICUBIC
        )
        return float(np.abs(seen - np.asarray(crop, dtype=float)).mean())

    assert error(0) < 3 and error(8) > 4 * error(0)
