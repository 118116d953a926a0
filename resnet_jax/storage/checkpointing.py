"""Orbax CheckpointManager around the train state: restore-or-keep, async save, keep K.

Orbax writes each step into a temporary directory and renames it when complete, so a
crash during a save leaves the previous checkpoints as they were. A checkpoint that
fails to restore (truncated or missing files) is moved to `corrupt_checkpoints/` with a
warning, and the previous one is tried; with none readable the run stops.
"""

import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from resnet_jax import distributed


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

  def __init__(self, workdir: epath.Path, *, max_to_keep: int, async_save: bool = True):
    self.workdir = epath.Path(workdir)
    self.directory = self.workdir / 'checkpoints'
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def restore_or_keep(self, state: Any) -> Any:
    """The newest readable checkpoint, with `state`'s structure and shardings, else `state`.

    Raises:
      IncompatibleCheckpoint: the newest readable checkpoint holds other shapes.
      CheckpointError: checkpoints exist, but none can be read.
    """
    candidates = sorted(self._manager.all_steps(), reverse=True)
    if not candidates:
      return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    expected, unreadable = leaf_shapes(abstract), []
    for step in candidates:
      try:
        saved = leaf_shapes(_saved_tree(self.directory, step))
      except Exception as error:  # noqa: BLE001  (orbax and tensorstore raise many types)
        unreadable.append(self._reject(step, error))
        continue
      if saved != expected:
        differ = sorted(k for k in expected.keys() | saved.keys()
                        if expected.get(k) != saved.get(k))
        raise IncompatibleCheckpoint(step, differ)
      try:
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as error:  # noqa: BLE001
        unreadable.append(self._reject(step, error))
        continue
      if unreadable:
        self._set_aside(unreadable)
      logging.info('Restored checkpoint of step %d from %s', step, self.directory)
      return restored
    raise CheckpointError(
        f'no checkpoint in {self.directory} restores (tried steps {candidates}); refusing to '
        'start again from step 0: move the checkpoints away to train from scratch')

  def _reject(self, step: int, error: Exception) -> int:
    message = ' '.join(str(error).split())[:300]
    logging.warning('checkpoint %s is unreadable (%s: %s); trying the one before',
                    self.directory / str(step), type(error).__name__, message)
    return step

  def _set_aside(self, bad_steps: list[int]) -> None:
    """Moves unreadable checkpoints out of the way, so new saves can reuse their steps."""
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
        disk, an IO error). The checkpoints written before stay as they were.
    """
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except (OSError, ValueError, RuntimeError) as error:
      raise CheckpointError(f'saving checkpoint {step} in {self.directory} failed: {error}; '
                            'the earlier checkpoints are untouched') from error

  def close(self) -> None:
    """Waits for pending writes and releases the manager."""
    try:
      self._manager.wait_until_finished()
    except (OSError, ValueError, RuntimeError) as error:
      raise CheckpointError(f'writing a checkpoint in {self.directory} failed: {error}; the '
                            'earlier checkpoints are untouched') from error
    finally:
      self._manager.close()
