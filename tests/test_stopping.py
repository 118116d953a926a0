"""How a run ends: a signal stops it with a checkpoint and the stop status, a resume
evaluates the step the stop skipped, a finished run re-run does nothing."""

import os
import pathlib
import re
import signal

import jax
import numpy as np
import pytest

from conftest import small_config
from resnet_jax import stopping, train
from resnet_jax.data import inputs
from resnet_jax.storage import checkpointing
from resnet_jax.storage import workdir as workdir_lib


@pytest.fixture(autouse=True)
def default_sigint():
  """Python's own Ctrl-C handler, whatever the test runner's worker set (xdist may ignore
  SIGINT); restored after."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


def _signal_before_step(monkeypatch, step, signum):
  """The trainer's input sends `signum` to this process as it hands out step `step`'s batch,
  as a Ctrl-C or a `kill` arriving during that step would."""
  real_create = inputs.create

  def create(config, mesh):
    data = real_create(config, mesh)
    real_batches = data.train_batches

    def train_batches(*, start_step=0, examples_before=None):
      for number, batch in enumerate(
          real_batches(start_step=start_step, examples_before=examples_before), start_step + 1):
        if number == step:
          os.kill(os.getpid(), signum)
        yield batch

    data.train_batches = train_batches
    return data

  monkeypatch.setattr(inputs, 'create', create)


def _files(workdir):
  return {os.path.join(root, name): (os.path.getsize(os.path.join(root, name)),
                                     os.path.getmtime(os.path.join(root, name)))
          for root, _, names in os.walk(workdir) for name in names}


def test_sigterm_stops_as_sigint_does(tmp_path, digits_dir, monkeypatch):
  config = small_config(**{'dataset.data_dir': digits_dir, 'num_train_steps': 3})
  _signal_before_step(monkeypatch, 2, signal.SIGTERM)
  with pytest.raises(stopping.RunStopped, match=r'^stopped by SIGTERM at step 2 of 3: '
                                                'checkpoint 2 saved'):
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']


def test_a_stop_on_an_evaluation_step_is_evaluated_on_resume(tmp_path, digits_dir, monkeypatch):
  """Ctrl-C here; SIGTERM takes the same path (test_sigterm_stops_as_sigint_does)."""
  config = small_config(**{'dataset.data_dir': digits_dir})  # 6 steps, evaluations at 3 and 6
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))

  _signal_before_step(monkeypatch, 3, signal.SIGINT)
  with pytest.raises(stopping.RunStopped, match='at step 3 of 6: checkpoint 3 saved; run the '
                                                'same command to resume') as stop:
    train.train_and_evaluate(config, str(tmp_path / 'stopped'))
  assert stop.value.step == 3  # acted on in the step the signal arrived in
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
  assert sorted(os.listdir(tmp_path / 'stopped' / 'checkpoints')) == ['3']
  assert workdir_lib.last_evaluation(tmp_path / 'stopped') is None  # step 3's was skipped

  monkeypatch.undo()
  evaluated = []
  real_evaluate = train.evaluate
  monkeypatch.setattr(train, 'evaluate', lambda state, *args, **kwargs: (
      evaluated.append(int(state.step)), real_evaluate(state, *args, **kwargs))[1])
  resumed = train.train_and_evaluate(config, str(tmp_path / 'stopped'))
  assert evaluated == [3, 6]
  assert resumed == straight
  jax.tree.map(np.testing.assert_array_equal,
               checkpointing.load_arrays(str(tmp_path / 'straight'), 6),
               checkpointing.load_arrays(str(tmp_path / 'stopped'), 6))


def test_a_finished_run_run_again_does_nothing(tmp_path, digits_dir, monkeypatch):
  config = small_config(**{'dataset.data_dir': digits_dir, 'num_train_steps': 3})
  first = train.train_and_evaluate(config, str(tmp_path))
  files = _files(tmp_path)
  monkeypatch.setattr(train, 'evaluate', lambda *args, **kwargs: pytest.fail('evaluated again'))
  again = train.train_and_evaluate(config, str(tmp_path))
  assert again == first
  assert workdir_lib.last_evaluation(tmp_path) == (3, first)
  # Nothing written: no new event file, evaluation point or checkpoint; the lock file,
  # held meanwhile, is empty again.
  lock = os.path.join(tmp_path, workdir_lib.LOCK_FILE)
  assert {k: v for k, v in _files(tmp_path).items() if k != lock} == {
      k: v for k, v in files.items() if k != lock}
  assert open(lock).read() == ''


def test_a_second_ctrl_c_is_the_default_one_and_ignored_sigint_stays_ignored():
  previous = signal.getsignal(signal.SIGINT)  # Python's default (the fixture)
  signals = stopping.StopSignals()
  try:
    assert not signals.reached(1)
    os.kill(os.getpid(), signal.SIGINT)
    assert signals.reached(2) and signals.cause == 'SIGINT (Ctrl-C)'
    assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # the kernel ends the process
  finally:
    signals.close()
  assert signal.getsignal(signal.SIGINT) is previous

  signal.signal(signal.SIGINT, signal.SIG_IGN)  # as launch/local.sh and nohup leave it
  try:
    signals = stopping.StopSignals()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    signals.close()
  finally:
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize('script,line', [('local.sh', 'stopped='), ('tpu_vm.sh', 'STOPPED='),
                                         ('slurm.sbatch', 'STOPPED=')])
def test_each_launcher_acts_on_the_trainers_stop_status(script, line):
  """The shell scripts cannot import the constant: their copy must match it."""
  text = (pathlib.Path(__file__).parent.parent / 'launch' / script).read_text()
  values = re.findall(rf'^{line}(\d+)', text, re.MULTILINE)
  assert values == [str(stopping.EXIT_STOPPED)], (script, values)
