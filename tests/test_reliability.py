"""Workdir lock, incompatible resumes, corrupt checkpoints, read errors at restore and
failing saves."""

import errno
import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import make_image_folder, small_config
from resnet_jax import schedule, train
from resnet_jax.data import pipeline, sources
from resnet_jax.errors import ConfigError
from resnet_jax.storage import checkpointing, training_data
from resnet_jax.storage import workdir as workdir_lib

# Restores that fail on purpose leave orbax coroutines that were never awaited.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
  """Every failed checkpoint read is retried (damage too): without the waits here."""
  monkeypatch.setattr(checkpointing, 'RETRY_SECONDS', 0.01)


def _config(digits_dir, **overrides):
  return small_config(**{'dataset.data_dir': digits_dir, **overrides})


def _steps(workdir):
  return sorted(int(s) for s in os.listdir(workdir / 'checkpoints'))


@pytest.mark.slow
def test_a_live_run_locks_its_workdir(tmp_path, digits_dir):
  lock = workdir_lib.Lock(workdir_lib.path(str(tmp_path)))
  try:
    with pytest.raises(ConfigError, match=r'is in use by a live run \(pid \d+ on '):
      train.train_and_evaluate(_config(digits_dir), str(tmp_path))
    assert not (tmp_path / 'checkpoints').exists()
  finally:
    lock.release()
  train.train_and_evaluate(_config(digits_dir, num_train_steps=2), str(tmp_path))  # free now


@pytest.mark.slow
def test_resuming_another_model_names_the_changed_keys(tmp_path, digits_dir):
  train.train_and_evaluate(_config(digits_dir, num_train_steps=3), str(tmp_path))
  with pytest.raises(ConfigError, match=r"holds checkpoints of another model; changed config "
                                        r"keys: model 'resnet8' → 'resnet32'"):
    train.train_and_evaluate(_config(digits_dir, model='resnet32'), str(tmp_path))
  with pytest.raises(ConfigError, match=r"holds checkpoints of a run with other settings: "
                                        r"ema_decay 0\.0 → 0\.9\. Resume with"):
    train.train_and_evaluate(_config(digits_dir, ema_decay=0.9), str(tmp_path))
  with pytest.raises(ConfigError, match=r"holds checkpoint 3 of other shapes .* ema_decay "
                                        r"0\.0 → 0\.9"):  # allowed, but the state differs
    train.train_and_evaluate(_config(digits_dir, ema_decay=0.9), str(tmp_path),
                             allow_changes=('ema_decay',))
  # Logging and cadences may change; a longer cosine run moves the rate: named.
  train.train_and_evaluate(_config(digits_dir, num_train_steps=5, log_every_steps=1,
                                   eval_every_steps=5, checkpoint_every_steps=5),
                           str(tmp_path), allow_changes=('num_train_steps',))
  assert _steps(tmp_path) == [3, 5]


def _damage(checkpoint_dir, how):
  if how == 'metadata':  # orbax's own metadata read then gives an empty tree, silently
    with open(os.path.join(checkpoint_dir, 'default', '_METADATA'), 'r+b') as f:
      f.write(b'\x00garbled')
    return
  files = [os.path.join(d, f) for d, _, fs in os.walk(checkpoint_dir) for f in fs]
  biggest = max(files, key=os.path.getsize)
  if how == 'truncate':
    with open(biggest, 'r+b') as f:
      f.truncate(os.path.getsize(biggest) // 3)
  else:
    os.remove(biggest)


@pytest.mark.slow
@pytest.mark.parametrize('how', ['truncate', 'delete', 'metadata'])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, digits_dir, how,
                                                               caplog):
  caplog.set_level('INFO')
  train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  assert _steps(tmp_path) == [3, 6]
  _damage(tmp_path / 'checkpoints' / '6', how)
  train.train_and_evaluate(_config(digits_dir, num_train_steps=9), str(tmp_path),
                           allow_changes=('num_train_steps',))
  assert f'checkpoint {tmp_path / "checkpoints" / "6"} is unreadable' in caplog.text
  assert 'Restored checkpoint of step 3' in caplog.text
  assert _steps(tmp_path) == [3, 6, 9]  # 6 rewritten from the resumed run
  assert [n.split('-')[0] for n in os.listdir(tmp_path / 'corrupt_checkpoints')] == ['6']


@pytest.mark.slow
def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path, digits_dir):
  train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  for step in (3, 6):
    _damage(tmp_path / 'checkpoints' / str(step), 'truncate')
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'no checkpoint in .* restores \(tried steps \[6, 3\]\); refusing'):
    train.train_and_evaluate(_config(digits_dir), str(tmp_path))


def test_restore_errors_are_classified_as_damage_or_transient():
  def raised(error, cause=None):
    try:
      try:
        raise cause or error
      except BaseException as inner:
        if cause is None:
          raise
        raise error from inner
    except BaseException as outer:  # noqa: BLE001
      return outer
  damaged = [
      FileNotFoundError(2, 'No such file or directory'),
      json.JSONDecodeError('Expecting value', '', 0),
      ValueError('DATA_LOSS: Error reading "a/.zarray" in OCDBT database'),
      ValueError('NOT_FOUND: Error opening "cast" driver'),
      raised(Exception('Encountered error while reading array index: (slice(0, 8, 1),)'),
             ValueError('FAILED_PRECONDITION: Truncated Zstd-compressed stream')),
      raised(Exception('Encountered error while reading array index: ()'),
             ValueError('OUT_OF_RANGE: Error reading "a/2.0"')),
  ]
  transient = [
      OSError(errno.EIO, 'Input/output error'), OSError(errno.ETIMEDOUT, 'timed out'),
      ConnectionResetError(104, 'Connection reset by peer'), TimeoutError('read timed out'),
      ValueError('UNAVAILABLE: HTTP response code: 503 ... Service Unavailable'),
      ValueError('DEADLINE_EXCEEDED: ...'), ValueError('PERMISSION_DENIED: ...'),
      raised(Exception('Encountered error while reading array index: ()'),
             ValueError('UNAVAILABLE: 503')),
      RuntimeError('something nobody foresaw'),
  ]
  assert [checkpointing.is_integrity_error(e) for e in damaged] == [True] * len(damaged)
  assert [checkpointing.is_integrity_error(e) for e in transient] == [False] * len(transient)
  assert checkpointing.describe_error(damaged[4]) == (
      'Exception: Encountered error while reading array index: (slice(0, 8, 1),) (from '
      'ValueError: FAILED_PRECONDITION: Truncated Zstd-compressed stream)')


@pytest.mark.slow
def test_a_transient_read_error_is_retried_and_never_sets_a_checkpoint_aside(
    tmp_path, digits_dir, monkeypatch, caplog):
  caplog.set_level('INFO')
  train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  assert _steps(tmp_path) == [3, 6]
  monkeypatch.setattr(checkpointing, 'RETRY_SECONDS', 0.01)
  real_restore = ocp.StandardCheckpointHandler.restore
  tries = []

  def unavailable(times, error=OSError(errno.EIO, 'Input/output error (injected)')):
    def restore(self, directory, *args, **kwargs):
      tries.append(str(directory))
      if len(tries) <= times:
        raise error
      return real_restore(self, directory, *args, **kwargs)
    return restore

  # It persists: the run stops with the step and the error, and both checkpoints stay.
  monkeypatch.setattr(ocp.StandardCheckpointHandler, 'restore', unavailable(100))
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'^reading checkpoint 6 in .* failed on process 0 3 times: OSError: '
                           r'\[Errno 5\] Input/output error \(injected\)\. Taken as a storage '
                           r'error, not damage: nothing was set aside'):
    train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  assert len(tries) == checkpointing.RESTORE_TRIES
  assert set(tries) == {str(tmp_path / 'checkpoints' / '6' / 'default')}
  assert _steps(tmp_path) == [3, 6] and not (tmp_path / 'corrupt_checkpoints').exists()
  assert 'try 3 of 3' in caplog.text

  # It passes on the third try: the newest checkpoint is restored.
  tries.clear()
  monkeypatch.setattr(ocp.StandardCheckpointHandler, 'restore', unavailable(2))
  train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  assert len(tries) == 3
  assert 'Restored checkpoint of step 6' in caplog.text
  assert _steps(tmp_path) == [3, 6] and not (tmp_path / 'corrupt_checkpoints').exists()

  # One read that tensorstore reports with an integrity code (ENOTCONN on a FUSE remount
  # reads as FAILED_PRECONDITION) is retried too: damage is the same failure on every try.
  tries.clear()
  monkeypatch.setattr(ocp.StandardCheckpointHandler, 'restore', unavailable(
      1, ValueError('FAILED_PRECONDITION: Error reading local file: Transport endpoint is '
                    'not connected [OS error: ENOTCONN]')))
  train.train_and_evaluate(_config(digits_dir), str(tmp_path))
  assert len(tries) == 2
  assert _steps(tmp_path) == [3, 6] and not (tmp_path / 'corrupt_checkpoints').exists()


@pytest.mark.slow
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


def test_a_failed_background_save_is_named_by_its_step_at_the_next_log_step(
    tmp_path, digits_dir, monkeypatch):
  # The write of step 3 fails in orbax's background thread; orbax reports it through
  # check_for_errors. The run stops at log step 4 naming step 3, not at the next save (6).
  saved = []
  real_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    saved.append(step)
    return real_save(self, step, *args, **kwargs)

  def check_for_errors(self):
    if saved == [3]:
      raise OSError(errno.ENOSPC, 'No space left on device (injected)')

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  monkeypatch.setattr(ocp.CheckpointManager, 'check_for_errors', check_for_errors)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'^saving checkpoint 3 in .* failed in the background: \[Errno 28\] '
                           r'No space left on device \(injected\); the earlier checkpoints are '
                           r'untouched$'):
    train.train_and_evaluate(_config(digits_dir, log_every_steps=2), str(tmp_path))
  assert saved == [3]


@pytest.mark.slow
def test_resume_refuses_changed_keys_unless_allowed_and_records_them(tmp_path, digits_dir):
  train.train_and_evaluate(_config(digits_dir, num_train_steps=3), str(tmp_path))
  first_record = (tmp_path / 'config.json').read_text()
  changed = dict(num_train_steps=6, batch_size=8, base_lr=0.5)
  with pytest.raises(ConfigError, match=r"other settings: base_lr 0\.2 → 0\.5; batch_size 16 → 8\. "
                                        r".* --allow_changes=base_lr,batch_size$"):
    train.train_and_evaluate(_config(digits_dir, **changed), str(tmp_path))
  assert _steps(tmp_path) == [3] and not (tmp_path / workdir_lib.HISTORY_FILE).exists()

  # A 6-step cosine also has a rate at step 3 where the 3-step one had ended: named too.
  train.train_and_evaluate(_config(digits_dir, **changed), str(tmp_path),
                           allow_changes=('base_lr', 'batch_size', 'num_train_steps'))
  assert _steps(tmp_path) == [3, 6]
  assert (tmp_path / 'config.json').read_text() == first_record  # the first config stays
  history = [json.loads(line) for line in
             (tmp_path / workdir_lib.HISTORY_FILE).read_text().splitlines()]
  assert len(history) == 1 and history[0]['step'] == 3
  assert history[0]['changes'] == {'base_lr': [0.2, 0.5], 'batch_size': [16, 8],
                                   'num_train_steps': [3, 6]}
  assert history[0]['allowed'] == ['base_lr', 'batch_size', 'num_train_steps']
  recorded = workdir_lib.read_config(tmp_path)
  assert (recorded.batch_size, recorded.base_lr, recorded.num_train_steps) == (8, 0.5, 6)
  # 3 steps of 16, then 3 of 8: the stream goes on from example 48.
  assert workdir_lib.examples_trained(tmp_path, 6, 8) == 3 * 16 + 3 * 8

  # A longer cosine run would raise the rate at step 6: refused, nothing written; allowed,
  # the rates are recorded with the change.
  longer = _config(digits_dir, **{**changed, 'num_train_steps': 8})
  with pytest.raises(ConfigError, match=r'^resuming at step 6 with num_train_steps 6 → 8 changes '
                     r'the learning rate there from 0 to 0\.00[0-9]+ .*--allow_changes=num_train_steps$'):
    train.train_and_evaluate(longer, str(tmp_path))
  assert len((tmp_path / workdir_lib.HISTORY_FILE).read_text().splitlines()) == 1
  train.train_and_evaluate(longer, str(tmp_path), allow_changes=('num_train_steps',))
  history = (tmp_path / workdir_lib.HISTORY_FILE).read_text().splitlines()
  assert len(history) == 2 and json.loads(history[1])['changes'] == {'num_train_steps': [6, 8]}
  before, after = json.loads(history[1])['learning_rate']
  assert before == 0 and after > 0


def test_a_resume_with_the_batch_doubled_trains_the_recorded_epochs(tmp_path, digits_dir):
  """Issue 34's must-show: 1 of 2 epochs at batch 16 (6 steps of 96 examples), resumed at
  batch 32 with --allow_changes=batch_size: 3 more steps, 2 epochs in all. Before
  2026-12-06 the resume kept 6 steps as the whole run and trained nothing."""
  epochs = dict(num_train_steps=0, num_epochs=2.0, checkpoint_every_steps=100,
                **{'dataset.train_split': 'train[:96]'})
  train.train_and_evaluate(_config(digits_dir, **{**epochs, 'num_epochs': 1.0}), str(tmp_path))
  assert _steps(tmp_path) == [6]
  doubled = _config(digits_dir, **epochs, batch_size=32)
  train.train_and_evaluate(doubled, str(tmp_path), allow_changes=('batch_size', 'num_epochs'))
  assert _steps(tmp_path) == [6, 9]
  assert workdir_lib.examples_trained(tmp_path, 9, 32) == 2 * 96
  # The rate there is the one a run at batch 32 throughout has at epoch 1 (of 2).
  history = json.loads((tmp_path / workdir_lib.HISTORY_FILE).read_text())
  assert history['learning_rate'][1] == pytest.approx(
      float(schedule.learning_rate_fn(doubled, 96)(3)), rel=1e-6)


def test_after_a_batch_size_change_the_stream_goes_on_where_it_stopped(digits_dir):
  config = _config(digits_dir, batch_size=16)
  source = sources.create_source(config)
  info = sources.dataset_info(source, config)
  before = [b['id'] for b in _take(pipeline.train_batches(source, config, info, start_step=0,
                                                          with_ids=True), 4)]
  smaller = _config(digits_dir, batch_size=8)
  after = next(pipeline.train_batches(source, smaller, info, start_step=3, examples_before=48,
                                      with_ids=True))
  np.testing.assert_array_equal(after['id'], before[3][:8])


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_a_group_of_keys_added_since_the_run_began_replays(tmp_path):
  # A resume with code that has a new config group records "group.key": [null, value];
  # replaying it must create the group (KeyError before 2026-12-05), and a key removed
  # since must go (AttributeError then: ConfigDict has no pop).
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(json.dumps({'seed': 0, 'old_key': 1}))
  (tmp_path / workdir_lib.HISTORY_FILE).write_text(json.dumps(
      {'time': '', 'step': 3, 'changes': {'study.seed': [None, 5], 'old_key': [1, None]},
       'allowed': []}) + '\n')
  recorded = workdir_lib.read_config(tmp_path)
  assert recorded.study.seed == 5 and recorded.seed == 0 and 'old_key' not in recorded


def test_study_settings_change_on_a_resume_without_allow_changes(tmp_path):
  workdir_lib.check_changes(tmp_path, {'study.landscape_points': (21, 51)}, allowed=())
  with pytest.raises(ConfigError, match='--allow_changes=seed$'):
    workdir_lib.check_changes(tmp_path, {'seed': (0, 1), 'study.seed': (0, 1)}, allowed=())


def test_a_changed_training_folder_is_refused_unless_allowed(tmp_path):
  """Images added to a folder change steps per epoch and the schedule: the resume names
  the sizes and the flag (before 2026-12-06 it trained on, unchecked)."""
  data = tmp_path / 'data'
  make_image_folder(data, {'train': {'a': 20, 'b': 20}, 'validation': {'a': 2, 'b': 2}},
                    size=(8, 8))
  config = small_config(**{'dataset.name': 'image_folder', 'dataset.data_dir': str(data),
                           'dataset.eval_split': 'validation', 'dataset.mean': (127.0,) * 3,
                           'dataset.std': (64.0,) * 3, 'num_train_steps': 3,
                           'schedule': 'constant'})
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  shutil.copy(data / 'train' / 'a' / '0.jpg', data / 'train' / 'a' / 'added.jpg')
  longer = config.copy_and_resolve_references()
  longer.num_train_steps = 6
  with pytest.raises(ConfigError, match=r"trained on 40 examples of 'train' \(fingerprint \w+\); "
                     r'the training split now holds 41 .*--allow_changes=train_data$'):
    train.train_and_evaluate(longer, str(workdir))
  assert _steps(workdir) == [3]
  train.train_and_evaluate(longer, str(workdir), allow_changes=('train_data',))
  entries = json.loads((workdir / training_data.RECORD_FILE).read_text())
  assert [(e['step'], e['examples']) for e in entries] == [(0, 40), (3, 41)]


def test_a_per_process_run_on_another_process_count_is_refused(tmp_path):
  entry = {'examples': 100, 'fingerprint': 'f', 'split': 'train', 'order': 'per_process',
           'processes': 2}
  training_data.record(tmp_path, entry, step=0)
  assert not training_data.check(tmp_path, entry, ())
  with pytest.raises(ConfigError, match=r'per_process run on 2 processes; resuming on 1 .*'
                                        r'--allow_changes=process_count$'):
    training_data.check(tmp_path, entry | {'processes': 1}, ())
  assert training_data.check(tmp_path, entry | {'processes': 1}, ('process_count',))
  # 'global' order: every process walks the whole split's stream, on any count.
  training_data.record(tmp_path, entry | {'order': 'global'}, step=0)
  assert training_data.check(tmp_path, entry | {'order': 'global', 'processes': 4}, ())


def test_the_trainer_refuses_a_per_process_resume_on_another_count(tmp_path, digits_dir,
                                                                  monkeypatch):
  config = _config(digits_dir, num_train_steps=3, **{'dataset.order': 'per_process'})
  train.train_and_evaluate(config, str(tmp_path))
  longer = _config(digits_dir, num_train_steps=6, **{'dataset.order': 'per_process'})
  current = training_data.current
  monkeypatch.setattr(training_data, 'current',  # as if on 2 hosts
                      lambda *args: current(*args) | {'processes': 2})
  with pytest.raises(ConfigError, match=r'per_process run on 1 processes; resuming on 2 '):
    train.train_and_evaluate(longer, str(tmp_path), allow_changes=('num_train_steps',))
  assert _steps(tmp_path) == [3]
