"""The accelerate training script end to end (training/train.py), on a tiny random backbone and images built here."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import train_hooks
from conftest import tiny_resnet_config
from tiny_assets import run_script, two_process_launcher

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from huggingface_hub import ModelCard  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoModelForImageClassification,
    ResNetForImageClassification,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
    pipeline,
)

import modeling_infodisent  # noqa: E402,F401
from training import train as train_script  # noqa: E402
from training.data import load_image_dataset, to_rgb  # noqa: E402
from training.evaluation import evaluate  # noqa: E402
from training.features import FeatureCache  # noqa: E402

CLASSES = ["blue", "green", "red"]  # alphabetical, as imagefolder numbers them
N_TRAIN, N_TEST = 20, 6  # per class: 60 training images (48 train + 12 held out for validation) and 18 test images
N_FIT, N_VAL = 48, 12


def _write_imagefolder(root, seed):
    rng = np.random.default_rng(seed)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for c, name in enumerate(CLASSES):
            os.makedirs(os.path.join(root, split, name))
            for i in range(n):
                array = rng.integers(0, 90, (24, 24, 3)).astype(np.uint8)
                array[..., c] += 140
                image = Image.fromarray(array)
                # Mixed modes on purpose: the script must convert every image to RGB.
                image = image.convert("L") if i % 7 == 3 else image.convert("RGBA") if i % 7 == 5 else image
                image.save(os.path.join(root, split, name, f"{i}.png"))


def _write_backbone(folder, seed=0, labels=CLASSES):
    torch.manual_seed(seed)
    id2label = dict(enumerate(labels))
    config = tiny_resnet_config(num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    ResNetForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_assets")
    _write_imagefolder(str(root / "data"), seed=0)
    _write_backbone(str(root / "backbone"))
    return root


def base_args(assets, output_dir, cache="cache"):
    return [
        "--dataset_name",
        str(assets / "data"),
        "--backbone",
        str(assets / "backbone"),
        "--cache_dir",
        str(assets / cache),
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        "4",
        "--train_batch_size",
        "10",
        "--per_device_eval_batch_size",
        "4",
        "--learning_rate",
        "0.15",
        "--max_prototypes_per_class",
        "4",
        "--finetune_epochs",
        "1",
        "--train_val_split",
        "0.2",
    ]


# 48 rows at a global batch of 10 (lr 0.15 * sqrt(10/256) = 0.0296): 5 steps an epoch (the last one runs into the next
# epoch: no row dropped), 4 epochs = ceil(19.2) = 20 main steps + ceil(4.8) = 5 fine-tuning steps.
TOTAL_STEPS = 25


@pytest.fixture(scope="module")
def pushed_run(assets):
    """One run with --push_to_hub (HfApi patched: nothing leaves the machine) and per-epoch checkpoints."""
    import huggingface_hub.hf_api as hf_api

    calls = {"create_repo": [], "commits": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append((repo_id, kwargs))
        return hf_api.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        calls["commits"].append((repo_id, [op.path_in_repo for op in operations], kwargs))
        readme = [op for op in operations if op.path_in_repo == "README.md"]
        calls["readme"] = open(readme[0].path_or_fileobj, encoding="utf8").read() if readme else None

    output_dir = assets / "pushed"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_api.HfApi, "create_repo", create_repo)
        mp.setattr(hf_api.HfApi, "create_commit", create_commit)
        mp.setattr(hf_api.HfApi, "_validate_yaml", lambda self, *a, **k: None)  # a Hub call otherwise
        mp.setattr(hf_api, "is_xet_available", lambda: False)  # the single-commit path, through create_commit
        argv = base_args(assets, output_dir) + [
            "--gallery_top_k",
            "2",
            "--checkpointing_steps",
            "epoch",
            "--push_to_hub",
            "--hub_model_id",
            "me/tiny-infodisent",
        ]
        results = train_script.main(argv)
    return output_dir, results, calls, argv


def _test_images(assets):
    dataset, image_col, label_col, _ = load_image_dataset(str(assets / "data"), train_val_split=0.2)
    test = dataset["test"]
    return [to_rgb(im) for im in test[image_col]], np.array(test[label_col])


def test_output_folder_is_a_loadable_model(assets, pushed_run):
    output_dir, results, _, _ = pushed_run
    saved = json.load(open(output_dir / "all_results.json"))
    for key in (
        "eval_accuracy",
        "linear_probe_accuracy",
        "backbone_head_accuracy",
        "agreement",
        "train_runtime_s",
        "explanation_size_median",
        "explanation_size_p90",
        "prototypes_per_class",
        "distinct_channels_used",
        "test_accuracy",
        "test_linear_probe_accuracy",
        "test_backbone_head_accuracy",
        "test_agreement",
        "test_explanation_size_median",
    ):
        assert saved[key] is not None, key
    assert saved["eval_num_examples"] == N_VAL and saved["test_num_examples"] == 3 * N_TEST
    assert saved["splits"]["validation"]["rows"] == N_VAL and saved["splits"]["train"]["rows"] == N_FIT
    assert saved["splits"]["validation"]["source"].startswith("held out from train (12 of 60 rows")
    assert saved["splits"]["test"] == {
        "rows": 18,
        "source": "test",
        "used_for": "evaluated once, on the final model; never used for a decision",
    }
    assert saved["feature_cache_reused"] is False
    assert saved["prototypes_per_class"] == [4, 4, 4] and saved["explanation_size_p90"] <= 4
    assert saved["global_step"] == TOTAL_STEPS
    assert saved["schedule"]["global_batch"] == 10 and saved["schedule"]["steps_per_epoch"] == 5
    assert saved["schedule"]["learning_rate"] == pytest.approx(0.15 * (10 / 256) ** 0.5)
    # 25 steps x 10 rows = 5 full epochs of the 48 rows + 10 rows of the 6th: nothing dropped.
    assert saved["examples_seen"] == {"total": 250, "min_per_row": 5, "max_per_row": 6, "epochs": round(250 / 48, 3)}
    assert saved["pruning"]["validation_accuracy_after_finetuning"] == saved["eval_accuracy"]
    assert saved["pruning_recovered"] == saved["pruning"]["recovered"]

    images, labels = _test_images(assets)
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    processor = AutoImageProcessor.from_pretrained(output_dir)
    with torch.no_grad():
        logits = model(processor(images, return_tensors="pt")["pixel_values"]).logits
    predictions = logits.argmax(-1).numpy()
    assert float((predictions == labels).mean()) == saved["test_accuracy"]
    assert saved["test_accuracy"] >= 0.75  # chance is 1/3: training did happen

    # Independent check of the backbone-head numbers: the backbone's own classifier on the same images.
    backbone = ResNetForImageClassification.from_pretrained(assets / "backbone").eval()
    with torch.no_grad():
        teacher = backbone(processor(images, return_tensors="pt")["pixel_values"]).logits.argmax(-1).numpy()
    assert saved["test_backbone_head_accuracy"] == pytest.approx(float((teacher == labels).mean()))
    assert saved["test_agreement"] == pytest.approx(float((teacher == predictions).mean()))

    classifier = pipeline("image-classification", model=str(output_dir))
    for image, prediction in zip(images[:6], predictions[:6]):
        assert classifier(image)[0]["label"] == model.config.id2label[int(prediction)]


def test_push_to_hub_uploads_the_repo_with_its_card(pushed_run):
    output_dir, results, calls, argv = pushed_run
    assert [c[0] for c in calls["create_repo"]] == ["me/tiny-infodisent"] and calls["create_repo"][0][1]["exist_ok"]
    assert len(calls["commits"]) == 1
    repo_id, uploaded, _ = calls["commits"][0]
    assert repo_id == "me/tiny-infodisent"
    gallery = sorted(f for f in os.listdir(output_dir) if "gallery" in f)
    assert gallery, "the gallery module exists in this version: its files must be in the folder"
    # The model's code: the modeling file and every sibling it imports (what trust_remote_code loading needs).
    code = sorted(f for f in os.listdir(output_dir) if f.endswith(".py"))
    assert {"modeling_infodisent.py", "configuration_infodisent.py", "explanation.py", "rotation.py"} <= set(code)
    assert sorted(uploaded) == sorted(
        [
            "README.md",
            "all_results.json",
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            *code,
            *gallery,
        ]
    )
    # "epoch" checkpoints: every steps_per_epoch (5) steps of the 25
    assert sorted(d for d in os.listdir(output_dir) if d.startswith("epoch_")) == [f"epoch_{i}" for i in range(5)]

    card = ModelCard(calls["readme"])
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-classification"
    results_by_metric = {r.metric_type: r.metric_value for r in card.data.eval_results}
    # The data has a test split: the Hub's eval results are the test split's, evaluated once on the final model.
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert results_by_metric == {
        "accuracy": round(results["test_accuracy"], 4),
        "agreement": round(results["test_agreement"], 4),
    }
    assert card.data.base_model is None  # a local backbone folder is no Hub id
    text = calls["readme"]
    public_dataset = ".../" + "/".join(argv[1].split(os.sep)[-2:])  # no path of this machine in the card
    assert f"accelerate launch training/train.py {argv[0]} {public_dataset} " in text
    assert "import modeling_infodisent" in text and "trust_remote_code=True" in text
    assert f"{100 * results['linear_probe_accuracy']:.2f}%" in text


def test_resume_after_kill_equals_uninterrupted_run(assets, tmp_path, monkeypatch):
    straight = train_script.main(base_args(assets, tmp_path / "straight"))
    resumed_dir = tmp_path / "resumed"
    args = base_args(assets, resumed_dir) + ["--checkpointing_steps", "3"]
    with monkeypatch.context() as patch, pytest.raises(SystemExit):  # killed mid-epoch 1, after the step-9 checkpoint
        train_hooks.install(patch, stop_after_steps=10)
        train_script.main(args)
    assert not (resumed_dir / "model.safetensors").exists()
    with monkeypatch.context() as patch, pytest.raises(SystemExit):  # resumed, then killed again in fine-tuning
        train_hooks.install(patch, stop_after_steps=22)  # (after pruning at step 20)
        train_script.main(args + ["--resume_from_checkpoint", "latest"])
    state = json.load(open(resumed_dir / "step_21" / "infodisent_state.json"))
    assert state["phase"] == "finetune" and state["pruning"]["nonzero_after"] == 12
    resumed = train_script.main(args + ["--resume_from_checkpoint", "latest"])
    assert resumed["feature_cache_reused"] is True  # same data, backbone and preprocessing: no extraction

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(resumed_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for key in (
        "eval_accuracy",
        "test_accuracy",
        "agreement",
        "explanation_size_median",
        "global_step",
        "history",
        "pruning",
        "examples_seen",
    ):
        assert resumed[key] == straight[key], key


@pytest.mark.slow
def test_two_processes_shard_extraction_and_count_each_example_once(assets, pushed_run, tmp_path):
    output_dir = tmp_path / "two"
    args = base_args(assets, output_dir, cache="cache_two") + [
        "--gallery_top_k",
        "0",
        "--distill_weight",
        "0.5",
        "--loss",
        "sigmoid",
    ]
    done = run_script(args, launcher=two_process_launcher(), env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    two = json.load(open(output_dir / "all_results.json"))
    one = json.load(open(pushed_run[0] / "all_results.json"))
    assert two["num_processes"] == 2 and two["eval_num_examples"] == one["eval_num_examples"] == N_VAL
    assert two["test_num_examples"] == one["test_num_examples"] == 3 * N_TEST
    # The same global batch (2 x 5 = 1 x 10), the same steps, and every row used as often as in the 1-process run:
    # each epoch is one pass over all 48 rows whatever the number of processes, nothing dropped.
    assert two["schedule"]["global_batch"] == one["schedule"]["global_batch"] == 10
    assert two["schedule"]["per_device_train_batch_size"] == 5 and one["schedule"]["per_device_train_batch_size"] == 10
    assert two["schedule"]["learning_rate"] == one["schedule"]["learning_rate"]
    assert two["global_step"] == one["global_step"] == TOTAL_STEPS
    assert (
        two["examples_seen"]
        == one["examples_seen"]
        == {"total": 250, "min_per_row": 5, "max_per_row": 6, "epochs": round(250 / 48, 3)}
    )

    # Extraction was sharded (one shard per rank) and gives the same arrays as the one-process cache.
    for split, n in (("train", N_FIT), ("test", 3 * N_TEST), ("validation", N_VAL)):  # validation last: used below
        caches = {}
        for name in ("cache", "cache_two"):
            folders = [os.path.join(assets, name, f) for f in os.listdir(assets / name)]
            caches[name] = next(
                FeatureCache(f) for f in folders if json.load(open(os.path.join(f, "meta.json")))["split"] == split
            )
        assert len(caches["cache_two"].meta["shards"]) == 2 and len(caches["cache"].meta["shards"]) == 1
        rows = list(range(n))
        for key in ("features", "teacher_logits", "labels"):
            a, b = caches["cache"].__getitems__(rows)[key], caches["cache_two"].__getitems__(rows)[key]
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    # Same data, same backbone: the deterministic numbers agree exactly with the one-process run ...
    assert two["backbone_head_accuracy"] == one["backbone_head_accuracy"]
    assert two["linear_probe_accuracy"] == one["linear_probe_accuracy"]
    # ... and the 2-process evaluation of the model it trained equals a 1-process evaluation of that model.
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    single = evaluate(model, caches["cache"], batch_size=5)
    assert single["num_examples"] == N_VAL and single["accuracy"] == two["eval_accuracy"]
    assert single["agreement"] == two["agreement"]


def test_live_backbone_with_augmentation(assets, tmp_path):
    args = base_args(assets, tmp_path / "live", cache="cache_live") + ["--augment", "--gallery_top_k", "0"]
    args[args.index("--num_train_epochs") + 1] = "2"
    args[args.index("--finetune_epochs") + 1] = "0"  # pruned at the end, no fine-tuning
    results = train_script.main(args)
    cache_folders = os.listdir(assets / "cache_live")
    metas = [json.load(open(assets / "cache_live" / f / "meta.json")) for f in cache_folders]
    assert sorted(m["arrays"] for m in metas)[0] == ["labels", "logits", "pooled"]  # no feature maps cached
    images, labels = _test_images(assets)
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "live").eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path / "live")
    with torch.no_grad():
        predictions = model(processor(images, return_tensors="pt")["pixel_values"]).logits.argmax(-1).numpy()
    assert float((predictions == labels).mean()) == results["test_accuracy"]
    assert results["prototypes_per_class"] == [4, 4, 4] and results["global_step"] == 10  # ceil(2 * 48 / 10)
    assert (
        results["pruning"]["finetune_steps_run"] == 0
        and results["pruning"]["validation_accuracy_after_finetuning"]
        == results["pruning"]["validation_accuracy_after_pruning"]
    )


def test_dilated_last_stage_trains_saves_and_reloads_dilated(assets, tmp_path):
    """--dilate_last_stage: a 2x finer map, saved in the config (the reloaded model is dilated again, same logits),
    agreement still against the original classifier's own (undilated) predictions."""
    args = base_args(assets, tmp_path / "dilated", cache="cache_dilated") + ["--dilate_last_stage"]
    args += ["--gallery_top_k", "0"]
    results = train_script.main(args)
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "dilated").eval()
    plain = ResNetForImageClassification.from_pretrained(assets / "backbone").eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path / "dilated")
    images, labels = _test_images(assets)
    x = processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        grid = model.extract_features(x[:1]).shape[-2:]
        native = plain.resnet(x[:1]).last_hidden_state.shape[-2:]
        predictions = model(x).logits.argmax(-1).numpy()
        teacher = plain(x).logits.argmax(-1).numpy()
    assert model.config.dilate_last_stage and tuple(grid) == (2 * native[0], 2 * native[1])
    assert float((predictions == labels).mean()) == results["test_accuracy"]
    assert results["test_agreement"] == pytest.approx(float((teacher == predictions).mean()))
    assert not model.config.original_head  # the original classifier reads the undilated map: not kept


# ------------------------------------------------------------------------------------------------- errors
def _parquet_dataset(folder, train_labels, test_labels):
    import datasets

    os.makedirs(folder)
    image = Image.new("RGB", (8, 8))
    for split, labels in (("train", train_labels), ("test", test_labels)):
        ds = datasets.Dataset.from_dict(
            {"image": [image] * len(labels), "label": labels},
            features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
            if labels and isinstance(labels[0], str)
            else datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
        )
        ds.to_parquet(os.path.join(folder, f"{split}-00000.parquet"))
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown_dataset", "--dataset_name: the folder .* does not exist"),
        ("missing_image_column", r"Image column 'picture' not found; the dataset has columns \['image', 'label'\]"),
        ("missing_label_column", r"Label column 'category' not found; the dataset has columns \['image', 'label'\]"),
        ("string_labels", "must be a ClassLabel or an integer"),
        ("empty_split", "is empty"),
        ("missing_backbone", "--backbone: the folder .* does not exist"),
        ("backbone_without_processor", "has no image processor"),
        ("distill_without_matching_head", "--distill_weight > 0 needs a backbone whose own classifier"),
        ("one_class", r"^The training split has 4 rows of 1 class\(es\) only \(label 1\)"),
        ("dilate_a_vit", r"--dilate_last_stage: implemented for ResNet backbones; .* is a 'vit' model"),
    ],
)
def test_clear_errors(assets, tmp_path, case, message):
    args = base_args(assets, tmp_path / "out")

    def replace(flag, value):
        args[args.index(flag) + 1] = value

    if case == "unknown_dataset":
        replace("--dataset_name", str(tmp_path / "no" / "such" / "folder"))
    elif case == "missing_image_column":
        args += ["--image_column_name", "picture"]
    elif case == "missing_label_column":
        args += ["--label_column_name", "category"]
    elif case == "string_labels":
        replace("--dataset_name", _parquet_dataset(str(tmp_path / "str"), ["a", "b"], ["a"]))
    elif case == "empty_split":
        replace("--dataset_name", _parquet_dataset(str(tmp_path / "empty"), [0, 1], []))
    elif case == "missing_backbone":
        replace("--backbone", str(tmp_path / "no_backbone"))
    elif case == "backbone_without_processor":
        folder = tmp_path / "bare"
        _write_backbone(str(folder))
        os.remove(folder / "preprocessor_config.json")
        replace("--backbone", str(folder))
    elif case == "one_class":
        replace("--dataset_name", _parquet_dataset(str(tmp_path / "one"), [1, 1, 1, 1, 1], [0, 1]))
    elif case == "distill_without_matching_head":
        folder = tmp_path / "other_head"
        _write_backbone(str(folder), labels=["cat", "dog"])
        replace("--backbone", str(folder))
        args += ["--distill_weight", "0.5"]
    elif case == "dilate_a_vit":
        folder = tmp_path / "vit"
        config = ViTConfig(image_size=64, patch_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
        config.intermediate_size = 32
        ViTModel(config).save_pretrained(folder)
        ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
        replace("--backbone", str(folder))
        args += ["--dilate_last_stage"]
    with pytest.raises(ValueError, match=message):
        train_script.main(args)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_log_rounds_its_figures():
    from training.train import _shown

    assert [_shown(v) for v in (0.9733333333333334, 853.3333333333334, 8.0, 0, None)] == [
        "0.973",
        "853.333",
        "8",
        "0",
        "n/a",
    ]
