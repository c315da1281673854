#!/usr/bin/env bash
# The real-scale report (benchmarks/scale.py: ResNet-50, ConvNeXt-T, ViT-B/16, Swin-T at 224², 200 classes) on one
# GPU, meant to finish in under 5 minutes: the backbone runs in bf16 mixed precision through accelerate; the head is
# float32 with U built in float64 by the Cayley map (the rotation GEMMs in bf16 at D >= 512, as `fit_head` picks).
# Results: benchmarks/scale_results_cuda.json, rewritten after each backbone so a run stopped early keeps what it
# measured ("complete": false). Commit them with this command whenever a GPU is lent; CI never depends on it.
#
#   bash benchmarks/gpu_check.sh                      # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --output FILE.json   # the results elsewhere
#   bash benchmarks/gpu_check.sh --smoke              # tiny configs; without a GPU, the same recipe on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

smoke=""
output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke="--smoke" ;;
    --output)
      [ $# -ge 2 ] || { echo "error: --output needs a file name" >&2; exit 2; }
      output="$2"; shift ;;
    *) echo "error: unknown argument $1 (only --smoke and --output FILE)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$output" ]; then
  if [ -n "$smoke" ]; then output="${TMPDIR:-/tmp}/scale_smoke_gpu_check.json"; else output="benchmarks/scale_results_cuda.json"; fi
fi

if python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -m benchmarks.scale --device cuda --mixed_precision bf16 $smoke --output "$output"
  # extraction images/s against the backbone's own forward (benchmarks/extraction_speed_cuda.json)
  if [ -z "$smoke" ]; then python3 -m benchmarks.extraction_speed --device cuda; fi
elif [ -n "$smoke" ]; then
  echo "No CUDA device: running the GPU recipe (bf16 autocast backbone, float32 head) on the CPU." >&2
  python3 -m benchmarks.scale --device cpu --mixed_precision bf16 $smoke --output "$output"
else
  echo "error: no CUDA device visible to torch (run with --smoke to check the recipe on the CPU)" >&2
  exit 2
fi
echo "Wrote $output"
