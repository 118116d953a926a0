"""launch/gpu_check.sh rehearsed on the CPU (GPU_CHECK_ALLOW_CPU=1, tiny sizes) where
TensorFlow, TFDS, clu, ml_collections and jmp cannot be imported: PASS, a FAIL from a
broken tolerance, and the refusal without a GPU."""

import os
import subprocess
import sys

import pytest

from test_gpu_benchmark import REPO, bare_env  # noqa: F401  (the fixture)

SCRIPT = os.path.join(REPO, 'launch', 'gpu_check.sh')
# Whole benchmark and numerics runs: the slow tier.
pytestmark = pytest.mark.slow


def _check(env, tmp_path, **variables):
  env = env | {'PYTHON': sys.executable, 'GPU_CHECK_OUT': str(tmp_path / 'out'), **variables}
  return subprocess.run(['bash', SCRIPT], env=env, capture_output=True, text=True,
                        timeout=600)


def test_the_cpu_rehearsal_passes(bare_env, tmp_path):  # noqa: F811
  # The benchmark's every row is tests/test_gpu_benchmark.py's; here the matmul and the
  # plain recipe step, one BatchNorm layer ours against flax's, then all three numerics
  # checks.
  result = _check(bare_env, tmp_path, GPU_CHECK_ALLOW_CPU='1',
                  GPU_CHECK_BENCHMARK_ARGS='--variants=plain --torch= --nostartup '
                                           '--cifar_config=none')
  out = result.stdout
  assert result.returncode == 0, out[-4000:] + result.stderr[-3000:]
  assert 'rehearsing on the CPU with tiny sizes' in out
  for text in ('recipe plain', 'ours / torch.compile n/a', 'PASS logits: ',
               'PASS bf16_step: ', 'PASS scan: ', 'gpu_numerics: PASS (3/3 within tolerance)',
               '4x16x16x64            ours'):
    assert text in out, out
  last = out.strip().splitlines()[-1]
  assert last.startswith('gpu_check: PASS (benchmark ran; goals: 4 unmeasured; norm benchmark '
                         'ran; numerics within tolerance)'), last
  assert (tmp_path / 'out' / 'gpu_benchmark.json').is_file()
  assert (tmp_path / 'out' / 'gpu_numerics.json').is_file()
  assert (tmp_path / 'out' / 'norm_benchmark.json').is_file()


def test_a_broken_tolerance_fails(bare_env, tmp_path):  # noqa: F811
  result = _check(bare_env, tmp_path, GPU_CHECK_ALLOW_CPU='1', GPU_CHECK_PARTS='numerics',
                  GPU_CHECK_NUMERICS_ARGS='--checks=logits --logits_rtol=0')
  out = result.stdout
  assert result.returncode == 1, out[-4000:] + result.stderr[-3000:]
  assert 'FAIL logits: ' in out and ' > 0.0e+00 ' in out, out
  assert out.strip().splitlines()[-1].startswith(
      'gpu_check: FAIL (numerics failed (exit 1))'), out


def test_without_a_gpu_it_refuses_in_one_line(bare_env, tmp_path):  # noqa: F811
  result = _check(bare_env, tmp_path)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and 'has no JAX GPU backend' in lines[0], result.stderr
  assert 'GPU_CHECK_ALLOW_CPU=1' in lines[0]
