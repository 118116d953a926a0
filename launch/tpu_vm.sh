#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: create it, install on every worker, run the same
# command on all workers, collect the logs, delete it.
#
#   export TPU_NAME=resnet50 ZONE=us-west4-a ACCELERATOR_TYPE=v5litepod-64 \
#          RUNTIME_VERSION=v2-alpha-tpuv5-lite WORKDIR=gs://my-bucket/runs/r50
#   launch/tpu_vm.sh all --config=configs/imagenet50.py --config.dataset.data_dir=gs://my-bucket/tfds
#
# Steps (each can be run alone): create | install | run | logs | delete | all.
# `run` starts training in the background on every worker (nohup) and returns; `logs`
# copies each worker's log to ./tpu_logs/<TPU_NAME>/worker_<i>.log. Run `run` again after a
# preemption or maintenance event: it resumes from the newest checkpoint in $WORKDIR.
# WORKDIR must be a gs:// path every worker can write (checkpoints, summaries, config).
# A worker whose trainer stops with an error ends the others' too (the trainer's peer
# watch); one that dies silently is noticed by jax.distributed's heartbeats (30 s).
# Needs: gcloud, authenticated, with the TPU API enabled in the current project.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (gs://...)}"
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5litepod-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
REMOTE_DIR=${REMOTE_DIR:-resnet-jax}
LOG_DIR=${LOG_DIR:-tpu_logs/${TPU_NAME}}
SPOT=${SPOT:-}  # set to 1 for a spot (preemptible) slice

step=${1:?usage: $0 create|install|run|logs|delete|all [resnet_jax.main flags...]}
shift
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
tpu=(gcloud compute tpus tpu-vm)

on_all_workers() {
  "${tpu[@]}" ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}

create() {
  "${tpu[@]}" create "$TPU_NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" ${SPOT:+--spot}
}

install() {
  # The working tree, without local virtualenvs or outputs, to every worker.
  local bundle
  bundle=$(mktemp -d)/resnet-jax.tar.gz
  tar -C "$repo_root" --exclude=.git --exclude=.venv --exclude=tpu_logs -czf "$bundle" .
  "${tpu[@]}" scp "$bundle" "$TPU_NAME:~/" --zone="$ZONE" --worker=all
  # JAX >= 0.7 needs Python >= 3.11, newer than some TPU images ship: uv brings its own.
  on_all_workers "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/resnet-jax.tar.gz -C ~/$REMOTE_DIR && \
    cd ~/$REMOTE_DIR && python3 -m pip install -q --user uv && \
    ~/.local/bin/uv venv --python 3.12 .venv && . .venv/bin/activate && \
    ~/.local/bin/uv pip install -q -r requirements.txt 'jax[tpu]'"
}

run() {
  local flags=''
  [[ $# -gt 0 ]] && flags=$(printf ' %q' "$@")
  # --distributed=yes: jax.distributed.initialize() finds the other workers itself.
  on_all_workers "cd ~/$REMOTE_DIR && . .venv/bin/activate && \
    nohup python -m resnet_jax.main --distributed=yes --workdir=$(printf %q "$WORKDIR")$flags \
    > ~/train.log 2>&1 < /dev/null &"
  echo "started on all workers; follow with: $0 logs   (or ssh --worker=0 'tail -f ~/train.log')"
}

logs() {
  mkdir -p "$LOG_DIR"
  local workers
  workers=$("${tpu[@]}" describe "$TPU_NAME" --zone="$ZONE" \
    --format='value(networkEndpoints[].ipAddress)' | tr ';,' '\n\n' | grep -c .)
  for ((i = 0; i < workers; i++)); do
    "${tpu[@]}" scp "$TPU_NAME:~/train.log" "$LOG_DIR/worker_$i.log" --zone="$ZONE" --worker="$i"
  done
  echo "logs in $LOG_DIR"
}

delete() {
  "${tpu[@]}" delete "$TPU_NAME" --zone="$ZONE" --quiet
}

case "$step" in
  create) create ;;
  install) install ;;
  run) run "$@" ;;
  logs) logs ;;
  delete) delete ;;
  all)
    create
    install
    run "$@"
    # Wait for worker 0's process to end, then collect logs and delete the slice.
    # '[r]esnet' so that pgrep does not find this very command line.
    on_all_workers "while pgrep -f '[r]esnet_jax.main' > /dev/null; do sleep 60; done" || true
    logs
    delete
    ;;
  *) echo "unknown step '$step'; valid: create install run logs delete all" >&2; exit 2 ;;
esac
