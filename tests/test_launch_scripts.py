"""launch/local.sh and launch/slurm.sbatch driven with stub `python`, `nvidia-smi` and
`srun` on PATH: what they start, with which devices and ports, and how they refuse."""

import os
import pathlib
import socket
import stat
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# A stand-in for the trainer: `-c CODE` runs the real interpreter (the scripts' helpers);
# anything else records its arguments and device environment, one line per process, and
# exits with STUB_EXIT (0).
_PYTHON_STUB = f'''#!/usr/bin/env bash
if [[ $1 == -c ]]; then exec {sys.executable} "$@"; fi
echo "args=$* CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} \\
JAX_PLATFORMS=${{JAX_PLATFORMS:-unset}} XLA_FLAGS=${{XLA_FLAGS:-}} \\
NCCL_DEBUG=${{NCCL_DEBUG:-unset}} SLURM_LOCALID=${{SLURM_LOCALID:-unset}}" >> "$STUB_LOG"
exit ${{STUB_EXIT:-0}}
'''


def _executable(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def stubs(tmp_path):
  """A bin directory with the stub python, first on PATH; returns (env, log path)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  _executable(bin_dir / 'python', _PYTHON_STUB)
  log = tmp_path / 'stub.log'
  inherited = {k: v for k, v in os.environ.items()
               if k not in ('JAX_PLATFORMS', 'XLA_FLAGS', 'CUDA_VISIBLE_DEVICES', 'PORT')}
  env = {**inherited, 'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
         'STUB_LOG': str(log), 'PYTHON': str(bin_dir / 'python')}
  return env, log, bin_dir


def _gpus(bin_dir, count):
  lines = ''.join(f'echo "GPU {i}: NVIDIA H100 (UUID: GPU-{i})"\n' for i in range(count))
  _executable(bin_dir / 'nvidia-smi', f'#!/usr/bin/env bash\n{lines}')


def _local(env, *args):
  return subprocess.run(['bash', 'launch/local.sh', *args, '--workdir=/tmp/x'], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=60)


def _records(log):
  return sorted(log.read_text().splitlines())


def test_local_runs_one_process_per_gpu_when_gpus_are_present(stubs):
  env, log, bin_dir = stubs
  _gpus(bin_dir, 2)
  result = _local(env, '2')
  assert result.returncode == 0, result.stderr
  records = _records(log)
  assert len(records) == 2
  by_process = {next(a for a in r.split() if a.startswith('--process_id=')): r for r in records}
  assert 'CUDA_VISIBLE_DEVICES=0 ' in by_process['--process_id=0']
  assert 'CUDA_VISIBLE_DEVICES=1 ' in by_process['--process_id=1']
  assert all('JAX_PLATFORMS=unset' in r and 'device_count' not in r for r in records), records


def test_local_refuses_more_processes_than_gpus(stubs):
  env, log, bin_dir = stubs
  _gpus(bin_dir, 2)
  result = _local(env, '3')
  assert result.returncode == 2
  assert result.stderr.strip().endswith('3 processes but 2 GPUs: one process per GPU (or '
                                        'DEVICE=cpu)')
  assert not log.exists()


def test_local_uses_fake_cpu_devices_without_gpus(stubs):
  env, log, _ = stubs
  result = _local({**env, 'DEVICES_PER_PROCESS': '3'}, '2')
  assert result.returncode == 0, result.stderr
  for record in _records(log):
    assert 'JAX_PLATFORMS=cpu' in record and 'CUDA_VISIBLE_DEVICES=unset' in record
    assert '--xla_force_host_platform_device_count=3' in record


def test_local_never_uses_a_busy_port(stubs):
  env, log, _ = stubs
  with socket.socket() as busy:
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port = busy.getsockname()[1]
    refused = _local({**env, 'PORT': str(port)}, '2')
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith(f'PORT {port} is in use; unset PORT to let the '
                                           'kernel pick a free one')
    assert not log.exists()
    chosen = _local(env, '2')
  assert chosen.returncode == 0, chosen.stderr
  ports = {r.split('--coordinator_address=127.0.0.1:')[1].split()[0] for r in _records(log)}
  assert len(ports) == 1 and ports != {str(port)}


# SLURM ------------------------------------------------------------------------------------

# srun's stand-in: records its options, then runs the command once per task (2 nodes × 2
# tasks) with the variables SLURM gives each task; exits with the highest task status, as
# srun does. scontrol's records its arguments.
_SRUN_STUB = '''#!/usr/bin/env bash
echo "srun $*" >> "$STUB_LOG"
while [[ $1 == --* ]]; do shift; done
status=0
for task in 0 1 2 3; do
  SLURM_PROCID=$task SLURM_LOCALID=$((task % 2)) SLURM_STEP_NUM_TASKS=4 "$@"
  code=$?; ((code > status)) && status=$code
done
exit $status
'''
_SCONTROL_STUB = '#!/usr/bin/env bash\necho "scontrol $*" >> "$STUB_LOG"\n'


@pytest.fixture
def slurm(stubs, tmp_path):
  env, log, bin_dir = stubs
  _executable(bin_dir / 'srun', _SRUN_STUB)
  _executable(bin_dir / 'scontrol', _SCONTROL_STUB)
  venv = tmp_path / 'venv'
  (venv / 'bin').mkdir(parents=True)
  (venv / 'bin' / 'activate').write_text(f'export PATH="{bin_dir}:$PATH"\n')
  return {**env, 'VENV': str(venv), 'WORKDIR': str(tmp_path / 'work'),
          'SLURM_JOB_ID': '77', 'SLURM_SUBMIT_DIR': str(REPO)}, log, bin_dir


def _sbatch(env):
  return subprocess.run(['bash', 'launch/slurm.sbatch', '--config=configs/imagenet50.py'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_slurm_binds_no_gpu_and_starts_every_task_with_the_tuned_environment(slurm):
  env, log, _ = slurm
  result = _sbatch(env)
  assert result.returncode == 0, result.stderr
  srun, *tasks = log.read_text().splitlines()
  for option in ('--gpu-bind=none', '--cpu-bind=cores', '--open-mode=append',
                 f'--output={env["WORKDIR"]}/logs/slurm-77/task-%t.log'):
    assert option in srun.split()
  # srun killing the tasks still saving after a stop would turn their 75 into 137.
  assert '--kill-on-bad-exit=1' not in srun.split()
  assert len(tasks) == 4 and sorted(t.split('SLURM_LOCALID=')[1] for t in tasks) == \
      ['0', '0', '1', '1']
  for task in tasks:
    assert '--distributed=yes' in task and f'--workdir={env["WORKDIR"]}' in task
    assert '--xla_gpu_enable_latency_hiding_scheduler=true' in task
    assert 'NCCL_DEBUG=WARN' in task
  assert (pathlib.Path(env['WORKDIR']) / 'logs' / 'slurm-77').is_dir()
  header = (REPO / 'launch' / 'slurm.sbatch').read_text()
  for directive in ('#SBATCH --exclusive', '#SBATCH --requeue'):
    assert directive in header.splitlines()
  # One fixed job name + singleton would serialise unrelated experiments.
  assert not any(line.startswith('#SBATCH --dependency') for line in header.splitlines())


@pytest.mark.parametrize('restarts, requeued', [('0', True), ('19', True), ('20', False)])
def test_a_stopped_run_requeues_its_job_a_bounded_number_of_times(slurm, restarts, requeued):
  env, log, _ = slurm
  result = _sbatch({**env, 'STUB_EXIT': '75', 'SLURM_RESTART_COUNT': restarts})
  calls = log.read_text().splitlines()
  if requeued:
    assert result.returncode == 0, result.stderr
    assert calls[-1] == 'scontrol requeue 77'
    assert f'requeueing job 77 ({int(restarts) + 1} of 20)' in result.stdout
  else:  # the job ends FAILED, so afterok chains wait and nobody reads it as finished
    assert result.returncode == 75
    assert not any(c.startswith('scontrol') for c in calls)
    assert 'MAX_REQUEUES=20 reached' in result.stderr


def test_a_failed_run_is_not_requeued(slurm):
  env, log, _ = slurm
  result = _sbatch({**env, 'STUB_EXIT': '1'})
  assert result.returncode == 1
  assert not any(c.startswith('scontrol') for c in log.read_text().splitlines())


@pytest.mark.parametrize('exits, expected', [('75', 75), ('1', 1), ('0', 0)])
def test_local_passes_the_stop_status_through(stubs, exits, expected):
  env, _, _ = stubs
  result = _local({**env, 'STUB_EXIT': exits}, '2')
  assert result.returncode == expected, result.stderr


def test_slurm_refuses_a_venv_without_the_package(slurm):
  env, log, bin_dir = slurm
  _executable(bin_dir / 'python', '#!/usr/bin/env bash\nexit 1\n')
  result = _sbatch(env)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'error: resnet_jax is not installed in {env["VENV"]}: run ')
  assert not log.exists()
