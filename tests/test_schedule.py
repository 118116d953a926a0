"""The resume check of the learning rate: a change of the run's length that moves the rate
at the resumed update needs --allow_changes; one that leaves it is accepted."""

import pytest

from configs import imagenet50
from resnet_jax import schedule
from resnet_jax.errors import ConfigError

IMAGENET = 1_281_167


def _resume(recipe, changes, allowed=(), update=30_000):
  config = imagenet50.get_config(recipe)
  for key, (_, new) in changes.items():
    config[key] = new
  return schedule.check_rate_unchanged(config, changes=changes, allowed=allowed,
                                       num_train_examples=IMAGENET, update=update, step=update)


def test_a_longer_cosine_run_is_refused_with_the_rate_before_and_after():
  with pytest.raises(ConfigError, match=r'^resuming at step 30000 with num_epochs 90\.0 → 120\.0 '
                     r'changes the learning rate there from 1\.06322 to 1\.4683 .* '
                     r'--allow_changes=num_epochs$'):
    _resume('nvidia', {'num_epochs': (90.0, 120.0)})


def test_an_allowed_change_returns_the_rates():
  before, after = _resume('nvidia', {'num_epochs': (90.0, 120.0)}, allowed=('num_epochs',))
  assert before == pytest.approx(1.06322, rel=1e-5) and after == pytest.approx(1.4683, rel=1e-5)


@pytest.mark.parametrize('update', [30_000, 200_000])
def test_a_longer_step_schedule_is_accepted(update):
  """torchvision's ÷10 at epochs 30 and 60 (5,004 updates an epoch): before and after
  the first boundary a longer run leaves the rate where it is."""
  assert _resume('step', {'num_epochs': (90.0, 120.0)}, update=update) is None


def test_only_the_keys_that_move_the_rate_need_naming():
  """base_lr is allowed; num_epochs does not move a step schedule's rate: accepted."""
  changes = {'num_epochs': (90.0, 120.0), 'base_lr': (0.1, 0.2)}
  before, after = _resume('step', changes, allowed=('base_lr',))
  assert after == pytest.approx(2 * before)
  with pytest.raises(ConfigError, match=r'with base_lr 0\.1 → 0\.2 changes .*allow_changes=base_lr$'):
    _resume('step', changes)


def test_shortening_a_cosine_run_is_refused_too():
  with pytest.raises(ConfigError, match='num_train_steps 0 → 40000'):
    _resume('nvidia', {'num_train_steps': (0, 40_000)})


def _flax_with_batch(batch_size):
  config = imagenet50.get_config('flax')
  config.batch_size = batch_size
  return config


def test_a_doubled_batch_keeps_the_run_in_epochs_and_its_schedule():
  """The flax recipe (batch 1024, 100 epochs, cosine) resumed at epoch 40 with batch 2048:
  before 2026-12-06 the run stopped after 59.9 epochs and the rate fell from 0.280 to
  0.084. Now it trains the remaining 60 epochs, and the rate there is the unchanged run's
  × 2 (the linear scaling rule), no longer a point of a shorter cosine."""
  old, new = _flax_with_batch(1024), _flax_with_batch(2048)
  step = 40 * (IMAGENET // 1024)
  examples = step * 1024
  length = schedule.run_length(new, IMAGENET, examples_before=examples, start_step=step)
  epochs_trained = (examples + (length.num_train_steps - step) * 2048) / IMAGENET
  assert epochs_trained == pytest.approx(100, abs=0.1)  # whole batches: 99.9 epochs
  rate_before = float(schedule.learning_rate_fn(old, IMAGENET)(step))
  rate_after = float(schedule.learning_rate_fn(new, IMAGENET, length=length)(step))
  assert rate_before == pytest.approx(0.280, abs=1e-3)
  assert rate_after == pytest.approx(2 * rate_before, rel=1e-3)
  # The end of the run is the end of the cosine.
  assert float(schedule.learning_rate_fn(new, IMAGENET, length=length)(
      length.num_train_steps)) == pytest.approx(0, abs=1e-4)


def test_the_rate_check_compares_the_schedules_at_the_same_example():
  changes = {'batch_size': (1024, 2048)}
  step = 40 * (IMAGENET // 1024)
  config = _flax_with_batch(2048)
  with pytest.raises(ConfigError, match=r'batch_size 1024 → 2048 changes the learning rate '
                     r'there from 0\.28\d* to 0\.56\d*.*--allow_changes=batch_size$'):
    schedule.check_rate_unchanged(config, changes=changes, allowed=(), update=step, step=step,
                                  num_train_examples=IMAGENET, examples_before=step * 1024)


def test_num_train_steps_counts_updates_whatever_the_batch():
  config = _flax_with_batch(2048)
  config.num_train_steps = 50_000
  length = schedule.run_length(config, IMAGENET, examples_before=10_000 * 1024,
                               start_step=10_000)
  assert (length.num_train_steps, length.schedule_offset) == (50_000, 0.0)
