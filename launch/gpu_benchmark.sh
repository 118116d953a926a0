#!/usr/bin/env bash
# The GPU benchmark on one NVIDIA GPU (H100/H200/A100...): the recipe's training step
# (configs/imagenet50.py, nvidia: ResNet-50 bfloat16, BN groups of 256, label smoothing,
# its SGD and weight-decay mask; plain, remat full and conv_outputs, scan_blocks),
# torchvision's ResNet-50 eager and under torch.compile beside it, seconds to the first
# step (fresh and from the compilation cache), the CIFAR ResNet-20 step, a bfloat16
# matmul; images/s, compile seconds, peak memory, MFU from the analytic training FLOPs
# (3 × 2 × MACs × batch), same-run ratios and the goals, in one run.
#
#   launch/gpu_benchmark.sh [BATCH_PER_DEVICE] [resnet_jax.bench.gpu_benchmark flags...]
#   launch/gpu_benchmark.sh 256 --json=/tmp/gpu_benchmark.json
#   launch/gpu_benchmark.sh 256 --config=none      (the bare model)
#   launch/gpu_check.sh                              (this and the numerics: PASS/FAIL)
#
# Runs on a bare CUDA JAX image: Python with JAX for CUDA, flax, optax and numpy, plus
# torch and torchvision for the comparison; it needs no TensorFlow, tensorflow-datasets,
# ml-collections, clu or jmp, and installs nothing. PYTHON picks the interpreter. It is
# killed after TIMEOUT seconds (default 360); the children share a 330 s budget.
set -euo pipefail

batch_size=${1:-256}
if [[ ! "$batch_size" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [BATCH_PER_DEVICE] [resnet_jax.bench.gpu_benchmark flags...]; got BATCH_PER_DEVICE '$batch_size'" >&2
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

exec timeout "${TIMEOUT:-360}" "$python" -m resnet_jax.bench.gpu_benchmark \
  --batch_size="$batch_size" "$@"
