#!/usr/bin/env bash
# Fashion-MNIST's papers' recipe on one accelerator within a time budget, without
# TensorFlow: the zhong recipe (configs/fashion_mnist.py: Zhong et al. 2020, 300 epochs,
# ResNet-20) trained by resnet_jax.tools.budgeted_run, which prints the final and best
# test accuracy, the wall time and images/s (fewer epochs, with a WARNING line, where the
# accelerator is too slow for 300 in the budget).
#
#   launch/gpu_results.sh --prepare DIR       (here, with network: wheels + data into DIR)
#   launch/gpu_results.sh [RECIPE] [--config.key=value ...]     (there)
#   CARRY=DIR launch/gpu_results.sh zhong --config.model=resnet32
#
# A bare CUDA JAX image (JAX, flax, optax, orbax-checkpoint, tensorboard, absl, etils) lacks
# ml-collections and clu: --prepare downloads their pure-Python wheels (Python 3.12) and
# copies Fashion-MNIST's four IDX files (Debian's dataset-fashion-mnist, ~30 MB) into DIR;
# with CARRY=DIR the run installs the wheels into a temporary folder (no network, nothing
# outside it written) and reads the data from DIR/fashion-mnist. Without CARRY, the
# installed packages and dataset.data_dir (default: Debian's folder) are used.
#
# Environment: PYTHON (default python3), BUDGET seconds for the whole training (default
# 540), WORKDIR (default a new temporary folder), ALLOW_CPU=1 to rehearse on a CPU. The
# run is killed after BUDGET + 120 s.
set -euo pipefail
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
# Paths the caller gave, before the cd below.
[[ -n "${CARRY:-}" ]] && CARRY=$(absolute "$CARRY")
[[ -n "${WORKDIR:-}" ]] && WORKDIR=$(absolute "$WORKDIR")
[[ "${1:-}" == "--prepare" && -n "${2:-}" ]] && set -- --prepare "$(absolute "$2")"
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
WHEELS=("ml-collections==1.1.0" "clu==0.0.12")

if [[ "${1:-}" == "--prepare" ]]; then
  dir=${2:?usage: $0 --prepare DIR}
  mkdir -p "$dir/wheels" "$dir/fashion-mnist"
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --platform any -d "$dir/wheels" "${WHEELS[@]}"
  data=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
  for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
              t10k-labels-idx1-ubyte; do
    if [[ ! -f "$data/$name.gz" ]]; then
      echo "$0: $data/$name.gz is missing: sudo apt-get install dataset-fashion-mnist, or set DATA_DIR" >&2
      exit 1
    fi
    cp "$data/$name.gz" "$dir/fashion-mnist/"
  done
  du -sh "$dir"
  exit 0
fi

recipe=${1:-zhong}
case "$recipe" in
  zhong|zhong_re|cpu) shift || true ;;
  --*) recipe=zhong ;;
  *) echo "$0: unknown recipe '$recipe'; valid recipes: zhong, zhong_re, cpu" >&2; exit 2 ;;
esac
overrides=()
if [[ -n "${CARRY:-}" ]]; then
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" "$CARRY"/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  overrides+=("--config.dataset.data_dir=$CARRY/fashion-mnist")
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${ALLOW_CPU:-}" ]] && \
   ! "$python" -c 'import jax, sys; sys.exit(jax.default_backend() == "cpu")' 2>/dev/null; then
  echo "$0: $python's JAX has no accelerator (jax.default_backend() is cpu); ALLOW_CPU=1" \
       "rehearses on the CPU" >&2
  exit 1
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader || true
budget=${BUDGET:-540}
workdir=${WORKDIR:-$(mktemp -d)/fashion_mnist_$recipe}
echo "recipe $recipe, budget $budget s, workdir $workdir"
exec timeout "$(( ${budget%.*} + 120 ))" "$python" -m resnet_jax.tools.budgeted_run \
  --config="configs/fashion_mnist.py:$recipe" --workdir="$workdir" --budget_s="$budget" \
  ${overrides[@]+"${overrides[@]}"} "$@"  # bash 3.2 (macOS): an empty array is unbound
