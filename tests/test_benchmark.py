"""The benchmark command: its JSON figures, torch comparison and errors (tiny workloads)."""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _benchmark(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.bench.benchmark', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_json_figures(mode):
  run = _benchmark(f'--mode={mode}', '--model=resnet20', '--batch_size=8', '--image_size=16',
                   '--warmup_steps=0', '--timed_steps=2', '--scan_blocks', '--format=json')
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result['mode'] == mode and result['model'] == 'resnet20' and result['scan_blocks']
  assert result['images_per_sec'] > 0 and result['compile_seconds'] > 0
  assert result['step_seconds'] * result['images_per_sec'] == pytest.approx(8)
  assert result['flops_per_step'] > 0 and 0 < result['fraction_of_matmul_peak'] < 2
  assert result['xla_memory_bytes'] > 0
  assert result['seconds_to_first_step'] > result['compile_seconds']


@pytest.mark.slow
def test_compare_torch_reports_a_ratio_or_says_torch_is_missing():
  run = _benchmark('--mode=eval', '--model=resnet18', '--batch_size=8', '--image_size=32',
                   '--warmup_steps=0', '--timed_steps=1', '--compare_torch', '--format=json')
  if importlib.util.find_spec('torchvision') is None:  # CI installs no torch
    assert run.returncode != 0
    assert '--compare_torch needs torch and torchvision' in run.stderr
    return
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result['torch_images_per_sec'] > 0
  assert result['ratio_vs_torch'] == pytest.approx(
      result['images_per_sec'] / result['torch_images_per_sec'])


@pytest.mark.parametrize('args,message', [
    (['--model=resnet5'], "unknown model 'resnet5'; valid models: resnet18"),
    (['--model=resnet20', '--dtype=float8'], "unknown dtype 'float8'; valid dtypes: float32, bfloat16, float16"),
    (['--model=resnet20', '--conv_impl=fast'], "unknown conv_impl 'fast'; valid: auto, xla, dot"),
    (['--model=resnet20', '--compare_torch'], "--compare_torch supports resnet18"),
    (['--model=resnet20', '--batch_size=12'],  # the tests run 8 (fake) devices
     'batch_size 12 is not a positive multiple of the 8 devices'),
])
def test_bad_arguments_fail_in_one_line(args, message):
  run = _benchmark('--mode=train', '--image_size=16', *args, timeout=120)
  assert run.returncode != 0
  assert message in run.stderr
  assert 'Traceback' not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_gpu_benchmark_script_checks_its_arguments_and_backend():
  usage = subprocess.run(['bash', 'launch/gpu_benchmark.sh', 'big'], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
  assert usage.returncode == 2 and "got BATCH_PER_DEVICE 'big'" in usage.stderr
  no_gpu = subprocess.run(['bash', 'launch/gpu_benchmark.sh', '64'], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'PYTHON': sys.executable})
  assert no_gpu.returncode == 1 and 'has no JAX GPU backend' in no_gpu.stderr


@pytest.mark.slow
def test_input_benchmark_prints_same_run_ratios(tmp_path):
  run = _benchmark('--mode=input', f'--work_dir={tmp_path}', '--input_files=4',
                   '--records_per_file=6', '--num_images=8', '--startup_files=300',
                   '--batch_size=8', '--image_size=32', '--warmup_batches=1',
                   '--timed_seconds=0.2', '--rounds=1', '--format=json')
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  speed, costs, startup = result['throughput'], result['costs'], result['startup']
  assert speed['tfrecord_files'] == 4 and speed['records'] == 24
  for section in ('read + parse, decoding off (records/s)', 'TFRecords, decoded (img/s)',
                  'image folder, decoded (img/s)'):
    assert set(speed[section]) in ({'bare parallel reader', 'ours'}, {'bare decode loop', 'ours'})
    assert min(speed[section].values()) > 0
  assert len(costs['recipes (img/s)']) == 5 and min(costs['recipes (img/s)'].values()) > 0
  assert startup['files'] == 400 and 0 < startup['ready_seconds'] < startup['goal_seconds']


@pytest.mark.slow
def test_cpu_devices_times_each_round_in_a_process_of_its_own():
  # The command fails unless each child ran on the count it was asked for. One device
  # each: no collective on several CPU devices in a fresh process while the suite loads
  # the machine (cpu/devices.py); test_train checks the command's split itself.
  run = subprocess.run([sys.executable, '-m', 'resnet_jax.bench.cpu_devices', '--counts=1',
                        '--rounds=2', '--timed_steps=1', '--batch_size=8'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'round 1: 1 CPU device(s): ' in run.stdout and 'round 2: 1 CPU device(s): ' in run.stdout
  assert re.search(r'best of 2: 1 CPU device\(s\) [\d,.]+ img/s = 1\.00× 1 device',
                   run.stdout), run.stdout
