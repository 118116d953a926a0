"""The JAX rows of the GPU benchmark (bench/gpu_benchmark.py), each run in a child process
of its own: the bfloat16 matmul, and the recipe's training step (plain, remat,
scan_blocks, the CIFAR recipe) built as resnet_jax/train.py builds it (bench/bare_config).
Each takes the parent's JSON spec and returns its figures."""

import os
import time
from typing import Any

from resnet_jax import config_files

# variant -> config overrides.
VARIANTS = {
    'plain': {},
    'remat': {'remat': True, 'remat_policy': 'full'},
    'remat_conv_outputs': {'remat': True, 'remat_policy': 'conv_outputs'},
    'scan_blocks': {'scan_blocks': True},
}


def _process_start(spec: dict[str, Any]) -> float:
  """time.perf_counter() at the moment the parent spawned this process."""
  return time.perf_counter() - (time.time() - spec['spawned_at'])


def matmul_row(spec: dict[str, Any]) -> dict[str, Any]:
  """A bfloat16 matmul's FLOP/s on random operands (spec['size'], default 8192; 2048 on
  CPU), and the device it ran on."""
  import jax
  import jax.numpy as jnp

  from resnet_jax.bench import step_benchmark
  size = spec['size'] or (2048 if jax.default_backend() == 'cpu' else 8192)
  return {'matmul_flops_per_sec': step_benchmark.matmul_peak_flops(jnp.bfloat16, size=size),
          'size': size, 'device': jax.devices()[0].device_kind,
          'num_devices': jax.device_count(), 'backend': jax.default_backend(),
          'jax_version': jax.__version__}


def recipe_config(spec: dict[str, Any]) -> Any:
  """The config a row measures: spec's config file (None: configs/default.py as the bare
  model), its overrides and variant, the global batch, BN groups no larger than a
  device's batch."""
  import jax

  from resnet_jax.bench import bare_config
  path = spec['config'] or config_files.checkout_config('default')
  config = bare_config.load(path, {key: value for key, value in spec['overrides'].items()
                                   if value is not None})
  for key, value in VARIANTS[spec['variant']].items():
    config[key] = value
  per_device = spec['per_device_batch']
  config.batch_size = spec['batch_size'] or per_device * jax.device_count()
  per_device = config.batch_size // jax.device_count()
  # Tiny rehearsals: no group larger than a device's batch.
  config.bn_group_size = min(config.bn_group_size, per_device)
  return config


def recipe_row(spec: dict[str, Any]) -> dict[str, Any]:
  """The recipe step's figures (bench/step_benchmark.measure_step), the settings it ran
  with and the model's MACs per image; seconds to the first step from this process's
  spawn."""
  process_start = _process_start(spec)
  from resnet_jax import compilation_cache
  cache = compilation_cache.enable(spec['cache_dir']) if spec.get('cache_dir') else None
  import jax

  from resnet_jax import train_state
  from resnet_jax.tools import summary
  from resnet_jax.bench import bare_config, step_benchmark
  config = recipe_config(spec)
  model, tx, learning_rate_fn, step_kwargs = bare_config.recipe_step(
      config, spec['num_classes'], train_images=spec['train_images'])
  result = step_benchmark.measure_step(
      model, tx, mode='train', batch_size=config.batch_size,
      image_size=config.dataset.image_size, num_classes=spec['num_classes'],
      loss_scale=train_state.create_loss_scale(config), learning_rate_fn=learning_rate_fn,
      warmup_steps=spec['warmup_steps'], timed_steps=spec['timed_steps'],
      process_start=process_start, step_kwargs=step_kwargs)
  macs = summary.summarize(config.model, image_size=config.dataset.image_size,
                           num_classes=spec['num_classes'])['macs']
  return result | {
      'model': config.model, 'dtype': config.dtype, 'bn_group_size': config.bn_group_size,
      'remat': config.remat, 'remat_policy': config.remat_policy,
      'scan_blocks': config.scan_blocks, 'label_smoothing': config.label_smoothing,
      'loss': config.loss, 'optimizer': config.optimizer, 'momentum': config.momentum,
      'nesterov': config.nesterov, 'weight_decay': config.weight_decay,
      'weight_decay_skip': config.weight_decay_skip, 'macs_per_image': macs,
      'compilation_cache_dir': cache,
      'compilation_cache_files': len(os.listdir(cache)) if cache else None,
      'jax_version': jax.__version__}

