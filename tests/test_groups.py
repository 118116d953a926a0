"""BN and mixing groups that tile the devices: the rule, every recipe against it on 8
devices, and the compiled step of each recipe's batch layout free of activation
all-gathers (with a misaligned layout as the control that the detector sees them)."""

import importlib
import re

import jax
import numpy as np
import pytest

from configs import cifar10_identity_mappings, cifar10_table6, recipes
from conftest import small_config
from resnet_jax import metrics, optim, sharding, train
from resnet_jax.data import sources

_ARGUMENTS = {
    **{f'imagenet{depth}': recipes.IMAGENET_RECIPES for depth in (18, 34, 50, 101, 152)},
    'imagenet18_ffcv': tuple(map(str, recipes.FFCV_EPOCHS)),
    'imagenet50_ffcv': tuple(map(str, recipes.FFCV_EPOCHS)),
    'imagenet50_rsb': recipes.RSB_PROCEDURES,
    'cifar10_identity_mappings': tuple(cifar10_identity_mappings.EXPERIMENTS),
    'cifar10_table6': cifar10_table6.MODELS,
}
_PLAIN = ('imagenet50_lars', 'imagenet50_torchvision_v2', 'cifar10_resnet20', 'cifar10_resnet32',
          'cifar10_resnet44', 'cifar10_resnet56', 'cifar10_resnet110', 'cifar10_degradation',
          'digits', 'degradation_digits', 'finetune_folder')


def _recipes():
  """(label, config) for every config file and every argument it takes."""
  found = []
  for name, arguments in [*_ARGUMENTS.items(), *((name, (None,)) for name in _PLAIN)]:
    module = importlib.import_module(f'configs.{name}')
    for argument in arguments:
      config = module.get_config() if argument is None else module.get_config(argument)
      found.append((f'{name}:{argument}' if argument else name, config))
  return found


def _layout(config):
  """What decides where groups fall: the batch, the BN groups, the mixing groups."""
  mixing = config.mixup_alpha > 0 or config.cutmix_alpha > 0
  return config.batch_size, config.bn_group_size, config.mix_group_size if mixing else None


@pytest.mark.parametrize('global_batch,devices', [(96, 8), (2048, 8), (1024, 1), (64, 4),
                                                   (4096, 8), (12, 3)])
def test_group_sizes_are_exactly_the_sizes_that_tile(global_batch, devices):
  per_device = global_batch // devices
  expected = [size for size in range(1, global_batch + 1)
              if per_device % size == 0 or (size % per_device == 0 and global_batch % size == 0)]
  assert sharding.group_sizes(global_batch, devices) == [0, *expected]


def test_every_recipe_tiles_eight_devices():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:8]), (sharding.DATA_AXIS,))
  labels = []
  for label, config in _recipes():
    labels.append(label)
    for name in ('bn_group_size', 'mix_group_size'):
      sharding.check_group_size(name, config[name], config.batch_size, mesh)
  assert len(labels) > 40, labels


def _all_gathers(config, image_size=16):
  """All-gathers of per-example data in the compiled training step of `config`, on ResNet-20
  at image_size (the batch layout, loss, mixing and erasing stay the recipe's)."""
  batch = config.batch_size
  overrides = {'model': 'resnet20', 'batch_size': batch, 'bn_group_size': config.bn_group_size,
               'mix_group_size': config.mix_group_size, 'mixup_alpha': config.mixup_alpha,
               'cutmix_alpha': config.cutmix_alpha, 'loss': config.loss,
               'random_erasing': config.random_erasing, 'dtype': config.dtype,
               'label_smoothing': config.label_smoothing}
  small = small_config(**overrides)
  small.dataset.image_size = image_size
  mesh = sharding.make_mesh()
  info = sources.DatasetInfo(10, tuple('abcdefghij'), 1000, 100, (image_size, image_size, 3))
  learning_rate_fn = optim.create_learning_rate_fn(small, steps_per_epoch=10, num_train_steps=100)
  state = train.create_state(small, info, mesh, learning_rate_fn)
  spec = sharding.batch_sharding(mesh)
  batch_spec = {
      'image': jax.ShapeDtypeStruct((batch, image_size, image_size, 3), np.uint8, sharding=spec),
      'label': jax.ShapeDtypeStruct((batch,), np.int32, sharding=spec)}
  step = train.make_train_step(small, learning_rate_fn, mesh)
  totals = metrics.empty(metrics.TrainMetrics, mesh)
  hlo = step.lower(state, batch_spec, totals).compile().as_text()
  # Anything gathered along the global batch is per-example data leaving its device: whole
  # activations with two-pass statistics, per-example partial sums [batch, C] with one-pass
  # statistics (XLA reduces H and W locally first). Aligned groups gather neither.
  gathers = []
  for line in hlo.splitlines():
    match = re.search(r'=\s*\S+?\[(\d+)[,\]].*?\sall-gather(-start)?\(', line)
    if match and int(match.group(1)) == batch:
      gathers.append(line.strip()[:120])
  return gathers


def test_the_detector_sees_groups_that_straddle_devices():
  """Control: batch 96 on 8 devices (12 each) with groups of 32 all-gathers per-example data
  (the per-example sums of every BN layer: 19 layers of ResNet-20, forward)."""
  config = small_config(batch_size=96, bn_group_size=32)
  assert len(_all_gathers(config)) >= 10


@pytest.mark.slow
def test_no_recipe_layout_all_gathers_activations():
  """One compile per distinct layout (batch, BN groups, mixing groups) of every recipe."""
  layouts = {}
  for label, config in _recipes():
    layouts.setdefault(_layout(config), (label, config))
  assert len(layouts) >= 5, sorted(layouts)
  for layout, (label, config) in sorted(layouts.items(), key=lambda item: str(item[0])):
    assert _all_gathers(config) == [], (label, layout)
