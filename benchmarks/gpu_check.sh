#!/usr/bin/env bash
# The real-scale report (benchmarks/scale.py: ResNet-50, ConvNeXt-T, ViT-B/16, Swin-T at 224², 200 classes) on one
# GPU, meant to finish in under 5 minutes: the backbone runs in bf16 mixed precision through accelerate, the head
# (rotation GEMMs, pooling, classifier, and the float32 retraction that keeps U orthogonal) in float32 (TF32 stays
# off: U's Newton–Schulz retraction needs full float32 products). Results: benchmarks/scale_results_cuda.json.
# Commit them with this command whenever a GPU is lent; CI never depends on it.
#
#   bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --smoke    # tiny configs; without a GPU it runs the same recipe on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

smoke=""
output="benchmarks/scale_results_cuda.json"
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke="--smoke"; output="${TMPDIR:-/tmp}/scale_smoke_gpu_check.json" ;;
    *) echo "error: unknown argument $arg (only --smoke)" >&2; exit 2 ;;
  esac
done

if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python -m benchmarks.scale --device cuda --mixed_precision bf16 $smoke --output "$output"
elif [ -n "$smoke" ]; then
  echo "No CUDA device: running the GPU recipe (bf16 autocast backbone, float32 head) on the CPU." >&2
  python -m benchmarks.scale --device cpu --mixed_precision bf16 $smoke --output "$output"
else
  echo "error: no CUDA device visible to torch (run with --smoke to check the recipe on the CPU)" >&2
  exit 2
fi
echo "Wrote $output"
