"""Every config file: derived from default.py, documented, valid, and trains a few steps."""

import importlib
import math
import pathlib

import jax
import numpy as np
import pytest

from configs import default, recipes
from conftest import make_image_folder, small_config
from resnet_jax import config_checks, metrics, optim, sharding, train
from resnet_jax.data import folder_settings, pipeline, sources
from resnet_jax.tools import summary

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / 'configs'
NOT_CONFIGS = ('__init__', 'default', 'recipes')
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob('*.py') if p.stem not in NOT_CONFIGS)
IMAGENET_DEPTHS = ('imagenet18', 'imagenet34', 'imagenet50', 'imagenet101', 'imagenet152')
# Smallest member of each model family: what the few-step runs train (compiling ResNet-152
# for every config would take minutes of the suite; each model has its own tests).
SMALLEST = {'imagenet': 'resnet18', 'cifar': 'resnet8'}


def _load(name, argument=None):
  module = importlib.import_module(f'configs.{name}')
  return module.get_config() if argument is None else module.get_config(argument)


def _keys(config, prefix=''):
  keys = set()
  for key, value in config.items():
    keys |= _keys(value, f'{prefix}{key}.') if hasattr(value, 'items') else {prefix + key}
  return keys


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_documented_and_valid(name, tmp_path):
  config = _load(name)
  assert _keys(config) == _keys(default.get_config())  # default.py defines every key
  doc = importlib.import_module(f'configs.{name}').__doc__
  assert f'--config=configs/{name}.py' in doc
  if name != 'finetune_folder':  # no figure: accuracy depends on the user's images
    assert 'Expected' in doc and 'Runtime' in doc, name
  if name == 'folder':  # its images decide 7 values: valid once they have
    assert len(folder_settings.left_to_data(config)) == 7
    config.dataset.data_dir = make_image_folder(
        tmp_path, {'train': {'a': 2, 'b': 2}, 'validation': {'a': 1, 'b': 1}}, size=(16, 16))
    config = folder_settings.resolved(config, str(tmp_path / 'run'),
                                      num_devices=sharding.make_mesh().size)
  if name != 'finetune_folder':  # its init_checkpoint is a required placeholder
    config_checks.check_config(config, sharding.make_mesh())


@pytest.mark.parametrize('name', [n for n in CONFIGS if n.startswith('imagenet')])
def test_imagenet_recipes_schedules(name):
  steps_per_epoch = recipes.IMAGENET_TRAIN_IMAGES // 256
  step = _load(name, 'step') if name in ('imagenet18', 'imagenet34', 'imagenet50',
                                          'imagenet101', 'imagenet152') else None
  if step is not None:
    lr = optim.create_learning_rate_fn(step, steps_per_epoch=steps_per_epoch,
                                       num_train_steps=90 * steps_per_epoch)
    assert lr(29 * steps_per_epoch) == pytest.approx(0.1)  # He et al.: 0.1 at batch 256
    assert lr(31 * steps_per_epoch) == pytest.approx(0.01)
    assert lr(61 * steps_per_epoch) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="unknown recipe 'fast'; valid recipes: nvidia, "):
      _load(name, 'fast')
  config = _load(name)
  per_epoch = recipes.IMAGENET_TRAIN_IMAGES // config.batch_size
  total = math.ceil(config.num_epochs * per_epoch)
  lr = optim.create_learning_rate_fn(config, steps_per_epoch=per_epoch, num_train_steps=total)
  peak = config.base_lr * config.batch_size / 256
  assert lr(int(config.warmup_epochs * per_epoch)) == pytest.approx(peak, rel=1e-3)
  assert lr(total) == pytest.approx(config.final_lr_factor * peak, abs=1e-6 * peak)


def _groups():
  """Configs (name, recipe) grouped when they differ only in their model."""
  groups = {}
  # The image-folder recipes train in tests/test_folder_settings.py and test_finetune.py.
  candidates = [(n, None) for n in CONFIGS if n not in ('digits', 'finetune_folder', 'folder')]
  candidates += [(n, 'step') for n in IMAGENET_DEPTHS]
  for name, argument in candidates:
    config = _load(name, argument)
    config.model = ''
    groups.setdefault(config.to_json(), []).append((name, argument))
  return sorted(groups.values())


RUNS = [members[0] for members in _groups()]
# The ImageNet recipes' runs (bottleneck models, heavy augmentation) are the slow tier; the
# CIFAR-10 and digits runs stay in the fast one.
_RUN_PARAMS = [pytest.param(name, argument,
                            marks=[pytest.mark.slow] if name.startswith('imagenet') else [],
                            id=f'{name}:{argument}' if argument else name)
               for name, argument in RUNS]


def test_one_run_per_group_covers_every_config():
  groups = _groups()
  assert [(n, None) for n in IMAGENET_DEPTHS] == sorted(
      next(g for g in groups if ('imagenet50', None) in g), key=lambda m: int(m[0][8:]))
  assert sorted((n, 'step') for n in IMAGENET_DEPTHS) == sorted(
      next(g for g in groups if ('imagenet50', 'step') in g))
  cifar = next(g for g in groups if ('cifar10_resnet20', None) in g)
  assert [(f'cifar10_resnet{n}', None) for n in (20, 32, 44, 56)] == sorted(
      (m for m in cifar if m[0].startswith('cifar10_resnet')), key=lambda m: int(m[0][14:]))
  assert ('cifar10_table6', None) in cifar  # its default, plain56: the same recipe
  # + lars, cifar110 (its warmup differs) with the Identity Mappings default (ResNet-110),
  # the two degradation recipes (diagnostics on), torchvision V2, RSB, FFCV's two,
  # Fashion-MNIST's cpu recipe and its degradation recipe.
  assert ('cifar10_identity_mappings', None) in next(
      g for g in groups if ('cifar10_resnet110', None) in g)
  assert len(groups) == 13


@pytest.mark.parametrize('name,expected', [
    ('imagenet18', 11_689_512), ('imagenet34', 21_797_672), ('imagenet50', 25_557_032),
    ('imagenet101', 44_549_160), ('imagenet152', 60_192_808), ('imagenet50_lars', 25_557_032),
    ('imagenet50_torchvision_v2', 25_557_032), ('imagenet50_rsb', 25_557_032),
    ('imagenet50_ffcv', 25_557_032), ('imagenet18_ffcv', 11_689_512),
    ('cifar10_resnet20', 269_722),
    ('cifar10_resnet32', 464_154), ('cifar10_resnet44', 658_586),
    ('cifar10_resnet56', 853_018), ('cifar10_resnet110', 1_727_962)])
def test_config_models_have_the_papers_parameter_counts(name, expected):
  config = _load(name)
  assert summary.summarize(config.model)['params'] == expected


@pytest.mark.parametrize('name,argument', _RUN_PARAMS)
def test_config_trains_a_few_steps(name, argument, digits_dir):
  """The config's optimizer, schedule, precision, loss scaling, BN grouping, EMA,
  augmentations and mixing, with the smallest model of its family, on the embedded
  digits, for 2 steps of the trainer's own jitted step and input pipeline."""
  config = _load(name, argument)
  imagenet = name.startswith('imagenet')
  config.model = SMALLEST['imagenet' if imagenet else 'cifar']
  own_dataset = config.dataset
  config.dataset = small_config(**{'dataset.data_dir': digits_dir}).dataset
  config.dataset.image_size = 32 if imagenet else 8
  for key in ('augment', 'randaugment_layers', 'randaugment_magnitude', 'trivial_augment',
              'eval_crop_fraction'):
    config.dataset[key] = own_dataset[key]
  # Repeats kept (2 where the recipe's do not divide the batch); the resize ramp has its
  # own runs (tests/test_recipe_data.py).
  repeats = own_dataset.repeated_augmentation
  config.dataset.repeated_augmentation = repeats if 16 % repeats == 0 else 2
  config.batch_size = 16
  config.bn_group_size = min(config.bn_group_size, 8)
  mesh = sharding.make_mesh()
  config_checks.check_config(config, mesh)
  source = sources.create_source(config)
  info = sources.dataset_info(source, config)
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=10,
                                                   num_train_steps=20)
  state = train.create_state(config, info, mesh, learning_rate_fn)
  start = jax.device_get(state.params)
  train_step = train.make_train_step(config, learning_rate_fn, mesh)
  batches = pipeline.train_batches(source, config, info, start_step=0)
  totals = metrics.empty(metrics.TrainMetrics, mesh)
  for _ in range(2):
    state, totals = train_step(state, sharding.to_global(next(batches), mesh), totals)
  assert int(state.step) == 2 and int(state.skipped_steps) == 0
  assert math.isfinite(metrics.to_host(totals, 'train')['train/loss'])
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), start, jax.device_get(state.params))
  assert any(jax.tree.leaves(moved))


def test_a_dotted_override_sets_an_existing_key_and_names_a_missing_one():
  from resnet_jax import config_files
  from resnet_jax.bench import bare_config
  config = default.get_config()
  config_files.set_override(config, 'dataset.image_size', 12)
  config_files.set_override(config, 'batch_size', 7)
  assert (config.dataset.image_size, config.batch_size) == (12, 7)
  for key in ('dataset.imagesize', 'datset.image_size', 'bach_size'):
    with pytest.raises(KeyError, match=f"config has no key '{key}'"):
      config_files.set_override(config, key, 1)
  stand_in = bare_config.ConfigDict({'dataset': bare_config.ConfigDict({'image_size': 8})})
  config_files.set_override(stand_in, 'dataset.image_size', 16)
  assert stand_in.dataset.image_size == 16
  with pytest.raises(KeyError, match="config has no key 'dataset.crop'"):
    config_files.set_override(stand_in, 'dataset.crop', 1)
