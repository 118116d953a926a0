#!/usr/bin/env bash
# One command for a GPU machine: the GPU benchmark (resnet_jax.bench.gpu_benchmark: the
# recipe's training step, torchvision eager and torch.compile, seconds to the first step,
# the goals), one BatchNorm layer ours against flax's (resnet_jax.bench.norm_benchmark)
# and the numerics checks (resnet_jax.bench.gpu_numerics: logits against torchvision, a
# bfloat16 step against float32, scan_blocks against unscanned); a final PASS/FAIL line.
# Under 8 minutes: each part runs under `timeout`.
#
#   launch/gpu_check.sh
#   GPU_CHECK_OUT=/tmp/check launch/gpu_check.sh      (keeps the JSON reports there)
#
# Runs on a bare CUDA JAX image: Python with JAX for CUDA, flax, optax, numpy, torch and
# torchvision; no TensorFlow, tensorflow-datasets, ml-collections, clu or jmp, and it
# installs nothing. Environment:
#   PYTHON                      the interpreter (default python)
#   GPU_CHECK_PARTS             benchmark,norm,numerics (default all three)
#   GPU_CHECK_BENCHMARK_ARGS    extra gpu_benchmark flags (e.g. --config=configs/imagenet50.py:flax)
#   GPU_CHECK_NUMERICS_ARGS     extra gpu_numerics flags (e.g. --logits_rtol=1e-5)
#   GPU_CHECK_BENCHMARK_SECONDS the benchmark's budget (default 250; killed 30 s later)
#   GPU_CHECK_NORM_SECONDS      the BatchNorm layer benchmark's limit (default 40)
#   GPU_CHECK_NUMERICS_SECONDS  the numerics' limit (default 150)
#   GPU_CHECK_ALLOW_CPU=1       without a GPU, rehearse on the CPU with tiny sizes
#                               (ResNet-18 at 32-64 pixels); otherwise no GPU is an error
# PASS: the benchmark measured its rows (the plain recipe step, its cached start,
# torchvision, the matmul; remat, scan_blocks and CIFAR rows that the time budget cuts
# are listed, not failed) and every numerics check is within its tolerance. The goals
# (met / not met / unmeasured) are reported, not judged, unless GPU_CHECK_REQUIRE_GOALS=1,
# when a goal not met fails the check too.
set -uo pipefail

python=${PYTHON:-python}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
start=$SECONDS
parts=${GPU_CHECK_PARTS:-benchmark,norm,numerics}
out=${GPU_CHECK_OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$out"

backend=$("$python" -c 'import jax; print(jax.default_backend())' 2>/dev/null | tail -1)
if [[ "$backend" == gpu ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  bench_sizes=()
  norm_sizes=(--repeats=10)
  numerics_sizes=()
elif [[ "${GPU_CHECK_ALLOW_CPU:-0}" == 1 ]]; then
  echo "gpu_check: no GPU (JAX backend '${backend:-none}'): rehearsing on the CPU with tiny sizes"
  bench_sizes=(--model=resnet18 --image_size=32 --batch_size=4 --cifar_batch_size=8
               --cifar_image_size=8 --warmup_steps=1 --timed_steps=2 --matmul_size=256
               --torch_compile_backend=aot_eager)
  norm_sizes=(--batch=4 --shapes=4x16x16x64 --repeats=2)
  numerics_sizes=(--model=resnet18 --image_size=64 --batch_size=8)
else
  echo "$0: error: $python has no JAX GPU backend (jax.default_backend() is" \
       "'${backend:-not importable}'); install jax[cuda12] or jax[cuda13], set PYTHON, or" \
       "GPU_CHECK_ALLOW_CPU=1 to rehearse on the CPU" >&2
  exit 1
fi

verdict=()
failed=0
if [[ ",$parts," == *,benchmark,* ]]; then
  budget=${GPU_CHECK_BENCHMARK_SECONDS:-250}
  # shellcheck disable=SC2086  # the extra flags split on spaces
  timeout "$((budget + 30))" "$python" -m resnet_jax.bench.gpu_benchmark \
    --time_budget="$budget" --json="$out/gpu_benchmark.json" "${bench_sizes[@]}" \
    ${GPU_CHECK_BENCHMARK_ARGS:-}
  rc=$?
  if ((rc)); then
    failed=1; verdict+=("benchmark failed (exit $rc$( ((rc == 124)) && echo ', timed out'))")
  else
    verdict+=("benchmark ran")
  fi
  goals=$("$python" -c '
import collections, json, sys
goals = json.load(open(sys.argv[1]))["goals"]
counts = collections.Counter(goal["status"] for goal in goals)
print(", ".join(f"{counts[s]} {s}" for s in ("met", "not met", "unmeasured") if counts[s]))
' "$out/gpu_benchmark.json" 2>/dev/null)
  if [[ -n "$goals" ]]; then
    verdict+=("goals: $goals")
    if [[ "${GPU_CHECK_REQUIRE_GOALS:-0}" == 1 && "$goals" == *"not met"* ]]; then
      failed=1
    fi
  fi
fi
if [[ ",$parts," == *,norm,* ]]; then
  timeout "${GPU_CHECK_NORM_SECONDS:-40}" "$python" -m resnet_jax.bench.norm_benchmark \
    --json="$out/norm_benchmark.json" "${norm_sizes[@]}"
  rc=$?
  if ((rc)); then
    failed=1; verdict+=("norm benchmark failed (exit $rc$( ((rc == 124)) && echo ', timed out'))")
  else
    verdict+=("norm benchmark ran")
  fi
fi
if [[ ",$parts," == *,numerics,* ]]; then
  # shellcheck disable=SC2086
  timeout "${GPU_CHECK_NUMERICS_SECONDS:-150}" "$python" -m resnet_jax.bench.gpu_numerics \
    --json="$out/gpu_numerics.json" "${numerics_sizes[@]}" ${GPU_CHECK_NUMERICS_ARGS:-}
  rc=$?
  if ((rc)); then
    failed=1; verdict+=("numerics failed (exit $rc$( ((rc == 124)) && echo ', timed out'))")
  else
    verdict+=("numerics within tolerance")
  fi
fi

summary=$(IFS=';'; echo "${verdict[*]}" | sed 's/;/; /g')
echo "reports: $out"
if ((failed)); then
  echo "gpu_check: FAIL ($summary) in $((SECONDS - start)) s"
  exit 1
fi
echo "gpu_check: PASS ($summary) in $((SECONDS - start)) s"
