"""Where a run starts: a fresh state, or the newest checkpoint with its config checked.

A resume restores the newest checkpoint that restores (storage/checkpointing.py), compares
the config with the workdir's record (storage/workdir.py: which changes a resume may make,
and --allow_changes), checks the training data against its record, and places the run
after a batch-size change so it still ends and decays in epochs (schedule.run_length).
"""

import dataclasses
from typing import Any, Sequence

import ml_collections
import optax
from absl import logging
from etils import epath

from resnet_jax import optim, schedule, train_state
from resnet_jax.data import dataset_info
from resnet_jax.errors import ConfigError
from resnet_jax.storage import checkpointing, training_data
from resnet_jax.storage import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Start:
  """The state a run continues from, and what the trainer records about the start.

  Attributes:
    state: the restored state (the fresh one on a new workdir), its optimizer built for
      `learning_rate_fn`.
    step: the state's step.
    examples_before: training examples consumed by the first `step` steps.
    changes: config keys that differ from the workdir's record: {key: (old, new)}.
    data_entry: this start's training-data entry (storage/training_data.py).
    record_data: whether the trainer records `data_entry` (a fresh run, or new data).
    rate_change: the learning rate before and after the changes, or None.
    length: the run's length, placed for the current batch size.
    learning_rate_fn: the schedule over `length`.
  """
  state: train_state.TrainState
  step: int
  examples_before: int
  changes: dict[str, Any]
  data_entry: dict[str, Any]
  record_data: bool
  rate_change: tuple[float, float] | None
  length: schedule.RunLength
  learning_rate_fn: optax.Schedule


def restore(config: ml_collections.ConfigDict, workdir: epath.Path, state: train_state.TrainState,
            checkpointer: checkpointing.Checkpointer, info: dataset_info.DatasetInfo, *,
            length: schedule.RunLength, learning_rate_fn: optax.Schedule,
            allow_changes: Sequence[str]) -> Start:
  """The run's start in `workdir`: `state` unchanged on a fresh workdir, else the newest
  checkpoint that restores, once the config's changes are known to be allowed.

  Raises:
    ConfigError: a changed model, a change not allowed, other training data, or a
      checkpoint of other shapes; nothing has been written.
    checkpointing.CheckpointError: checkpoints exist, but none restores.
  """
  resuming = checkpointer.latest_step() is not None
  changes = workdir_lib.config_changes(workdir, config) if resuming else {}
  data_entry = training_data.current(info, config)
  if 'model' in changes:
    raise ConfigError(f'workdir {str(workdir)!r} holds checkpoints of another model; changed '
                      f'config keys: {workdir_lib.describe(changes)}. Use a new workdir.')
  workdir_lib.check_changes(workdir, changes, allow_changes)
  # A fresh run records its data; a resume checks it (eval_only trains on none).
  record_data = not resuming or (not config.eval_only and
                                 training_data.check(workdir, data_entry, allow_changes))
  try:
    state = checkpointer.restore_or_keep(state)
  except checkpointing.IncompatibleCheckpoint as error:
    raise ConfigError(
        f'workdir {str(workdir)!r} holds checkpoint {error.step} of other shapes '
        f'({len(error.paths)} arrays differ, e.g. {error.paths[0]}); changed config keys: '
        f'{workdir_lib.describe(changes) or "none recorded"}. Resume with the original '
        'config or use a new workdir.') from None
  step = int(state.step)
  examples_before = workdir_lib.examples_trained(workdir, step, config.batch_size)
  rate_change = schedule.check_rate_unchanged(
      config, changes=changes, allowed=allow_changes, num_train_examples=info.num_train_examples,
      update=int(optim.applied_updates(state.opt_state, state.step)), step=step,
      examples_before=examples_before)
  shown = {key: change for key, change in changes.items() if key != 'eval_only'}
  if shown and config.eval_only:
    logging.warning('Evaluating step %d with changed config keys (eval_only records nothing): '
                    '%s', step, workdir_lib.describe(shown))
  elif changes and not config.eval_only:
    logging.warning('Resuming at step %d with changed config keys (recorded in %s): %s',
                    step, workdir_lib.HISTORY_FILE, workdir_lib.describe(changes))
  resumed = schedule.run_length(config, info.num_train_examples,
                                examples_before=examples_before, start_step=step)
  if resumed != length:  # a batch-size change: the run ends and decays in epochs as asked
    length = resumed
    learning_rate_fn = schedule.learning_rate_fn(config, info.num_train_examples, length=length)
    state = state.replace(tx=optim.create_optimizer(config, learning_rate_fn))
    logging.info('%s examples trained in %d steps; at batch %d the run ends at step %d '
                 '(%s epochs)', f'{examples_before:,}', step, config.batch_size,
                 length.num_train_steps, f'{config.num_epochs:g}')
  return Start(state=state, step=step, examples_before=examples_before, changes=changes,
               data_entry=data_entry, record_data=record_data, rate_change=rate_change,
               length=length, learning_rate_fn=learning_rate_fn)
