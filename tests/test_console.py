"""The console: library noise held back, shown where it explains a failure."""

import logging
import os
import subprocess
import sys

import pytest

from resnet_jax import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpp_output_is_held_back_unless_the_block_fails(capfd):
  with console.stderr_held_back():
    os.write(2, b'oneDNN custom operations are on\n')
  assert capfd.readouterr().err == ''
  with pytest.raises(ImportError), console.stderr_held_back():
    os.write(2, b'libcudart.so.12: cannot open shared object file\n')
    raise ImportError('no tensorflow')
  assert 'libcudart.so.12' in capfd.readouterr().err


@pytest.mark.parametrize('path,level,message,noise', [
    ('/x/jax/_src/xla_bridge.py', logging.INFO, "Unable to initialize backend 'tpu': ...", True),
    ('/x/orbax/checkpoint/_src/checkpointer.py', logging.INFO, 'Restoring checkpoint', True),
    ('/x/orbax/checkpoint/checkpoint.py', logging.WARNING, 'Metadata file does not exist: /w',
     True),
    ('/x/orbax/checkpoint/checkpoint.py', logging.ERROR, 'Failed to restore', False),
    ('/x/resnet_jax/train.py', logging.INFO, 'Done: step 4 of 4', False),
])
def test_noise_is_told_from_what_matters(path, level, message, noise):
  record = logging.LogRecord('x', level, path, 1, message, None, None)
  assert console._is_noise(record) == noise


def _main(*argv):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.main', *argv], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_help_lists_the_configs_and_their_recipes_and_exits_0():
  result = _main('--help')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'configs/fashion_mnist.py:cpu|zhong|zhong_re' in result.stdout
  assert 'configs/digits.py\n      The embedded demo' in result.stdout
  assert '--print_config' in result.stdout and '--workdir' in result.stdout


def test_print_config_shows_the_overrides_and_writes_nothing(tmp_path):
  result = _main('--config=configs/fashion_mnist.py:cpu', f'--workdir={tmp_path}/run',
                 '--config.base_lr=0.3', '--print_config')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'base_lr: 0.3\n' in result.stdout and 'name: fashion_mnist' in result.stdout
  assert not (tmp_path / 'run').exists()
