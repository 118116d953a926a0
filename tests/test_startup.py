"""Start-up and profiles: the persistent compilation cache, profile_steps traces."""

import glob
import gzip
import json
import logging
import os

import jax
import jax.numpy as jnp
import pytest

from conftest import small_config
from resnet_jax import compilation_cache, profiling, train
from resnet_jax.storage import checkpointing


class _Killed(Exception):
  pass


@pytest.fixture
def own_cache(monkeypatch):
  """The cache in the test's own directory: conftest's session directory
  (JAX_COMPILATION_CACHE_DIR) set aside, and back afterwards."""
  session_directory = os.environ['JAX_COMPILATION_CACHE_DIR']
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  # Every program is written, however fast its compile: this tests the mechanism.
  monkeypatch.setattr(compilation_cache, 'MIN_COMPILE_SECONDS', 0.0)
  yield
  monkeypatch.undo()
  compilation_cache.enable(session_directory)


def _cache_files(directory):
  return sorted(name for name in os.listdir(directory) if name.endswith('-cache'))


@pytest.mark.slow
def test_a_resume_loads_its_programs_from_the_cache(tmp_path, digits_dir, monkeypatch, caplog,
                                                    own_cache):
  cache = tmp_path / 'cache'
  config = small_config(**{'dataset.data_dir': digits_dir, 'compilation_cache_dir': str(cache),
                           'checkpoint_async': False})
  real_save = checkpointing.Checkpointer.save

  def save_then_die(self, step, state):
    real_save(self, step, state)
    if step == 3:
      raise _Killed()

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save_then_die)
  with pytest.raises(_Killed):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', real_save)
  written = _cache_files(cache)
  assert {name.split('-')[0] for name in written} >= {'jit_init', 'jit_step_and_accumulate'}

  caplog.set_level(logging.DEBUG, logger='jax._src.compiler')
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  hits = {record.args[0] for record in caplog.records
          if record.msg.startswith('Persistent compilation cache hit')}
  # The resumed run's step is the fresh run's program (a restored step counter is typed
  # as the initial one), so nothing of it was compiled again.
  assert hits >= {'jit_init', 'jit_step_and_accumulate'}, hits
  assert {name for name in _cache_files(cache) if 'step_and_accumulate' in name} == {
      name for name in written if 'step_and_accumulate' in name}


def test_enable(tmp_path, own_cache):
  directory = tmp_path / 'a' / 'b'
  os.environ['STARTUP_TEST_DIR'] = str(tmp_path)
  try:
    assert compilation_cache.enable('$STARTUP_TEST_DIR/a/b') == str(directory)
  finally:
    del os.environ['STARTUP_TEST_DIR']
  assert directory.is_dir() and jax.config.jax_compilation_cache_dir == str(directory)
  jax.jit(lambda x: x * 3 + 1)(jnp.arange(5)).block_until_ready()
  assert _cache_files(directory)

  assert compilation_cache.enable('') is None
  assert jax.config.jax_compilation_cache_dir is None
  before = _cache_files(directory)
  jax.jit(lambda x: x * 5 - 2)(jnp.arange(7)).block_until_ready()
  assert _cache_files(directory) == before


def test_enable_respects_jax_switch_and_survives_an_unusable_directory(tmp_path, own_cache):
  jax.config.update('jax_enable_compilation_cache', False)
  try:
    assert compilation_cache.enable(str(tmp_path / 'off')) is None
    assert not (tmp_path / 'off').exists()
  finally:
    jax.config.update('jax_enable_compilation_cache', True)
  (tmp_path / 'file').write_text('')
  assert compilation_cache.enable(str(tmp_path / 'file' / 'cache')) is None
  assert jax.config.jax_compilation_cache_dir is None


def test_jax_s_directory_variable_wins_over_the_config_s(tmp_path, own_cache, monkeypatch):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'cluster'))
  assert compilation_cache.enable(str(tmp_path / 'config')) == str(tmp_path / 'cluster')
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'cluster')
  assert not (tmp_path / 'config').exists()
  assert compilation_cache.enable('') is None  # the config's off stays off


@pytest.mark.parametrize('text,expected', [('', None), ('10-15', (10, 15)), ('1-1', (1, 1)),
                                           ('007-8', (7, 8))])
def test_parse_steps(text, expected):
  assert profiling.parse_steps(text) == expected


@pytest.mark.parametrize('text', ['5-3', '0-2', '10', '-3', '1-', 'a-b', '1 - 2', '1-2-3',
                                  '1.5-2', ' '])
def test_parse_steps_refuses(text):
  with pytest.raises(ValueError) as error:
    profiling.parse_steps(text)
  message = str(error.value)
  assert f'profile_steps {text!r} must be' in message and "e.g. '10-15'" in message
  assert '\n' not in message


def _traced_steps(workdir):
  """{run directory: the step numbers of the 'train' step annotations in its trace}."""
  runs = {}
  for path in glob.glob(os.path.join(workdir, 'plugins', 'profile', '*', '*.trace.json.gz')):
    with gzip.open(path) as file:
      events = json.load(file)['traceEvents']
    runs[os.path.basename(os.path.dirname(path))] = sorted(
        int(event['args']['step_num']) for event in events
        if event.get('name') == 'train' and 'step_num' in event.get('args', {}))
  return runs


@pytest.mark.slow
def test_profile_steps_traces_exactly_that_range(tmp_path, digits_dir):
  config = small_config(**{'dataset.data_dir': digits_dir, 'profile_steps': '2-3',
                           'num_train_steps': 4})
  workdir = tmp_path / 'profiled'
  train.train_and_evaluate(config, str(workdir))
  assert len(glob.glob(str(workdir / 'plugins' / 'profile' / '*' / '*.xplane.pb'))) == 1
  assert list(_traced_steps(workdir).values()) == [[2, 3]]

  config.num_train_steps = 6  # a resume past the range traces nothing
  train.train_and_evaluate(config, str(workdir), allow_changes=('num_train_steps',))
  assert len(os.listdir(workdir / 'plugins' / 'profile')) == 1

  plain = tmp_path / 'plain'
  train.train_and_evaluate(small_config(**{'dataset.data_dir': digits_dir,
                                           'num_train_steps': 2}), str(plain))
  assert not (plain / 'plugins').exists()


def test_step_trace_stops_on_failure_and_only_on_process_0(tmp_path, monkeypatch):
  state = jnp.zeros(3)
  trace = profiling.StepTrace('2-5', str(tmp_path / 'a'), start_step=2, last_step=10)
  with pytest.raises(_Killed):
    try:
      for step in (3, 4):  # resumed at 2: steps 3..5 are traced
        trace.before_step(step, state)
        state = state + 1
        trace.after_step(step, state)
      raise _Killed()
    finally:
      trace.stop()
  assert glob.glob(str(tmp_path / 'a' / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  jax.profiler.start_trace(str(tmp_path / 'b'))  # would raise if a trace still ran
  jax.profiler.stop_trace()

  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  trace = profiling.StepTrace('1-2', str(tmp_path / 'c'), start_step=0, last_step=10)
  for step in (1, 2):
    trace.before_step(step, state)
    trace.after_step(step, state)
  trace.stop()
  assert not (tmp_path / 'c').exists()
