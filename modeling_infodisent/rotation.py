"""How the orthogonal rotation U is computed and trained: the machinery behind `InfoDisentRotation`.

* `rotate_tokens`: J = X Uᵀ as one large GEMM.
* `CayleyMap`: U = (I − A)⁻¹(I + A) of a skew A with a float64 forward and a cheap backward (the default
  ``"cayley"`` parametrisation).
* `RotateLieGradient` + `retract` + `attach_riemannian_step`: the ``"riemannian"`` parametrisation, where U itself
  is the parameter, the optimiser steps in the Lie algebra at U and each step is retracted onto the orthogonal group.

This file travels with the weights (``save_pretrained`` copies the modeling file's relative imports for
``trust_remote_code=True`` loading), so it imports only torch.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "CayleyMap",
    "RotateLieGradient",
    "attach_riemannian_step",
    "initial_generator_std",
    "retract",
    "rotate_tokens",
]

# Steps up to this rotation angle (radians, spectral norm of the step's generator) are retracted by Newton–Schulz
# iterations (matrix products only); larger ones by the Cayley map (one linear solve), whose cost does not grow
# with the angle. Adam moves every entry of the generator by up to the learning rate: a rotation by up to
# ~2 lr D rad when the gradient is nearly low-rank (measured ~10-25 rad at D = 2048, lr = 1e-2).
NEWTON_SCHULZ_MAX_ANGLE = 0.5
# Newton–Schulz stops once max |UᵀU - I| is predicted below this (float32 rounding is ~5e-7 at D = 2048); what is
# left is removed by the next step's iteration (the error squares), so it never accumulates.
RETRACTION_TOLERANCE = 1e-6


def rotate_tokens(tokens: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """J = X Uᵀ for tokens X (B, N, D) as one (B·N, D) x (D, D) GEMM with inputs in `dtype`, J in the tokens' dtype.
    The tokens are usually a transposed view of a (B, D, h, w) map: one copy makes them a contiguous `dtype` matrix
    (casting the view as it is would keep its strides and send the product down a slow batched path)."""
    x = tokens.to(dtype, memory_format=torch.contiguous_format).reshape(-1, tokens.shape[-1])
    return torch.matmul(x, u.to(dtype).T).to(tokens.dtype).reshape(tokens.shape)


class RotateLieGradient(torch.autograd.Function):
    """J = X Uᵀ whose gradient for U is not dL/dU but the gradient of the loss with respect to the generator G of
    the next rotation step, U ← exp(G − Gᵀ) U at G = 0: dL/dG = dLᵀ J − Jᵀ dL (skew, D x D), computed from the
    rotated tokens J and their gradient with one GEMM of the same size as dL/dU's. The optimiser thus moves in
    the Lie algebra of the rotations at the current U (a "dynamic trivialisation", Lezcano-Casado 2019) and
    `retract` maps its step back onto U."""

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, weight: torch.Tensor, matmul_dtype: torch.dtype) -> torch.Tensor:
        rotated = rotate_tokens(tokens, weight, matmul_dtype)
        ctx.save_for_backward(rotated, weight)
        ctx.tokens_need_grad = tokens.requires_grad
        ctx.matmul_dtype = matmul_dtype
        return rotated

    @staticmethod
    def backward(ctx, grad_rotated: torch.Tensor):
        rotated, weight = ctx.saved_tensors
        d, dtype = rotated.shape[-1], ctx.matmul_dtype
        j, dj = rotated.reshape(-1, d).to(dtype), grad_rotated.reshape(-1, d).to(dtype)
        k = torch.matmul(dj.T, j).to(weight.dtype)  # dL/dA for U = (I + A) U_t
        grad_tokens = torch.matmul(grad_rotated, weight.to(grad_rotated.dtype)) if ctx.tokens_need_grad else None
        return grad_tokens, k - k.T, None


class CayleyMap(torch.autograd.Function):
    """U = (I − A)⁻¹(I + A) = 2 (I − A)⁻¹ − I of A = G − Gᵀ: the inverse in float64 (orthogonal to ~1e-8), and a
    backward with no float64 work at all. With M = I − A, dU = 2 M⁻¹ dA M⁻¹, so dL/dA = 2 M⁻ᵀ (dL/dU) M⁻ᵀ, and
    M⁻¹ = (U + I) / 2 is already known: dL/dA = ½ (Uᵀ + I) (dL/dU) (Uᵀ + I), two D x D products in `grad_dtype`
    (the rotation GEMMs' dtype: dL/dU itself comes from products in that dtype). Letting autograd differentiate
    `linalg.solve` instead costs a second float64 solve and a float64 GEMM: at D = 2048 on a 2-core CPU the map's
    forward + backward went from 0.55 to 0.36 s."""

    @staticmethod
    def forward(ctx, generator: torch.Tensor, grad_dtype: torch.dtype) -> torch.Tensor:
        skew = (generator - generator.T).double()
        eye = torch.eye(generator.shape[0], device=generator.device, dtype=torch.float64)
        # I − A is invertible for every skew A (its eigenvalues are 1 − iλ): `inv_ex` skips the singularity check,
        # which on a GPU is a host sync in the middle of every training step.
        inverse, _ = torch.linalg.inv_ex(eye - skew)
        u = (2.0 * inverse - eye).to(generator.dtype)
        ctx.save_for_backward(u)
        ctx.grad_dtype = grad_dtype
        return u

    @staticmethod
    def backward(ctx, grad_u: torch.Tensor):
        (u,) = ctx.saved_tensors
        w = (u.T + torch.eye(u.shape[0], device=u.device, dtype=u.dtype)).to(ctx.grad_dtype)
        grad_skew = (0.5 * (w @ grad_u.to(ctx.grad_dtype) @ w)).to(u.dtype)
        return grad_skew - grad_skew.T, None


@torch.no_grad()
def retract(
    u: torch.Tensor,
    step: torch.Tensor,
    max_angle: float = NEWTON_SCHULZ_MAX_ANGLE,
    tolerance: float = RETRACTION_TOLERANCE,
) -> torch.Tensor:
    """U moved by the skew generator `step` = A and kept on the orthogonal group (a retraction: I + A to first
    order). Small steps: the polar factor of (I + A) U, or of (I + A + A²/2) U (exact to second order), by
    Newton–Schulz iterations X <- X (3I - XᵀX) / 2: 3-6 D x D products. Steps larger than `max_angle`: the Cayley
    map, X = (I - A/2)⁻¹ (I + A/2) U (one solve; each plane turned by 2 atan(θ/2)), then one Newton–Schulz iteration
    to remove the solve's rounding. Every path ends with a Newton–Schulz iteration, which squares whatever error U
    carried in: rounding never accumulates."""
    u32, a = u.float(), step.float()
    angle = spectral_norm_estimate(a)
    if angle > max_angle:
        eye = torch.eye(a.shape[0], device=a.device, dtype=a.dtype)
        x = torch.linalg.solve(eye - 0.5 * a, u32 + 0.5 * (a @ u32))
        return (1.5 * x - 0.5 * (x @ (x.T @ x))).to(u.dtype)
    # |σ²(X) - 1| of the start X: angle² for (I + A) U, angle⁴ / 4 for the second-order start.
    if angle**2 < 1e-3:
        x, error = u32 + a @ u32, angle**2
    else:
        x, error = u32 + (a + 0.5 * (a @ a)) @ u32, angle**4 / 4
    error += 2 * tolerance  # what the last step (and this one's rounding) may have left
    iterations = 1
    while 0.75 * error**2 + 0.25 * error**3 > tolerance and iterations < 8:
        error, iterations = 0.75 * error**2 + 0.25 * error**3, iterations + 1
    for _ in range(iterations):
        x = 1.5 * x - 0.5 * (x @ (x.T @ x))
    return x.to(u.dtype)


def spectral_norm_estimate(a: torch.Tensor, iterations: int = 12, margin: float = 1.25) -> float:
    """A (slightly generous) estimate of the largest singular value of `a`: power iteration on aᵀa from a fixed
    start vector (the same answer in every process), times a safety margin. D² work per iteration."""
    v = torch.linspace(1.0, 2.0, a.shape[0], device=a.device, dtype=a.dtype)
    norm = torch.zeros((), device=a.device, dtype=a.dtype)
    for _ in range(iterations):
        w = a.T @ (a @ v)
        norm = torch.linalg.vector_norm(w)
        if float(norm) == 0.0:
            return 0.0
        v = w / norm
    return margin * float(norm.sqrt())


def attach_riemannian_step(weight: torch.nn.Parameter, optimizer: torch.optim.Optimizer, retraction) -> list:
    """Make every `optimizer.step()` move the orthogonal `weight` U in the Lie algebra and keep it orthogonal: before
    the step U is set to zero (so that the optimiser writes the bare step G into it, whatever its weight decay),
    after it U is set to ``retraction(U_before, G − Gᵀ)``. Returns the hook handles (remove them to detach)."""
    state = {"base": None}

    @torch.no_grad()
    def before_step(opt, args, kwargs) -> None:
        state["base"] = None
        if weight.grad is None or not any(p is weight for group in opt.param_groups for p in group["params"]):
            return  # the optimiser will not touch U this step
        state["base"] = weight.detach().clone()
        weight.zero_()

    @torch.no_grad()
    def after_step(opt, args, kwargs) -> None:
        base, state["base"] = state["base"], None
        if base is not None:
            weight.copy_(retraction(base, weight - weight.T))

    return [optimizer.register_step_pre_hook(before_step), optimizer.register_step_post_hook(after_step)]


def initial_generator_std(dim: int, parametrization: str = "matrix_exp") -> float:
    """Scale s of the generator G ~ N(0, s²) of the initial rotation: a random rotation far from the identity, with
    E[diag U] = 0 (see `InfoDisentPreTrainedModel._init_weights`). The eigenvalues ±iσ of A = G − Gᵀ fill
    |σ| ≤ R = 2s·sqrt(2D) (semicircle law). exp(A) turns by θ = σ: E[cos θ] = 0 at R = 3.83 (the first zero of
    J1). The Cayley map turns by θ = 2·arctan(σ), cos θ = (1 − σ²)/(1 + σ²), whose semicircle mean is 0 at
    R = 2·sqrt(2), i.e. s = 1/sqrt(D)."""
    edge = 2.0 * math.sqrt(2.0) if parametrization == "cayley" else 3.83
    return edge / (2.0 * math.sqrt(2.0 * dim))
