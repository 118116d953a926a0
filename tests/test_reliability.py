"""Workdir lock, incompatible resumes, corrupt checkpoints and failing saves."""

import os

import orbax.checkpoint as ocp
import pytest

from conftest import small_config
from resnet_jax import checkpointing, train
from resnet_jax import workdir as workdir_lib
from resnet_jax.errors import ConfigError

# Restores that fail on purpose leave orbax coroutines that were never awaited.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _config(digits_dir, **overrides):
  return small_config(**{'dataset.data_dir': digits_dir, **overrides})


def _steps(workdir):
  return sorted(int(s) for s in os.listdir(workdir / 'checkpoints'))


def test_a_live_run_locks_its_workdir(tmp_path, digits_dir):
  lock = workdir_lib.Lock(workdir_lib.path(str(tmp_path)))
  try:
    with pytest.raises(ConfigError, match=r'is in use by a live run \(pid \d+ on '):
      train.train_and_evaluate(_config(digits_dir), str(tmp_path))
    assert not (tmp_path / 'checkpoints').exists()
  finally:
    lock.release()
  train.train_and_evaluate(_config(digits_dir, num_train_steps=2), str(tmp_path))  # free now


def test_resuming_another_model_names_the_changed_keys(tmp_path, digits_dir):
  train.train_and_evaluate(_config(digits_dir, num_train_steps=3), str(tmp_path))
  with pytest.raises(ConfigError, match=r"holds checkpoints of another model; changed config "
                                        r"keys: model \('resnet20' → 'resnet32'\)"):
    train.train_and_evaluate(_config(digits_dir, model='resnet32'), str(tmp_path))
  with pytest.raises(ConfigError, match=r"holds checkpoint 3 of other shapes .* ema_decay "
                                        r"\(0\.0 → 0\.9\)"):
    train.train_and_evaluate(_config(digits_dir, ema_decay=0.9), str(tmp_path))
  # Durations, logging and cadences may change.
  train.train_and_evaluate(_config(digits_dir, num_train_steps=5, log_every_steps=1,
                                   eval_every_steps=5, checkpoint_every_steps=5),
                           str(tmp_path))
  assert _steps(tmp_path) == [3, 5]


def _damage(checkpoint_dir, how):
  files = [os.path.join(d, f) for d, _, fs in os.walk(checkpoint_dir) for f in fs]
  biggest = max(files, key=os.path.getsize)
  if how == 'truncate':
    with open(biggest, 'r+b') as f:
      f.truncate(os.path.getsize(biggest) // 3)
  else:
    os.remove(biggest)


@pytest.mark.parametrize('how', ['truncate', 'delete'])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, digits_dir, how,
                                                               caplog):
  caplog.set_level('INFO')
  train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  assert _steps(tmp_path) == [3, 6]
  _damage(tmp_path / 'checkpoints' / '6', how)
  train.train_and_evaluate(_config(digits_dir, num_train_steps=9), str(tmp_path))
  assert f'checkpoint {tmp_path / "checkpoints" / "6"} is unreadable' in caplog.text
  assert 'Restored checkpoint of step 3' in caplog.text
  assert _steps(tmp_path) == [3, 6, 9]  # 6 rewritten from the resumed run
  assert [n.split('-')[0] for n in os.listdir(tmp_path / 'corrupt_checkpoints')] == ['6']


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path, digits_dir):
  train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  for step in (3, 6):
    _damage(tmp_path / 'checkpoints' / str(step), 'truncate')
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'no checkpoint in .* restores \(tried steps \[6, 3\]\); refusing'):
    train.train_and_evaluate(_config(digits_dir), str(tmp_path))


def test_a_failing_save_is_reported_and_the_previous_checkpoint_survives(
    tmp_path, digits_dir, monkeypatch):
  real_save = ocp.CheckpointManager.save

  def disk_full_at_step_6(self, step, *args, **kwargs):
    if step == 6:
      raise OSError(28, 'No space left on device')
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', disk_full_at_step_6)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'saving checkpoint 6 in .* failed: \[Errno 28\] No space left on '
                           r'device; the earlier checkpoints are untouched'):
    train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  monkeypatch.setattr(ocp.CheckpointManager, 'save', real_save)
  assert _steps(tmp_path) == [3]
  train.train_and_evaluate(_config(digits_dir), str(tmp_path))  # resumes from 3
  assert _steps(tmp_path) == [3, 6]
