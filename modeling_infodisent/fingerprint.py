"""`weights_fingerprint`: what ties a prototype gallery to the weights it was computed with. Below both the gallery
(which stores it) and the loader (which checks it), so neither imports the other for it."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["weights_fingerprint"]


def weights_fingerprint(model: torch.nn.Module) -> str:
    """``"sha256:<hex>"`` over every tensor of the model's state dict (name, shape, values), in sorted order.

    Floating tensors are hashed as float32 on the CPU, so the fingerprint does not depend on the device, and a
    model saved in bfloat16 / float16 and loaded back gives the same value. It costs one pass over the weights
    (about 0.1 s per 100 MB)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        if t.is_floating_point():
            t = t.float()
        t = t.cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(memoryview(t.numpy()).cast("B") if t.numel() else b"")
    return "sha256:" + digest.hexdigest()
