"""Several JAX devices on one CPU-only host, each running its share of the batch.

XLA:CPU runs one device's step op by op, each op split over the host's cores; a small
net's ops (ResNet-20 at 28²: 16 to 64 channels) are too small to keep two cores busy. N
CPU devices run N shares of the global batch side by side, data parallel over the mesh as
N accelerators would: the same batch, BatchNorm statistics (bn_group_size counts
examples, not devices) and update, to float rounding. Measured on a 2-core VM
(docs/performance.md, "Several CPU devices"): ResNet-20 at 28², batch 64, 1 device
370 img/s, 2 devices 469-493 img/s; 4 devices on the 2 cores are no faster than 2.

Not safe on a busy host yet: XLA:CPU runs the devices' collectives (a step's all-reduces)
on its thread pool, and on the 2-core VM while a test suite also ran, two devices waited
on each other in a collective until XLA aborted the process after its 40 s rendezvous
timeout (status 134; the run resumes from its last checkpoint). Measured 2026-12-07, the
Fashion-MNIST recipe on two devices while a CI run shared the VM: 7 of 7 runs stuck in
their first or second evaluation and aborted (one after 400 s with the timeout raised: a
deadlock, not slowness), devices set by this key or by XLA_FLAGS, with Eigen's threading off,
and with the evaluation step's collectives cut from an all-gather and two all-reduces to
one all-reduce; not yet explained. With three busy loops as the load instead, two runs
passed 4 and 9 evaluations; alone on the VM, two 15- and 18-epoch runs (31,000 steps,
33 evaluations) finished. Hence 0, one device, by default and in every recipe.

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

