"""What a run trains on, recorded in its workdir (`train_data.json`) and checked on resume.

Two things a config does not show can change under a run:
- the training split itself (images added to or removed from a folder, another
  data_dir): steps per epoch, the run's length and its schedule would follow unseen.
  Recorded: the split's size and a fingerprint of it (dataset_info.fingerprint: a
  folder's file list; a TFDS dataset's name, version, spec and size);
- the process count of a `dataset.order=per_process` run: each process reads its own
  part of the split, so on another count the epoch in progress would be cut anew
  (examples read twice or never).
Either change is refused unless --allow_changes names it (`train_data`,
`process_count`); an accepted change is appended to the record with its step.
"""

import json
from typing import Any, Sequence

import jax
import ml_collections
from etils import epath

from resnet_jax.data import dataset_info
from resnet_jax.errors import ConfigError

RECORD_FILE = 'train_data.json'
# The names --allow_changes takes for these changes (they are no config keys).
KEYS = ('train_data', 'process_count')


def current(info: dataset_info.DatasetInfo, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """This start's entry: the split's size and fingerprint, the order and process count."""
  return {'examples': info.num_train_examples, 'fingerprint': info.train_fingerprint,
          'split': config.dataset.train_split, 'order': config.dataset.order,
          'processes': jax.process_count()}


def _entries(workdir: epath.Path) -> list[dict[str, Any]]:
  record = workdir / RECORD_FILE
  return json.loads(record.read_text()) if record.exists() else []


def check(workdir: epath.Path, entry: dict[str, Any], allowed: Sequence[str]) -> bool:
  """Whether a resume may go on with `entry` (current()) against the newest recorded one.

  Returns:
    True if `entry` differs from the record (an accepted change: record() appends it).

  Raises:
    ConfigError: a change that `allowed` does not name, in one line naming what changed
      and the flag that accepts it. A workdir from before this record passes.
  """
  entries = _entries(workdir)
  if not entries:
    return True
  last = entries[-1]
  if (last['examples'], last['fingerprint']) != (entry['examples'], entry['fingerprint']):
    if 'train_data' not in allowed:
      raise ConfigError(
          f'workdir {str(workdir)!r} trained on {last["examples"]:,} examples of '
          f'{last["split"]!r} (fingerprint {last["fingerprint"]}); the training split now '
          f'holds {entry["examples"]:,} (fingerprint {entry["fingerprint"]}): steps per epoch '
          'and the schedule would change. Restore the data, use a new workdir, or accept it '
          'with --allow_changes=train_data')
  per_process = 'per_process' in (last['order'], entry['order'])
  if per_process and last['processes'] != entry['processes'] and 'process_count' not in allowed:
    raise ConfigError(
        f'workdir {str(workdir)!r} holds a dataset.order=per_process run on '
        f'{last["processes"]} processes; resuming on {entry["processes"]} cuts the epoch in '
        'progress anew (examples read twice or never). Resume on '
        f'{last["processes"]} processes, or accept it with --allow_changes=process_count')
  return {k: v for k, v in last.items() if k != 'step'} != entry


def record(workdir: epath.Path, entry: dict[str, Any], *, step: int) -> None:
  """Process 0 only: a fresh run (step 0) starts the record; a resume appends a changed
  entry."""
  if jax.process_index() != 0:
    return
  entries = [] if step == 0 else _entries(workdir)
  (workdir / RECORD_FILE).write_text(json.dumps(entries + [{'step': step, **entry}], indent=1))
