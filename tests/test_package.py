"""The package's shape: every module imports, none imports the top-level configs, config
files load from any directory, and the allocator restart happens only for the CPU backend."""

import ast
import importlib
import importlib.metadata
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from resnet_jax import config_files
from resnet_jax.cpu import allocator

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'resnet_jax'
FILES = {'.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
         .removesuffix('.__init__'): path for path in PACKAGE.rglob('*.py')}
MODULES = sorted(FILES)
# Commands define absl flags at import, and two may define the same name ('config'):
# each is imported in a process of its own.
COMMANDS = [module for module in MODULES if 'flags.DEFINE' in FILES[module].read_text()]


@pytest.mark.parametrize('module', [m for m in MODULES if m not in COMMANDS])
def test_every_library_module_imports(module):
  assert importlib.import_module(module).__name__ == module


@pytest.mark.parametrize('module', COMMANDS)
def test_every_command_module_imports(module):
  result = subprocess.run([sys.executable, '-c', f'import {module}'], capture_output=True,
                          text=True, cwd=PACKAGE.parent, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]


def test_no_module_imports_the_top_level_configs():
  offenders = []
  for path in PACKAGE.rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] if isinstance(node, ast.ImportFrom) and not node.level
               else [])
      offenders += [f'{path.name}: {name}' for name in names
                    if name.split('.')[0] == 'configs']
  assert not offenders


def test_the_training_core_does_not_import_the_studies():
  """resnet_jax/studies/ is research beside the core: the trainer, data, models, storage
  and tools run without it."""
  offenders = []
  for path in PACKAGE.rglob('*.py'):
    if 'studies' in path.relative_to(PACKAGE).parts:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] + [f'{node.module}.{alias.name}' for alias in node.names]
               if isinstance(node, ast.ImportFrom) and not node.level else [])
      offenders += [f'{path.relative_to(PACKAGE)}: {name}' for name in names
                    if name.startswith('resnet_jax.studies')]
  assert not offenders


def test_every_command_the_docs_name_exists():
  """`python -m resnet_jax.X` in the README, docs, configs and launch scripts names a
  module that exists (after a move, a stale name fails here, not in a user's shell)."""
  repo = PACKAGE.parent
  texts = [repo / 'README.md', *repo.glob('docs/*.md'), *repo.glob('configs/*.py'),
           *repo.glob('launch/*.sh'), *PACKAGE.rglob('*.py')]
  named = {}
  for path in texts:
    for module in re.findall(r'-m\s+(resnet_jax(?:\.\w+)*)', path.read_text()):
      if module.islower():  # not a placeholder (resnet_jax.tools.NAME)
        named.setdefault(module, path.relative_to(repo))
  assert len(named) > 20, named  # the pattern still finds the commands
  missing = {module: str(where) for module, where in named.items() if module not in FILES}
  assert not missing


def test_config_files_load_from_another_directory(tmp_path, monkeypatch):
  elsewhere = tmp_path / 'elsewhere'
  shutil.copytree(PACKAGE.parent / 'configs', elsewhere / 'configs')
  (elsewhere / 'configs' / 'marker.py').write_text('WHERE = "elsewhere"\n')
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, 'path', [p for p in sys.path if p not in ('', os.getcwd())])
  for name in [name for name in sys.modules if name.split('.')[0] == 'configs']:
    monkeypatch.delitem(sys.modules, name)
  config_files.make_importable(['prog', f'--config={elsewhere}/configs/digits.py:unused',
                                '--config.batch_size=8'])
  assert importlib.import_module('configs.marker').WHERE == 'elsewhere'
  assert sys.path[0] == str(elsewhere)


@pytest.mark.parametrize('platforms, nodes, plugins, expected', [
    ('cpu', ('/dev/nvidia0',), ('jax-cuda12-plugin',), True),
    ('cuda', (), (), False),
    ('', (), ('jax-cuda12-plugin',), True),          # a plugin but no device
    ('', ('/dev/nvidia0',), (), True),               # a device but CPU-only JAX
    ('', ('/dev/nvidia0',), ('jax-cuda13-plugin',), False),
    ('', ('/dev/vfio/0',), ('libtpu',), False),
])
def test_backend_will_be_cpu(monkeypatch, platforms, nodes, plugins, expected):
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  monkeypatch.delenv('JAX_PLATFORM_NAME', raising=False)
  monkeypatch.setattr(os.path, 'exists', lambda path: path in nodes)

  def distribution(name):
    if name not in plugins:
      raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(importlib.metadata, 'distribution', distribution)
  assert allocator.backend_will_be_cpu() is expected


@pytest.mark.parametrize('cpu_backend', [True, False])
def test_allocator_restarts_only_for_the_cpu_backend(monkeypatch, cpu_backend):
  restarts = []
  for name in ('RESNET_JAX_ALLOCATOR', 'RESNET_JAX_ALLOCATOR_SET', 'LD_PRELOAD'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(allocator, 'find_library', lambda: ('/lib/libjemalloc.so.2', {}))
  monkeypatch.setattr(allocator, 'backend_will_be_cpu', lambda: cpu_backend)
  monkeypatch.setattr(os, 'execve', lambda path, argv, env: restarts.append(env['LD_PRELOAD']))
  allocator.reexec_with_fast_allocator()
  assert restarts == (['/lib/libjemalloc.so.2'] if cpu_backend else [])
