"""A run's recorded config, as a config file ml_collections can load: what
`--config=WORKDIR/config.json`, and `--workdir=WORKDIR` given without --config, resolve to
(config_files.with_recorded_config), so a run resumes or evaluates from its workdir alone.
"""

import importlib.util
import json
import os
from typing import Any

import ml_collections

from resnet_jax import config_files
from resnet_jax.errors import ConfigError
from resnet_jax.storage import workdir as workdir_lib


def _tuples(tree: Any) -> Any:
  """JSON's lists back to the tuples every sequence key of configs/default.py holds (so
  `--config.key=(...)` overrides parse as they do on a config file)."""
  if isinstance(tree, dict):
    return {key: _tuples(value) for key, value in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(value) for value in tree)
  return tree


def _defaults() -> ml_collections.ConfigDict | None:
  """configs/default.py's config, loaded by path as the tools load their default --config,
  where the checkout has one (an installed package ships none): keys added since the run
  began get their defaults."""
  path = config_files.checkout_config('default')
  if not os.path.isfile(path):
    return None
  spec = importlib.util.spec_from_file_location('_recorded_config_defaults', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config(path: str) -> ml_collections.ConfigDict:
  """The config of the run at `path`: a workdir, or its config.json (the config in force
  at its newest resume, config_history.jsonl replayed), or any other JSON file of a
  config as it stands; over configs/default.py's where the checkout has one.

  Raises:
    ConfigError: no run's config there.
  """
  path = os.path.expanduser(path)
  if os.path.isdir(path) or os.path.basename(path) == workdir_lib.CONFIG_FILE:
    tree = workdir_lib.read_config(path if os.path.isdir(path) else os.path.dirname(path) or '.')
    tree = tree.to_dict()
  else:
    try:
      with open(path) as file:
        tree = json.load(file)
    except (OSError, ValueError) as error:
      raise ConfigError(f'cannot read a config from {path!r}: {error}') from None
  recorded = _tuples(tree)
  config = _defaults()
  if config is None:
    return ml_collections.ConfigDict(recorded)
  try:
    config.update(recorded)
  except (TypeError, ValueError, AttributeError):  # a key retyped since: the record alone
    return ml_collections.ConfigDict(recorded)
  return config
