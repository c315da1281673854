"""The rotation U (issue 12): the "riemannian" parametrisation's gradient and retraction, orthogonality after long
training at a large learning rate, save / meta-device load, the exact logit decomposition, old checkpoints."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT, tiny_resnet_config
from modeling_infodisent import InfoDisentForImageClassification
from modeling_infodisent.modeling_infodisent import InfoDisentRotation

NAMES = {0: "cat", 1: "dog", 2: "bird"}


def orthogonality_error(u: torch.Tensor) -> float:
    u = u.detach().double()
    return float((u.T @ u - torch.eye(u.shape[0], dtype=torch.float64)).abs().max())


def random_rotation(dim: int, scale: float, dtype=torch.float32) -> torch.Tensor:
    g = torch.randn(dim, dim, dtype=torch.float64) * scale
    return torch.linalg.matrix_exp(g - g.T).to(dtype)


def adam_steps(rotation: InfoDisentRotation, steps: int, lr: float, dim: int, weight_decay: float = 0.0):
    """`steps` AdamW steps of U on a loss that pulls it towards a fixed rotation (a Procrustes problem)."""
    optimizer = torch.optim.AdamW(rotation.parameters(), lr=lr, weight_decay=weight_decay)
    rotation.attach(optimizer)
    tokens = torch.randn(32, 6, dim)
    target = rotation(tokens).detach() @ random_rotation(dim, 0.3).T
    losses = []
    for _ in range(steps):
        loss = (rotation(tokens) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_riemannian_gradient_is_the_gradient_of_the_next_rotation_step():
    """U's gradient is dL/dG of L(exp(G - Gᵀ) U) at G = 0 (exactly, in float64), not dL/dU."""
    torch.manual_seed(0)
    dim = 12
    rotation = InfoDisentRotation(dim, "riemannian").double().train()
    with torch.no_grad():
        rotation.weight.copy_(random_rotation(dim, 0.4, torch.float64))
    tokens, weights = torch.randn(3, 5, dim, dtype=torch.float64), torch.randn(3, 5, dim, dtype=torch.float64)
    (rotation(tokens).tanh() * weights).sum().backward()

    g = torch.zeros(dim, dim, dtype=torch.float64, requires_grad=True)
    u = torch.linalg.matrix_exp(g - g.T) @ rotation.weight.detach()
    (torch.matmul(tokens, u.T).tanh() * weights).sum().backward()
    assert torch.allclose(rotation.weight.grad, g.grad, rtol=0, atol=1e-12)
    assert torch.equal(rotation.weight.grad, -rotation.weight.grad.T)  # skew: Adam's step stays skew


def test_input_gradient_is_the_plain_one():
    """Grad-CAM and friends differentiate through the rotation: dL/dI must be the ordinary Uᵀ dL/dJ."""
    torch.manual_seed(0)
    rotation = InfoDisentRotation(8, "riemannian").double().train()
    with torch.no_grad():
        rotation.weight.copy_(random_rotation(8, 0.5, torch.float64))
    tokens = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: rotation(t).sin(), (tokens,))


@pytest.mark.parametrize("lr", [0.1, 1.0])
def test_orthogonal_after_many_large_adam_steps(lr):
    """500 AdamW steps at 10x / 100x the default learning rate (1.0: every step is a large rotation and takes the
    QR fallback), with weight decay: U stays orthogonal to float32 precision and the loss falls."""
    torch.manual_seed(0)
    dim = 48
    rotation = InfoDisentRotation(dim, "riemannian").train()
    start = rotation.weight.detach().clone()
    losses = adam_steps(rotation, 500, lr, dim, weight_decay=0.1)
    assert orthogonality_error(rotation.weight) <= 1e-5
    assert (rotation.weight.detach() - start).abs().max() > 0.1  # U really moved
    assert min(losses) < 0.5 * losses[0]


def test_cayley_map_and_its_gradient_are_those_of_the_linear_solve():
    """The "cayley" U is (I - A)^-1 (I + A) of A = G - Gᵀ and its hand-written backward (from M^-1 = (U + I) / 2, no
    float64 work) is the derivative of that map: checked against finite differences in float64 and against autograd
    through `torch.linalg.solve` in float32."""
    from modeling_infodisent.modeling_infodisent import _CayleyMap

    torch.manual_seed(0)
    generator = (0.5 * torch.randn(10, 10, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda g: _CayleyMap.apply(g, torch.float64), (generator,))

    rotation = InfoDisentRotation(48, "cayley").train()
    with torch.no_grad():
        rotation.generator.normal_(0.0, 0.3)
    weights = torch.randn(48, 48)
    (rotation.matrix() * weights).sum().backward()
    generator = rotation.generator.detach().clone().requires_grad_()
    skew, eye = (generator - generator.T).double(), torch.eye(48, dtype=torch.float64)
    reference = torch.linalg.solve(eye - skew, eye + skew).float()
    (reference * weights).sum().backward()
    assert torch.allclose(rotation.matrix().detach(), reference.detach(), atol=1e-6)
    assert torch.allclose(rotation.generator.grad, generator.grad, atol=1e-5, rtol=1e-5)
    assert orthogonality_error(rotation.matrix()) < 1e-6


@pytest.mark.parametrize("scale", [0.0005, 0.01, 0.05])
def test_rotation_step_is_the_polar_factor(scale):
    """Small, medium and large steps (the three starts of `rotation_step`): the result is the nearest orthogonal
    matrix (the SVD's polar factor) of (I + A) U to first order in A, and orthogonal to float32 precision."""
    torch.manual_seed(0)
    u = random_rotation(32, 0.3)
    g = torch.randn(32, 32) * scale
    a = g - g.T
    left, _, right = torch.linalg.svd((torch.eye(32) + a).double() @ u.double())
    stepped = InfoDisentRotation.rotation_step(u, a)
    assert orthogonality_error(stepped) <= 2e-6
    assert (stepped.double() - left @ right).abs().max() <= 2e-6 + (a.norm(2) ** 2).item()


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_large_steps_are_cayley_steps(scale):
    """Steps of several radians (Adam's first steps at large D) take the Cayley map: U <- (I - A/2)⁻¹(I + A/2) U."""
    torch.manual_seed(0)
    u = random_rotation(16, 0.3)
    g = torch.randn(16, 16) * scale
    a = (g - g.T).double()
    eye = torch.eye(16, dtype=torch.float64)
    expected = torch.linalg.solve(eye - a / 2, eye + a / 2) @ u.double()
    stepped = InfoDisentRotation.rotation_step(u, (g - g.T))
    assert torch.linalg.matrix_norm(a, 2) > InfoDisentRotation.newton_schulz_max_angle
    assert orthogonality_error(stepped) <= 2e-6
    assert torch.allclose(stepped.double(), expected, rtol=0, atol=1e-5)


def test_no_step_without_gradient_or_outside_the_optimizer():
    torch.manual_seed(0)
    rotation = InfoDisentRotation(6, "riemannian").train()
    other = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([other], lr=0.1)
    rotation.attach(optimizer)
    before = rotation.weight.detach().clone()
    (rotation(torch.randn(2, 3, 6)).sum() + other.sum()).backward()
    optimizer.step()  # U has a gradient but is not among the optimizer's parameters
    assert torch.equal(rotation.weight, before)
    optimizer = torch.optim.AdamW(rotation.parameters(), lr=0.1)
    rotation.attach(optimizer)
    rotation.weight.grad = None
    optimizer.step()  # U is in the optimizer but has no gradient
    assert torch.equal(rotation.weight, before)


def trained_model(steps: int = 20):
    torch.manual_seed(0)
    model = InfoDisentForImageClassification.from_backbone(
        tiny_resnet_config(), id2label=NAMES, rotation_parametrization="riemannian"
    )
    initial = model.rotation_matrix().detach().clone()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.head.rotation.attach(optimizer)
    for _ in range(steps):
        loss = model(torch.randn(6, 3, 64, 64), labels=torch.tensor([0, 1, 2, 0, 1, 2])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (model.rotation_matrix().detach() - initial).abs().max() > 1e-2
    return model.eval()


def test_trained_model_round_trips_through_meta_device_loading(tmp_path):
    model = trained_model()
    assert orthogonality_error(model.rotation_matrix()) <= 1e-5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).logits
    model.save_pretrained(tmp_path)
    saved = load_file(os.path.join(tmp_path, "model.safetensors"))
    assert "head.rotation.weight" in saved and not any("generator" in k for k in saved)
    loaded = InfoDisentForImageClassification.from_pretrained(tmp_path).eval()  # transformers builds on meta
    assert loaded.head.rotation.weight.device.type == "cpu"
    assert torch.equal(loaded.rotation_matrix(), model.rotation_matrix())
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, expected)


def test_exact_logit_decomposition_after_riemannian_training():
    model = trained_model()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x).logits
    for i, explanation in enumerate(model.explain(x)):
        total = explanation.bias + sum(p.contribution for p in explanation.prototypes)
        assert abs(total - explanation.logit) < 1e-5
        assert abs(explanation.logit - float(logits[i, explanation.target])) < 1e-5


def test_old_generator_checkpoint_still_loads(tmp_path):
    """A checkpoint of the earlier default (rotation="matrix_exp": a `generator` in the safetensors, as the first
    releases of the demo model) loads as saved: U = exp(G - Gᵀ), whatever the current default."""
    torch.manual_seed(0)
    old = InfoDisentForImageClassification.from_backbone(
        tiny_resnet_config(), id2label=NAMES, rotation_parametrization="matrix_exp"
    )
    with torch.no_grad():
        old.head.rotation.generator.normal_(0.0, 0.1)
    old.save_pretrained(tmp_path)
    folder = str(tmp_path)
    generator = load_file(os.path.join(folder, "model.safetensors"))["head.rotation.generator"]
    model = InfoDisentForImageClassification.from_pretrained(folder).eval()
    assert model.config.rotation_parametrization == "matrix_exp" and model.head.rotation.weight is None
    expected = torch.linalg.matrix_exp((generator - generator.T).double()).float()
    assert torch.equal(model.rotation_matrix(), expected)
    assert orthogonality_error(model.rotation_matrix()) <= 1e-5


def test_new_models_start_from_the_same_rotation_as_before():
    """Same seed, same initial U as the matrix_exp parametrisation (the same random draws, exp in float64)."""
    models = {}
    for rotation in ("riemannian", "matrix_exp"):
        torch.manual_seed(3)
        models[rotation] = InfoDisentForImageClassification.from_backbone(
            tiny_resnet_config(), id2label=NAMES, rotation_parametrization=rotation
        ).eval()
    assert torch.equal(models["riemannian"].rotation_matrix(), models["matrix_exp"].rotation_matrix())
    assert torch.equal(models["riemannian"].classifier_weight, models["matrix_exp"].classifier_weight)


# ------------------------------------------------------------------------------------- the --scale report's paths
SCALE_BACKBONES = ["resnet50", "convnext_tiny", "vit_b16", "swin_tiny"]
SCALE_PHASES = {
    "build",
    "extract",
    "train_and_prune",
    "prune_again",
    "evaluate",
    "save_and_card",
    "gallery",
    "space_load_and_explain",
}
# Tiny configs at 64 px: ResNet / ConvNeXt / Swin downsample 32x, ViT has 16 px patches.
SCALE_SHAPES = {"resnet50": [32, 2, 2], "convnext_tiny": [32, 2, 2], "vit_b16": [32, 4, 4], "swin_tiny": [64, 2, 2]}


def check_scale_results(results: dict, mixed_precision: str):
    assert results["settings"]["mixed_precision"] == mixed_precision
    assert results["settings"]["cache_dtype"] == "float16"
    assert list(results["backbones"]) == SCALE_BACKBONES
    for name, r in results["backbones"].items():
        assert r["feature_shape"] == SCALE_SHAPES[name], name
        assert set(r["phases"]) == SCALE_PHASES
        assert all(p["seconds"] > 0 and p["peak_rss_mb"] > 0 for p in r["phases"].values())
        assert r["orthogonality_error"] <= 1e-5
        assert r["eval_rows"] == results["settings"]["num_val"]
        assert r["cache_mb"] > 0 and r["cache_gb_cub"] > 0
        assert set(r["head_step"]) == {"fixed_u", "identity", "cayley", "riemannian"}
        assert r["rotation"] == "cayley"
        p = r["projection_cub"]
        assert p["validation_rows"] == 899 and p["steps_per_epoch"] == -(-(5994 - 899) // 256)  # ceil: no row dropped
        assert p["steps"] >= 300  # the schedule's floor of main steps
        assert p["head_training_s_eval_every_epoch"] >= p["head_training_s_eval_at_end"] > 0
        assert p["live_epoch_s"] > p["cached_epoch_s"] > 0
    assert results["table"].count("\n") == 1 + len(SCALE_BACKBONES)


def test_scale_smoke_runs_the_whole_pipeline(tmp_path):
    """`benchmarks/run.py --scale --smoke`: the four families through extraction, training, pruning, gallery, card,
    explain and the Space's loader, on tiny configs."""
    output = tmp_path / "scale.json"
    subprocess.run(
        [sys.executable, "benchmarks/run.py", "--scale", "--smoke", "--threads", "1", "--output", str(output)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    check_scale_results(json.loads(output.read_text()), "no")


def test_gpu_check_smoke_runs_the_gpu_recipe_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh --smoke without a GPU: the same report with the backbone under bf16 autocast."""
    env = dict(os.environ, TMPDIR=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--smoke"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "No CUDA device: running the GPU recipe" in done.stderr
    check_scale_results(json.loads((tmp_path / "scale_smoke_gpu_check.json").read_text()), "bf16")


def test_gpu_check_without_gpu_is_a_clear_error():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: no CUDA device visible to torch (run with --smoke to check the recipe on the CPU)"
    )


# ------------------------------------------------------------------ bfloat16 rotation GEMMs while training (issue 12)
@pytest.mark.parametrize("parametrization", ["cayley", "riemannian"])
def test_bfloat16_matmul_only_in_train_mode_and_close_to_float32(parametrization):
    """`matmul_dtype` rounds the GEMM inputs to bfloat16 in train mode only: J and dL/dU stay within bfloat16 rounding
    of the float32 ones, eval mode is bit-identical to float32, and U is the same float64-built matrix either way."""
    torch.manual_seed(0)
    dim = 64
    rotations = [InfoDisentRotation(dim, parametrization).train() for _ in range(2)]
    with torch.no_grad():
        if parametrization == "riemannian":
            rotations[0].weight.copy_(random_rotation(dim, 0.3))
        else:
            rotations[0].generator.normal_(0.0, 0.1)
    rotations[1].load_state_dict(rotations[0].state_dict())
    rotations[1].matmul_dtype = torch.bfloat16
    tokens, weights = torch.randn(8, 49, dim), torch.randn(8, 49, dim)
    outputs, grads = [], []
    for rotation in rotations:
        out = rotation(tokens)
        (out.tanh() * weights).sum().backward()
        outputs.append(out.detach())
        grads.append(next(p for p in rotation.parameters()).grad.clone())
    assert outputs[1].dtype == torch.float32 and not torch.equal(outputs[0], outputs[1])  # bf16 was really used
    assert (outputs[1] - outputs[0]).abs().max() <= 0.02 * outputs[0].abs().max()
    cosine = torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert cosine > 0.999
    for rotation in rotations:
        rotation.eval()
    assert torch.equal(rotations[0](tokens), rotations[1](tokens))  # eval: float32 whatever matmul_dtype says
    assert orthogonality_error(rotations[1].matrix()) < 1e-6


def test_rotation_matmul_dtype_auto_needs_native_bfloat16_and_a_wide_map(monkeypatch):
    from training import hardware
    from training.fit import FitConfig

    cpu = torch.device("cpu")
    assert hardware.rotation_matmul_dtype("float32", 4096, cpu) == torch.float32
    assert hardware.rotation_matmul_dtype("bfloat16", 8, cpu) == torch.bfloat16
    monkeypatch.setattr(hardware, "native_bf16_matmul", lambda device: True)
    assert hardware.rotation_matmul_dtype("auto", hardware.BF16_MIN_FEATURES, cpu) == torch.bfloat16
    assert hardware.rotation_matmul_dtype("auto", hardware.BF16_MIN_FEATURES - 1, cpu) == torch.float32
    monkeypatch.setattr(hardware, "native_bf16_matmul", lambda device: False)
    assert hardware.rotation_matmul_dtype("auto", 4096, cpu) == torch.float32
    with pytest.raises(ValueError, match="rotation_matmul_dtype must be 'auto', 'float32' or 'bfloat16', got 'fp8'"):
        FitConfig(rotation_matmul_dtype="fp8").validate()


def test_fit_head_with_bfloat16_rotation_trains_reports_and_leaves_a_float32_model():
    from test_schedule import Features, tiny_model
    from training.fit import FitConfig, fit_head

    model = tiny_model()
    config = FitConfig(
        train_batch_size=32,
        learning_rate=0.2,
        max_train_steps=60,
        eval_steps=20,
        max_prototypes_per_class=0,
        rotation_matmul_dtype="bfloat16",
        show_progress=False,
    )
    result = fit_head(model, Features(96, 0, shift=3.0), Features(30, 1, shift=3.0), config)
    assert result["schedule"]["rotation_matmul_dtype"] == "bfloat16"
    assert model.head.rotation.matmul_dtype is None and not model.head.training
    assert result["accuracy"] >= 0.9  # the three classes are learnt (chance: 1/3; float32 reaches 0.9 here too)
    assert orthogonality_error(model.rotation_matrix()) < 1e-5
    # The default ("auto") keeps a 32-channel map in float32: below BF16_MIN_FEATURES the GEMMs are not the cost.
    default = fit_head(
        tiny_model(),
        Features(96, 0, shift=1.0),
        Features(30, 1, shift=1.0),
        FitConfig(train_batch_size=32, max_train_steps=5, max_prototypes_per_class=0, show_progress=False),
    )
    assert default["schedule"]["rotation_matmul_dtype"] == "float32"
