"""docs/python-api.md's example, run as the page shows it (its paths moved to tmp_path)."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_documented_python_example_runs(tmp_path):
  page = open(os.path.join(REPO, 'docs', 'python-api.md')).read()
  (code,) = re.findall(r'```python\n(.*?)```', page, re.S)
  code = code.replace('/tmp/', f'{tmp_path}/')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0].startswith('eval top-1 ') and lines[0].endswith('after 60 steps')
  assert "'eval/top1'" in lines[1]  # eval_only's metrics
  assert lines[2].startswith(f'{tmp_path}/digit.png [(')
  assert lines[3] == 'resnet20 60 (2, 10)'
