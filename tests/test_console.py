"""The console: library noise held back, shown where it explains a failure."""

import logging
import os

import pytest

from resnet_jax import console


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
