"""The run's length and learning-rate schedule, derived from the config in one place, and
the resume check that an extended or shortened run does not silently bend its schedule.
A batch-size change keeps an epoch-long run's length and schedule in epochs (RunLength).

A cosine (or polynomial) schedule is a function of the run's length: resuming the nvidia
recipe at step 30,000 with 120 epochs instead of 90 raises the rate there from 1.063 to
1.468. Such a resume is refused unless --allow_changes names the key; a change that
leaves the rate at the resumed update as it was (a step schedule before its next
boundary, a constant rate) goes through as any resumable change.
"""

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Sequence

import optax

from resnet_jax import optim
from resnet_jax.errors import ConfigError

if TYPE_CHECKING:
  import ml_collections

# Relative difference below which two rates are one (float32 schedule arithmetic).
_SAME_RATE = 1e-6


@dataclasses.dataclass(frozen=True)
class RunLength:
  """Optimizer updates per epoch and in the whole run, and where the schedule stands.

  A run of num_epochs is as long as its examples: after a batch-size change the run trains
  the updates that reach num_epochs at the new batch size, and its schedule (built for
  the whole run at the new size) reads the position in examples, so epoch-placed warmup,
  decay boundaries and the cosine's end stay where they were. num_train_steps counts
  updates whatever the batch size.
  """
  steps_per_epoch: int
  num_train_steps: int  # the run ends at this update
  schedule_steps: int  # the schedule's length: the whole run at the current batch size
  schedule_offset: float = 0.0  # the schedule's position minus the update count


def run_length(config: 'ml_collections.ConfigDict', num_train_examples: int, *,
               examples_before: int | None = None, start_step: int = 0) -> RunLength:
  """num_train_steps if positive, else num_epochs over the split (whole batches).

  Args:
    examples_before: training examples the run consumed in its first `start_step` updates
      (workdir.examples_trained): where a batch-size change moved it from start_step ×
      batch_size, an epoch-long run ends where its examples reach num_epochs.
  """
  batch_size = config.batch_size
  steps_per_epoch = num_train_examples // batch_size
  if config.num_train_steps > 0:
    return RunLength(steps_per_epoch, config.num_train_steps, config.num_train_steps)
  whole = math.ceil(config.num_epochs * steps_per_epoch)
  if examples_before is None or examples_before == start_step * batch_size:
    return RunLength(steps_per_epoch, whole, whole)
  remaining = max(-(-(whole * batch_size - examples_before) // batch_size), 0)
  return RunLength(steps_per_epoch, start_step + remaining, whole,
                   schedule_offset=examples_before / batch_size - start_step)


def learning_rate_fn(config: 'ml_collections.ConfigDict', num_train_examples: int, *,
                     length: RunLength | None = None) -> optax.Schedule:
  """The config's schedule over its run length: update count -> learning rate.

  `length` (default: run_length of a run that never changed its batch size) places a
  resumed run's updates on the schedule of the whole run at the current batch size."""
  length = length or run_length(config, num_train_examples)
  schedule = optim.create_learning_rate_fn(config, steps_per_epoch=length.steps_per_epoch,
                                           num_train_steps=length.schedule_steps)
  offset = length.schedule_offset
  if not offset:
    return schedule
  return lambda count: schedule(count + offset)


def _rate(config: 'ml_collections.ConfigDict', num_train_examples: int, update: int, *,
          step: int, examples_before: int | None) -> float:
  length = run_length(config, num_train_examples, examples_before=examples_before,
                      start_step=step)
  return float(learning_rate_fn(config, num_train_examples, length=length)(update))


def _with(config: 'ml_collections.ConfigDict', key: str, value: Any) -> 'ml_collections.ConfigDict':
  copy = config.copy_and_resolve_references()
  *parents, leaf = key.split('.')
  target = copy
  for parent in parents:
    target = target[parent]
  with copy.unlocked():
    target[leaf] = value
  return copy


def _reverted(config: 'ml_collections.ConfigDict',
              changes: dict[str, tuple[Any, Any]]) -> 'ml_collections.ConfigDict':
  """`config` with the recorded value of every changed key the record holds."""
  for key, (old, _) in changes.items():
    if old is not None:
      config = _with(config, key, old)
  return config


def check_rate_unchanged(config: 'ml_collections.ConfigDict', *,
                         changes: dict[str, tuple[Any, Any]], allowed: Sequence[str],
                         num_train_examples: int, update: int, step: int,
                         examples_before: int | None = None) -> tuple[float, float] | None:
  """The learning rate at optimizer update `update` (of step `step`, after
  `examples_before` training examples) before and after a resume's changes.

  Returns:
    None when the changes leave it as it was; else (before, after), when every changed
    key that moves it is in `allowed`.

  Raises:
    ConfigError: the rate moves through a change that `allowed` does not name; the
      message names the keys and the rate before -> after.
  """
  at = dict(step=step, examples_before=examples_before)
  before = _rate(_reverted(config, changes), num_train_examples, update, **at)
  after = _rate(config, num_train_examples, update, **at)
  if abs(after - before) <= _SAME_RATE * max(abs(before), abs(after)):
    return None
  # The keys whose change alone moves the rate; if none does alone, all of them.
  movers = [key for key, (old, _) in changes.items() if old is not None and
            abs(_rate(_with(config, key, old), num_train_examples, update, **at) - after)
            > _SAME_RATE * abs(after)] or [key for key, (old, _) in changes.items()
                                           if old is not None]
  unnamed = [key for key in movers if key not in allowed]
  if unnamed:
    described = '; '.join(f'{key} {changes[key][0]!r} → {changes[key][1]!r}' for key in unnamed)
    raise ConfigError(
        f'resuming at step {step} with {described} changes the learning rate there from '
        f'{before:.6g} to {after:.6g} (the schedule follows the run length): resume with the '
        f'recorded values, or accept it with --allow_changes={",".join(unnamed)}')
  return before, after
