"""The model (issue 2): the method's identities on every backbone family, freezing, pooling, save / load, errors."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    BertConfig,
    ConvNextConfig,
    Dinov2Config,
    ResNetForImageClassification,
    SwinConfig,
    TimmWrapperConfig,
    ViTConfig,
)

from conftest import REPO_ROOT, tiny_resnet_config
from modeling_infodisent import InfoDisentConfig, InfoDisentForImageClassification

LABELS = {0: "cat", 1: "dog", 2: "bird", 3: "fish"}

BACKBONES = {
    "resnet": lambda: tiny_resnet_config(),
    "convnext": lambda: ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_stages=4),
    "vit": lambda: ViTConfig(
        image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    ),
    "swin": lambda: SwinConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=[1] * 4, num_heads=[1, 1, 2, 2], window_size=2
    ),
    "dinov2": lambda: Dinov2Config(
        image_size=64, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_register_tokens=0
    ),
    "timm": lambda: TimmWrapperConfig(architecture="test_resnet"),
}
# Expected grid for a 64 x 80 input (non-square, non-default size).
EXPECTED_GRID = {
    "resnet": (2, 3),
    "convnext": (2, 2),
    "vit": (8, 10),
    "swin": (2, 3),
    "dinov2": (8, 10),
    "timm": (2, 3),
}


def build(name, **kwargs):
    torch.manual_seed(0)
    return InfoDisentForImageClassification.from_backbone(BACKBONES[name](), id2label=LABELS, **kwargs)


def orthogonality_error(u: torch.Tensor) -> float:
    return float((u.T @ u - torch.eye(u.shape[0])).abs().max())


def training_steps(model, steps=3, push_w_negative=False):
    """A few Adam steps on the trainable parameters; optionally with a loss whose gradient pushes W below zero."""
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.head.rotation.attach(optimizer)  # the "riemannian" U is retracted after every step
    for _ in range(steps):
        x = torch.randn(4, 3, 64, 64)
        out = model(x, labels=torch.tensor([0, 1, 2, 3]))
        loss = out.loss + (100.0 * model.classifier_weight.sum() if push_w_negative else 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_family_contract(name):
    model = build(name).eval()
    x = torch.randn(2, 3, 64, 80)
    out = model(x)
    d = model.config.num_features
    assert out.logits.shape == (2, 4)
    assert out.pos_activations.shape == out.neg_activations.shape == (2, d)
    assert out.pos_locations.shape == out.neg_locations.shape == (2, d, 2)
    assert out.feature_grid == EXPECTED_GRID[name]
    assert (out.pos_activations >= 0).all() and (out.neg_activations >= 0).all()

    # logits decompose exactly into (pos - neg) W^T + b
    w, b = model.classifier_weight, model.classifier_bias
    assert torch.allclose(out.logits, (out.pos_activations - out.neg_activations) @ w.T + b, atol=1e-5)

    # pooled values are the brute-force max of ReLU(+-J) over positions, at the reported locations
    rotated = model.head.rotate(model.extract_features(x))
    flat = rotated.flatten(2)
    assert torch.allclose(out.pos_activations, flat.clamp_min(0).amax(-1), atol=1e-6)
    assert torch.allclose(out.neg_activations, (-flat).clamp_min(0).amax(-1), atol=1e-6)
    rows, cols = out.pos_locations[..., 0], out.pos_locations[..., 1]
    at_loc = rotated[torch.arange(2)[:, None], torch.arange(d)[None, :], rows, cols]
    assert torch.allclose(at_loc.clamp_min(0), out.pos_activations, atol=1e-6)

    # the explanation adds up to the logit, for the predicted class and for a chosen class
    for target in (None, 3):
        for explanation in model.explain(x, target=target):
            assert (
                abs(explanation.bias + sum(p.contribution for p in explanation.prototypes) - explanation.logit) < 1e-5
            )
            assert explanation.prototypes[0].heatmap.shape == (64, 80)
            contributions = [abs(p.contribution) for p in explanation.prototypes]
            assert contributions == sorted(contributions, reverse=True)
    assert model.explain(x)[0].target == int(out.logits[0].argmax())

    # U orthogonal before and after training; W >= 0 even when the gradient pushes it negative
    assert orthogonality_error(model.rotation_matrix()) < 1e-5
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    training_steps(model, push_w_negative=True)
    assert orthogonality_error(model.rotation_matrix()) < 1e-5
    assert (model.classifier_weight >= 0).all()
    # the frozen backbone: no grad, weights and batch-norm statistics unchanged by train-mode steps
    assert not any(p.requires_grad for p in model.backbone.parameters())
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key


def test_backbone_stays_in_eval_mode_and_batchnorm_statistics_do_not_move():
    model = build("resnet")
    model.train()
    assert model.training and model.head.training
    assert not any(m.training for m in model.backbone.modules())
    stats = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    assert stats
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64) * 5 + 3)
    for key, value in stats.items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_rotation_is_cached_in_eval_and_recomputed_after_an_update():
    model = build("resnet", rotation_parametrization="matrix_exp").eval()
    first = model.rotation_matrix()
    assert model.rotation_matrix() is first  # materialised once
    with torch.no_grad():
        model.head.rotation.generator.add_(0.1)
    second = model.rotation_matrix()
    assert second is not first and not torch.equal(second, first)
    assert orthogonality_error(second) < 1e-5
    skew = (model.head.rotation.generator - model.head.rotation.generator.T).double()  # U is computed in float64
    expected = torch.linalg.matrix_exp(skew).float()
    assert torch.allclose(second, expected)


@pytest.mark.parametrize("rotation", ["matrix_exp", "cayley", "identity"])
def test_other_rotations(rotation):
    model = build("resnet", rotation_parametrization=rotation)
    training_steps(model)
    assert orthogonality_error(model.rotation_matrix()) < 1e-5
    if rotation == "identity":
        assert torch.equal(model.rotation_matrix(), torch.eye(model.config.num_features))


def test_train_mode_relaxation_tends_to_the_max_as_temperature_falls():
    model = build("resnet")
    x = torch.randn(16, 3, 64, 64)
    exact = model.eval()(x)
    model.train()
    errors = []
    for temperature in (10.0, 1.0, 0.1, 0.01, 0.001):
        model.set_gumbel_temperature(temperature)
        torch.manual_seed(0)
        with torch.no_grad():
            relaxed = model(x)
        errors.append(float((relaxed.pos_activations - exact.pos_activations).abs().mean()))
        assert (relaxed.pos_activations <= exact.pos_activations + 1e-6).all()  # a weighted mean never exceeds the max
    assert all(a >= b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3 * float(exact.pos_activations.abs().mean())
    assert errors[0] > 10 * errors[-1]


def test_gumbel_noise_of_a_row_does_not_depend_on_how_the_batch_is_split():
    """With per-row `noise_seeds` (what the training script sets) a row's relaxed pooling is the same whether it is
    pooled in the whole global batch (1 process) or in a rank's slice (N processes); without them, the global RNG."""
    from modeling_infodisent.modeling_infodisent import InfoDisentPooling

    pooling = InfoDisentPooling(InfoDisentConfig(gumbel_temperature=0.5)).train()
    rotated, seeds = torch.randn(6, 9, 4), torch.arange(6) + 12345 * 2**20
    pooling.noise_seeds = seeds
    whole = pooling(rotated)[:2]
    parts = []
    for rows in (slice(0, 2), slice(2, 6)):
        pooling.noise_seeds = seeds[rows]
        parts.append(pooling(rotated[rows])[:2])
    for pole in range(2):
        assert torch.equal(whole[pole], torch.cat([part[pole] for part in parts]))
    pooling.noise_seeds = seeds + 1  # other seeds, other noise
    assert not torch.equal(pooling(rotated)[0], whole[0])
    pooling.noise_seeds = seeds[:5]
    with pytest.raises(ValueError, match="noise_seeds has 5 seeds for a batch of 6 rows"):
        pooling(rotated)


def test_relaxation_sends_gradient_to_several_positions():
    model = build("resnet", gumbel_noise=False, gumbel_temperature=1.0).train()
    features = model.extract_features(torch.randn(1, 3, 128, 128)).requires_grad_(True)  # a 4 x 4 grid
    rotated = model.head.rotate(features.detach())[0]
    # The channel whose positive pole is above zero at the most positions (the hard max would use just one of them).
    channel = int((rotated > 0).flatten(1).sum(1).argmax())
    firing = int((rotated[channel] > 0).sum())
    assert firing > 1
    model.head(features).pos_activations[0, channel].backward()
    assert int((features.grad.abs().sum(1) > 0).sum()) == firing


def test_loss_is_cross_entropy():
    model = build("resnet").eval()
    x, labels = torch.randn(3, 3, 64, 64), torch.tensor([0, 2, 1])
    out = model(x, labels=labels)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_explain_top_k_keeps_the_residual():
    model = build("resnet").eval()
    x = torch.randn(1, 3, 64, 64)
    full = model.explain(x)[0]
    top = model.explain(x, top_k=3)[0]
    assert [p.name for p in top.prototypes] == [p.name for p in full.prototypes[:3]]
    assert abs(top.total - top.logit) < 1e-5


def test_relevance_is_input_times_gradient_of_the_pooled_activation_and_per_image():
    model = build("resnet").eval()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    batch = model.explain(x, relevance_top_k=2)
    assert all(p.relevance is None for p in model.explain(x[:1])[0].prototypes)  # only when asked
    for i, e in enumerate(batch):
        assert len(e.positive) >= 3
        assert all(p.relevance is not None for p in e.positive[:2])
        assert all(p.relevance is None for p in e.positive[2:] + e.negative)
        alone = model.explain(x[i : i + 1], target=e.target, relevance_top_k=2)[0]
        for p, q in zip(e.positive[:2], alone.positive[:2]):
            # The pooled activation the classifier sees, through `forward` (max pooling), not through the peak cell.
            xi = x[i : i + 1].clone().requires_grad_(True)
            out = model(xi)
            pooled = out.pos_activations if p.sign > 0 else out.neg_activations
            (grad,) = torch.autograd.grad(pooled[0, p.channel], xi)
            expected = (grad * xi).sum(1)[0].clamp_min(0).detach().numpy()
            assert p.relevance.shape == (64, 64) and expected.max() > 0
            np.testing.assert_allclose(p.relevance, expected, rtol=1e-4, atol=1e-6 * expected.max())
            np.testing.assert_allclose(q.relevance, p.relevance, rtol=1e-4, atol=1e-6 * expected.max())  # batch-free
    assert not model.training


def test_save_and_load_round_trip_with_auto_classes(tmp_path):
    model = build("resnet").eval()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "modeling_infodisent.py", "configuration_infodisent.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}

    x = torch.randn(2, 3, 64, 64)
    expected = model(x).logits
    for loader in (InfoDisentForImageClassification, AutoModel, AutoModelForImageClassification):
        loaded = loader.from_pretrained(tmp_path)
        assert isinstance(loaded, InfoDisentForImageClassification)
        assert torch.equal(loaded(x).logits, expected)
        assert not any(p.requires_grad for p in loaded.backbone.parameters())
    config = InfoDisentConfig.from_pretrained(tmp_path)
    assert config.to_dict() == model.config.to_dict()
    assert config.backbone_config.hidden_sizes == [8, 16, 24, 32]


def remote_code_files() -> set[str]:
    """The package files the saved model's code needs: the modeling file and what it imports relatively, transitively
    (the files transformers copies next to the weights)."""
    package = Path(REPO_ROOT) / "modeling_infodisent"
    todo, found = ["modeling_infodisent.py"], set()
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            text = (package / name).read_text()
            todo += [f"{m}.py" for m in re.findall(r"^from \.(\w+) import", text, flags=re.MULTILINE)]
    return found


def test_trust_remote_code_without_the_package(tmp_path):
    model = build("resnet").eval()
    model.save_pretrained(tmp_path / "model")
    needed = remote_code_files()
    # The split of the modeling file: its siblings travel with the weights, and nothing else of the package does.
    assert {"configuration_infodisent.py", "explanation.py", "rotation.py", "backbones.py"} <= needed
    assert needed <= set(os.listdir(tmp_path / "model"))
    assert not {"render.py", "gallery.py", "loading.py", "images.py"} & set(os.listdir(tmp_path / "model"))
    x = torch.randn(2, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(x).logits, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import importlib.abc
        import sys

        class NotInstalled(importlib.abc.MetaPathFinder):
            # Hide the package as if it were not installed (an editable install has its own finder, so trimming
            # sys.path is not enough). The remote-code copy lives under transformers_modules.*, unaffected.
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "modeling_infodisent":
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None

        sys.meta_path.insert(0, NotInstalled())
        sys.path = [p for p in sys.path if p not in ("", {REPO_ROOT!r})]
        try:
            import modeling_infodisent
        except ImportError:
            pass
        else:
            raise SystemExit("the package must not be importable in this test")
        import torch
        from transformers import AutoModel, AutoModelForImageClassification
        x = torch.load({str(tmp_path / "x.pt")!r})
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        for auto in (AutoModel, AutoModelForImageClassification):
            model = auto.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            assert torch.equal(model(x).logits, expected)
            (explanation,) = model.explain(x[:1], top_k=3)  # explanation.py works from the copied files too
            assert type(explanation).__module__.startswith("transformers_modules"), type(explanation).__module__
            assert abs(explanation.total - explanation.logit) < 1e-4
        print("REMOTE-CODE-OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert "REMOTE-CODE-OK" in result.stdout, result.stderr[-3000:]


def test_from_backbone_keeps_pretrained_weights_bit_identical(tmp_path):
    torch.manual_seed(1)
    config = tiny_resnet_config(id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    classifier = ResNetForImageClassification(config)
    classifier.save_pretrained(tmp_path)
    model = InfoDisentForImageClassification.from_backbone(str(tmp_path))
    assert model.config.id2label == {0: "a", 1: "b"}  # taken from the backbone's head
    expected = classifier.resnet.state_dict()
    loaded = model.backbone.model.state_dict()
    assert expected.keys() == loaded.keys()
    assert all(torch.equal(expected[k], loaded[k]) for k in expected)
    # ... from a model instance as well, with new labels (the backbone's head is dropped)
    model = InfoDisentForImageClassification.from_backbone(classifier, id2label=LABELS)
    assert model.config.num_labels == 4
    assert all(torch.equal(expected[k], model.backbone.model.state_dict()[k]) for k in expected)


def test_error_backbone_without_spatial_map():
    with pytest.raises(ValueError, match=r"BertModel.*not an image model.*no spatial feature map"):
        InfoDisentForImageClassification.from_backbone(
            BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
            id2label=LABELS,
        )


def test_error_id2label_required_without_a_head():
    with pytest.raises(ValueError, match="id2label.*required"):
        InfoDisentForImageClassification.from_backbone(tiny_resnet_config())


@pytest.mark.parametrize(
    "shape, message",
    [((3, 64, 64), r"\(batch, channels, height, width\).*3 dimensions"), ((2, 1, 64, 64), "1 channels.*expects 3")],
)
def test_error_pixel_values_shape(shape, message):
    model = build("resnet")
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_error_id2label_size_mismatching_the_saved_head(tmp_path):
    build("resnet").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="different number of classes"):
        InfoDisentForImageClassification.from_pretrained(tmp_path, id2label={0: "only-one", 1: "two"})


def test_other_class_count_loads_only_with_ignore_mismatched_sizes(tmp_path):
    """transformers' own loading report says which tensors did not fit; with ignore_mismatched_sizes=True exactly the
    classifier's class-count tensors are fresh and everything else is loaded."""
    saved = build("resnet")
    saved.save_pretrained(tmp_path)
    model, info = InfoDisentForImageClassification.from_pretrained(
        tmp_path, id2label={0: "a", 1: "b"}, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert model.classifier_weight.shape == (2, saved.config.num_features)
    fresh = {"head.classifier.weight_raw", "head.classifier.bias", "head.classifier.prototype_mask"}
    assert {key for key, _, _ in info["mismatched_keys"]} == fresh
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(model.head.rotation.generator, saved.head.rotation.generator)


def test_error_folder_without_weights(tmp_path):
    build("resnet").config.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="no model weights"):
        InfoDisentForImageClassification.from_pretrained(tmp_path)


def test_error_explain_target_out_of_range():
    model = build("resnet")
    with pytest.raises(ValueError, match="out of range.*4 classes"):
        model.explain(torch.randn(1, 3, 64, 64), target=7)


def test_config_validation():
    with pytest.raises(ValueError, match="rotation_parametrization"):
        InfoDisentConfig(rotation_parametrization="givens")
    with pytest.raises(ValueError, match="model_type"):
        InfoDisentConfig(backbone_config={"hidden_sizes": [8]})


def test_class_heatmap_is_the_signed_weighted_sum_of_prototype_heatmaps():
    model = build("resnet").eval()
    (explanation,) = model.explain(torch.randn(1, 3, 64, 72))
    expected = sum(p.sign * p.weight * p.heatmap for p in explanation.prototypes)
    heat = explanation.class_heatmap()
    assert heat.shape == (64, 72)
    assert np.array_equal(explanation.heatmap, heat)  # a property, as Prototype.heatmap is
    assert abs(heat - expected).max() < 1e-4 * max(1.0, abs(expected).max())


def sync_script():
    """spaces/sync_model_code.py as a module (run in this process: transformers is already imported here)."""
    import importlib.util

    path = os.path.join(REPO_ROOT, "spaces", "sync_model_code.py")
    spec = importlib.util.spec_from_file_location("sync_model_code", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_space_model_code_is_the_package_source(capsys):
    """spaces/model/*.py is what `spaces/sync_model_code.py` writes: the package's modeling file and its relative
    imports, byte for byte, and no other code file."""
    assert sync_script().main(["--check"]) == 0, capsys.readouterr().err
    bundled = {f for f in os.listdir(os.path.join(REPO_ROOT, "spaces", "model")) if f.endswith(".py")}
    assert bundled == remote_code_files()


def test_space_model_code_sync_repairs_a_stale_copy(tmp_path, capsys):
    sync = sync_script()
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("{}")  # not code: left alone
    (target / "modeling_infodisent.py").write_text("# an old copy\n")
    (target / "old_sibling.py").write_text("# no longer part of the model\n")
    assert sync.main(["--check", "--target", str(target)]) == 1
    error = capsys.readouterr().err
    assert "modeling_infodisent.py differs" in error and "old_sibling.py is not part" in error
    assert "explanation.py differs" in error  # missing counts as differing
    assert (target / "modeling_infodisent.py").read_text() == "# an old copy\n"  # --check changes nothing
    assert sync.main(["--target", str(target)]) == 0
    assert sync.main(["--check", "--target", str(target)]) == 0
    assert {f for f in os.listdir(target) if f.endswith(".py")} == remote_code_files()
    assert (target / "config.json").read_text() == "{}"
    package = Path(REPO_ROOT) / "modeling_infodisent"
    assert (target / "rotation.py").read_bytes() == (package / "rotation.py").read_bytes()


def test_old_names_still_work_with_a_future_warning(tmp_path):
    """0.1's names: the config key `rotation` (saved configs must keep loading), `model.rotation`, and
    `explain(relevance=k)`; each gives the new name's result and a FutureWarning naming the new name."""
    model = build("resnet", rotation_parametrization="matrix_exp").eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rotation_parametrization"] == "matrix_exp" and "rotation" not in config
    assert "initializer_range" not in config  # documented but never used: gone
    config["rotation"] = config.pop("rotation_parametrization")  # a config as 0.1 saved it
    config["initializer_range"] = 0.02
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(FutureWarning, match="rotation_parametrization"):
        loaded = InfoDisentForImageClassification.from_pretrained(tmp_path)
    assert loaded.config.rotation_parametrization == "matrix_exp" and loaded.head.rotation.generator is not None
    assert not hasattr(loaded.config, "initializer_range")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(x).logits, model(x).logits)
    with pytest.warns(FutureWarning, match="rotation_parametrization"):
        assert loaded.config.rotation == "matrix_exp"
    with pytest.warns(FutureWarning, match="rotation_matrix"):
        assert torch.equal(loaded.rotation, loaded.rotation_matrix())
    with pytest.warns(FutureWarning, match="relevance_top_k"):
        (old,) = loaded.explain(x, relevance=1)
    (new,) = loaded.explain(x, relevance_top_k=1)
    assert old.positive[0].relevance is not None
    assert np.array_equal(old.positive[0].relevance, new.positive[0].relevance)


def test_output_hidden_states_returns_the_backbones_and_attentions_are_refused():
    model = build("vit").eval()
    x = torch.randn(2, 3, 64, 64)
    plain = model(x)
    assert plain.hidden_states is None
    out = model(x, output_hidden_states=True)
    expected = model.backbone.model(x, output_hidden_states=True, interpolate_pos_encoding=True).hidden_states
    assert len(out.hidden_states) == len(expected) == model.config.backbone_config.num_hidden_layers + 1
    assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, expected))
    assert torch.equal(out.logits, plain.logits)
    with pytest.raises(ValueError, match="no attentions"):
        model(x, output_attentions=True)


def test_cli_and_api_share_their_explain_defaults():
    """One place (`modeling_infodisent.defaults`) for the defaults of `model.explain()` and of the command line."""
    import inspect

    from modeling_infodisent import defaults
    from modeling_infodisent.explain import parse_args

    signature = inspect.signature(InfoDisentForImageClassification.explain).parameters
    assert signature["top_k"].default is defaults.EXPLAIN_TOP_K is None  # the exact decomposition by default
    assert signature["relevance_top_k"].default == defaults.EXPLAIN_RELEVANCE_TOP_K
    assert parse_args(["--model", "m", "--out", "o", "x.png"]).top_k == defaults.SHOWN_PROTOTYPES


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_processor_via_the_shared_helper_takes_any_image_mode(mode):
    """`pixel_values_for` (what the command line, the Space, the gallery and training use) feeds the model's own image
    processor any PIL mode: the same pixels as the RGB picture, transparency composited on white, 16-bit scaled to
    8-bit. The processor alone refuses a grayscale image for an RGB backbone, which is why the helper exists."""
    from PIL import Image
    from transformers import ViTImageProcessor

    from modeling_infodisent import pixel_values_for

    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    grey = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32) * 7 % 251
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257, mode="I;16")  # the same picture in 16 bits
    elif mode in ("LA", "RGBA"):
        image = Image.fromarray(grey, mode="L").convert(mode)
        alpha = np.full((32, 32), 255, np.uint8)
        alpha[:4] = 0  # the first rows fully transparent
        image.putalpha(Image.fromarray(alpha, mode="L"))
    else:
        image = Image.fromarray(grey, mode="L").convert(mode)
    expected_grey = grey.copy()
    if mode in ("LA", "RGBA"):
        expected_grey[:4] = 255  # transparent -> white
    expected = processor(Image.fromarray(expected_grey, mode="L").convert("RGB"), return_tensors="pt").pixel_values
    got = pixel_values_for(image, processor)
    assert got.shape == (1, 3, 32, 32)
    assert torch.allclose(got, expected, atol=1e-6)
    if mode == "L":
        with pytest.raises((ValueError, RuntimeError)):  # what a user hits without the helper
            processor(image, return_tensors="pt")
    model = build("resnet").eval()
    with torch.no_grad():
        assert model(got).logits.shape == (1, 4)
    grey_processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5], image_std=[0.25])
    assert pixel_values_for([image, image], grey_processor).shape == (2, 1, 32, 32)  # a 1-channel backbone


# ------------------------------------------------------------------------------------- dilated last stage (issue 22)
@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_dilate_last_stage_doubles_the_grid_with_the_same_weights_and_survives_saving(tmp_path, layer_type):
    from training.features import backbone_fingerprint

    torch.manual_seed(0)
    # two blocks in the last stage: the first one only stops striding, the second sees with dilation 2
    backbone = ResNetForImageClassification(tiny_resnet_config(layer_type=layer_type, depths=[1, 1, 1, 2])).eval()
    plain = InfoDisentForImageClassification.from_backbone(backbone, keep_original_head=False).eval()
    dilated = InfoDisentForImageClassification.from_backbone(
        backbone, keep_original_head=False, dilate_last_stage=True
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = plain.extract_features(x), dilated.extract_features(x)
    assert b.shape[-2:] == (2 * a.shape[-2], 2 * a.shape[-1]) and b.shape[1] == a.shape[1]
    assert all(torch.equal(v, plain.backbone.state_dict()[k]) for k, v in dilated.backbone.state_dict().items())
    convs = [m for m in dilated.backbone.model.encoder.stages[-1].modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.stride == (1, 1) for c in convs) and any(c.dilation == (2, 2) for c in convs)
    assert backbone_fingerprint(plain) != backbone_fingerprint(dilated)  # no cache is shared between the two
    dilated.save_pretrained(tmp_path / "m")
    loaded = InfoDisentForImageClassification.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, dilated(pixel_values=x).logits, rtol=0, atol=0)
    assert loaded.config.dilate_last_stage and loaded.extract_features(x).shape == b.shape


def test_dilate_last_stage_refuses_what_it_cannot_dilate():
    with pytest.raises(ValueError, match="dilate_last_stage.*ResNet.*'vit'"):
        InfoDisentConfig(backbone_config=ViTConfig(), dilate_last_stage=True)
    with pytest.raises(TypeError, match="dilate_last_stage"):
        InfoDisentConfig(dilate_last_stage="yes")
