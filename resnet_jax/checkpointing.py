"""Orbax CheckpointManager around the train state: restore-or-keep, async save, keep K.

Orbax writes each step into a temporary directory and renames it when complete, so a
crash during a save leaves the previous checkpoints as they were.
"""

from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class Checkpointer:
  """Saves and restores the train state under `workdir/checkpoints/<step>/`."""

  def __init__(self, workdir: epath.Path, *, max_to_keep: int, async_save: bool = True):
    self.directory = epath.Path(workdir) / 'checkpoints'
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def restore_or_keep(self, state: Any) -> Any:
    """The newest checkpoint restored with `state`'s structure and shardings, else `state`."""
    step = self.latest_step()
    if step is None:
      return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    logging.info('Restored checkpoint of step %d from %s', step, self.directory)
    return restored

  def save(self, step: int, state: Any) -> None:
    """Starts writing `state` as checkpoint `step` (returns before the write ends)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def close(self) -> None:
    """Waits for pending writes and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
