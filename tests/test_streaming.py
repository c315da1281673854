"""``--streaming`` (training/streaming.py): datasets' iterable datasets through the live backbone, each process reading
its own shard; on a tiny parquet / imagefolder dataset and a tiny random backbone."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import train_hooks
from tiny_assets import CLASSES, run_script, two_process_launcher, write_backbone, write_imagefolder

datasets = pytest.importorskip("datasets")
pytest.importorskip("accelerate")

import pyarrow.parquet as pq  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from modeling_infodisent.modeling_infodisent import InfoDisentForImageClassification, InfoDisentPooling  # noqa: E402
from training import streaming  # noqa: E402
from training import train as train_script  # noqa: E402
from training.data import load_image_dataset, make_transform  # noqa: E402
from training.evaluation import evaluate, live_featurizer  # noqa: E402
from training.features import LiveImages  # noqa: E402
from training.fit import FitConfig, fit_head  # noqa: E402

N_SHARD, N_VAL, N_TEST = 12, 9, 7  # 2 training parquet files of 12 rows; validation and test one file each


def _write_parquet(root, seed=0):
    """``root/{train/part-0,train/part-1,validation/part-0,test/part-0}.parquet`` of coloured noise (distinct
    images)."""
    rng = np.random.default_rng(seed)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    for path, n in (
        ("train/part-0", N_SHARD),
        ("train/part-1", N_SHARD),
        ("validation/part-0", N_VAL),
        ("test/part-0", N_TEST),
    ):
        images, labels = [], []
        for i in range(n):
            array = rng.integers(0, 90, (16, 16, 3)).astype(np.uint8)
            array[..., i % 3] += 140
            images.append(Image.fromarray(array))
            labels.append(i % 3)
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
            os.path.join(root, f"{path}.parquet")
        )
    return str(root)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    _write_parquet(root / "parquet")
    write_imagefolder(root / "images", n_train=6, n_test=3)
    write_backbone(root / "backbone")
    return root


def _train_ids(folder) -> list[str]:
    """The content id (`streaming._example_id`) of every training row, read from the parquet files directly."""
    ids = []
    for name in ("part-0", "part-1"):
        table = pq.read_table(os.path.join(folder, "train", f"{name}.parquet")).to_pylist()
        ids += [streaming._example_id(row["image"], row["label"]) for row in table]
    return ids


def test_two_processes_read_every_example_once_per_epoch(assets, tmp_path):
    output_dir, ids_file = tmp_path / "model", tmp_path / "ids.json"
    args = [
        "--streaming",
        "--dataset_name",
        str(assets / "parquet"),
        "--backbone",
        str(assets / "backbone"),
        "--output_dir",
        str(output_dir),
        "--max_train_steps",
        "6",
        "--train_batch_size",
        "8",
        "--max_prototypes_per_class",
        "2",
        "--strict_prototype_budget",
        "--finetune_steps",
        "3",
        "--finetune_max_rounds",
        "1",
        "--learning_rate",
        "0.1",
        "--shuffle_buffer_size",
        "5",
    ]
    hooks = {"record_stream_ids": str(ids_file)}
    done = run_script(args, launcher=two_process_launcher(), env={"HF_HUB_OFFLINE": "1"}, hooks=hooks)
    assert done.returncode == 0, done.stderr[-4000:]
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "all_results.json"} <= set(
        os.listdir(output_dir)
    )
    results = json.load(open(output_dir / "all_results.json"))
    # The global batch of 8 is 2 x 4, as with the cached path; 6 main + 3 fine-tuning steps = 72 examples = 3 epochs.
    assert results["num_processes"] == 2 and results["global_step"] == 9
    assert results["schedule"]["global_batch"] == 8 and results["schedule"]["per_device_train_batch_size"] == 4
    assert results["schedule"]["steps_per_epoch"] == 3 and results["streaming"]["train_rows"] == 2 * N_SHARD
    assert results["examples_seen"] == {
        "total": 72,
        "epochs": 3.0,
        "per_process_by_epoch": [{"0": 12, "1": 12, "2": 12}, {"0": 12, "1": 12, "2": 12}],
    }
    # Each process read its own parquet file: over the two, every training example exactly once in every epoch.
    per_process = json.load(open(ids_file))
    expected = sorted(_train_ids(assets / "parquet"))
    assert len(set(expected)) == 2 * N_SHARD
    for epoch in ("0", "1", "2"):
        assert sorted(per_process[0][epoch] + per_process[1][epoch]) == expected
        assert not set(per_process[0][epoch]) & set(per_process[1][epoch])
    # The validation and test streams (one file each: split example by example) were evaluated in full.
    assert results["eval_num_examples"] == N_VAL and results["test_num_examples"] == N_TEST
    assert results["splits"]["validation"]["rows"] == N_VAL and results["splits"]["test"]["rows"] == N_TEST
    assert results["linear_probe_accuracy"] is None and results["linear_probe_skipped"].startswith("--streaming")
    assert results["feature_cache_reused"] is False


def _no_noise_model(backbone):
    from transformers import AutoModel

    model = InfoDisentForImageClassification.from_backbone(
        AutoModel.from_pretrained(backbone), id2label=dict(enumerate(CLASSES))
    )
    for module in model.modules():
        if isinstance(module, InfoDisentPooling):
            module.noise = False  # the Gumbel noise is drawn per row in batch order: the only order-dependent part
    return model


def test_streamed_fit_equals_the_map_style_fit_on_full_batches(assets):
    """With the whole training split in every batch (and no Gumbel noise) the row order does not matter: a streamed
    fit and a map-style fit of the same data must give the same head and the same per-row predictions."""
    from transformers import AutoImageProcessor

    folder, backbone = str(assets / "parquet"), str(assets / "backbone")
    processor = AutoImageProcessor.from_pretrained(backbone)
    config = dict(
        max_train_steps=4,
        train_batch_size=2 * N_SHARD,
        max_prototypes_per_class=2,
        finetune_steps=2,
        finetune_max_rounds=1,
        grow_prototype_budget=False,
        learning_rate=0.3,
        seed=0,
        show_progress=False,
    )
    transform = make_transform(processor, "image", "label")
    heads, evaluations = [], []
    for streamed in (False, True):
        torch.manual_seed(0)
        model = _no_noise_model(backbone)
        if streamed:
            splits, rows, image_col, _, _ = streaming.load_streaming_dataset(folder, None, None)
            train = streaming.StreamSplit(splits["train"], transform, image_col, rows["train"], shuffle_buffer=7)
            val = streaming.StreamSplit(splits["validation"], transform, image_col, rows["validation"])
        else:
            dataset = load_image_dataset(folder)[0]
            train, val = LiveImages(dataset["train"], transform), LiveImages(dataset["validation"], transform)
        result = fit_head(model, train, val, FitConfig(**config), featurizer=live_featurizer(model))
        heads.append(model.head.state_dict())
        evaluations.append(evaluate(model, val, 4, featurizer=live_featurizer(model)))
        assert result["global_step"] == 6 and result["num_examples"] == N_VAL
    for key in heads[0]:
        torch.testing.assert_close(heads[0][key], heads[1][key], rtol=1e-4, atol=1e-5)
    for key in ("labels", "predictions", "indices"):
        np.testing.assert_array_equal(evaluations[0][key], evaluations[1][key])
    assert evaluations[0]["accuracy"] == evaluations[1]["accuracy"]


def test_streamed_resume_from_a_step_checkpoint_gives_the_uninterrupted_weights(assets, tmp_path, monkeypatch):
    """An imagefolder stream (--train_dir / --validation_dir), stopped at a step checkpoint and resumed: the resumed
    run replays each stream to the step (epoch 0 read, epoch 1 skipped unread, 4 rows of epoch 2) and ends with the
    same weights as an uninterrupted run."""
    base = [
        "--streaming",
        "--train_dir",
        str(assets / "images" / "train"),
        "--validation_dir",
        str(assets / "images" / "test"),
        "--backbone",
        str(assets / "backbone"),
        "--max_train_steps",
        "11",
        "--train_batch_size",
        "4",
        "--max_prototypes_per_class",
        "2",
        "--finetune_steps",
        "2",
        "--learning_rate",
        "0.1",
        "--shuffle_buffer_size",
        "5",
        "--max_eval_samples",
        "5",
    ]
    full = train_script.main(base + ["--output_dir", str(tmp_path / "full")])
    with monkeypatch.context() as patch, pytest.raises(SystemExit, match="Stopped after 10 steps"):
        train_hooks.install(patch, stop_after_steps=10)
        train_script.main(base + ["--output_dir", str(tmp_path / "part"), "--checkpointing_steps", "10"])
    resumed = train_script.main(
        base
        + ["--output_dir", str(tmp_path / "part"), "--checkpointing_steps", "10", "--resume_from_checkpoint", "latest"]
    )
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert full["global_step"] == resumed["global_step"] == 13
    # 18 training images, batch 4: 13 steps = 52 examples; the resumed run used the 12 of its last 3 steps.
    assert full["examples_seen"] == {
        "total": 52,
        "epochs": 2.889,
        "per_process_by_epoch": [{"0": 18, "1": 18, "2": 16}],
    }
    assert resumed["examples_seen"] == {"total": 12, "epochs": 0.667, "per_process_by_epoch": [{"2": 12}]}
    # --max_eval_samples bounds the validation stream (9 images).
    assert full["eval_num_examples"] == resumed["eval_num_examples"] == 5
    assert full["splits"]["validation"]["rows"] == 5


def test_unknown_length_needs_max_train_steps(assets, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(streaming, "_count_rows", lambda builder, files: None)  # as for a Hub id without a row count
    args = [
        "--streaming",
        "--dataset_name",
        str(assets / "parquet"),
        "--backbone",
        str(assets / "backbone"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    assert train_script.cli(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --streaming: the number of training rows is unknown (the dataset's info gives no row count), so the "
        "step-based schedule has no budget: pass --max_train_steps."
    )
    assert not os.path.exists(tmp_path / "out")


def test_a_stream_without_a_validation_split_is_refused(assets, tmp_path, capsys):
    args = [
        "--streaming",
        "--train_dir",
        str(assets / "images" / "train"),
        "--backbone",
        str(assets / "backbone"),
        "--output_dir",
        str(tmp_path / "out"),
        "--max_train_steps",
        "2",
    ]
    assert train_script.cli(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --streaming needs a validation split (a validation/val/dev split, or --validation_dir): a stream of "
        "unknown order cannot be split into train and validation."
    )


def test_resolve_train_rows():
    class Args:
        max_train_steps, num_train_epochs, finetune_epochs, checkpointing_steps = 10, None, None, None

    assert streaming.resolve_train_rows(24, Args, 8) == 24
    assert streaming.resolve_train_rows(None, Args, 8) == 80  # an "epoch" is then the step budget
    Args.finetune_epochs = 1.0
    with pytest.raises(ValueError, match="^--finetune_epochs needs the number of training rows"):
        streaming.resolve_train_rows(None, Args, 8)


def test_max_eval_samples_needs_streaming(capsys):
    assert train_script.cli(["--max_eval_samples", "5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --max_eval_samples is only used with --streaming (the cached path evaluates whole splits)."
    )
