"""What keeping U orthogonal costs: one head training step per rotation parametrisation, against the floor.

The floor is the same step with U a plain trainable D x D matrix that nothing keeps orthogonal (the rotation GEMM,
its gradient GEMM, the Gumbel pooling, the classifier and the AdamW update: what any trained rotation must pay).
`identity` (no rotation at all, the U = I ablation) is reported too. Each step is the real `InfoDisentHead` in train
mode on synthetic cached-feature tensors of the real shapes (ResNet-50: 2048 x 7 x 7; ConvNeXt-T / Swin-T: 768 x 7 x 7;
ViT-B/16: 768 x 14 x 14), 200 classes, AdamW attached exactly as `training/fit.py` does. Rounds are interleaved (one
step of every variant per round) and the reported ratio is the median of the per-round ratios, so load from other
jobs on a shared machine hits numerator and denominator alike.

`orthogonality()` trains U for a number of AdamW steps at a large learning rate and reports max |UᵀU - I| (float64).
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.memory import PeakMemory
from modeling_infodisent.configuration_infodisent import InfoDisentConfig
from modeling_infodisent.modeling_infodisent import InfoDisentHead

SHAPES = {"resnet50_2048x7x7": (2048, 7), "convnext_t_768x7x7": (768, 7), "vit_b16_768x14x14": (768, 14)}
# "fixed_u" is the floor: U trained as a free matrix, never retracted. A "+bf16" suffix (e.g. "cayley+bf16") runs the
# rotation GEMMs with bfloat16 inputs, as the training script does at D >= 512 on hardware with native bfloat16
# (`training.hardware.rotation_matmul_dtype`); its floor is "fixed_u+bf16".
VARIANTS = ("fixed_u", "identity", "riemannian", "cayley", "matrix_exp")
BF16 = "+bf16"


def make_step(
    variant: str,
    dim: int,
    grid: int,
    batch: int,
    num_labels: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
    device: torch.device | str = "cpu",
):
    """A closure running one training step of the head (forward, loss, backward, AdamW step) on fixed features."""
    device = torch.device(device)
    if device.type == "cpu":  # as training/fit.py does before training on the CPU
        from training.hardware import keep_freed_memory_for_reuse

        keep_freed_memory_for_reuse()
    torch.manual_seed(seed)
    variant, bf16, _ = variant.partition(BF16)
    rotation = "riemannian" if variant == "fixed_u" else variant
    config = InfoDisentConfig(rotation_parametrization=rotation, num_labels=num_labels)
    head = InfoDisentHead(config, dim).train()
    with torch.no_grad():
        if head.rotation.weight is not None:
            q, _ = torch.linalg.qr(torch.randn(dim, dim))
            head.rotation.weight.copy_(q)
        if head.rotation.generator is not None:
            head.rotation.generator.normal_(0.0, 0.02)
        head.classifier.weight_raw.normal_(0.0, 0.05)
    head.to(device)
    head.rotation.matmul_dtype = torch.bfloat16 if bf16 else None
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
    if variant != "fixed_u":
        head.rotation.attach(optimizer)
    features = torch.randn(batch, dim, grid, grid).relu_().to(device)
    rng = torch.Generator().manual_seed(seed)

    def step() -> None:
        # New labels every step: the gradient is as noisy as a real batch's, so Adam's steps have realistic sizes
        # (with one fixed batch every step would be a full +-lr step and U would turn by ~4 lr sqrt(D) rad).
        labels = torch.randint(0, num_labels, (batch,), generator=rng).to(device)
        loss = head(features, labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step, head


def step_ratios(
    shapes=SHAPES,
    batches=(256, 64),
    variants=VARIANTS,
    repeats: int = 3,
    skip=(),
    device="cpu",
    log=None,
    warmup: int = 3,
) -> dict:
    """Median seconds per step and median per-round ratio to the floor for every (shape, batch, variant).
    `skip`: (shape name, variant) pairs not measured (float64 matrix_exp at D = 2048 takes ~45 s a step)."""
    results = {}
    for name, (dim, grid) in shapes.items():
        for batch in batches:
            active = [v for v in variants if (name, v) not in skip]
            steps = {v: make_step(v, dim, grid, batch, device=device)[0] for v in active}
            for fn in steps.values():  # warm-up: allocator, Adam's first (full-size) steps
                for _ in range(warmup):
                    fn()
            times = {v: [] for v in active}
            for _ in range(repeats):
                for v, fn in steps.items():
                    start = time.perf_counter()
                    fn()
                    times[v].append(time.perf_counter() - start)
                    if log:
                        log(f"{name} batch {batch} {v}: {times[v][-1]:.3f} s")

            def floor(v: str) -> list[float]:  # the fixed-U step with the same GEMM dtype
                return times["fixed_u" + BF16] if v.endswith(BF16) and "fixed_u" + BF16 in times else times["fixed_u"]

            results[f"{name}_batch{batch}"] = {
                v: {
                    "seconds": statistics.median(t),
                    "all_seconds": t,
                    "ratio_to_fixed_u": statistics.median(a / b for a, b in zip(t, floor(v))),
                }
                for v, t in times.items()
            }
            del steps
    return results


def orthogonality(
    variants=("riemannian", "cayley"), dim: int = 768, grid: int = 7, batch: int = 32, steps: int = 30, lr: float = 0.1
) -> dict:
    """max |UᵀU - I| (float64) after `steps` AdamW steps at learning rate `lr` (10x the default)."""
    out = {}
    for variant in variants:
        step, head = make_step(variant, dim, grid, batch, lr=lr)
        for _ in range(steps):
            step()
        head.eval()
        u = head.rotation.matrix().detach().double()
        out[variant] = float((u.T @ u - torch.eye(dim, dtype=torch.float64)).abs().max())
    return out


def step_memory_mb(
    variants=("fixed_u", "riemannian", "cayley"), dim: int = 2048, grid: int = 7, batch: int = 64
) -> dict:
    """Peak resident memory (MB) of one step of each variant above the memory held before it (features, weights and
    optimiser state already allocated; sampled every 20 ms)."""
    out = {}
    for variant in variants:
        step, _ = make_step(variant, dim, grid, batch)
        step()  # the optimiser state exists from here on
        with PeakMemory(torch.device("cpu")) as memory:
            before = memory.rss_mb()
            step()
        out[variant] = round(memory.peak_mb - before, 1)
        del step
    return out


README_MARKERS = ("<!-- rotation-table:start -->", "<!-- rotation-table:end -->")
LABELS = {
    "riemannian": "`riemannian`",
    "cayley": "`cayley` (float64, default)",
    "matrix_exp": "`matrix_exp` (float64)",
    "identity": "`identity` (U = I, no rotation)",
    "fixed_u": "fixed U (the floor)",
    "cayley+bf16": "`cayley`, bfloat16 GEMMs (default at D ≥ 512 on AMX / CUDA)",
    "fixed_u+bf16": "fixed U, bfloat16 GEMMs (its floor)",
}


def markdown_table(result: dict) -> str:
    """Step ratios per variant and shape / batch, orthogonality and memory, as a README table."""
    steps = result["steps"]
    columns = list(steps)
    variants = [v for v in (*VARIANTS, "fixed_u" + BF16, "cayley" + BF16) if any(v in steps[c] for c in columns)]
    header = "| rotation | " + " | ".join(
        c.rsplit("_", 2)[-2] + ", " + c.rsplit("_", 1)[-1].replace("batch", "batch ") for c in columns
    )
    memory = result.get("step_memory_mb_D2048_batch64")
    header += " | max abs(UᵀU − I) |" + (" extra memory of a step, D = 2048, batch 64 |" if memory else "")
    lines = [header, "|" + "---|" * (len(columns) + 2 + bool(memory))]
    ortho = result.get("orthogonality_after_30_steps_lr0.1_D768", {})
    for v in variants:
        cells = [
            f"{steps[c][v]['ratio_to_fixed_u']:.2f}× ({steps[c][v]['seconds']:.2f} s)" if v in steps[c] else "–"
            for c in columns
        ]
        o = f"{ortho[v]:.1e}" if v in ortho else "–"
        m = (f" {memory[v]:.0f} MB |" if v in memory else " – |") if memory else ""
        lines.append(f"| {LABELS[v]} | " + " | ".join(cells) + f" | {o} |{m}")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(description="Head step per rotation parametrisation / fixed-U step.")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[256, 64])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=(*VARIANTS, *(v + BF16 for v in VARIANTS)),
        default=["fixed_u", "identity", "riemannian", "cayley"],
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--orthogonality", action="store_true", help="Also max |UᵀU - I| after 30 steps at lr 0.1.")
    parser.add_argument("--memory", action="store_true", help="Also the peak memory of a step (D = 2048, batch 64).")
    parser.add_argument(
        "--output", default=None, help="Also write the JSON here (e.g. benchmarks/rotation_results.json)."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "steps": step_ratios(
            {k: SHAPES[k] for k in args.shapes},
            args.batches,
            args.variants,
            args.repeats,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    }
    if args.orthogonality:
        result["orthogonality_after_30_steps_lr0.1_D768"] = orthogonality()
    if args.memory:
        result["step_memory_mb_D2048_batch64"] = step_memory_mb()
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    print(markdown_table(result))
