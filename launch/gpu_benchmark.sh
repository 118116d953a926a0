#!/usr/bin/env bash
# ResNet-50 training throughput on one NVIDIA GPU (H100/H200), bfloat16, synthetic data.
#
#   launch/gpu_benchmark.sh [BATCH_SIZE] [extra resnet_jax.benchmark flags...]
#   launch/gpu_benchmark.sh 256 --format=json
#
# Needs a Python with JAX for CUDA (pip install -U "jax[cuda12]" or "jax[cuda13]") and the
# packages of requirements.txt; set PYTHON to pick the interpreter. With INSTALL=1 it first
# installs requirements.txt into that Python (the GPU JAX already there is kept). Prints
# the benchmark's report; the "step ... img/s" line is the figure. Runs in ~2–3 minutes
# (compile ~1 min, 2 warm-up and 20 timed steps); killed after TIMEOUT seconds (290).
set -euo pipefail

batch_size=${1:-256}
if [[ ! "$batch_size" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [BATCH_SIZE] [resnet_jax.benchmark flags...]; got BATCH_SIZE '$batch_size'" >&2
  exit 2
fi
shift || true
python=${PYTHON:-python}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${INSTALL:-0}" == 1 ]]; then
  "$python" -m pip install -q -r requirements.txt
fi
if ! "$python" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  echo "$0: $python has no JAX GPU backend (jax.default_backend() != 'gpu'); install" \
       "jax[cuda12] or jax[cuda13], or set PYTHON" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# The trainer's own step: bfloat16 compute, float32 parameters and BatchNorm statistics.
exec timeout "${TIMEOUT:-290}" "$python" -m resnet_jax.benchmark --mode=train \
  --model=resnet50 --batch_size="$batch_size" --image_size=224 --dtype=bfloat16 \
  --warmup_steps=2 --timed_steps=20 "$@"
