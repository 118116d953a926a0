"""bench/command_flags.py: absl flags for commands that tests call in one process; every
command on absl flags."""

import importlib
import pathlib
import re

import pytest
from absl import flags

from resnet_jax.bench import command_flags


def _values():
  values = flags.FlagValues()
  flags.DEFINE_integer('batch_size', 8, 'Global batch.', flag_values=values)
  flags.DEFINE_enum('loop', 'auto', ['auto', 'scan'], 'The loop.', flag_values=values)
  return values


def test_each_call_parses_from_the_defaults_in_absl_syntax():
  values = _values()
  parsed = command_flags.parse(values, ['--batch_size', '16', '--loop=scan'], prog='p', doc='d')
  assert (parsed.batch_size, parsed.loop) == (16, 'scan')
  parsed = command_flags.parse(values, [], prog='p', doc='d')
  assert (parsed.batch_size, parsed.loop) == (8, 'auto')


@pytest.mark.parametrize('argv, named', [
    (['--batch_size=x'], 'batch_size'),
    (['--loop=unrolled'], 'loop'),
    (['--batchsize=4'], 'batchsize'),
    (['stray'], 'stray'),
])
def test_bad_input_is_one_line_and_status_2(capsys, argv, named):
  with pytest.raises(SystemExit) as exit_info:
    command_flags.parse(_values(), argv, prog='python -m x', doc='d')
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith('python -m x: error: ') and named in err, err
  assert len(err.strip().splitlines()) == 1, err


def test_help_prints_the_doc_and_the_flags(capsys):
  with pytest.raises(SystemExit) as exit_info:
    command_flags.parse(_values(), ['--help'], prog='p', doc='What it measures.')
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith('What it measures.') and '--batch_size' in out and '--loop' in out


def test_no_command_of_the_package_parses_with_argparse():
  """One flag convention: every command takes absl flags (the bench commands through
  command_flags), none argparse."""
  package = pathlib.Path(command_flags.__file__).parents[1]
  users = sorted(str(path.relative_to(package)) for path in package.rglob('*.py')
                 if re.search(r'^\s*(import argparse|from argparse )', path.read_text(), re.M))
  assert users == []


@pytest.mark.parametrize('module, argv, named', [
    ('gpu_benchmark', ['--variants=plain,bogus'], 'bogus'),
    ('gpu_benchmark', ['--torch=jit'], 'jit'),
    ('gpu_benchmark', ['--dtype=int8'], 'dtype'),
    ('gpu_numerics', ['--checks=logits,speed'], 'speed'),
    ('gpu_numerics', ['--steps=two'], 'steps'),
    ('memory_options', ['--variants=plain,fast'], 'unknown --variants fast; valid: plain,remat,'),
    ('norm_benchmark', ['--variants=ours,fastest'], 'fastest'),
    ('cpu_devices', ['--counts=1,two'], '--counts 1,two must be integers >= 1'),
    ('cpu_devices', ['--counts=0,2'], '--counts 0,2 must be integers >= 1'),
    ('cpu_devices', ['--rounds=0'], '--rounds 0 must be >= 1'),
])
def test_the_bench_commands_refuse_bad_flags_in_one_line(capsys, module, argv, named):
  command = importlib.import_module(f'resnet_jax.bench.{module}')
  with pytest.raises(SystemExit) as exit_info:
    command.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(f'python -m resnet_jax.bench.{module}: error: ') and named in err, err
  assert len(err.strip().splitlines()) == 1, err
