"""launch/tpu_vm.sh driven by a stub `gcloud`: its ssh runs the remote command here, in a
fake home per worker, with stand-ins for uv, python, sudo and lsof; every call is
logged. What it creates, how it waits, what it never deletes."""

import os
import pathlib
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# gcloud's stand-in. ssh --worker=all runs the command once per worker (STUB_WORKERS) in
# $STUB_ROOT/worker_<i> as HOME, unless STUB_SSH_FAIL is set (a dropped connection);
# describe prints one address per worker; queued-resources describe prints the next
# state of STUB_QR_STATES.
_GCLOUD = r'''#!/usr/bin/env bash
echo "gcloud $*" >> "$STUB_LOG"
args="$*"
case "$args" in
  *" ssh "*)
    [[ -n "${STUB_SSH_FAIL:-}" ]] && exit 255
    for a in "$@"; do [[ $a == --command=* ]] && command="${a#--command=}"; done
    for ((w = 0; w < ${STUB_WORKERS:-1}; w++)); do
      mkdir -p "$STUB_ROOT/worker_$w"
      (cd "$STUB_ROOT/worker_$w" && HOME="$STUB_ROOT/worker_$w" bash -c "$command") || exit $?
    done ;;
  *" scp "*)
    # gcloud compute tpus tpu-vm scp SOURCE ...: the bundle reaches every worker's home.
    if [[ $args == *resnet-jax.tar.gz* ]]; then
      for ((w = 0; w < ${STUB_WORKERS:-1}; w++)); do
        mkdir -p "$STUB_ROOT/worker_$w" && cp "$5" "$STUB_ROOT/worker_$w/"
      done
    fi ;;
  *"queued-resources describe"*)
    states=(${STUB_QR_STATES:-ACTIVE}); n=$(grep -c "queued-resources describe" "$STUB_LOG")
    echo "${states[$(( n - 1 < ${#states[@]} ? n - 1 : ${#states[@]} - 1 ))]}" ;;
  *"tpu-vm describe"*)
    for ((w = 0; w < ${STUB_WORKERS:-1}; w++)); do printf '10.0.0.%d;' "$w"; done; echo ;;
esac
exit 0
'''

# Remote stand-ins: uv refuses an existing venv as the real one does; the trainer
# records its arguments and exits with STUB_TRAIN_EXIT.
_REMOTE_BIN = {
    'python3': '#!/usr/bin/env bash\nmkdir -p ~/.local/bin\ncp "$STUB_BIN/uv" ~/.local/bin/uv\n',
    'uv': r'''#!/usr/bin/env bash
if [[ $1 == venv ]]; then
  dir=${@: -1}
  [[ -e $dir ]] && { echo "error: $dir already exists" >&2; exit 2; }
  mkdir -p "$dir/bin"
  printf 'export PATH="%s/trainer:$PATH"\n' "$STUB_ROOT" > "$dir/bin/activate"
fi
exit 0
''',
    'sudo': '#!/usr/bin/env bash\necho "sudo $*" >> "$STUB_LOG"\n[[ $1 == rm ]] && exit 0\n"$@"\n',
    'lsof': '#!/usr/bin/env bash\nexit 1\n',
    'pkill': '#!/usr/bin/env bash\necho "pkill $*" >> "$STUB_LOG"\nexit 1\n',
}
_TRAINER = '#!/usr/bin/env bash\necho "trainer $*"\nexit ${STUB_TRAIN_EXIT:-0}\n'


def _executable(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def gcloud(tmp_path):
  bin_dir, root = tmp_path / 'bin', tmp_path / 'remote'
  _executable(bin_dir / 'gcloud', _GCLOUD)
  for name, text in _REMOTE_BIN.items():
    _executable(bin_dir / name, text)
  _executable(root / 'trainer' / 'python', _TRAINER)
  log = tmp_path / 'calls.log'
  env = {**os.environ, 'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
         'STUB_LOG': str(log), 'STUB_ROOT': str(root), 'STUB_BIN': str(bin_dir),
         'TPU_NAME': 'r50', 'ZONE': 'us-west4-a', 'WORKDIR': 'gs://bucket/r50',
         'POLL': '0', 'LOG_DIR': str(tmp_path / 'logs')}
  return env, log, root


def _script(env, *args, **extra):
  return subprocess.run(['bash', 'launch/tpu_vm.sh', *args], cwd=REPO,
                        env={**env, **extra}, capture_output=True, text=True, timeout=120)


def _calls(log):
  return log.read_text().splitlines() if log.exists() else []


def _wait_for_exit_codes(root, workers):
  import time  # noqa: PLC0415
  deadline = time.time() + 20
  while time.time() < deadline:
    if all((root / f'worker_{w}' / 'resnet-jax-logs' / 'exit_code').exists()
           for w in range(workers)):
      return
    time.sleep(0.1)


@pytest.mark.parametrize('accelerator, runtime', [
    ('v4-8', 'tpu-ubuntu2204-base'), ('v5litepod-8', 'v2-alpha-tpuv5-lite'),
    ('v5p-8', 'v2-alpha-tpuv5'), ('v6e-8', 'v2-alpha-tpuv6e')])
def test_the_runtime_version_follows_the_accelerator_type(gcloud, accelerator, runtime):
  env, log, _ = gcloud
  assert _script(env, 'create', ACCELERATOR_TYPE=accelerator).returncode == 0
  assert f'--version={runtime}' in _calls(log)[0].split()
  overridden = _script(env, 'create', ACCELERATOR_TYPE=accelerator, RUNTIME_VERSION='mine')
  assert overridden.returncode == 0 and '--version=mine' in _calls(log)[-1].split()


def test_an_unknown_accelerator_type_creates_nothing(gcloud):
  env, log, _ = gcloud
  result = _script(env, 'create', ACCELERATOR_TYPE='v9-8')
  assert result.returncode == 2 and not _calls(log)
  assert 'no default runtime for ACCELERATOR_TYPE v9-8' in result.stderr
  assert 'set RUNTIME_VERSION' in result.stderr


def test_a_queued_spot_slice_waits_until_active(gcloud):
  env, log, _ = gcloud
  result = _script(env, 'create', QUEUED='1', SPOT='1',
                   STUB_QR_STATES='WAITING_FOR_RESOURCES PROVISIONING ACTIVE')
  assert result.returncode == 0, result.stderr
  calls = _calls(log)
  assert calls[0].startswith('gcloud compute tpus queued-resources create r50-qr ')
  assert '--spot' in calls[0].split() and '--node-id=r50' in calls[0].split()
  assert sum('queued-resources describe' in c for c in calls) == 3
  failed = _script(env, 'create', QUEUED='1', STUB_QR_STATES='FAILED')
  assert failed.returncode == 1 and 'is FAILED' in failed.stderr


def test_install_twice_succeeds(gcloud):
  env, _, root = gcloud
  for _ in range(2):
    result = _script(env, 'install')
    assert result.returncode == 0, result.stderr
  assert (root / 'worker_0' / 'resnet-jax' / '.venv' / 'bin' / 'activate').exists()
  assert (root / 'worker_0' / 'resnet-jax' / 'launch' / 'tpu_vm.sh').exists()


def test_run_twice_keeps_both_logs_and_clears_stale_holders(gcloud):
  env, log, root = gcloud
  assert _script(env, 'install').returncode == 0
  for _ in range(2):
    result = _script(env, 'run', '--config=configs/imagenet50.py')
    assert result.returncode == 0, result.stderr
    _wait_for_exit_codes(root, 1)
  logs = sorted((root / 'worker_0' / 'resnet-jax-logs').glob('train-*.log'))
  assert len(logs) == 2
  for path in logs:
    assert 'trainer -m resnet_jax.main --distributed=yes --workdir=gs://bucket/r50 ' \
        '--config=configs/imagenet50.py' in path.read_text()
  calls = _calls(log)
  assert 'sudo rm -f /tmp/libtpu_lockfile' in calls
  assert any(c.startswith('pkill -f [r]esnet_jax.main') for c in calls)


def _all(env, root, **extra):
  result = _script(env, 'all', '--config=configs/digits.py', **extra)
  return result


def test_all_deletes_only_after_every_worker_exited_cleanly(gcloud):
  env, log, root = gcloud
  result = _all(env, root, STUB_WORKERS='2')
  assert result.returncode == 0, result.stderr
  assert any(c.startswith('gcloud compute tpus tpu-vm delete r50') for c in _calls(log))


@pytest.mark.parametrize('failure', [{'STUB_TRAIN_EXIT': '1'}, 'lost connection'])
def test_all_never_deletes_after_a_failure(gcloud, failure):
  env, log, root = gcloud
  if failure == 'lost connection':
    # Training started; then every poll fails (the laptop slept, the network dropped).
    assert _script(env, 'install').returncode == 0
    assert _script(env, 'run').returncode == 0
    result = _script(env, 'wait', STUB_SSH_FAIL='1', MAX_POLL_FAILURES='3')
    assert result.returncode == 1 and 'status polls failed in a row' in result.stderr
    script_text = (REPO / 'launch' / 'tpu_vm.sh').read_text()
    assert '|| true\n    logs\n    delete' not in script_text
  else:
    result = _all(env, root, STUB_WORKERS='2', **failure)
    assert result.returncode == 1
    assert 'training did not end cleanly' in result.stderr
    assert 'is kept' in result.stderr
  assert not any(' delete' in c for c in _calls(log))
