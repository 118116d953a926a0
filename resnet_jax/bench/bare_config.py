"""A config file and the trainer's step built from it, where only JAX, flax and optax exist.

The GPU tools (gpu_benchmark, gpu_numerics) measure the step users train: the recipe's
model, BatchNorm groups, loss, optimizer with its weight-decay mask, and dtype, as
resnet_jax/train.py builds them. They run on bare CUDA JAX images (JAX, flax, optax,
numpy, torch, torchvision), so nothing here imports TensorFlow, clu, jmp or
ml_collections, and neither do models, optim or steps.

  config = bare_config.load('configs/imagenet50.py:nvidia')
  model, tx, learning_rate_fn, step_kwargs = bare_config.recipe_step(config, num_classes)
"""

import contextlib
import copy
import importlib.util
import os
import sys
import types
from typing import Any

import optax

from resnet_jax import config_files, models, optim, schedule, step_options

IMAGENET_TRAIN_IMAGES = 1_281_167  # steps per epoch for the schedule (configs/recipes.py)


class ConfigDict(dict):
  """The part of ml_collections.ConfigDict that configs/*.py and the step use."""

  def __getattr__(self, name: str) -> Any:
    try:
      return self[name]
    except KeyError:
      raise AttributeError(name) from None

  def __setattr__(self, name: str, value: Any) -> None:
    self[name] = value

  def __deepcopy__(self, memo: dict[int, Any]) -> 'ConfigDict':
    return ConfigDict({key: copy.deepcopy(value, memo) for key, value in self.items()})

  def to_dict(self) -> dict[str, Any]:
    return {key: value.to_dict() if isinstance(value, ConfigDict) else value
            for key, value in self.items()}

  def copy_and_resolve_references(self) -> 'ConfigDict':
    return copy.deepcopy(self)

  def lock(self) -> 'ConfigDict':
    return self

  @contextlib.contextmanager
  def unlocked(self):
    yield self


def _install_stand_in() -> None:
  module = types.ModuleType('ml_collections')
  module.__doc__ = 'resnet_jax.bench.bare_config\'s stand-in for ml_collections.'
  config_dict = types.ModuleType('ml_collections.config_dict')
  config_dict.ConfigDict = ConfigDict
  config_dict.placeholder = lambda field_type=None, required=False: None
  module.ConfigDict = ConfigDict
  module.config_dict = config_dict
  sys.modules['ml_collections'] = module
  sys.modules['ml_collections.config_dict'] = config_dict


def load(spec: str, overrides: dict[str, Any] | None = None) -> Any:
  """Runs `spec`'s get_config ('path/to/config.py' or 'path:argument'), then `overrides`
  ({'dataset.image_size': 32, ...}); the config is an ml_collections.ConfigDict where
  that package is installed."""
  path, argument = spec, None
  if not os.path.isfile(path) and ':' in path:
    path, argument = path.rsplit(':', 1)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no config file {path!r}')
  try:
    import ml_collections  # noqa: F401, PLC0415
  except ImportError:
    # Bare CUDA JAX images lack ml_collections; configs/*.py use only ConfigDict and
    # config_dict.placeholder, which this stand-in provides.
    _install_stand_in()
  config_files.make_importable([f'--config={path}'])
  module_spec = importlib.util.spec_from_file_location(
      f'_bare_config_{abs(hash(os.path.abspath(path)))}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(argument) if argument is not None else module.get_config()
  for key, value in (overrides or {}).items():
    config_files.set_override(config, key, value)
  return config


def recipe_step(config: Any, num_classes: int, *, train_images: int = IMAGENET_TRAIN_IMAGES
                ) -> tuple[Any, optax.GradientTransformation, optax.Schedule, dict[str, Any]]:
  """(model, optimizer, learning-rate schedule, train_step keyword arguments) as the
  trainer builds them from `config` (train.create_state, train.bound_train_step: the
  same schedule.py and StepOptions.from_config), for `train_images` a split."""
  length = schedule.run_length(config, train_images)
  learning_rate_fn = schedule.learning_rate_fn(config, train_images)
  model = models.model_from_config(config, num_classes)
  if config.remat and getattr(model, 'remat_policy', 'full') != config.remat_policy:
    raise ValueError(f'remat_policy {config.remat_policy!r}: models.model_from_config does '
                     'not build it (the model has no such remat_policy)')
  tx = optim.create_optimizer(config, learning_rate_fn)
  options = step_options.StepOptions.from_config(config,
                                                 steps_per_epoch=length.steps_per_epoch)
  return model, tx, learning_rate_fn, {'learning_rate_fn': learning_rate_fn, 'options': options}
