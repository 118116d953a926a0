"""The run's directory: its path, a writability check, a one-run lock, the config record,
the newest and the best evaluation (`last_evaluation.json`: what a finished run reports
when re-run, and its closing line).

`config.json` holds the config the run started with and is never rewritten while the
run has checkpoints. A resume that changes keys appends one line to
`config_history.jsonl` ({"time", "step", "changes": {key: [old, new]}, "allowed"}), so
the config in force at any step is config.json with the history replayed up to it.
"""

import datetime
import difflib
import fcntl
import json
import os
import socket
from typing import Any, Sequence

import jax
import ml_collections
from etils import epath

from resnet_jax.errors import ConfigError

CONFIG_FILE = 'config.json'
HISTORY_FILE = 'config_history.jsonl'
EVALUATION_FILE = 'last_evaluation.json'
LOCK_FILE = '.lock'
# Keys a resumed run may change without asking: durations, cadences, logging,
# evaluation, profiling, the compilation cache, the non-finite policy, how checkpoints
# are written, where the data lies, and the fine-tuning start (a resumed run starts from its own checkpoint). Any other
# change needs --allow_changes=KEY,...; every change is recorded in HISTORY_FILE.
RESUMABLE_CHANGES = ('num_train_steps', 'num_epochs', 'log_every_steps', 'eval_every_steps',
                     'checkpoint_every_steps', 'max_checkpoints_to_keep', 'nonfinite_policy',
                     'checkpoint_async', 'eval_only', 'dataset.eval_split',
                     'dataset.data_dir', 'dataset.manual_dir', 'init_checkpoint',
                     'init_weights', 'diagnostics_every_steps', 'eval_flip',
                     'dataset.eval_image_size', 'dataset.eval_crop_fraction', 'profile_steps',
                     'compilation_cache_dir')
# Groups of keys that never reach training (the studies of trained nets read them).
RESUMABLE_GROUPS = ('study',)


def path(workdir: str) -> epath.Path:
  """The workdir as a path object; local paths made absolute, gs:// and the like kept."""
  return epath.Path(workdir if '://' in workdir else os.path.abspath(workdir))


def check_writable(workdir: str) -> None:
  """Raises ConfigError, before anything is written, if a local workdir cannot be made."""
  if '://' in workdir:
    return
  probe = os.path.abspath(workdir)
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
    raise ConfigError(f'workdir {workdir!r} cannot be created or written: {probe!r} is '
                      f'{"not a directory" if not os.path.isdir(probe) else "not writable"}')


class Lock:
  """Keeps a second live run off a local workdir (an flock, released when the process dies).

  Only process 0 locks. Object stores (gs://) have no locks; there the lock is a no-op.
  """

  def __init__(self, workdir: epath.Path):
    self._file = None
    if jax.process_index() != 0 or '://' in str(workdir):
      return
    workdir.mkdir(parents=True, exist_ok=True)
    lock_path = os.path.join(str(workdir), LOCK_FILE)
    self._file = open(lock_path, 'a+')  # noqa: SIM115  (held for the run's lifetime)
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      holder = self._file.read().strip() or 'another process'
      self._file.close()
      self._file = None
      raise ConfigError(f'workdir {str(workdir)!r} is in use by a live run ({holder}); wait '
                        'for it to end or use another workdir') from None
    self._write(f'pid {os.getpid()} on {socket.gethostname()}')

  def _write(self, holder: str) -> None:
    self._file.seek(0)
    self._file.truncate()
    self._file.write(holder)
    self._file.flush()

  def release(self) -> None:
    """Empties the lock file (a run that ended holds nothing) and unlocks it."""
    if self._file is not None:
      self._write('')
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    flat = {}
    for key, value in tree.items():
      flat.update(_flatten(value, f'{prefix}{key}.'))
    return flat
  return {prefix[:-1]: tree.tolist() if hasattr(tree, 'tolist') else tree}


def flat_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'dataset.image_size': 28, ...}: every key of `config`, dotted."""
  return _flatten(json.loads(config.to_json_best_effort()))


def _recorded(workdir: epath.Path) -> dict[str, Any] | None:
  """The flattened read_config(workdir), or None when the workdir holds no record."""
  if not (workdir / CONFIG_FILE).exists():
    return None
  return flat_config(read_config(workdir))


def config_changes(workdir: epath.Path,
                   config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """{key: (recorded, new)} for every key whose value differs from the recorded config
  ({} when there is none). A key the record lacks (added to the code since) reads as
  None there."""
  old = _recorded(workdir)
  if old is None:
    return {}
  new = flat_config(config)
  return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
          if old.get(k) != new.get(k)}


def describe(changes: dict[str, tuple[Any, Any]]) -> str:
  return '; '.join(f'{k} {old!r} → {new!r}' for k, (old, new) in changes.items())


def check_allowed_keys(allowed: Sequence[str], config: ml_collections.ConfigDict, *,
                       also: Sequence[str] = ()) -> None:
  """Raises ConfigError if a key of --allow_changes is no config key and not in `also`
  (changes named otherwise, e.g. training_data.KEYS)."""
  known = [*flat_config(config), *also]
  for key in allowed:
    if key not in known:
      close = difflib.get_close_matches(key, known, n=3)
      raise ConfigError(f'unknown key {key!r} in --allow_changes'
                        f'{"; did you mean " + ", ".join(close) if close else ""}')


def check_changes(workdir: epath.Path, changes: dict[str, tuple[Any, Any]],
                  allowed: Sequence[str]) -> None:
  """Raises ConfigError unless every change of a resume is in RESUMABLE_CHANGES or
  RESUMABLE_GROUPS, in `allowed` (--allow_changes) or a key the record lacks."""
  refused = {k: v for k, v in changes.items()
             if k not in RESUMABLE_CHANGES and k.split('.')[0] not in RESUMABLE_GROUPS
             and k not in allowed and v[0] is not None}
  if refused:
    raise ConfigError(
        f'workdir {str(workdir)!r} holds checkpoints of a run with other settings: '
        f'{describe(refused)}. Resume with the recorded values (config.json, '
        f'{HISTORY_FILE}), use a new workdir, or accept the change with '
        f'--allow_changes={",".join(refused)}')


def examples_trained(workdir: epath.Path, step: int, batch_size: int) -> int:
  """Training examples a run consumed in its first `step` steps, under the batch sizes
  recorded for each stretch of it (step × batch_size without a record), so a resume
  with an accepted batch_size change reads on from where the data stream stopped."""
  record = workdir / CONFIG_FILE
  if not record.exists():
    return step * batch_size
  stretches = [(0, json.loads(record.read_text())['batch_size'])]
  history = workdir / HISTORY_FILE
  if history.exists():
    for line in history.read_text().splitlines():
      entry = json.loads(line)
      if 'batch_size' in entry['changes'] and entry['step'] < step:
        stretches.append((entry['step'], entry['changes']['batch_size'][1]))
  ends = [start for start, _ in stretches[1:]] + [step]
  return sum((end - start) * size for (start, size), end in zip(stretches, ends))


def record_config(workdir: epath.Path, config: ml_collections.ConfigDict, *,
                  changes: dict[str, tuple[Any, Any]], step: int,
                  allowed: Sequence[str] = (),
                  learning_rate: tuple[float, float] | None = None) -> None:
  """Process 0 only: a fresh run (step 0) writes config.json (and clears any history
  of a run that left no checkpoint); a resume appends its changes to the history, with
  the learning rate at the resumed step before and after them where they moved it."""
  if jax.process_index() != 0:
    return
  if step == 0:
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    for stale in (HISTORY_FILE, EVALUATION_FILE):  # of a run that left no checkpoint
      if (workdir / stale).exists():
        (workdir / stale).unlink()
    return
  if not changes:
    return
  entry = {'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'step': step, 'changes': {k: [old, new] for k, (old, new) in changes.items()},
           'allowed': sorted(set(changes) & set(allowed))}
  if learning_rate is not None:
    entry['learning_rate'] = list(learning_rate)
  with (workdir / HISTORY_FILE).open('a') as history:
    history.write(json.dumps(entry) + '\n')


def record_evaluation(workdir: epath.Path, step: int, summary: dict[str, float],
                      best_key: str = 'eval/top1') -> None:
  """Process 0 only: the newest evaluation's step and metrics, and the best one's so far
  (highest `best_key`, across resumes), replacing the record before (a whole-file write:
  gs:// cannot append)."""
  if jax.process_index() != 0:
    return
  best = _read_evaluations(workdir).get('best')
  if best is not None and best['step'] >= step:  # resumed from before it: not this run's past
    best = None
  if best is None or summary.get(best_key, -1.0) > best['metrics'].get(best_key, -1.0):
    best = {'step': step, 'metrics': summary}
  (workdir / EVALUATION_FILE).write_text(json.dumps({'step': step, 'metrics': summary,
                                                     'best': best}))


def _read_evaluations(workdir: epath.Path) -> dict[str, Any]:
  record = workdir / EVALUATION_FILE
  return json.loads(record.read_text()) if record.exists() else {}


def last_evaluation(workdir: epath.Path) -> tuple[int, dict[str, float]] | None:
  """(step, metrics) of the run's newest evaluation, or None if it recorded none."""
  entry = _read_evaluations(workdir)
  return (int(entry['step']), entry['metrics']) if entry else None


def best_evaluation(workdir: epath.Path) -> tuple[int, dict[str, float]] | None:
  """(step, metrics) of the run's best evaluation by eval/top1 (the newest for a record
  written before the best was kept), or None if it recorded none."""
  entry = _read_evaluations(workdir)
  entry = entry.get('best', entry)
  return (int(entry['step']), entry['metrics']) if entry else None


def read_config(workdir: str | epath.Path) -> ml_collections.ConfigDict:
  """The config in force at a run's newest resume (config.json with config_history.jsonl
  replayed); ConfigError if the directory holds none."""
  workdir = epath.Path(workdir)
  record = workdir / CONFIG_FILE
  if not record.exists():
    raise ConfigError(f'{str(workdir)!r} holds no {CONFIG_FILE}: not a workdir of '
                      'resnet_jax.main')
  config = ml_collections.ConfigDict(json.loads(record.read_text()))
  history = workdir / HISTORY_FILE
  if history.exists():
    for line in history.read_text().splitlines():
      for key, (_, new) in json.loads(line)['changes'].items():
        _replay(config, key, new)
  return config


def _replay(config: ml_collections.ConfigDict, key: str, new: Any) -> None:
  """Sets dotted `key` to `new` in place; None removes it. A group added to the code
  since the run began is created; a key of a group removed since is already gone."""
  *parents, leaf = key.split('.')
  target = config
  for parent in parents:
    if parent not in target:
      if new is None:
        return
      target[parent] = ml_collections.ConfigDict()
    target = target[parent]
  if new is not None:
    target[leaf] = new
  elif leaf in target:  # ConfigDict has no pop
    del target[leaf]
