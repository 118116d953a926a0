"""launch/tpu_vm.sh driven by a stub `gcloud`: its ssh runs the remote command here, in a
fake home per worker, with stand-ins for uv, python, sudo, lsof, pgrep and pkill; every
call is logged. What it creates, how it waits, what it never deletes.

TPU_VM_SH=/path/to/launch/tpu_vm.sh drives another copy (an older one, to see these
tests fail on it)."""

import os
import pathlib
import signal
import stat
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = os.environ.get('TPU_VM_SH', str(REPO / 'launch' / 'tpu_vm.sh'))

# gcloud's stand-in. ssh --worker=all runs the command once per worker (STUB_WORKERS) in
# $STUB_ROOT/worker_<i> as HOME; with STUB_SSH_FAIL=1 every ssh fails (255), with
# STUB_SSH_FAIL=after-start every ssh after the one that started training does (the laptop
# slept, the network dropped); with STUB_SSH_TWICE=1 each command runs twice. describe prints one address per worker (STUB_DESCRIBED
# overrides the count); queued-resources describe prints the next state of STUB_QR_STATES.
# create makes $STUB_ROOT/slice, delete removes it; describe --format='value(state)' prints
# STUB_TPU_STATE (READY) while it exists and fails as gcloud does (NOT_FOUND) otherwise.
_GCLOUD = r'''#!/usr/bin/env bash
echo "gcloud $*" >> "$STUB_LOG"
args="$*"
case "$args" in
  *" ssh "*)
    [[ "${STUB_SSH_FAIL:-}" == 1 ]] && exit 255
    [[ "${STUB_SSH_FAIL:-}" == after-start && -e "$STUB_ROOT/started" ]] && exit 255
    for a in "$@"; do [[ $a == --command=* ]] && command="${a#--command=}"; done
    for ((w = 0; w < ${STUB_WORKERS:-1}; w++)); do
      mkdir -p "$STUB_ROOT/worker_$w"
      (cd "$STUB_ROOT/worker_$w" && HOME="$STUB_ROOT/worker_$w" bash -c "$command") || exit $?
      if [[ -n ${STUB_SSH_TWICE:-} ]]; then  # as gcloud re-running it after a dropped connection
        (cd "$STUB_ROOT/worker_$w" && HOME="$STUB_ROOT/worker_$w" bash -c "$command") || exit $?
      fi
    done
    [[ $command == *nohup* ]] && touch "$STUB_ROOT/started"
    exit 0 ;;
  *" scp "*)
    # gcloud compute tpus tpu-vm scp SOURCE ...: the bundle reaches every worker's home.
    if [[ $args == *resnet-jax.tar.gz* ]]; then
      for ((w = 0; w < ${STUB_WORKERS:-1}; w++)); do
        mkdir -p "$STUB_ROOT/worker_$w" && cp "$5" "$STUB_ROOT/worker_$w/"
      done
    fi ;;
  *" create "*)
    touch "$STUB_ROOT/slice" ;;  # the slice (or queued resource's node) now exists
  *" delete "*)
    rm -f "$STUB_ROOT/slice" ;;
  *"tpu-vm describe"*"--format=value(state)"*)
    [[ -e "$STUB_ROOT/slice" ]] || { echo "NOT_FOUND: $TPU_NAME" >&2; exit 1; }
    echo "${STUB_TPU_STATE:-READY}" ;;
  *"queued-resources describe"*)
    states=(${STUB_QR_STATES:-ACTIVE}); n=$(grep -c "queued-resources describe" "$STUB_LOG")
    echo "${states[$(( n - 1 < ${#states[@]} ? n - 1 : ${#states[@]} - 1 ))]}" ;;
  *"tpu-vm describe"*)
    for ((w = 0; w < ${STUB_DESCRIBED:-${STUB_WORKERS:-1}}; w++)); do
      printf '10.0.0.%d;' "$w"
    done
    echo ;;
esac
exit 0
'''

# pgrep/pkill -f as procps has them, but only over processes whose working directory is
# under $STUB_ROOT (the suite's other processes stay out of reach). Like the real ones they
# match the shell that runs them too: a remote command that contains pkill's pattern
# literally kills itself.
_PROCS = r'''#!/usr/bin/env bash
signal=TERM
while [[ $1 == -* ]]; do
  case $1 in -f) ;; -*) signal=${1#-} ;; esac
  shift
done
pattern=$1 found=1
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [[ $pid == "$$" ]] && continue
  [[ $(readlink "$d/cwd" 2> /dev/null) == "$STUB_ROOT"* ]] || continue
  tr '\0' ' ' < "$d/cmdline" 2> /dev/null | grep -qE -- "$pattern" || continue
  found=0
  if [[ $(basename "$0") == pkill ]]; then
    echo "pkill -$signal $pid" >> "$STUB_LOG"
    kill "-$signal" "$pid" 2> /dev/null
  fi
done
exit $found
'''

# Remote stand-ins: uv refuses an existing venv as the real one does; lsof finds nothing.
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
    'pgrep': _PROCS,
    'pkill': _PROCS,
}
# The trainer records its arguments (one per line after "trainer:") and exits with
# STUB_TRAIN_EXIT; with STUB_TRAIN_SLEEP it runs that long unless it gets SIGTERM, then it
# exits 75 as resnet_jax.main does after its checkpoint.
_TRAINER = r'''#!/usr/bin/env bash
echo "trainer $*"
printf 'arg:%s\n' "$@"
if [[ -n ${STUB_TRAIN_SLEEP:-} ]]; then
  trap 'echo "trainer: SIGTERM, checkpoint written"; kill $child; exit 75' TERM
  sleep "$STUB_TRAIN_SLEEP" & child=$!
  wait $child
fi
exit ${STUB_TRAIN_EXIT:-0}
'''


def _executable(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _stub_processes(root):
  pids = []
  for proc in pathlib.Path('/proc').glob('[0-9]*'):
    try:
      if os.readlink(proc / 'cwd').startswith(str(root)):
        pids.append(int(proc.name))
    except OSError:
      pass
  return pids


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
  yield env, log, root
  for pid in _stub_processes(root):  # a detached trainer a failing test left behind
    try:
      os.kill(pid, signal.SIGKILL)
    except OSError:
      pass


def _stub_trainers(root):
  pids = []
  for pid in _stub_processes(root):
    try:
      if b'trainer/python' in pathlib.Path(f'/proc/{pid}/cmdline').read_bytes():
        pids.append(pid)
    except OSError:  # it ended meanwhile
      pass
  return pids


def _script(env, *args, **extra):
  return subprocess.run(['bash', SCRIPT, *args], cwd=REPO, env={**env, **extra},
                        capture_output=True, text=True, timeout=60, check=False)


def _calls(log):
  return log.read_text().splitlines() if log.exists() else []


def _wait_for_exit_codes(root, workers):
  deadline = time.time() + 10
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
  assert f'--version={runtime}' in [c for c in _calls(log) if ' create ' in c][0].split()
  (pathlib.Path(env['STUB_ROOT']) / 'slice').unlink()
  overridden = _script(env, 'create', ACCELERATOR_TYPE=accelerator, RUNTIME_VERSION='mine')
  assert overridden.returncode == 0 and '--version=mine' in _calls(log)[-1].split()


def test_an_unknown_accelerator_type_creates_nothing(gcloud):
  env, log, _ = gcloud
  result = _script(env, 'create', ACCELERATOR_TYPE='v9-8')
  assert result.returncode == 2 and not _calls(log)
  assert 'no default runtime for ACCELERATOR_TYPE v9-8' in result.stderr
  assert 'set RUNTIME_VERSION' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_a_queued_spot_slice_waits_until_active(gcloud):
  env, log, _ = gcloud
  result = _script(env, 'create', QUEUED='1', SPOT='1',
                   STUB_QR_STATES='WAITING_FOR_RESOURCES PROVISIONING ACTIVE')
  assert result.returncode == 0, result.stderr
  calls = [c for c in _calls(log) if 'tpu-vm describe' not in c]  # the existence check
  assert calls[0].startswith('gcloud compute tpus queued-resources create r50-qr ')
  assert '--spot' in calls[0].split() and '--node-id=r50' in calls[0].split()
  assert sum('queued-resources describe' in c for c in calls) == 3
  (pathlib.Path(env['STUB_ROOT']) / 'slice').unlink()
  failed = _script(env, 'create', QUEUED='1', STUB_QR_STATES='FAILED')
  assert failed.returncode == 1 and 'is FAILED' in failed.stderr


def test_install_twice_succeeds(gcloud):
  env, _, root = gcloud
  tree = root / 'worker_0' / 'resnet-jax'
  assert _script(env, 'install').returncode == 0
  (tree / 'removed_since.py').write_text('')
  result = _script(env, 'install')
  assert result.returncode == 0, result.stderr
  assert (tree / '.venv' / 'bin' / 'activate').exists()
  assert (tree / 'launch' / 'tpu_vm.sh').exists()
  assert not (tree / 'removed_since.py').exists()  # the code tree is replaced


def test_install_sends_what_git_would_commit_and_nothing_it_ignores(gcloud, tmp_path):
  # A checkout of its own: the script, a tracked file edited since its commit, one deleted
  # since, a new file, and ignored data and a cache (gigabytes, in a user's checkout).
  env, _, root = gcloud
  checkout = tmp_path / 'checkout'
  _executable(checkout / 'launch' / 'tpu_vm.sh', pathlib.Path(SCRIPT).read_text())
  for name, text in {'.gitignore': 'data/\n.cache/\n', 'train.py': 'old',
                     'gone.py': ''}.items():
    (checkout / name).write_text(text)
  git = ['git', '-C', str(checkout), '-c', 'user.name=t', '-c', 'user.email=t@t']
  for command in (['init', '-q'], ['add', '.'], ['commit', '-qm', 'first']):
    subprocess.run([*git, *command], check=True, capture_output=True)
  (checkout / 'train.py').write_text('edited')
  (checkout / 'gone.py').unlink()
  (checkout / 'new.py').write_text('')
  for ignored in ('data/images/0.jpg', '.cache/jax/entry'):
    (checkout / ignored).parent.mkdir(parents=True)
    (checkout / ignored).write_text('x')
  result = subprocess.run(['bash', str(checkout / 'launch' / 'tpu_vm.sh'), 'install'],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  tree = root / 'worker_0' / 'resnet-jax'
  sent = sorted(str(p.relative_to(tree)) for p in tree.rglob('*')
                if p.is_file() and '.venv' not in p.parts)
  assert sent == ['.gitignore', 'launch/tpu_vm.sh', 'new.py', 'train.py'], sent
  assert (tree / 'train.py').read_text() == 'edited'


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
  latest = root / 'worker_0' / 'resnet-jax-logs' / 'latest.log'
  assert latest.is_symlink() and latest.resolve() in logs
  assert 'sudo rm -f /tmp/libtpu_lockfile' in _calls(log)
  sent = log.read_text()  # the ssh commands as sent (over several lines)
  assert 'lsof' in sent and '/dev/accel*' in sent and '/dev/vfio/*' in sent
  assert 'pkill -f' in sent


def test_run_stops_a_leftover_trainer_first(gcloud):
  env, log, root = gcloud
  assert _script(env, 'install').returncode == 0
  assert _script(env, 'run', STUB_TRAIN_SLEEP='60').returncode == 0
  status = _script(env, 'status')
  assert status.returncode == 0 and status.stdout.rstrip().endswith(' running')
  first = (root / 'worker_0' / 'resnet-jax-logs' / 'latest.log').resolve()
  result = _script(env, 'run', STOP_GRACE='10')
  assert result.returncode == 0, result.stderr
  _wait_for_exit_codes(root, 1)
  # SIGTERM, so the leftover wrote its checkpoint; no -9 needed; nothing of it is left.
  assert 'SIGTERM, checkpoint written' in first.read_text()
  assert not any(c.startswith(('pkill -KILL', 'pkill -9')) for c in _calls(log))
  assert (root / 'worker_0' / 'resnet-jax-logs' / 'exit_code').read_text().strip() == '0'
  assert 'exit=0' in _script(env, 'status').stdout
  assert not _stub_processes(root)


def _all(env, **extra):
  return _script(env, 'all', '--config=configs/digits.py', **extra)


def test_all_deletes_only_after_every_worker_exited_cleanly(gcloud):
  env, log, _ = gcloud
  result = _all(env, STUB_WORKERS='2')
  assert result.returncode == 0, result.stderr
  calls = _calls(log)
  assert calls[-1].startswith('gcloud compute tpus tpu-vm delete r50')
  assert sum(' delete' in c for c in calls) == 1


@pytest.mark.parametrize('failure', [
    {'STUB_TRAIN_EXIT': '1'},  # a trainer failed
    {'STUB_SSH_FAIL': 'after-start'},  # every poll fails: no news is no success
    {'STUB_DESCRIBED': '3'},  # only 2 of 3 workers answer
])
def test_all_never_deletes_after_a_failure(gcloud, failure):
  env, log, _ = gcloud
  result = _all(env, STUB_WORKERS='2', MAX_POLL_FAILURES='3', **failure)
  assert result.returncode != 0
  assert 'is kept' in result.stderr
  assert any(' create ' in c for c in _calls(log))
  assert not any(' delete' in c for c in _calls(log))
  if 'STUB_TRAIN_EXIT' in failure:
    assert result.returncode == 1 and 'training failed on a worker' in result.stderr
    assert 'recreate' in result.stderr
  else:  # the trainer may still run: never advise recreating (deleting) its slice
    assert result.returncode == 3 and 'status polls failed in a row' in result.stderr
    assert 'recreate' not in result.stderr and 'finish waits again' in result.stderr


def test_a_failed_queued_create_deletes_nothing(gcloud):
  env, log, _ = gcloud
  result = _all(env, QUEUED='1', SPOT='1', STUB_QR_STATES='WAITING_FOR_RESOURCES SUSPENDED')
  assert result.returncode == 1 and 'is SUSPENDED' in result.stderr
  assert not any(' delete' in c or ' ssh ' in c for c in _calls(log))


def test_a_stopped_trainer_keeps_the_slice_and_the_next_all_resumes(gcloud):
  env, log, root = gcloud
  first = subprocess.Popen(['bash', SCRIPT, 'all', '--config=configs/digits.py'], cwd=REPO,
                           env={**env, 'STUB_TRAIN_SLEEP': '60'}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 30
  while time.time() < deadline and not _stub_trainers(root):
    time.sleep(0.1)
  for pid in _stub_trainers(root):  # TPU maintenance: SIGTERM to the trainer
    os.kill(pid, signal.SIGTERM)
  _, stderr = first.communicate(timeout=60)
  assert first.returncode == 75, stderr
  assert 'training stopped early' in stderr and 'is kept' in stderr
  assert 'all FLAGS (it reuses the slice)' in stderr
  assert not any(' delete' in c for c in _calls(log))

  creates = sum(' create ' in c for c in _calls(log))
  again = _all(env)
  assert again.returncode == 0, again.stderr
  assert 'exists and is READY: using it' in again.stdout
  assert sum(' create ' in c for c in _calls(log)) == creates  # the same slice
  logs = sorted((root / 'worker_0' / 'resnet-jax-logs').glob('train-*.log'))
  assert len(logs) == 2 and all('--config=configs/digits.py' in p.read_text() for p in logs)
  assert _calls(log)[-1].startswith('gcloud compute tpus tpu-vm delete r50')


def test_a_preempted_slice_is_created_again_by_all(gcloud):
  env, log, root = gcloud
  (root / 'slice').parent.mkdir(parents=True, exist_ok=True)
  (root / 'slice').touch()
  result = _all(env, STUB_TPU_STATE='PREEMPTED')
  assert result.returncode == 0, result.stderr
  calls = [c.split()[4] for c in _calls(log) if c.startswith('gcloud compute tpus tpu-vm ')
           and c.split()[4] in ('create', 'delete')]
  assert calls == ['delete', 'create', 'delete']  # the preempted one, the new one, done


def test_flags_reach_the_trainer_byte_for_byte(gcloud):
  env, _, root = gcloud
  assert _script(env, 'install').returncode == 0
  flags = ['--config.name=$USER', "--config.note=it's \"quoted\"", 'a\\b c', '*', '$(id)',
           '--config.x=`date`', 'tab\there', 'new\nline']
  result = _script(env, 'run', *flags, WORKDIR='gs://bucket/with space/$HOME')
  assert result.returncode == 0, result.stderr
  _wait_for_exit_codes(root, 1)
  text = (root / 'worker_0' / 'resnet-jax-logs' / 'latest.log').read_text()
  received = text.split('\narg:')[1:]
  received[-1] = received[-1].removesuffix('\n')
  assert received == ['-m', 'resnet_jax.main', '--distributed=yes',
                      '--workdir=gs://bucket/with space/$HOME', *flags], text
  assert (root / 'worker_0' / 'resnet-jax-logs' / 'exit_code').read_text().strip() == '0'


def test_a_run_command_run_twice_by_ssh_keeps_the_trainer_it_started(gcloud):
  env, log, root = gcloud
  assert _script(env, 'install').returncode == 0
  result = _script(env, 'run', STUB_TRAIN_SLEEP='60', STUB_SSH_TWICE='1')
  assert result.returncode == 0, result.stderr
  assert 'already started' in result.stdout
  assert len(list((root / 'worker_0' / 'resnet-jax-logs').glob('train-*.log'))) == 1
  assert not any(c.startswith('pkill') for c in _calls(log))  # nothing was stopped
  assert _script(env, 'status').stdout.rstrip().endswith(' running')


def test_finish_resumes_a_wait_cut_short(gcloud):
  env, log, _ = gcloud
  cut = _all(env, STUB_SSH_FAIL='after-start', MAX_POLL_FAILURES='2')
  assert cut.returncode == 3 and not any(' delete' in c for c in _calls(log))
  finished = _script(env, 'finish')
  assert finished.returncode == 0, finished.stderr
  assert _calls(log)[-1].startswith('gcloud compute tpus tpu-vm delete r50')
