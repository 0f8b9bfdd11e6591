#!/usr/bin/env bash
# The GPU measurements of issue 6, prepared to run once on a lent GPU machine (no package registry
# there: it uses the machine's own python3 with PyTorch; nothing is installed). Writes under $OUT
# (the device tool's result folder) or build/gpu:
#   nvidia-smi.csv   the card
#   gpu_bench.json   paper-size PyTorch model: official way (whole network per click), encoder once +
#                    follow-up clicks, fp16/bf16 autocast against fp32, peak device memory
# ONNX Runtime CUDA/TensorRT are measured only where onnxruntime-gpu is installed (`make bench` with
# ORT_FLAVOR=gpu and the bench example's --device cuda|tensorrt); gpu_bench.json says which.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1 || true
cd onnx
timeout "${GPU_CHECK_TIMEOUT:-480}" python3 -m sam3d_onnx.gpu_bench --config paper --device cuda --repeat 5 \
    --out "$out/gpu_bench.json"
