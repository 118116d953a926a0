"""Config files that import their package (`from configs import default`), from any directory,
a run's recorded config.json as a config file, and dotted overrides set in code.

ml_collections loads `--config=PATH` as a lone file, so the `configs` package it imports
must be on sys.path. `make_importable` puts the directory that holds the file's package
there, so `python -m resnet_jax.main --config=/any/where/configs/digits.py` works from any
working directory and after `pip install`, which ships the library, not the configs.
"""

import ast
import os
import sys
from typing import Any


def _config_paths(argv: list[str], flag: str) -> list[str]:
  paths = []
  for index, arg in enumerate(argv):
    if arg.startswith(f'--{flag}='):
      paths.append(arg.split('=', 1)[1])
    elif arg == f'--{flag}' and index + 1 < len(argv):
      paths.append(argv[index + 1])
  return paths


RECORDED_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'recorded_config.py')


def with_recorded_config(argv: list[str]) -> list[str]:
  """`argv` with a run's record standing in for a config file: `--config=PATH.json` (a
  workdir's config.json) is loaded through recorded_config.py, and so is the --workdir's
  config.json when no --config is given.

  Raises:
    SystemExit: no --config and no config.json in the --workdir, in one line.
  """
  argv = list(argv)
  for index, arg in enumerate(argv):
    value = None
    if arg.startswith('--config='):
      value, target = arg.split('=', 1)[1], index
    elif arg == '--config' and index + 1 < len(argv):
      value, target = argv[index + 1], index + 1
    if value is not None and value.endswith('.json'):
      argv[target] = (f'--config={RECORDED_CONFIG}:{value}' if target == index
                      else f'{RECORDED_CONFIG}:{value}')
  if _config_paths(argv, 'config'):
    return argv
  workdirs = _config_paths(argv, 'workdir')
  if not workdirs:
    return argv  # absl names the missing flags
  from etils import epath  # noqa: PLC0415  (gs://... workdirs too)
  workdir = os.path.expanduser(workdirs[-1])
  if not epath.Path(workdir, 'config.json').exists():
    raise SystemExit(f'error: --config is needed (e.g. --config=configs/digits.py): workdir '
                     f'{workdirs[-1]!r} holds no config.json of an earlier run to resume')
  # absl reads --config.key overrides only after --config itself.
  return [argv[0], f'--config={RECORDED_CONFIG}:{workdir}', *argv[1:]]


def make_importable(argv: list[str], flag: str = 'config') -> None:
  """Adds the parent of each `--flag=PATH` file's package directory to sys.path.

  A PATH may carry ml_collections' `:argument` suffix. Files outside a package (no
  __init__.py beside them) need nothing and are left alone.
  """
  for path in _config_paths(argv, flag):
    if not os.path.isfile(path) and ':' in path:
      path = path.rsplit(':', 1)[0]
    package_dir = os.path.dirname(os.path.abspath(path))
    if os.path.isfile(os.path.join(package_dir, '__init__.py')):
      root = os.path.dirname(package_dir)
      if root not in sys.path:
        sys.path.insert(0, root)


def set_override(config: Any, key: str, value: Any) -> None:
  """Sets a dotted key ('dataset.image_size') as `--config.dataset.image_size=` does, in an
  ml_collections ConfigDict or a dict-like stand-in (bench/bare_config's); KeyError naming
  the whole key when a part of it is not in `config` (a key is never added)."""
  *parents, leaf = key.split('.')
  target = config
  for parent in parents:
    if parent not in target:
      raise KeyError(f'config has no key {key!r}')
    target = target[parent]
  if leaf not in target:
    raise KeyError(f'config has no key {key!r}')
  target[leaf] = value


def checkout_config(name: str) -> str:
  """configs/NAME.py of the source checkout this package runs from (a tool's default
  --config), or the path relative to the working directory when installed elsewhere;
  made importable, since a tool's default config is loaded when its flag is defined."""
  checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.path.join(checkout, 'configs', f'{name}.py')
  path = path if os.path.isfile(path) else os.path.join('configs', f'{name}.py')
  make_importable([f'--config={path}'])
  return path


def configs_directory() -> str:
  """configs/ of the source checkout this package runs from, else ./configs."""
  return os.path.dirname(checkout_config('default'))


def describe_configs(directory: str) -> str:
  """One line per config file in `directory` (those defining get_config): its path, its
  recipe arguments (a RECIPES tuple) and its docstring's first line. Read, not imported."""
  lines = []
  for name in sorted(os.listdir(directory) if os.path.isdir(directory) else []):
    if not name.endswith('.py'):
      continue
    with open(os.path.join(directory, name)) as file:
      tree = ast.parse(file.read())
    if not any(isinstance(node, ast.FunctionDef) and node.name == 'get_config'
               for node in tree.body):
      continue
    recipes = [ast.literal_eval(node.value) for node in tree.body
               if isinstance(node, ast.Assign)
               and any(getattr(target, 'id', '') == 'RECIPES' for target in node.targets)]
    path = os.path.join(os.path.basename(directory), name)
    if recipes:
      path += ':' + '|'.join(recipes[0])
    summary = (ast.get_docstring(tree) or '').split('\n')[0]
    lines.append(f'  {path}\n      {summary}')
  return '\n'.join(lines)
