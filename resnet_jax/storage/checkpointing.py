"""Orbax CheckpointManager around the train state: restore-or-keep, async save, keep K.

Orbax writes each step into a temporary directory and renames it when complete, so a
crash during a save leaves the previous checkpoints as they were.

Restoring is one decision for all processes. They try the steps newest first, in step,
and after each try share whether they read it; the run resumes from the newest step that
every process read. Every read failure is retried RESTORE_TRIES times (a FUSE remount, a
busy file or a broken pipe reads as FAILED_PRECONDITION or OUT_OF_RANGE once, then
passes). A step whose last try still fails with an integrity error (missing or truncated
files, undecodable metadata, tensorstore's NOT_FOUND, DATA_LOSS, OUT_OF_RANGE,
FAILED_PRECONDITION, INVALID_ARGUMENT) is damaged: it is skipped, and once a readable
one is found process 0 alone moves the damaged ones to `corrupt_checkpoints/`. Any other
error that persists (an IO error, a timeout, a 503 from a bucket) stops the run on every
process with the same CheckpointError, nothing moved. With none readable the run stops
too.

A background (asynchronous) save that fails is reported with its own step as soon as the
trainer asks (`check_saves`, at every log step), not at the next save.
"""

import json
import re
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from resnet_jax import distributed

# A failing read is tried this many times in all, waiting RETRY_SECONDS, then twice that,
# ... between tries, before it counts as damage (an integrity error) or stops the run.
RESTORE_TRIES = 3
RETRY_SECONDS = 2.0

# tensorstore status codes (the start of its error messages) that mean damaged data.
_INTEGRITY_CODES = frozenset(
    {'NOT_FOUND', 'DATA_LOSS', 'OUT_OF_RANGE', 'FAILED_PRECONDITION', 'INVALID_ARGUMENT'})
_STATUS_CODE = re.compile(r'([A-Z][A-Z_]+): ')
_OK, _DAMAGED, _INCOMPATIBLE, _TRANSIENT = range(4)


class CheckpointError(RuntimeError):
  """Checkpoints exist but none restores: never silently start again from step 0."""


class IncompatibleCheckpoint(ValueError):
  """The checkpoint holds another model: `paths` lists leaves whose shapes differ."""

  def __init__(self, step: int, paths: list[str]):
    super().__init__(f'checkpoint {step} does not fit this model: {", ".join(paths[:5])}')
    self.step = step
    self.paths = paths


def _key_name(key: Any) -> str:
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Leaf path → shape, with paths written alike for dataclasses, dicts and tuples."""
  return {'/'.join(_key_name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _item_path(checkpoints: epath.Path, step: int) -> epath.Path:
  return checkpoints / str(step) / 'default'


def _saved_tree(checkpoints: epath.Path, step: int) -> Any:
  """The recorded shapes and dtypes of checkpoint `step` (reads metadata only)."""
  return ocp.StandardCheckpointer().metadata(_item_path(checkpoints, step)).item_metadata


def _restore_item(path: epath.Path, abstract: Any) -> Any:
  """Checkpoint item `path` restored onto `abstract`'s shardings.

  Through the handler, not CheckpointManager.restore: that ends in a barrier of all
  processes, where the ones that read the step would wait forever for one that failed.
  """
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist')
  handler = ocp.StandardCheckpointHandler()
  try:
    return handler.restore(path, args=ocp.args.StandardRestore(abstract))
  finally:
    handler.close()


def _chain(error: BaseException) -> list[BaseException]:
  """`error` and the exceptions it came from (its causes and contexts), outermost first."""
  links = []
  while error is not None and error not in links:
    links.append(error)
    error = error.__cause__ or error.__context__
  return links


def is_integrity_error(error: BaseException) -> bool:
  """True if `error`, raised reading a checkpoint, says the checkpoint is damaged
  (missing or truncated files, undecodable metadata or data); False for the rest (IO
  errors, timeouts, unavailable storage, permissions): those may pass.

  Measured with orbax 0.12 / tensorstore 0.1 on a local checkpoint: a deleted or
  truncated data file gives Exception('Encountered error while reading array index...')
  from ValueError('FAILED_PRECONDITION: ... Truncated Zstd-compressed stream' or
  'OUT_OF_RANGE: ...'); a garbled or deleted OCDBT manifest, ValueError('DATA_LOSS: ...')
  or ValueError('NOT_FOUND: ...'); a garbled or empty _METADATA, json.JSONDecodeError; a
  deleted item directory, FileNotFoundError.
  """
  for link in _chain(error):
    if isinstance(link, (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                         json.JSONDecodeError, UnicodeDecodeError)):
      return True
    if type(link).__module__.startswith('msgpack'):
      return True
    if isinstance(link, OSError):  # EIO, ETIMEDOUT, ConnectionError, TimeoutError, ...
      return False
    status = _STATUS_CODE.match(str(link))
    if status:
      return status.group(1) in _INTEGRITY_CODES
  return False


def describe_error(error: BaseException) -> str:
  """`error` in one line: its type and message, and the first cause with a status code
  or a type of its own when the message alone says little."""
  def words(link):
    return f'{type(link).__name__}: {" ".join(str(link).split())}'[:300]
  links = _chain(error)
  text = words(error)
  for link in links[1:]:
    if _STATUS_CODE.match(str(link)) or isinstance(link, OSError):
      return f'{text[:150]} (from {words(link)})'
  return text


def load_tree(path: epath.Path) -> Any:
  """The pytree saved by orbax at `path`, as numpy arrays, whatever topology wrote it.

  Every process reads the whole tree onto a device of its own (another process's
  devices are not addressable from here).
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          checkpointer.metadata(path).item_metadata)
    return jax.device_get(checkpointer.restore(path, target))


def saved_steps(workdir: str | epath.Path) -> list[int]:
  """The steps of a workdir's complete checkpoints, oldest first ([] if none)."""
  checkpoints = epath.Path(workdir) / 'checkpoints'
  return sorted(ocp.utils.checkpoint_steps(checkpoints)) if checkpoints.exists() else []


def load_arrays(workdir: str, step: int) -> Any:
  """Checkpoint `step` of `workdir` as numpy arrays, whatever topology wrote it."""
  return load_tree(_item_path(epath.Path(workdir) / 'checkpoints', step))


class Checkpointer:
  """Saves and restores the train state under `workdir/checkpoints/<step>/`."""

  def __init__(self, workdir: epath.Path, *, max_to_keep: int, async_save: bool = True,
               read_only: bool = False):
    """`read_only`: no directory is created (eval_only reads a workdir, writes nothing)."""
    self.workdir = epath.Path(workdir)
    self.directory = self.workdir / 'checkpoints'
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)
    self._in_flight: int | None = None  # the step of the newest save started
    self._reported = False  # a failed background save was raised already

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def restore_or_keep(self, state: Any) -> Any:
    """The newest checkpoint every process reads, with `state`'s structure and shardings,
    else `state` (no checkpoints). Call it on every process: it exchanges results.

    Raises (on every process alike):
      IncompatibleCheckpoint: the newest readable checkpoint holds other shapes.
      CheckpointError: checkpoints exist, but none can be read; or a transient error
        persisted through RESTORE_TRIES tries (nothing is set aside then).
    """
    candidates = distributed.computed_once(
        lambda: sorted((int(s) for s in self._manager.all_steps()), reverse=True),
        'checkpoint steps')
    if not candidates:
      return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    expected, damaged = leaf_shapes(abstract), []
    for step in candidates:
      outcome, result = self._read(step, abstract, expected)
      everyone = distributed.gathered(outcome)
      if _TRANSIENT in everyone:
        source = everyone.index(_TRANSIENT)
        error = distributed.shared_from(source, result if outcome == _TRANSIENT else None)
        raise CheckpointError(
            f'reading checkpoint {step} in {self.directory} failed on process {source} '
            f'{RESTORE_TRIES} times: {error}. Taken as a storage error, not damage: nothing '
            'was set aside; rerun once the storage answers')
      if _INCOMPATIBLE in everyone:
        source = everyone.index(_INCOMPATIBLE)
        raise IncompatibleCheckpoint(
            step, distributed.shared_from(source, result if outcome == _INCOMPATIBLE else None))
      if _DAMAGED in everyone:
        if outcome != _DAMAGED:
          logging.warning('checkpoint %s is unreadable on processes %s; trying the one before',
                          self.directory / str(step),
                          [i for i, o in enumerate(everyone) if o == _DAMAGED])
        damaged.append(step)
        continue
      if damaged:
        self._set_aside(damaged)
      logging.info('Restored checkpoint of step %d from %s', step, self.directory)
      return result
    raise CheckpointError(
        f'no checkpoint in {self.directory} restores (tried steps {candidates}); refusing to '
        'start again from step 0: move the checkpoints away to train from scratch')

  def _read(self, step: int, abstract: Any, expected: dict[str, tuple[int, ...]]
            ) -> tuple[int, Any]:
    """This process's try at `step`: (_OK, state), (_DAMAGED, None), (_INCOMPATIBLE,
    differing paths) or (_TRANSIENT, the error in words); every failure is retried."""
    for attempt in range(1, RESTORE_TRIES + 1):
      try:
        saved = leaf_shapes(_saved_tree(self.directory, step))
        if saved and saved != expected:  # no metadata (unreadable): the restore decides
          return _INCOMPATIBLE, sorted(k for k in expected.keys() | saved.keys()
                                       if expected.get(k) != saved.get(k))
        return _OK, _restore_item(_item_path(self.directory, step), abstract)
      except Exception as error:  # noqa: BLE001  (orbax and tensorstore raise many types)
        if attempt == RESTORE_TRIES:
          if is_integrity_error(error):
            logging.warning('checkpoint %s is unreadable (%s, %d tries); trying the one '
                            'before', self.directory / str(step), describe_error(error), attempt)
            return _DAMAGED, None
          logging.error('reading checkpoint %s failed %d times (%s)', self.directory / str(step),
                        attempt, describe_error(error))
          return _TRANSIENT, describe_error(error)
        delay = RETRY_SECONDS * 2 ** (attempt - 1)
        logging.warning('reading checkpoint %s failed (%s); try %d of %d in %.1f s',
                        self.directory / str(step), describe_error(error), attempt + 1,
                        RESTORE_TRIES, delay)
        time.sleep(delay)
    raise AssertionError('unreachable')

  def _set_aside(self, bad_steps: list[int]) -> None:
    """Moves unreadable checkpoints out of the way (process 0, once), so new saves can
    reuse their steps; every process waits for it."""
    if jax.process_index() == 0:
      aside = self.workdir / 'corrupt_checkpoints'
      aside.mkdir(parents=True, exist_ok=True)
      for step in bad_steps:
        target = aside / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
        (self.directory / str(step)).rename(target)
        logging.warning('moved unreadable checkpoint %d to %s', step, target)
    distributed.barrier('corrupt checkpoints set aside')
    self._manager.close()
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)

  def save(self, step: int, state: Any) -> None:
    """Starts writing `state` as checkpoint `step` (returns before the write ends).

    Raises:
      CheckpointError: this write, or the previous one still in flight, failed (a full
        disk, an IO error), named by its own step. The checkpoints written before stay as
        they were.
    """
    self.check_saves()
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except (OSError, ValueError, RuntimeError) as error:
      raise CheckpointError(f'saving checkpoint {step} in {self.directory} failed: {error}; '
                            'the earlier checkpoints are untouched') from error
    self._in_flight = step

  def check_saves(self) -> None:
    """CheckpointError naming the step of a background save that failed, if one did."""
    check = getattr(self._manager, 'check_for_errors', None)  # orbax >= 0.11.x
    if self._in_flight is None or check is None:
      return
    try:
      check()
    except (OSError, ValueError, RuntimeError) as error:
      step, self._in_flight, self._reported = self._in_flight, None, True
      raise CheckpointError(f'saving checkpoint {step} in {self.directory} failed in the '
                            f'background: {error}; the earlier checkpoints are untouched'
                            ) from error

  def close(self) -> None:
    """Waits for pending writes and releases the manager."""
    try:
      self._manager.wait_until_finished()
    except (OSError, ValueError, RuntimeError) as error:
      if self._reported:  # the same failure, raised by check_saves with its step
        return
      raise CheckpointError(f'writing a checkpoint in {self.directory} failed: {error}; the '
                            'earlier checkpoints are untouched') from error
    finally:
      self._manager.close()
