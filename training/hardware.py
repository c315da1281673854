"""What the machine can do, for the head's training (`training.fit`): an `Accelerator` that also runs multi-process
without any accelerator device, whether bfloat16 products are native here (and so the dtype of the rotation GEMMs),
and glibc's heap settings that keep a CPU step from faulting in fresh pages for every temporary."""

from __future__ import annotations

import ctypes

import torch

__all__ = [
    "BF16_MIN_FEATURES",
    "keep_freed_memory_for_reuse",
    "make_accelerator",
    "native_bf16_matmul",
    "rotation_matmul_dtype",
]


def make_accelerator(**kwargs):
    """An `Accelerator` that also runs multi-process on a machine without any accelerator device: accelerate only
    picks its MULTI_CPU (gloo) mode when told `cpu=True`, otherwise each launched process would train alone."""
    from accelerate import Accelerator

    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return Accelerator(cpu=not has_device, **kwargs)


# Below this many channels the rotation GEMMs are a small part of a head step (pooling and the optimiser dominate),
# so "auto" keeps them in float32 there: bfloat16 would change the numbers for no measurable gain.
BF16_MIN_FEATURES = 512


def native_bf16_matmul(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices natively (faster than float32): CUDA with bf16 support, or a CPU
    with AMX tiles or AVX512-BF16 (oneDNN's bf16 GEMM; elsewhere bf16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        return any(
            getattr(cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        )
    return False


def keep_freed_memory_for_reuse() -> bool:
    """Let glibc keep freed blocks up to 1 GiB in the heap instead of returning them to the system (M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD). A CPU head step at D = 2048 allocates and frees ~20 temporaries of ~100 MB; by default each one
    is a fresh mmap whose pages are faulted in and zeroed again every step (measured: 2.1 s a step with this, ~2.8 s
    without, `cayley` at batch 256). The working set of a step is the same every step, so nothing grows. No-op off
    glibc (and for CUDA memory, which torch's caching allocator already reuses)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 1 << 30)) and bool(libc.mallopt(-1, 1 << 30))  # M_MMAP_ / M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def rotation_matmul_dtype(choice: str, num_features: int, device: torch.device) -> torch.dtype:
    """The dtype of the rotation GEMMs while training (`FitConfig.rotation_matmul_dtype`): U is computed in float64
    whatever this says and stays orthogonal; only the products J = X Uᵀ and dL/dU are rounded to bfloat16 inputs
    (float32 accumulation), ~5x faster at D = 2048 on an AMX CPU. Evaluation always runs in float32."""
    if choice == "bfloat16" or (choice == "auto" and num_features >= BF16_MIN_FEATURES and native_bf16_matmul(device)):
        return torch.bfloat16
    return torch.float32
