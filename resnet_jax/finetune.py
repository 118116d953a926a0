"""Starting a run from trained weights: ours (a workdir) or imported (resnet_jax.tools.convert).

The config keys (configs/default.py): `init_checkpoint`, `init_weights`, `reset_head`;
`freeze_backbone` and `backbone_lr_multiplier` (optim.create_optimizer) and
`freeze_batch_stats` (steps.train_step) decide what the run then trains.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from jax.sharding import Mesh

from resnet_jax import optim, sharding, train_state
from resnet_jax.errors import ConfigError
from resnet_jax.models import block_stack
from resnet_jax.storage import checkpointing, trained


def load_init_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The weights `config.init_checkpoint` names, checked against `config.model`.

  Raises:
    ConfigError: the checkpoint is missing, or holds another architecture.
  """
  if config.init_checkpoint is None:
    raise ConfigError('init_checkpoint is not set: this config fine-tunes; pass '
                      '--config.init_checkpoint=DIR (a workdir, or a resnet_jax.tools.convert '
                      "output), or '' to train from scratch")
  directory = config.init_checkpoint
  if '://' not in directory and not os.path.isdir(directory):
    raise ConfigError(f'init_checkpoint {directory!r} is not a directory: give a workdir of '
                      'resnet_jax.main or a resnet_jax.tools.convert output')
  info = trained.read_model_info(directory)
  if info.model != config.model:
    raise ConfigError(f'init_checkpoint {directory!r} holds a {info.model}, but config.model '
                      f'is {config.model!r}: set --config.model={info.model}')
  variables, step, used = trained.load_variables(directory, weights=config.init_weights)
  logging.info('Initialising from %s (step %d, %s weights)', directory, step, used)
  return variables


def apply_init(state: train_state.TrainState, variables: dict[str, Any],
               config: ml_collections.ConfigDict, mesh: Mesh) -> train_state.TrainState:
  """`state` with the loaded parameters and statistics (and a fresh head if asked).

  The optimizer state stays as initialised (zero momentum); an EMA starts at the loaded
  weights.

  Raises:
    ConfigError: naming the first variable whose shape differs from the model's.
  """
  params = dict(variables['params'])
  if config.reset_head:
    params[optim.HEAD] = jax.device_get(state.params[optim.HEAD])
  loaded = {'params': params, 'batch_stats': variables['batch_stats']}
  if config.scan_blocks:
    loaded = {name: block_stack.scan_layout(collection) for name, collection in loaded.items()}
  wanted = checkpointing.leaf_shapes({'params': state.params,
                                       'batch_stats': state.batch_stats})
  have = checkpointing.leaf_shapes(loaded)
  for path in sorted(wanted.keys() | have.keys()):
    if wanted.get(path) != have.get(path):
      new_head = path.startswith(f'params/{optim.HEAD}/')
      hint = ' (a new class count: set reset_head=True)' if new_head else ''
      raise ConfigError(f'init_checkpoint {config.init_checkpoint!r} does not fit the model: '
                        f'{path} is {have.get(path, "missing")} there, the model needs '
                        f'{wanted.get(path, "none")}{hint}')
  on_devices = jax.device_put(loaded, sharding.replicated(mesh))
  state = state.replace(params=on_devices['params'], batch_stats=on_devices['batch_stats'])
  if state.ema is not None:
    # Buffers of its own: the train step donates the state, and XLA refuses to donate one
    # buffer twice (params and ema['params'] sharing arrays failed at step 1).
    state = state.replace(ema=jax.tree.map(jnp.copy, on_devices))
  return state

