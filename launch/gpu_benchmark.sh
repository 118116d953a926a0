#!/usr/bin/env bash
# The accelerator check on one NVIDIA GPU (H100/H200/A100...): ResNet-50 bfloat16 training
# (plain, remat, scan_blocks), torchvision's ResNet-50 beside it, the CIFAR ResNet-20 step,
# a bfloat16 matmul; images/s, compile seconds, peak memory and MFU, in one run.
#
#   launch/gpu_benchmark.sh [BATCH_SIZE] [resnet_jax.tools.gpu_benchmark flags...]
#   launch/gpu_benchmark.sh 256 --json=/tmp/gpu_check.json
#
# Runs on a bare CUDA JAX image: Python with JAX for CUDA, flax, optax and numpy, plus
# torch and torchvision for the comparison; it needs no TensorFlow, tensorflow-datasets,
# ml-collections, clu or jmp, and installs nothing. PYTHON picks the interpreter. It is
# killed after TIMEOUT seconds (default 295); the children share a 280 s budget.
set -euo pipefail

batch_size=${1:-256}
if [[ ! "$batch_size" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [BATCH_SIZE] [resnet_jax.tools.gpu_benchmark flags...]; got BATCH_SIZE '$batch_size'" >&2
  exit 2
fi
shift || true
python=${PYTHON:-python}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$python" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  echo "$0: $python has no JAX GPU backend (jax.default_backend() != 'gpu'); install" \
       "jax[cuda12] or jax[cuda13], or set PYTHON" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

exec timeout "${TIMEOUT:-295}" "$python" -m resnet_jax.tools.gpu_benchmark \
  --batch_size="$batch_size" "$@"
