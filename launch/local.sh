#!/usr/bin/env bash
# Runs `python -m resnet_jax.main FLAGS...` as N processes on this machine, wired together
# through jax.distributed: the multi-host code path, on one CPU box.
#
#   launch/local.sh N [FLAGS...]
#   launch/local.sh 2 --config=configs/digits.py --workdir=/tmp/digits_2proc
#
# Each process gets DEVICES_PER_PROCESS fake CPU devices (default 2). Its output goes to
# the terminal prefixed with [process i] and, if LOG_DIR is set, to LOG_DIR/process_<i>.log.
# Exits non-zero if any process fails, and then ends the others: the trainer's own peer
# watch normally stops them within seconds; whatever still runs GRACE seconds (default
# 30) after the first failure is killed. Ctrl-C or SIGTERM reaches every process as
# SIGTERM (they agree on a step, checkpoint and exit 0). PORT picks the coordinator port.
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
port=${PORT:-$((20000 + RANDOM % 20000))}
python=${PYTHON:-python}
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"

pids=()
forward() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap forward TERM INT

for ((i = 0; i < num_processes; i++)); do
  (
    trap '' INT  # Ctrl-C reaches the whole process group: let the TERM forwarded below act.
    export JAX_PLATFORMS=cpu
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${devices}"
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
    if ((code != 0)); then
      ((status == 0)) && status=$code
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
