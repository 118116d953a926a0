"""PyTorch weight import: logits equal torchvision's; bad checkpoints named precisely."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from resnet_jax import models
from resnet_jax.storage import trained
from resnet_jax.tools import convert
from resnet_jax.bench import torch_parity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from conftest import needs_torch  # PyTorch parity: the slow tier


@needs_torch
def test_converted_logits_equal_torchvision_at_every_depth():
  # A subprocess: torch and TensorFlow (loaded by conftest) crash when in one process.
  done = subprocess.run([sys.executable, '-m', 'resnet_jax.bench.torch_parity', '--format=json'],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = json.loads(done.stdout.strip().splitlines()[-1])
  assert [row['model'] for row in rows] == list(torch_parity.DEPTHS)
  assert {row['file'] for row in rows} == {'pth', 'safetensors'}
  for row in rows:
    assert row['max_abs_logit'] > 0.3, row  # the logits are not trivially small
    assert row['max_abs_difference'] < 1e-4, row


@functools.cache
def _resnet18_variables(num_classes=7):
  model = models.create_model('resnet18', num_classes=num_classes)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(1), np.zeros((1, 32, 32, 3), np.float32))
  # Non-trivial statistics, so a mapping that swapped mean and var would show.
  stats = jax.tree.map(lambda x: np.asarray(x) + np.random.RandomState(0).uniform(
      0.5, 1.5, x.shape).astype(np.float32), variables['batch_stats'])
  return model, {'params': variables['params'], 'batch_stats': stats}


def _resnet18_state_dict():
  model, variables = _resnet18_variables()
  return model, variables, convert.torch_state_dict(variables)


def test_state_dict_round_trip_and_torch_names():
  model, variables, state_dict = _resnet18_state_dict()
  assert state_dict['conv1.weight'].shape == (64, 3, 7, 7)
  assert state_dict['layer2.0.downsample.0.weight'].shape == (128, 64, 1, 1)
  assert state_dict['layer4.1.bn2.running_var'].shape == (512,)
  assert state_dict['fc.weight'].shape == (7, 512)
  back = convert.variables_from_state_dict(state_dict, 'resnet18')
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, variables))
  images = np.random.RandomState(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  apply = jax.jit(functools.partial(model.apply, train=False))
  np.testing.assert_array_equal(apply(back, images), apply(variables, images))


@pytest.mark.parametrize('damage,message', [
    (lambda sd: sd.pop('layer3.1.bn1.running_mean'), "missing key 'layer3.1.bn1.running_mean'"),
    (lambda sd: sd.__setitem__('layer1.0.conv2.weight', np.zeros((64, 64, 1, 1), np.float32)),
     "key 'layer1.0.conv2.weight' has shape (64, 64, 1, 1); resnet18 needs (64, 64, 3, 3)"),
    (lambda sd: sd.__setitem__('layer4.2.conv1.weight', np.zeros((1,), np.float32)),
     "'layer4.2.conv1.weight'"),
])
def test_bad_state_dicts_name_the_key(damage, message):
  _, _, state_dict = _resnet18_state_dict()
  damage(state_dict)
  with pytest.raises(convert.ConvertError) as error:
    convert.variables_from_state_dict(state_dict, 'resnet18')
  assert message in str(error.value)


def test_a_checkpoint_of_another_depth_is_refused(tmp_path):
  _, _, state_dict = _resnet18_state_dict()
  path = str(tmp_path / 'r18.safetensors')
  save_file(state_dict, path)
  with pytest.raises(convert.ConvertError, match="missing key 'layer1.2."):
    convert.load_torch_checkpoint(path, 'resnet34')
  with pytest.raises(convert.ConvertError, match="valid models: resnet18, resnet34"):
    convert.load_torch_checkpoint(path, 'resnet20')


_PICKLE_SCRIPT = """
import sys, torch
from resnet_jax.tools import convert
class NotATensor:
  pass
torch.save({'fc.weight': torch.zeros(2, 2), 'payload': NotATensor()}, sys.argv[1])
try:
  convert.read_state_dict(sys.argv[1])
except convert.ConvertError as error:
  print(error)
"""


@needs_torch
def test_pickled_objects_are_never_loaded(tmp_path):
  done = subprocess.run([sys.executable, '-c', _PICKLE_SCRIPT, str(tmp_path / 'evil.pth')],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'holds more than tensors, and arbitrary objects are never unpickled' in done.stdout


def test_cli_writes_a_directory_that_restores(tmp_path):
  model, variables, state_dict = _resnet18_state_dict()
  source = str(tmp_path / 'timm_resnet18.safetensors')
  save_file(state_dict, source)
  output = str(tmp_path / 'converted')
  command = [sys.executable, '-m', 'resnet_jax.tools.convert', '--source=timm', '--model=resnet18',
             f'--input={source}', f'--output={output}']
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  restored = trained.restore(output)
  assert restored.info.model == 'resnet18' and restored.info.num_classes == 7
  assert restored.info.image_shape == (224, 224, 3)
  jax.tree.map(np.testing.assert_array_equal, restored.variables,
               jax.tree.map(np.asarray, variables))
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0
  assert again.stderr.strip().splitlines()[-1].startswith('error: --output')
  assert 'already holds converted variables' in again.stderr
