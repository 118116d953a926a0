"""The config's values checked before anything runs: one ConfigError naming the first bad
value and its valid choices."""

import os

import ml_collections
from jax.sharding import Mesh

from resnet_jax import (erasing, losses, models, optim, profiling, sharding, step_options,
                        train_state)
from resnet_jax.cpu import conv
from resnet_jax.data import AUGMENTATIONS, ORDERS, dataset_info, inputs, resolution
from resnet_jax.errors import ConfigError, check_choice
from resnet_jax.storage import trained

# The policy lives with the step's options (no ml_collections there: bare accelerator images).
NONFINITE_POLICIES, nonfinite_policy = step_options.NONFINITE_POLICIES, step_options.nonfinite_policy
# Config values that are local paths: `~` is expanded in them (the shell leaves the `~` of
# `--config.dataset.data_dir=~/x` alone) and they are made absolute, so the recorded config
# finds them from any directory (a resume from the workdir alone).
PATH_KEYS = ('dataset.data_dir', 'dataset.manual_dir', 'init_checkpoint')


def with_user_paths_expanded(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config`, or a copy of it with PATH_KEYS' local paths expanded (`~`) and absolute."""
  expanded = {}
  for key in PATH_KEYS:
    group, _, leaf = key.rpartition('.')
    value = (config[group] if group else config)[leaf]
    if isinstance(value, str) and value and '://' not in value:
      absolute = os.path.abspath(os.path.expanduser(value))
      if absolute != value:
        expanded[key] = absolute
  if not expanded:
    return config
  config = config.copy_and_resolve_references()
  for key, value in expanded.items():
    group, _, leaf = key.rpartition('.')
    (config[group] if group else config)[leaf] = value
  return config


def check_config(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  """Raises ConfigError naming the first bad value and its valid choices."""
  try:
    models.check_model_name(config.model)
    models.check_image_size(config.model, config.dataset.image_size)
    models.check_unit_options(config.model, models.unit_options(config))
    check_choice('remat_policy', config.remat_policy, models.REMAT_POLICIES)
    profiling.parse_steps(config.profile_steps)
    if config.diagnostics_every_steps < 0:
      raise ValueError(f'diagnostics_every_steps {config.diagnostics_every_steps} must be >= 0 '
                       '(0: off)')
    models.compute_dtype(config.dtype)
    conv.check_conv_impl(config.conv_impl)
    check_choice('loss_scale', config.loss_scale, train_state.LOSS_SCALES)
    optim.check_choices(config)
    if inputs.needs_tensorflow(config):
      inputs.check_tensorflow_available(config)
      from resnet_jax.data import sources  # noqa: PLC0415  (imports TensorFlow)
      sources.check_dataset_name(config.dataset.name)
    check_choice('dataset.augment', config.dataset.augment, AUGMENTATIONS)
    check_choice('dataset.order', config.dataset.order, ORDERS)
    inputs.check(config)
    sharding.check_batch_size(config.batch_size, mesh)
    check_choice('nonfinite_policy', config.nonfinite_policy, NONFINITE_POLICIES)
    accumulation = config.grad_accum_steps
    if accumulation < 1 or config.batch_size % (accumulation * mesh.devices.size):
      raise ValueError(f'grad_accum_steps {accumulation} must be >= 1 and split batch_size '
                       f'{config.batch_size} into micro-batches that the {mesh.devices.size} '
                       'devices divide (batch_size a multiple of grad_accum_steps × devices)')
    if accumulation > 1 and config.diagnostics_every_steps:
      raise ValueError(f'diagnostics_every_steps {config.diagnostics_every_steps} needs '
                       f'grad_accum_steps 1 (is {accumulation})')
    # BatchNorm sees one micro-batch at a time; mixing, the whole batch.
    sharding.check_group_size(
        'bn_group_size', config.bn_group_size, config.batch_size // accumulation, mesh,
        batch_label=(f'micro-batch {config.batch_size // accumulation} = batch_size '
                     f'{config.batch_size} / grad_accum_steps {accumulation}'
                     if accumulation > 1 else ''))
    sharding.check_group_size('mix_group_size', config.mix_group_size, config.batch_size, mesh)
    if (config.mixup_alpha or config.cutmix_alpha) and not config.mix_group_size:
      sharding.check_group_size('mix_group_size (0: bn_group_size)', config.bn_group_size,
                                config.batch_size, mesh)
    check_choice('init_weights', config.init_weights, trained.WEIGHTS)
    for name, value in (('mixup_alpha', config.mixup_alpha),
                        ('cutmix_alpha', config.cutmix_alpha),
                        ('dataset.randaugment_layers', config.dataset.randaugment_layers)):
      if value < 0:
        raise ValueError(f'{name} {value} must be >= 0 (0: off)')
    if not 0 <= config.dataset.randaugment_magnitude <= 10:
      raise ValueError(f'dataset.randaugment_magnitude {config.dataset.randaugment_magnitude} '
                       'must be in [0, 10]')
    _check_recipe_components(config)
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
      raise ValueError(f'num_train_steps {config.num_train_steps} and num_epochs '
                       f'{config.num_epochs}: one of them must be positive')
  except ValueError as error:
    raise ConfigError(str(error)) from None


def check_against_data(config: ml_collections.ConfigDict,
                       info: dataset_info.DatasetInfo) -> None:
  """Raises ConfigError for values that do not fit the dataset (known once it is opened)."""
  if info.num_train_examples < config.batch_size:
    raise ConfigError(f'batch_size {config.batch_size} exceeds the {info.num_train_examples} '
                      f'examples of {config.dataset.train_split!r}')
  channels = info.image_shape[-1]
  for name in ('mean', 'std'):
    values = tuple(config.dataset[name])
    if len(values) not in (1, channels):
      raise ConfigError(f'dataset.{name} {values} has {len(values)} values, but the images of '
                        f'{config.dataset.name!r} have {channels} channel(s): give {channels} '
                        'values, or 1 for every channel')
  if not all(value > 0 for value in config.dataset.std):
    raise ConfigError(f'dataset.std {tuple(config.dataset.std)} must be > 0 in every channel')


def _check_recipe_components(config: ml_collections.ConfigDict) -> None:
  """The loss, erasing, repeats, TrivialAugment, resolution and EMA settings."""
  check_choice('loss', config.loss, losses.LOSSES, choices_name='losses')
  if not 0 <= config.bce_target_threshold < 1:
    raise ValueError(f'bce_target_threshold {config.bce_target_threshold} must be in [0, 1) '
                     '(0: off)')
  if config.bce_target_threshold and config.loss != 'bce':
    raise ValueError(f'bce_target_threshold {config.bce_target_threshold} needs loss=bce '
                     f'(loss is {config.loss!r})')
  if not 0 <= config.random_erasing <= 1:
    raise ValueError(f'random_erasing {config.random_erasing} must be in [0, 1] (0: off)')
  check_choice('random_erasing_mode', config.random_erasing_mode, erasing.MODES)
  check_choice('random_erasing_box', config.random_erasing_box, erasing.BOXES)
  repeats = config.dataset.repeated_augmentation
  if not 1 <= repeats <= config.batch_size:
    raise ValueError(f'dataset.repeated_augmentation {repeats} must be in [1, batch_size '
                     f'{config.batch_size}] (1: off)')
  if config.dataset.trivial_augment and config.dataset.randaugment_layers:
    raise ValueError('dataset.trivial_augment and dataset.randaugment_layers '
                     f'{config.dataset.randaugment_layers}: pick one (randaugment_layers=0)')
  resolution.check(config)
  for name in ('cycle_length', 'shuffle_buffer'):
    if config.dataset[name] < 1:
      raise ValueError(f'dataset.{name} {config.dataset[name]} must be >= 1')
  if config.ema_every_steps < 1:
    raise ValueError(f'ema_every_steps {config.ema_every_steps} must be >= 1')
