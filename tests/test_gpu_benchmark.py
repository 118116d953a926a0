"""launch/gpu_benchmark.sh's Python entry on a tiny model, where TensorFlow, TFDS, clu,
ml_collections and jmp cannot be imported (as on a bare CUDA JAX image)."""

import json
import os
import subprocess
import sys

import pytest

from resnet_jax.tools import gpu_benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ('tensorflow', 'tensorflow_datasets', 'clu', 'ml_collections', 'jmp')


@pytest.fixture(scope='module')
def bare_env(tmp_path_factory):
  """An environment whose PYTHONPATH shadows each blocked package with one that raises."""
  shadow = tmp_path_factory.mktemp('bare_image')
  for name in BLOCKED:
    (shadow / name).mkdir()
    (shadow / name / '__init__.py').write_text(
        f'raise ImportError("{name} is not on a bare CUDA JAX image")\n')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'PYTHONPATH')}
  return env | {'PYTHONPATH': f'{shadow}{os.pathsep}{REPO}', 'JAX_PLATFORMS': 'cpu',
                'TF_CPP_MIN_LOG_LEVEL': '2', 'JAX_DISABLE_MOST_OPTIMIZATIONS': '1'}


def test_the_blocked_packages_really_fail_to_import(bare_env):
  for name in BLOCKED:
    result = subprocess.run([sys.executable, '-c', f'import {name}'], env=bare_env,
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and 'not on a bare CUDA JAX image' in result.stderr


def test_the_accelerator_check_runs_without_them(bare_env, tmp_path):
  report_path = tmp_path / 'report.json'
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.tools.gpu_benchmark', '--model=resnet18',
       '--image_size=32',
       '--batch_size=8', '--cifar_batch_size=8', '--cifar_image_size=8', '--timed_steps=2',
       '--warmup_steps=1', '--matmul_size=256', f'--json={report_path}'],
      env=bare_env, capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  report = json.loads(report_path.read_text())
  rows = {row['variant']: row for row in report['rows']}
  assert set(rows) == {'plain', 'remat', 'scan_blocks', 'torch', 'cifar'}
  for name in ('plain', 'remat', 'scan_blocks', 'cifar'):
    assert 'error' not in rows[name], rows[name]
    assert rows[name]['pipelined_images_per_sec'] > 0 and rows[name]['compile_seconds'] > 0
  assert rows['plain']['flops_per_step'] > 0 and rows['plain']['mfu_matmul'] > 0
  assert report['matmul_flops_per_sec'] > 0 and report['spec_peak_flops_per_sec'] is None
  assert rows['torch']['torch_pipelined_images_per_sec'] > 0 and report['ratio_vs_torch'] > 0
  for text in ('resnet18 bfloat16 b8 32² plain', 'remat', 'scan_blocks', 'torchvision resnet18',
               'resnet20 float32 b8 8² (CIFAR)', 'ours / torchvision (images/s):'):
    assert text in result.stdout, result.stdout


def test_spec_peaks_by_device_kind():
  assert gpu_benchmark.spec_peak('NVIDIA H100 80GB HBM3') == 989e12
  assert gpu_benchmark.spec_peak('NVIDIA H100 PCIe') == 756e12
  assert gpu_benchmark.spec_peak('NVIDIA H200') == 989e12
  assert gpu_benchmark.spec_peak('TPU v5 lite') == 197e12
  assert gpu_benchmark.spec_peak('cpu') is None


def test_an_unknown_variant_is_a_one_line_error():
  result = subprocess.run([sys.executable, '-m', 'resnet_jax.tools.gpu_benchmark',
                           '--variants=plain,fast'], capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 2
  assert 'unknown --variants fast; valid: plain,remat,scan_blocks' in result.stderr
