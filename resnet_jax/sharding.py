"""The data-parallel mesh, its shardings, and host batches → global jax.Arrays."""

import collections
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh over `devices` (default: every device of every process).

  Devices are ordered process by process, so process p's share of a global batch is
  one contiguous block of it: the batch's layout, and with it the examples that share
  a BatchNorm group, is the same for any number of processes. Auto axis types let XLA
  propagate shardings through the step, so the model stays free of annotations.
  """
  if devices is None:
    devices = jax.devices()
  ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(ordered), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Whole value on every device: parameters, optimizer state, metrics."""
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Raises ValueError unless the batch splits evenly over devices and processes."""
  devices = mesh.devices.size
  if global_batch_size <= 0 or global_batch_size % devices:
    valid = ', '.join(str(devices * k) for k in (1, 2, 4, 8)) + ', ...'
    raise ValueError(f'batch_size {global_batch_size} is not a positive multiple of the '
                     f'{devices} devices; valid batch sizes: {valid}')


def to_global(host_batch: Any, mesh: Mesh) -> Any:
  """Assembles every process's local batch into global arrays sharded over `mesh`."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch)


def prefetch_to_mesh(host_batches: Iterator[Any], mesh: Mesh, size: int = 2) -> Iterator[Any]:
  """Yields global batches while the next `size` are already being copied to devices."""
  queue = collections.deque()
  for host_batch in host_batches:
    queue.append(to_global(host_batch, mesh))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
