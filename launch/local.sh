#!/usr/bin/env bash
# Runs `python -m resnet_jax.main FLAGS...` as N processes on this machine, wired together
# through jax.distributed: the multi-host code path on one box.
#
#   launch/local.sh N [FLAGS...]
#   launch/local.sh 2 --config=configs/digits.py --workdir=/tmp/digits_2proc
#
# Devices: with GPUs (nvidia-smi lists them; DEVICE=gpu|cpu overrides the choice),
# process i gets GPU i (CUDA_VISIBLE_DEVICES=i), one process per GPU; N may not exceed
# the GPUs. Without, each process gets DEVICES_PER_PROCESS fake CPU devices (default 2)
# and JAX_PLATFORMS=cpu. Each process's output goes to
# the terminal prefixed with [process i] and, if LOG_DIR is set, to LOG_DIR/process_<i>.log.
# Exit status: a failed process's (the first), else 75 if the run stopped early (the
# trainer's status for a stop: checkpoint saved, the same command resumes), else 0. A
# failure ends the others: the trainer's own peer watch normally stops them within
# seconds; whatever still runs GRACE seconds (default 30) after the first failure is
# killed. Ctrl-C or SIGTERM reaches every process as SIGTERM: they agree on a step,
# checkpoint it and exit 75. The coordinator port is one the
# kernel reports free (bound to port 0), or PORT, which must be free.
# Relative paths in FLAGS are relative to the current directory.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [resnet_jax.main flags...]" >&2
  exit 2
fi
num_processes=$1
shift
devices=${DEVICES_PER_PROCESS:-2}
grace=${GRACE:-30}
python=${PYTHON:-python}
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"

# A random port can be taken (or in the ephemeral range, by any client): ask the kernel.
free_port='import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
print(s.getsockname()[1])'
if [[ -n "${PORT:-}" ]]; then
  port=$("$python" -c "$free_port" "$PORT") || {
    echo "$0: PORT $PORT is in use; unset PORT to let the kernel pick a free one" >&2; exit 2; }
else
  port=$("$python" -c "$free_port" 0)
fi

gpus=0
if [[ ${DEVICE:-auto} != cpu ]] && command -v nvidia-smi > /dev/null; then
  gpus=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU ' || true)
fi
if [[ ${DEVICE:-auto} == gpu && $gpus -eq 0 ]]; then
  echo "$0: DEVICE=gpu but nvidia-smi lists no GPU" >&2
  exit 2
fi
if ((gpus > 0 && num_processes > gpus)); then
  echo "$0: $num_processes processes but $gpus GPUs: one process per GPU (or DEVICE=cpu)" >&2
  exit 2
fi

pids=()
forward() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap forward TERM INT

for ((i = 0; i < num_processes; i++)); do
  (
    trap '' INT  # Ctrl-C reaches the whole process group: let the TERM forwarded below act.
    if ((gpus > 0)); then
      export CUDA_VISIBLE_DEVICES=$i
    else
      export JAX_PLATFORMS=cpu
      export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${devices}"
    fi
    exec "$python" -m resnet_jax.main --coordinator_address="127.0.0.1:${port}" \
      --num_processes="$num_processes" --process_id="$i" "$@" 2>&1
  ) > >(
    trap '' INT
    if [[ -n "${LOG_DIR:-}" ]]; then
      mkdir -p "$LOG_DIR"
      sed -u "s/^/[process $i] /" | tee "$LOG_DIR/process_$i.log"
    else
      sed -u "s/^/[process $i] /"
    fi
  ) &
  pids+=($!)
done

stopped=75  # resnet_jax/stopping.py: EXIT_STOPPED
status=0
failed_at=''
remaining=("${pids[@]}")
set +e
while ((${#remaining[@]})); do
  still=()
  for pid in "${remaining[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    wait "$pid"  # bash kept its exit status
    code=$?
    if ((code == stopped)); then
      ((status == 0)) && status=$code  # the others stop at the same step: no grace clock
    elif ((code != 0)); then
      ((status == 0 || status == stopped)) && status=$code
      [[ -z $failed_at ]] && failed_at=$SECONDS
    fi
  done
  remaining=("${still[@]}")
  if [[ -n $failed_at ]] && ((${#remaining[@]})) && ((SECONDS - failed_at >= grace)); then
    echo "$0: a process failed ${grace} s ago; killing processes ${remaining[*]}" >&2
    kill -KILL "${remaining[@]}" 2>/dev/null
  fi
  ((${#remaining[@]})) && sleep 1
done
exit $status
