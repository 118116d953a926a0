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
