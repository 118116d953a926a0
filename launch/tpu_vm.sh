#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: create it (directly or as a queued resource), install on
# every worker, start training detached on all workers, watch it, collect the logs.
#
#   export TPU_NAME=resnet50 ZONE=us-west4-a ACCELERATOR_TYPE=v5litepod-64 \
#          WORKDIR=gs://my-bucket/runs/r50
#   launch/tpu_vm.sh all --config=configs/imagenet50.py --config.dataset.data_dir=gs://my-bucket/tfds
#
# Steps (each can be run alone): create | install | run | status | wait | finish | logs |
# delete | recreate | all.
# - create: `tpu-vm create`, or with QUEUED=1 a queued resource (Cloud TPU's way to wait
#   for capacity; SPOT=1 for spot capacity), polled until ACTIVE. RUNTIME_VERSION follows
#   ACCELERATOR_TYPE (v4, v5litepod/v5e, v5p, v6e) unless set. A READY slice of that name
#   is used as it is; a PREEMPTED one is deleted and created again.
# - install: the working tree to every worker (in a git checkout, what git would commit:
#   ignored data and caches stay here), a venv, the package and jax[tpu]; run it again to
#   push a code change (the venv is kept).
# - run: clears stale TPU holders (a leftover trainer: SIGTERM, STOP_GRACE s to save a
#   checkpoint, then -9; processes holding /dev/accel* or /dev/vfio/*;
#   /tmp/libtpu_lockfile), then starts training detached (setsid nohup: it survives the
#   ssh session) with its own log, ~/resnet-jax-logs/train-<run>.log (latest.log points to
#   it), and its exit status in ~/resnet-jax-logs/exit_code. Flags arrive byte for byte.
# - status: each worker's state: running, exit=<code> or idle. wait: polls status with
#   short ssh calls every POLL seconds (a failed or partial poll is retried); exits 0 once
#   every worker's trainer finished (exit 0), 75 if they stopped early (the trainer's
#   status for SIGTERM or Ctrl-C: checkpoint saved), 1 if one failed, 3 after
#   MAX_POLL_FAILURES failed polls in a row.
# - finish: wait, then deletes the slice only if training finished; otherwise keeps it and
#   says what to do (stopped: `all` again resumes; failed: the logs, `run` or `recreate`;
#   no answer: `finish` again). Its exit status is wait's.
# - logs: every worker's logs to ./tpu_logs/<TPU_NAME>/worker_<i>/ (and LOG_BUCKET).
# - all: create, install, run, finish. Run the same `all` again after a stop: it reuses the
#   slice (or recreates a preempted one) and training resumes from $WORKDIR.
# - recreate: deletes what is left of the slice (a preempted spot slice cannot be
#   restarted), creates it again, installs and runs: training resumes from $WORKDIR.
# WORKDIR must be a gs:// path every worker can write (checkpoints, summaries, config).
# Needs: gcloud, authenticated, with the TPU API enabled in the current project.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (gs://...)}"
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5litepod-8}
REMOTE_DIR=${REMOTE_DIR:-resnet-jax}
LOG_DIR=${LOG_DIR:-tpu_logs/${TPU_NAME}}
LOG_BUCKET=${LOG_BUCKET:-}  # gs://... : logs also copied there
SPOT=${SPOT:-}  # 1: spot (preemptible) capacity
QUEUED=${QUEUED:-}  # 1: create through a queued resource
QR_NAME=${QR_NAME:-${TPU_NAME}-qr}
POLL=${POLL:-60}
MAX_POLL_FAILURES=${MAX_POLL_FAILURES:-30}
SSH_TIMEOUT=${SSH_TIMEOUT:-120}
STOP_GRACE=${STOP_GRACE:-60}  # s a leftover trainer gets to checkpoint; < SSH_TIMEOUT
QUEUE_TIMEOUT=${QUEUE_TIMEOUT:-86400}
STOPPED=75  # the trainer's exit status for a stop: checkpoint saved (resnet_jax/stopping.py)

step=${1:?usage: $0 create|install|run|status|wait|finish|logs|delete|recreate|all [resnet_jax.main flags...]}
shift
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
tpu=(gcloud compute tpus tpu-vm)
queued=(gcloud compute tpus queued-resources)

default_runtime() {
  case "$ACCELERATOR_TYPE" in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo "error: no default runtime for ACCELERATOR_TYPE $ACCELERATOR_TYPE (known: v4-*, " \
         "v5litepod-*, v5e-*, v5p-*, v6e-*): set RUNTIME_VERSION" >&2
       return 2 ;;
  esac
}

on_all_workers() {
  # A bounded ssh where coreutils' timeout exists (macOS lacks it unless installed).
  local limit=()
  command -v timeout > /dev/null && limit=(timeout "$SSH_TIMEOUT")
  ${limit[@]+"${limit[@]}"} "${tpu[@]}" ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}

slice_state() {
  # READY, PREEMPTED, ...; nothing if the slice does not exist (or cannot be described).
  "${tpu[@]}" describe "$TPU_NAME" --zone="$ZONE" --format='value(state)' 2> /dev/null || true
}

create() {
  local runtime state waited=0
  runtime=${RUNTIME_VERSION:-}
  [[ -n $runtime ]] || runtime=$(default_runtime) || exit 2
  state=$(slice_state)
  case "$state" in
    '') ;;
    READY) echo "$TPU_NAME exists and is READY: using it"; return ;;
    PREEMPTED | TERMINATED)
      echo "$TPU_NAME is $state: deleting it to create it again"
      delete ;;
    *) echo "error: $TPU_NAME exists in state $state: wait until it is READY, or $0 delete" >&2
       exit 1 ;;
  esac
  if [[ -z $QUEUED ]]; then
    "${tpu[@]}" create "$TPU_NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR_TYPE" \
      --version="$runtime" ${SPOT:+--spot}
    return
  fi
  "${queued[@]}" create "$QR_NAME" --node-id="$TPU_NAME" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$runtime" ${SPOT:+--spot}
  while :; do
    state=$("${queued[@]}" describe "$QR_NAME" --zone="$ZONE" --format='value(state.state)' \
      || echo UNKNOWN)
    case "$state" in
      ACTIVE) echo "queued resource $QR_NAME is ACTIVE"; return ;;
      FAILED | SUSPENDED)
        echo "error: queued resource $QR_NAME is $state; see: ${queued[*]} describe $QR_NAME --zone=$ZONE" >&2
        exit 1 ;;
    esac
    if ((waited >= QUEUE_TIMEOUT)); then
      echo "error: queued resource $QR_NAME still $state after $QUEUE_TIMEOUT s" >&2
      exit 1
    fi
    echo "queued resource $QR_NAME: $state; waiting"
    sleep "$POLL"
    waited=$((waited + POLL))
  done
}

install() {
  # The working tree to every worker: in a git checkout, the files git would commit
  # (tracked ones as they are now, untracked ones unless .gitignore names them), so ignored
  # data, workdirs, caches and virtualenvs stay here; elsewhere, all but the usual outputs.
  local here bundle
  here=$(mktemp -d)
  bundle=$here/resnet-jax.tar.gz
  # GNU tar's status 1: a file changed while it was read (a .pyc written meanwhile); the
  # bundle is still whole. --ignore-failed-read: a tracked file deleted since the last commit.
  if git -C "$repo_root" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    git -C "$repo_root" ls-files -z --cached --others --exclude-standard |
      tar -C "$repo_root" --null -T - --ignore-failed-read -czf "$bundle" || (($? == 1))
  else
    tar -C "$repo_root" --exclude=.git --exclude='.venv*' --exclude=tpu_logs \
      --exclude=__pycache__ --exclude=.pytest_cache -czf "$bundle" . || (($? == 1))
  fi
  "${tpu[@]}" scp "$bundle" "$TPU_NAME:~/" --zone="$ZONE" --worker=all || { rm -rf "$here"; return 1; }
  rm -rf "$here"  # one bundle per install would otherwise pile up in /tmp
  # The old code goes, the venv stays: a second install pushes a change. JAX >= 0.7 needs
  # Python >= 3.11, newer than some TPU images ship: uv brings its own.
  "${tpu[@]}" ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="set -e
    mkdir -p ~/$REMOTE_DIR && cd ~/$REMOTE_DIR
    find . -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    tar -xzf ~/resnet-jax.tar.gz
    command -v ~/.local/bin/uv > /dev/null || python3 -m pip install -q --user uv
    [ -d .venv ] || ~/.local/bin/uv venv --python 3.12 .venv
    . .venv/bin/activate && ~/.local/bin/uv pip install -q -e . 'jax[tpu]'"
}

run() {
  # The trainer's command line goes as a script file, quoted for the one shell that reads
  # it (bash start.sh) and carried in base64, which no shell on the way alters: flags
  # arrive byte for byte ($, quotes, backslashes, spaces). A run token makes the command
  # idempotent: ssh re-running it (gcloud retries a failed connection) finds its own
  # trainer started and leaves it be.
  local token script encoded
  token=$(date +%Y%m%d-%H%M%S)-$$-$RANDOM
  script="cd ~/$REMOTE_DIR && . .venv/bin/activate
python -m resnet_jax.main --distributed=yes$(printf ' %q' "--workdir=$WORKDIR" "$@")
echo \$? > ~/resnet-jax-logs/exit_code"
  encoded=$(printf '%s\n' "$script" | base64 | tr -d '\n')
  # pkill/pgrep patterns are bracketed so that the remote shell running this command (it
  # contains them) does not match them itself.
  on_all_workers "mkdir -p ~/resnet-jax-logs && cd ~/resnet-jax-logs
    if [ \"\$(cat run_id 2> /dev/null)\" = $token ]; then echo 'run $token already started'; exit 0; fi
    # A running trainer saves a checkpoint on SIGTERM: STOP_GRACE seconds for that, then -9;
    # then its wrapper, which would write a stale exit_code.
    if pkill -f '[r]esnet_jax[.]main'; then
      for _ in \$(seq $STOP_GRACE); do pgrep -f '[r]esnet_jax[.]main' > /dev/null || break; sleep 1; done
      pkill -9 -f '[r]esnet_jax[.]main' || true
    fi
    pkill -f '[r]esnet-jax-logs/start[.]sh' || true
    sudo lsof -t -w /dev/accel* /dev/vfio/* 2> /dev/null | xargs -r sudo kill -9 || true
    sudo rm -f /tmp/libtpu_lockfile
    rm -f exit_code
    echo $encoded | base64 -d > start.sh
    echo $token > run_id
    log=~/resnet-jax-logs/train-$token.log
    ln -sfn \"\$log\" latest.log
    s=start  # spelled apart: this shell's own command line must not match the pattern above
    setsid nohup bash ~/resnet-jax-logs/\$s.sh >> \"\$log\" 2>&1 < /dev/null &"
  echo "started on all workers; follow with: $0 status | $0 finish (waits, then deletes the slice)"
}

status() {
  # One marked line per worker, so that wait can tell a full answer from a partial one.
  on_all_workers "if pgrep -f '[r]esnet_jax[.]main' > /dev/null; then s=running;
    elif [ -f ~/resnet-jax-logs/exit_code ]; then s=exit=\$(cat ~/resnet-jax-logs/exit_code);
    else s=idle; fi; echo \"resnet-jax-status \$(hostname) \$s\""
}

num_workers() {
  local n
  n=$("${tpu[@]}" describe "$TPU_NAME" --zone="$ZONE" \
    --format='value(networkEndpoints[].ipAddress)' | tr ';,' '\n\n' | grep -c .) || true
  ((n > 0)) || { echo "$0: cannot count the workers of $TPU_NAME (tpu-vm describe)" >&2; return 1; }
  echo "$n"
}

wait_for_training() {
  # Short polls, never one long ssh session: a dropped connection is a retry, not an end.
  # Only a full answer counts: every worker's line, each running or exit=<code>.
  local workers='' out lines failures=0
  while :; do
    [[ -n $workers ]] || workers=$(num_workers) || workers=''
    if [[ -n $workers ]] && out=$(status); then
      lines=$(grep -o 'resnet-jax-status .*' <<< "$out" || true)  # whatever gcloud prefixes
      if (($(grep -c . <<< "$lines" || true) == workers)); then
        failures=0
        if grep -q ' running$' <<< "$lines"; then
          sleep "$POLL"
          continue
        fi
        if (($(grep -c ' exit=0$' <<< "$lines" || true) == workers)); then
          echo "training finished (exit status 0) on all $workers workers"
          return 0
        fi
        if ! grep -vqE " exit=(0|$STOPPED)$" <<< "$lines"; then
          echo "$0: training stopped early (exit status $STOPPED: a signal, e.g. maintenance" \
            "or preemption; the checkpoint of the step it reached is saved):" >&2
          echo "$lines" >&2
          return "$STOPPED"
        fi
        echo "$0: training failed on a worker:" >&2
        echo "$lines" >&2
        return 1
      fi
    fi
    failures=$((failures + 1))
    if ((failures >= MAX_POLL_FAILURES)); then
      echo "$0: $failures status polls failed in a row" >&2
      return 3
    fi
    echo "status poll failed ($failures/$MAX_POLL_FAILURES); retrying in $POLL s" >&2
    sleep "$POLL"
  done
}

logs() {
  local workers
  workers=$(num_workers)
  for ((i = 0; i < workers; i++)); do
    mkdir -p "$LOG_DIR/worker_$i"
    "${tpu[@]}" scp --recurse "$TPU_NAME:~/resnet-jax-logs/*" "$LOG_DIR/worker_$i/" \
      --zone="$ZONE" --worker="$i"
  done
  [[ -n $LOG_BUCKET ]] && gcloud storage cp --recursive "$LOG_DIR" "$LOG_BUCKET/"
  echo "logs in $LOG_DIR"
}

finish() {
  # wait, then: finished → logs and delete; anything else keeps the slice and says what to
  # do. Run it again after a lost connection: it resumes the wait-then-delete.
  local code=0 state
  wait_for_training || code=$?
  case $code in
    0) logs; delete; return 0 ;;
    "$STOPPED")
      logs || true
      echo "$0: the slice $TPU_NAME is kept. Resume from $WORKDIR with the same flags:" \
        "$0 all FLAGS (it reuses the slice), or $0 run FLAGS then $0 finish" >&2 ;;
    1)
      logs || true
      echo "$0: the slice $TPU_NAME is kept. Look at the logs ($LOG_DIR); then $0 run FLAGS" \
        "(it resumes from $WORKDIR) and $0 finish, $0 recreate FLAGS if the slice itself is" \
        "broken, or $0 delete" >&2 ;;
    *)
      state=$(slice_state)
      if [[ $state == PREEMPTED || -z $state ]]; then
        echo "$0: the slice $TPU_NAME is ${state:-gone}: $0 all FLAGS creates it again and" \
          "resumes from $WORKDIR" >&2
      else
        echo "$0: no answer from the workers of $TPU_NAME ($state); the trainer may still be" \
          "running, and the slice is kept: $0 finish waits again (and deletes the slice once" \
          "training finished)" >&2
      fi ;;
  esac
  return "$code"
}

delete() {
  if [[ -n $QUEUED ]]; then
    "${queued[@]}" delete "$QR_NAME" --zone="$ZONE" --force --quiet
  else
    "${tpu[@]}" delete "$TPU_NAME" --zone="$ZONE" --quiet
  fi
}

case "$step" in
  create) create ;;
  install) install ;;
  run) run "$@" ;;
  status) status ;;
  wait) wait_for_training ;;
  logs) logs ;;
  delete) delete ;;
  recreate)
    delete || echo "nothing to delete (or already gone); creating"
    create
    install
    run "$@"
    ;;
  finish) finish ;;
  all)
    create
    install
    run "$@"
    finish
    ;;
  *) echo "unknown step '$step'; valid: create install run status wait finish logs delete recreate all" >&2
     exit 2 ;;
esac
