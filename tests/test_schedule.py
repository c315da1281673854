"""The head's schedule (training/schedule.py, training/fit.py, training/checkpoints.py): a fixed global batch that
drops no row, a step budget with a floor, early stopping on the validation split with the best state kept, pruning
recovery, and checkpoints that resume bit-identically, skip a broken state and refuse to mix two runs."""

import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import tiny_resnet_config
from modeling_infodisent import InfoDisentForImageClassification
from training.checkpoints import STATE_FILE, find_latest_checkpoint, write_state
from training.fit import FitConfig, fit_head
from training.schedule import StepBatchSampler, plan_schedule, rank_slice, scaled_learning_rate


class Features(torch.utils.data.Dataset):
    """Cached-feature rows (32 x 2 x 2 maps of the tiny model) whose mean shifts with the label: each channel is
    weakly informative, so a dense head beats one that keeps a single prototype per class."""

    def __init__(self, n, seed, shift=0.5, num_labels=3):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % num_labels
        self.features = torch.randn(n, 32, 2, 2, generator=g) + self.labels[:, None, None, None] * shift

    def __len__(self):
        return len(self.labels)

    def array(self, name):
        return {"labels": self.labels.numpy()}[name]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return {"features": self.features[index], "labels": self.labels[index], "index": index}


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return InfoDisentForImageClassification.from_backbone(tiny_resnet_config(), id2label={0: "a", 1: "b", 2: "c"})


def head_weights(model):
    return {k: v.detach().clone() for k, v in model.head.state_dict().items()}


# ------------------------------------------------------------------------------------------------ the sampler
@pytest.mark.parametrize("num_rows, global_batch", [(30, 256), (48, 10), (1000, 256), (7, 3)])
def test_every_row_once_an_epoch_and_the_same_global_batch_on_any_process_count(num_rows, global_batch):
    steps = 3 * num_rows // global_batch + 3
    one = StepBatchSampler(num_rows, global_batch, seed=5)
    stream = [row for step in range(steps) for row in one.rows_of_step(step)]
    # Every epoch (N consecutive positions of the stream) is a permutation of all rows: nothing dropped, no repeat.
    for epoch in range(len(stream) // num_rows):
        assert sorted(stream[epoch * num_rows : (epoch + 1) * num_rows]) == list(range(num_rows))
    assert all(len(one.rows_of_step(s)) == global_batch for s in range(steps))  # every batch full
    for world in (2, 3):
        ranks = [StepBatchSampler(num_rows, global_batch, seed=5, rank=r, world=world) for r in range(world)]
        for step in range(steps):  # the processes' slices put together are the 1-process batch
            assert [row for s in ranks for row in s.rows_of_step(step)] == one.rows_of_step(step)
    resumed = iter(StepBatchSampler(num_rows, global_batch, seed=5, start_step=2))
    assert next(resumed) == one.rows_of_step(2)
    assert StepBatchSampler(num_rows, global_batch, seed=6).rows_of_step(0) != one.rows_of_step(0)


def test_rank_slices_and_learning_rate_scaling():
    assert [rank_slice(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert scaled_learning_rate(0.01, 256) == 0.01
    assert scaled_learning_rate(0.01, 1024) == pytest.approx(0.02)
    assert scaled_learning_rate(0.01, 1024, "linear") == pytest.approx(0.04)
    assert scaled_learning_rate(0.01, 1024, "none") == 0.01
    # The per-device size keeps transformers' meaning; the default global batch does not depend on the processes.
    assert FitConfig().global_batch_size(1) == FitConfig().global_batch_size(4) == 256
    assert FitConfig(per_device_train_batch_size=64).global_batch_size(4) == 256


# ------------------------------------------------------------------------------------------------- the budget
@pytest.mark.parametrize(
    "num_rows, main, early",
    [(30, 300, True), (3000, 300, True), (10_000, 391, True), (60_000, 2344, True), (500_000, 3000, True)],
)
def test_budget_has_a_floor_and_a_cap(num_rows, main, early):
    plan = plan_schedule(num_rows, 256, FitConfig())
    assert (plan.main_steps, plan.main_min_steps, plan.early_stopping) == (main, 300, early)
    assert (plan.finetune_steps, plan.finetune_max_rounds, plan.eval_steps) == (60, 4, -(-main // 15))


def test_epochs_and_steps_are_explicit_overrides():
    plan = plan_schedule(30, 256, FitConfig(num_train_epochs=3, finetune_epochs=2))
    assert (plan.main_steps, plan.main_min_steps, plan.early_stopping) == (1, 1, False)  # ceil(90 / 256)
    assert (plan.finetune_steps, plan.finetune_max_rounds) == (1, 1)
    plan = plan_schedule(3000, 256, FitConfig(num_train_epochs=3, max_train_steps=7, max_prototypes_per_class=0))
    assert (plan.main_steps, plan.early_stopping, plan.finetune_steps) == (7, False, 0)
    with pytest.raises(ValueError, match=r"^num_train_epochs must be > 0, got 0\.$"):
        FitConfig(num_train_epochs=0).validate()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num_train_epochs", "0"], "argument --num_train_epochs: must be a finite number in (0, 1,000,000], got 0"),
        (["--max_train_steps", "-3"], "argument --max_train_steps: must be an integer in [1, 1,000,000,000], got -3"),
        (["--train_batch_size", "ten"], "argument --train_batch_size: not an integer: 'ten'"),
        (["--pruning_tolerance", "nan"], "argument --pruning_tolerance: must be a finite number in [0, 1], got nan"),
    ],
)
def test_bad_schedule_arguments_are_refused_when_read(argv, message):
    # The parser raises the script's UsageError, which `cli` prints as one `error: ...` line with exit status 2
    # (tests/test_train_cli.py checks that end to end).
    from training import train as train_script
    from training.checks import UsageError

    with pytest.raises(UsageError) as error:
        train_script.parse_args(argv)
    assert str(error.value) == message


@pytest.mark.parametrize("num_rows", [30, 3000])
def test_tiny_datasets_get_at_least_the_floor_of_steps(num_rows):
    """The defaults (global batch 256, floor 300 steps): 30 rows get 300 steps (2,560 epochs), 3,000 rows 300 steps
    (25.6 epochs) rather than 10 epochs (118 steps)."""
    config = FitConfig(eval_steps=50, finetune_steps=5, show_progress=False)
    result = fit_head(tiny_model(), Features(num_rows, 0), Features(30, 1), config)
    schedule = result["schedule"]
    assert schedule["main_steps"] == 300 and schedule["main_steps_run"] == 300 and not schedule["stopped_early"]
    pruning = result["pruning"]
    finetuned = pruning["finetune_steps_run"] + sum(a["finetune_steps_run"] for a in pruning["attempts"])
    assert result["global_step"] >= 300 + 5 and result["global_step"] == 300 + finetuned
    seen = result["examples_seen"]
    assert seen["total"] == 256 * result["global_step"]
    assert seen["max_per_row"] - seen["min_per_row"] <= 1  # whole epochs, plus at most one partial pass


# ---------------------------------------------------------------------------------------- early stopping, best
def test_main_phase_stops_early_and_keeps_its_best_state():
    config = FitConfig(
        train_batch_size=32,
        min_train_steps=10,
        budget_epochs=100,
        eval_steps=5,
        early_stopping_patience=2,
        max_prototypes_per_class=0,
        show_progress=False,
    )
    result = fit_head(tiny_model(), Features(96, 0, shift=3.0), Features(30, 1, shift=3.0), config)
    schedule, history = result["schedule"], result["history"]
    assert schedule["main_steps"] == 300 and schedule["stopped_early"] and schedule["main_steps_run"] < 300
    # Evaluations from the floor (step 10) on are candidates for the best state; it stopped at the first one that
    # made 2 candidates in a row without a new best ...
    candidates = [r for r in history if r["step"] >= 10]
    assert [r["step"] for r in history if r["step"] < 10] == [5]
    best, since, stop = -1.0, 0, None
    for record in candidates:
        best, since = (record["eval_accuracy"], 0) if record["eval_accuracy"] > best else (best, since + 1)
        if since >= 2:
            stop = record["step"]
            break
    assert stop == history[-1]["step"] == schedule["main_steps_run"]
    # ... and the model is in its best state, not the last one.
    assert result["accuracy"] == max(r["eval_accuracy"] for r in candidates) and result["pruning"] is None


# --------------------------------------------------------------------------------------------------- pruning
def test_pruning_recovery_is_logged_and_reported(caplog):
    config = FitConfig(
        train_batch_size=32,
        max_train_steps=30,
        eval_steps=10,
        max_prototypes_per_class=4,
        finetune_steps=10,
        finetune_max_rounds=3,
        pruning_tolerance=0.5,
        show_progress=False,
    )
    with caplog.at_level(logging.INFO, logger="training.fit"):
        result = fit_head(tiny_model(), Features(96, 0), Features(60, 1), config)
    pruning = result["pruning"]
    assert pruning["recovered"] is True and pruning["finetune_rounds"] == 1 and pruning["finetune_steps_run"] == 10
    assert pruning["validation_accuracy_before_pruning"] == result["history"][2]["eval_accuracy"]  # step 30, last
    assert pruning["validation_accuracy_after_pruning"] == result["history"][3]["eval_accuracy"]
    assert (
        result["history"][3]["phase"] == "pruned"
        and result["accuracy"] == pruning["validation_accuracy_after_finetuning"]
    )
    assert (pruning["nonzero_before"], pruning["nonzero_after"]) == (96, 12) and "warning" not in pruning
    text = caplog.text
    assert (
        f"Pruned to 4 prototypes per class (12 of 96 weights kept, {100 * pruning['kept_weight_fraction']:.1f}% of the "
        f"weight mass, {pruning['distinct_channels_used']} distinct channels used): validation accuracy "
        f"{pruning['validation_accuracy_before_pruning']:.4f} before pruning, "
        f"{pruning['validation_accuracy_after_pruning']:.4f} right after"
    ) in text
    assert f"{pruning['validation_accuracy_after_finetuning']:.4f} after fine-tuning (recovered)" in text


def test_a_run_that_does_not_recover_says_so(caplog):
    """One prototype per class out of 32 weakly informative channels, and a fine-tuning rate too small to help: the
    accuracy falls by more than the tolerance, fine-tuning runs all its rounds, and the result says it."""
    config = FitConfig(
        train_batch_size=32,
        max_train_steps=40,
        eval_steps=10,
        max_prototypes_per_class=1,
        finetune_steps=4,
        finetune_max_rounds=2,
        pruning_tolerance=0.02,
        finetune_learning_rate=1e-9,
        grow_prototype_budget=False,
        show_progress=False,
    )
    with caplog.at_level(logging.INFO, logger="training.fit"):
        result = fit_head(tiny_model(), Features(150, 0, shift=0.3), Features(150, 1, shift=0.3), config)
    pruning = result["pruning"]
    before, after = pruning["validation_accuracy_before_pruning"], pruning["validation_accuracy_after_finetuning"]
    assert before - after > 0.02 and pruning["recovered"] is False and pruning["attempts"] == []
    assert pruning["finetune_rounds"] == 2 and pruning["finetune_steps_run"] == 8 and result["global_step"] == 48
    assert pruning["accuracy_change"] == after - before
    assert pruning["warning"] == (
        f"validation accuracy {after:.4f} after pruning and 8 fine-tuning steps is {before - after:.4f} below its "
        "value "
        f"before pruning ({before:.4f}), more than the tolerance 0.02"
    )
    assert "after fine-tuning (NOT recovered within 0.02)" in caplog.text
    assert [r.levelname for r in caplog.records if "NOT recovered" in r.getMessage()] == ["WARNING"]


def test_pruning_that_does_not_recover_doubles_the_budget_from_the_head_before_pruning(caplog, tmp_path):
    """The run above with the default `grow_prototype_budget`: each budget that does not recover is recorded, the head
    before pruning comes back and is pruned to twice the budget, until the accuracy recovers (at the latest with every
    channel kept); a resume in the middle of a later budget ends bit-identical."""
    config = dict(
        train_batch_size=32,
        max_train_steps=40,
        eval_steps=10,
        max_prototypes_per_class=1,
        finetune_steps=4,
        finetune_max_rounds=2,
        pruning_tolerance=0.02,
        finetune_learning_rate=1e-9,
        show_progress=False,
        output_dir=str(tmp_path / "straight"),
        checkpointing_steps=1,
    )
    data = Features(150, 0, shift=0.3), Features(150, 1, shift=0.3)
    model = tiny_model()
    with caplog.at_level(logging.INFO, logger="training.fit"):
        result = fit_head(model, *data, FitConfig(**config))
    pruning, attempts = result["pruning"], result["pruning"]["attempts"]
    before = pruning["validation_accuracy_before_pruning"]
    budgets = [a["max_prototypes_per_class"] for a in attempts] + [pruning["max_prototypes_per_class"]]
    assert len(attempts) >= 1 and budgets == [min(2**i, 32) for i in range(len(budgets))]
    assert all(a["validation_accuracy_after_finetuning"] < before - 0.02 for a in attempts)
    assert all(a["finetune_steps_run"] == 8 for a in attempts)  # every failed budget ran all its rounds
    assert pruning["recovered"] is True and "warning" not in pruning
    assert pruning["validation_accuracy_after_finetuning"] >= before - 0.02
    mask = model.head.classifier.prototype_mask
    assert (mask.sum(dim=1) == budgets[-1]).all()  # pruned once, to the final budget, from the unpruned head
    assert result["global_step"] == 40 + 8 * len(attempts) + pruning["finetune_steps_run"]
    assert "back to the head before pruning, pruning to 2" in caplog.text
    # Resume halfway through the second budget's fine-tuning: the head before pruning comes from the checkpoint.
    step = 40 + 8 + 2
    resumed_model = tiny_model(seed=1)
    resumed = fit_head(
        resumed_model,
        *data,
        FitConfig(
            **{
                **config,
                "output_dir": str(tmp_path / "resumed"),
                "resume_from_checkpoint": str(tmp_path / "straight" / f"step_{step}"),
            }
        ),
    )
    assert resumed["pruning"] == pruning and resumed["global_step"] == result["global_step"]
    for name, tensor in head_weights(resumed_model).items():
        assert torch.equal(tensor, head_weights(model)[name]), name


def test_fine_tuning_keeps_the_latest_of_equally_good_rounds(monkeypatch):
    """Validation accuracy level over all fine-tuning rounds (and short of recovery): the head keeps the last round's
    state, not the first (a tie in fine-tuning means the same accuracy after more training with the mask fixed)."""
    from training import fit

    seen = []

    def level_evaluate(model, data, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.head.state_dict().items()})
        in_main = len(seen) <= 2  # steps 10 and 20 of the main phase
        return {"accuracy": 0.9 if in_main else 0.5, "explanation_size_median": 1.0}

    monkeypatch.setattr(fit, "evaluate", level_evaluate)
    config = FitConfig(
        train_batch_size=32,
        max_train_steps=20,
        eval_steps=10,
        max_prototypes_per_class=2,
        finetune_steps=4,
        finetune_max_rounds=3,
        pruning_tolerance=0.01,
        grow_prototype_budget=False,
        show_progress=False,
    )
    model = tiny_model()
    result = fit_head(model, Features(96, 0), Features(30, 1), config)
    assert result["pruning"]["finetune_rounds"] == 3 and result["pruning"]["recovered"] is False
    # evaluations: main x2, right after pruning, rounds 1-3, the final one
    assert len(seen) == 7
    round_1, round_3, final = seen[3], seen[5], seen[6]
    assert all(torch.equal(final[k], round_3[k]) for k in final)
    assert not all(torch.equal(final[k], round_1[k]) for k in final)


# ---------------------------------------------------------------------------------------------- checkpoints
def _resume_config(output_dir, **kwargs):
    values = dict(
        train_batch_size=32,
        min_train_steps=10,
        budget_epochs=100,
        eval_steps=5,
        early_stopping_patience=2,
        max_prototypes_per_class=4,
        finetune_steps=6,
        finetune_max_rounds=2,
        output_dir=str(output_dir),
        show_progress=False,
    )
    values.update(kwargs)
    return FitConfig(**values)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """An uninterrupted run that stops early, prunes and fine-tunes, with a checkpoint at every step."""
    folder = tmp_path_factory.mktemp("straight")
    model = tiny_model()
    train, val = Features(96, 0, shift=3.0), Features(30, 1, shift=3.0)
    result = fit_head(model, train, val, _resume_config(folder, checkpointing_steps=1))
    return folder, result, head_weights(model), (train, val)


def test_resume_is_bit_identical_mid_phase_and_across_early_stopping(straight_run, tmp_path):
    folder, straight, weights, (train, val) = straight_run
    main_run, pruned_at = straight["schedule"]["main_steps_run"], straight["pruning"]["pruned_at_step"]
    assert straight["schedule"]["stopped_early"] and pruned_at == main_run < 300
    state = json.load(open(folder / f"step_{main_run}" / STATE_FILE))
    assert state["phase"] == "main" and state["phase_done"] is True  # the early-stopping decision is checkpointed
    assert state["best_step"] < main_run and state["evals_since_best"] >= 2
    # mid main phase, at the early-stopping decision (restore the best state, prune), mid fine-tuning
    for step in (7, main_run, main_run + 3):
        model = tiny_model(seed=1)  # another initialisation: everything must come from the checkpoint
        config = _resume_config(tmp_path / f"resumed_{step}", resume_from_checkpoint=str(folder / f"step_{step}"))
        resumed = fit_head(model, train, val, config)
        for name, tensor in head_weights(model).items():
            assert torch.equal(tensor, weights[name]), (step, name)
        for key in ("accuracy", "history", "pruning", "global_step", "schedule", "examples_seen"):
            assert resumed[key] == straight[key], (step, key)


def test_latest_skips_a_checkpoint_whose_state_does_not_parse(straight_run, tmp_path, caplog):
    folder, straight, weights, (train, val) = straight_run
    last = straight["global_step"]
    output = tmp_path / "out"
    output.mkdir()
    for step in (last - 2, last - 1):  # copy two checkpoints, then break the newest one's state
        shutil.copytree(folder / f"step_{step}", output / f"step_{step}")
    (output / f"step_{last - 1}" / STATE_FILE).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="training.checkpoints"):
        assert find_latest_checkpoint(str(output)) == str(output / f"step_{last - 2}")
    assert f"Skipping the checkpoint {output / f'step_{last - 1}'}: its {STATE_FILE} does not parse" in caplog.text
    model = tiny_model(seed=1)
    fit_head(model, train, val, _resume_config(output, resume_from_checkpoint="latest"))
    assert all(torch.equal(t, weights[n]) for n, t in head_weights(model).items())
    # Named explicitly, the broken checkpoint is refused with the file's name.
    broken = output / f"step_{last - 1}"
    with pytest.raises(ValueError, match=rf"^The checkpoint state '{broken / STATE_FILE}' does not parse"):
        fit_head(tiny_model(), train, val, _resume_config(output, resume_from_checkpoint=str(broken)))


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _nan_weights(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    key = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    "damage, why",
    [(_truncate, "cannot be read (SafetensorError: "), (_nan_weights, "holds 3 NaN or infinite values in")],
)
def test_latest_skips_a_checkpoint_whose_weights_do_not_load(straight_run, tmp_path, caplog, damage, why):
    """Issue 26: a truncated or NaN model.safetensors ended in a SafetensorError traceback, and `latest` chose it."""
    folder, straight, weights, (train, val) = straight_run
    last = straight["global_step"]
    output = tmp_path / "out"
    output.mkdir()
    for step in (last - 2, last - 1):
        shutil.copytree(folder / f"step_{step}", output / f"step_{step}")
    broken = output / f"step_{last - 1}"
    damage(broken / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="training.checkpoints"):
        assert find_latest_checkpoint(str(output)) == str(output / f"step_{last - 2}")
    assert (
        f"Skipping the checkpoint {broken}: The checkpoint file '{broken / 'model.safetensors'}' {why}" in caplog.text
    )
    model = tiny_model(seed=1)
    fit_head(model, train, val, _resume_config(output, resume_from_checkpoint="latest"))
    assert all(torch.equal(t, weights[n]) for n, t in head_weights(model).items())  # the previous good one, resumed
    # Named explicitly, the broken checkpoint is one ValueError naming the file (the script prints it as one line).
    with pytest.raises(
        ValueError, match="^" + re.escape(f"The checkpoint file '{broken / 'model.safetensors'}' {why}")
    ):
        fit_head(tiny_model(), train, val, _resume_config(output, resume_from_checkpoint=str(broken)))
    # No usable checkpoint at all: one line saying so.
    damage(output / f"step_{last - 2}" / "model.safetensors")
    with pytest.raises(ValueError, match=r"no usable checkpoint .* \(2 skipped: see the warnings above\)\.$"):
        find_latest_checkpoint(str(output))


def test_resuming_with_other_arguments_is_refused(straight_run, tmp_path, caplog):
    folder, straight, weights, (train, val) = straight_run
    checkpoint = str(folder / "step_7")
    config = _resume_config(
        tmp_path, resume_from_checkpoint=checkpoint, seed=1, learning_rate=0.02, max_prototypes_per_class=5
    )
    with pytest.raises(ValueError) as error:
        fit_head(tiny_model(), train, val, config)
    assert str(error.value) == (
        f"Cannot resume from {checkpoint!r}: it was trained with other arguments: --learning_rate 0.01 (now 0.02); "
        "--max_prototypes_per_class 4 (now 5); --seed 0 (now 1). Resume with the same arguments, or pass "
        "--ignore_config_change to continue with the new ones anyway."
    )
    with pytest.raises(ValueError, match=r"other arguments: \(global batch\) 32 \(now 16\)"):
        fit_head(
            tiny_model(), train, val, _resume_config(tmp_path, resume_from_checkpoint=checkpoint, train_batch_size=16)
        )
    # Arguments that do not change the training (checkpointing, where it goes, evaluation batch) are fine, and the
    # refusal can be overridden explicitly.
    fit_head(
        tiny_model(),
        train,
        val,
        _resume_config(
            tmp_path / "a", resume_from_checkpoint=checkpoint, per_device_eval_batch_size=7, checkpointing_steps=3
        ),
    )
    with caplog.at_level(logging.WARNING, logger="training.fit"):
        fit_head(
            tiny_model(),
            train,
            val,
            _resume_config(tmp_path / "b", resume_from_checkpoint=checkpoint, seed=1, ignore_config_change=True),
        )
    assert (
        "Resuming with other arguments than the checkpoint's (--ignore_config_change): --seed 0 (now 1)" in caplog.text
    )


def test_state_is_written_atomically(tmp_path, monkeypatch):
    write_state(str(tmp_path), {"global_step": 1, "phase": "main"}, {"seen": torch.ones(3, dtype=torch.int64)})
    assert json.load(open(tmp_path / STATE_FILE)) == {"global_step": 1, "phase": "main"}

    def failing_dump(obj, f):
        f.write('{"global_st')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", failing_dump)
    with pytest.raises(OSError, match="disk full"):
        write_state(str(tmp_path), {"global_step": 2, "phase": "main"}, {"seen": torch.ones(3, dtype=torch.int64)})
    monkeypatch.undo()
    assert json.load(open(tmp_path / STATE_FILE)) == {"global_step": 1, "phase": "main"}  # the old state, whole
    assert sorted(os.listdir(tmp_path)) == sorted([STATE_FILE, "infodisent_schedule.safetensors"])  # no temporary left


def test_fewer_than_two_classes_is_an_error():
    one_class = Features(30, 0, num_labels=1)
    with pytest.raises(
        ValueError,
        match=r"^The training split has examples of 1 class\(es\) \(label 0\); "
        r"InfoDisent needs at least two classes\.$",
    ):
        fit_head(tiny_model(), one_class, Features(30, 1), FitConfig(show_progress=False))
    assert np.unique(one_class.array("labels")).tolist() == [0]


# ------------------------------------------------------------------------------------- grayscale, end to end
def test_grayscale_backbone_end_to_end(tmp_path):
    """A num_channels=1 backbone (its processor normalises one channel) trains and predicts from RGB, RGBA and L
    images: the pipeline converts them to what the backbone takes."""
    from PIL import Image
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        ResNetForImageClassification,
        ViTImageProcessor,
    )

    from training import train as train_script
    from training.data import load_image_dataset, make_transform

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c, name in enumerate(("dark", "light")):
            os.makedirs(tmp_path / "data" / split / name)
            for i in range(n):
                array = (rng.integers(0, 60, (20, 20, 3)) + 150 * c).astype(np.uint8)
                image = Image.fromarray(array)
                image = image.convert("L") if i % 3 == 1 else image.convert("RGBA") if i % 3 == 2 else image
                image.save(tmp_path / "data" / split / name / f"{i}.png")
    torch.manual_seed(0)
    config = tiny_resnet_config(
        num_channels=1, num_labels=2, id2label={0: "dark", 1: "light"}, label2id={"dark": 0, "light": 1}
    )
    ResNetForImageClassification(config).save_pretrained(tmp_path / "gray")
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5], image_std=[0.5]).save_pretrained(
        tmp_path / "gray"
    )
    results = train_script.main(
        [
            "--dataset_name",
            str(tmp_path / "data"),
            "--backbone",
            str(tmp_path / "gray"),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--output_dir",
            str(tmp_path / "out"),
            "--max_train_steps",
            "30",
            "--train_batch_size",
            "8",
            "--learning_rate",
            "0.1",
            "--max_prototypes_per_class",
            "2",
            "--finetune_epochs",
            "1",
            "--gallery_top_k",
            "2",
            "--train_val_split",
            "0.25",
        ]
    )
    assert results["splits"]["train"]["rows"] == 18 and results["test_num_examples"] == 8
    # The gallery (computed at the end of training) and the explain command line feed the backbone 1 channel too.
    from modeling_infodisent.explain import main as explain_main

    assert (tmp_path / "out" / "prototype_gallery.json").is_file()
    rgba = tmp_path / "data" / "test" / "light" / "2.png"
    assert explain_main(["--model", str(tmp_path / "out"), str(rgba), "--out", str(tmp_path / "explained")]) == 0
    assert sorted(p.name for p in (tmp_path / "explained").iterdir()) == ["2.html", "2.png"]
    dataset, image_col, label_col, _ = load_image_dataset(str(tmp_path / "data"), train_val_split=0.25)
    processor = AutoImageProcessor.from_pretrained(tmp_path / "out")
    batch = dataset["test"].with_transform(make_transform(processor, image_col, label_col))[list(range(8))]
    pixel_values = torch.stack(batch["pixel_values"])
    assert pixel_values.shape == (8, 1, 32, 32)
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        predictions = model(pixel_values).logits.argmax(-1).numpy()
    assert float((predictions == np.array(batch["labels"])).mean()) == results["test_accuracy"]
    assert results["test_accuracy"] >= 0.75  # dark vs light: chance is 1/2


def test_fit_config_comes_from_the_training_arguments_of_the_same_names():
    """Every setting of the schedule is a flag of train.py with the same name (nothing copied by hand can drift):
    `FitConfig.from_args` takes each field from the parsed arguments, and overrides win."""
    from dataclasses import fields

    from training.train import parse_args

    args = parse_args(["--learning_rate", "0.03", "--seed", "7", "--max_prototypes_per_class", "4"])
    derived = {"grow_prototype_budget", "show_progress"}  # from --strict_prototype_budget / not a flag
    missing = [f.name for f in fields(FitConfig) if f.name not in derived and not hasattr(args, f.name)]
    assert missing == []
    config = FitConfig.from_args(args, grow_prototype_budget=False)
    assert (config.learning_rate, config.seed, config.max_prototypes_per_class) == (0.03, 7, 4)
    assert config.grow_prototype_budget is False
    for f in fields(FitConfig):
        if f.name not in derived:
            assert getattr(config, f.name) == getattr(args, f.name), f.name
