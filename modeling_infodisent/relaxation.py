"""The train-mode relaxation of InfoDisent's max pooling (`InfoDisentPooling` in train mode): a Gumbel-softmax over
positions, with optional per-row seeds so that a row's noise does not depend on how a batch is split over processes.

This file travels with the weights (``save_pretrained`` copies the modeling file's relative imports for
``trust_remote_code=True`` loading), so it imports only torch.
"""

from __future__ import annotations

import torch

__all__ = ["relaxed_max", "seeded_uniform"]


def seeded_uniform(like: torch.Tensor, seeds: torch.Tensor | None, pole: int) -> torch.Tensor:
    """U(0, 1) noise shaped like `like` (B, ...): from the global RNG when `seeds` is None, else row b drawn from its
    own generator seeded with ``2 * seeds[b] + pole`` (the training script derives the seeds from the run's seed, the
    step and the row's place in the global batch: 1 and N processes, or a resumed run, draw the same noise)."""
    if seeds is None:
        return torch.rand_like(like)
    if len(seeds) != like.shape[0]:
        raise ValueError(f"noise_seeds has {len(seeds)} seeds for a batch of {like.shape[0]} rows.")
    uniform = torch.empty_like(like)
    generator = torch.Generator(device=like.device)
    for row, seed in enumerate(seeds.tolist()):
        generator.manual_seed(2 * seed + pole)
        uniform[row].uniform_(generator=generator)
    return uniform


def relaxed_max(
    act: torch.Tensor,
    hard: torch.Tensor,
    pole: int,
    temperature: float,
    noise: bool = True,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gumbel-softmax weighted mean of `act` (B, N, D) >= 0 over positions N; `hard` (B, D) is its exact max. The
    selection weights are softmax(act / (temperature * max) + g), g ~ Gumbel(0, 1) when `noise`: normalised by the
    (detached) max so that the temperature means the same for every channel and scale, and the noise outside the
    temperature so that the relaxation tends to the exact max as temperature -> 0."""
    scale = hard.detach().clamp_min(1e-6).unsqueeze(1)
    logits = act / (scale * temperature)
    if noise:
        # Gumbel noise -log(-log U), computed in place in one buffer: at (B, N, D) = (256, 49, 2048) every
        # temporary is 100 MB, and allocating (page-faulting) fresh ones costs as much as the arithmetic.
        gumbel = seeded_uniform(logits, seeds, pole).clamp_(1e-10, 1.0 - 1e-7).log_().neg_().log_()
        logits = logits - gumbel
    return (torch.softmax(logits, dim=1) * act).sum(dim=1)
