"""The data-parallel mesh, its shardings, and host batches → global jax.Arrays."""

import collections
from typing import Any, Generator, Iterator, Sequence

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


def group_sizes(global_batch_size: int, num_devices: int) -> list[int]:
  """Group sizes that tile the devices: 0 (the whole batch), the divisors of the
  per-device batch, and the multiples of it that divide the global batch."""
  per_device = global_batch_size // num_devices
  within = [size for size in range(1, per_device + 1) if per_device % size == 0]
  across = [per_device * k for k in range(2, num_devices + 1)
            if num_devices % k == 0]
  return [0, *within, *across]


def check_group_size(name: str, size: int, global_batch_size: int, mesh: Mesh, *,
                     batch_label: str = '') -> None:
  """Raises ValueError unless BN or mixing groups of `size` tile the devices.

  A group inside one device's share is reduced locally; one spanning whole shares is an
  all-reduce of statistics. Any other group straddles a device boundary, and XLA then
  all-gathers per-example data (activations, or their per-example sums) in every layer
  that uses it. `batch_label` names the batch in the message (default 'batch_size N').
  """
  devices = mesh.devices.size
  valid = group_sizes(global_batch_size, devices)
  if size in valid:
    return
  per_device = global_batch_size // devices
  shown = ', '.join(map(str, valid if len(valid) <= 12 else [*valid[:6], '...', *valid[-6:]]))
  raise ValueError(
      f'{name} {size} does not tile the devices: the per-device batch is {per_device} '
      f'({batch_label or f"batch_size {global_batch_size}"} over {devices} devices); '
      f'valid sizes: {shown} '
      '(0: whole batch)')


def to_global(host_batch: Any, mesh: Mesh) -> Any:
  """Assembles every process's local batch into global arrays sharded over `mesh`."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch)


def prefetch_to_mesh(host_batches: Iterator[Any], mesh: Mesh,
                     size: int = 2) -> Generator[Any, None, None]:
  """Yields global batches while the next `size` are already being copied to devices."""
  queue = collections.deque()
  for host_batch in host_batches:
    queue.append(to_global(host_batch, mesh))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
