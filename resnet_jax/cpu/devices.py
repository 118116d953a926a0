"""Several JAX devices on one CPU-only host, each running its share of the batch.

XLA:CPU runs one device's step op by op, each op split over the host's cores; a small
net's ops (ResNet-20 at 28²: 16 to 64 channels) are too small to keep two cores busy. N
CPU devices run N shares of the global batch side by side, data parallel over the mesh as
N accelerators would: the same batch, BatchNorm statistics (bn_group_size counts
examples, not devices) and update, to float rounding. Measured on a 2-core VM
(docs/performance.md, "Several CPU devices"): ResNet-20 at 28², batch 64, 1 device
370 img/s, 2 devices 469-493 img/s; 4 devices on the 2 cores are no faster than 2.

On a busy host, runs on two devices deadlocked in XLA:CPU's collectives until the device
input waited for each batch (data/device_input.py). Measured on the 2-core VM with the
fast test suite running beside a two-device Fashion-MNIST run evaluating every 20 steps:
without the wait, 9 of 10 runs (one a full recipe run beside a CI run, evaluating every
epoch) stuck in their first three evaluations and XLA aborted them after its 40 s
rendezvous timeout (status 134; a run resumes from its last checkpoint). Three ran with
the timeout raised (400 s, 900 s) and sat at 0 % CPU until it; the thread stacks (gdb) of
the two at 900 s showed one device's half of the evaluation step's all-reduce waiting for
the other device, whose launch of that step was blocked on the device's limit of
computations in flight, every other thread idle. In XLA's CPU client
(xla/pjrt/cpu/cpu_client.cc) each device's launch of a program takes a slot of that limit
(32; 1 under synchronous dispatch) before it waits for its inputs. Neither Eigen's
threading off, nor JAX's synchronous CPU dispatch (`jax_cpu_enable_async_dispatch=False`:
stuck in its second evaluation), nor one all-reduce per evaluation step where there were
an all-gather and two removed it. With each batch waited for before its step is
dispatched, a device holds a step and a batch or two in flight, never 32, and both runs
measured so passed all 47 of their evaluations, one beside the fast suite, one beside a
clean-clone CI run (`.ci/run`). The tenth run without the wait passed 28 before it was
stopped, and with three runs at once beside the suite none stuck, waiting or not: the
deadlock comes and goes with the load's timing, so this is evidence, not proof, and its
cause inside XLA is not established. Alone on the VM, full runs (15 and 18 epochs, 14,055
and 16,866 steps) finished without the wait and with it. The default stays 0 (JAX's one
device); `configs/fashion_mnist.py:cpu` asks for 2.

`cpu_devices` must take effect before JAX starts its backends, so the command line
(resnet_jax.main) applies it first thing; a process that has already computed with JAX
keeps the devices it has (the trainer logs a warning).
"""

import jax
from absl import logging

from resnet_jax.errors import ConfigError


def check_count(count: int) -> None:
  """Raises ConfigError naming `count` unless it is a valid `cpu_devices` value."""
  if isinstance(count, bool) or not isinstance(count, int) or count < 0:
    raise ConfigError(f'cpu_devices {count!r} must be an integer >= 0 (0: JAX\'s default, '
                      'one CPU device or what XLA_FLAGS asks for; N: N devices on a '
                      'CPU-only host)')


def request(count: int) -> bool:
  """Asks JAX for `count` CPU devices (0: leave JAX's default). Only the CPU backend is
  affected: a GPU or TPU host trains on its accelerators as before. The count replaces
  XLA_FLAGS' --xla_force_host_platform_device_count.

  Returns:
    Whether the request took effect: False when `count` is 0, or when this process's JAX
    backends had already started with another count.

  Raises:
    ConfigError: `count` is not an integer >= 0.
  """
  check_count(count)
  if not count:
    return False
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # JAX's backends are up: the devices are fixed for this process.
    return False
  return True


def warn_if_not_in_effect(count: int) -> None:
  """Logs a warning when `count` CPU devices were asked for on a CPU backend that has
  another number (a library caller started JAX before the trainer could ask)."""
  if count and jax.default_backend() == 'cpu' and jax.local_device_count() != count:
    logging.warning('cpu_devices=%d is not in effect: this process started JAX with %d CPU '
                    'device(s) before the trainer could ask (call '
                    'resnet_jax.cpu.devices.request(%d) before any JAX computation)', count,
                    jax.local_device_count(), count)
