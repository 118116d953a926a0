"""The run's directory: its path, a writability check, a one-run lock, the config record."""

import fcntl
import json
import os
import socket
from typing import Any

import jax
import ml_collections
from etils import epath

from resnet_jax.errors import ConfigError

CONFIG_FILE = 'config.json'
LOCK_FILE = '.lock'
# Keys a resumed run may change: durations, logging, evaluation and checkpoint cadence,
# and the fine-tuning start (a resumed run starts from its own checkpoint).
RESUMABLE_CHANGES = ('num_train_steps', 'num_epochs', 'log_every_steps', 'eval_every_steps',
                     'checkpoint_every_steps', 'max_checkpoints_to_keep', 'nonfinite_policy',
                     'checkpoint_async', 'eval_only', 'init_checkpoint', 'init_weights')


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
    self._file.seek(0)
    self._file.truncate()
    self._file.write(f'pid {os.getpid()} on {socket.gethostname()}')
    self._file.flush()

  def release(self) -> None:
    if self._file is not None:
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


def changed_keys(workdir: epath.Path, config: ml_collections.ConfigDict) -> list[str]:
  """Keys whose values differ from the config recorded in the workdir (outside the
  RESUMABLE_CHANGES); [] when there is no record."""
  record = workdir / CONFIG_FILE
  if not record.exists():
    return []
  old = _flatten(json.loads(record.read_text()))
  new = _flatten(json.loads(config.to_json_best_effort()))
  differ = sorted(k for k in old.keys() | new.keys()
                  if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
  return [f'{k} ({old.get(k)!r} → {new.get(k)!r})' for k in differ]


def record_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Writes the resolved config (process 0 only)."""
  if jax.process_index() == 0:
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def read_config(workdir: str | epath.Path) -> ml_collections.ConfigDict:
  """The resolved config a run recorded in `workdir/config.json`; ConfigError if none."""
  record = epath.Path(workdir) / CONFIG_FILE
  if not record.exists():
    raise ConfigError(f'{str(workdir)!r} holds no {CONFIG_FILE}: not a workdir of '
                      'resnet_jax.main')
  return ml_collections.ConfigDict(json.loads(record.read_text()))
