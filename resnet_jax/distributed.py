"""Multi-process JAX: start-up, barriers, a shared-workdir check and preemption.

Each host runs the same command; `jax.distributed` wires the processes together. On TPU
VMs, SLURM and Open MPI, `jax.distributed.initialize()` finds the coordinator itself;
anywhere else pass --coordinator_address, --num_processes and --process_id.
"""

import os
import signal
import uuid

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from resnet_jax.errors import ConfigError

MODES = ('auto', 'yes', 'no')


def _cluster_detected() -> bool:
  """True where an environment variable says this is one of several processes."""
  def count(name: str) -> int:
    value = os.environ.get(name, '')
    return int(value) if value.isdigit() else 0
  # SLURM_STEP_NUM_TASKS is set inside `srun` only, not in the batch script's own shell.
  return (count('SLURM_STEP_NUM_TASKS') > 1 or count('OMPI_COMM_WORLD_SIZE') > 1 or
          ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''))


def initialize(mode: str = 'auto', coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> None:
  """Starts jax.distributed when the run has several processes; a no-op otherwise.

  Args:
    mode: 'auto' (initialise when given a coordinator or a cluster is detected), 'yes'
      (always; let JAX detect the cluster), 'no' (single process).
    coordinator_address: 'host:port' of process 0, for clusters JAX cannot detect.
    num_processes: with coordinator_address.
    process_id: with coordinator_address.
  """
  if mode not in MODES:
    raise ConfigError(f'unknown --distributed {mode!r}; valid: {", ".join(MODES)}')
  if mode == 'no':
    return
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif mode == 'yes' or _cluster_detected():
    jax.distributed.initialize()
  else:
    return
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def barrier(name: str) -> None:
  """Waits until every process gets here (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def check_shared_workdir(workdir: epath.Path) -> None:
  """Fails on every process, instead of hanging later, unless all see one workdir.

  Process 0 writes a file with a fresh token; each process must read back that token.
  """
  if jax.process_count() == 1:
    return
  token = uuid.uuid4().bytes
  token = bytes(multihost_utils.broadcast_one_to_all(np.frombuffer(token, np.uint8)))
  probe = workdir / f'.shared_workdir_check_{token.hex()}'
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(token)
  barrier('shared workdir: written')
  sees_it = probe.exists() and probe.read_bytes() == token
  everyone = multihost_utils.process_allgather(np.array(sees_it))
  barrier('shared workdir: read')
  if jax.process_index() == 0:
    probe.unlink()
  blind = [i for i, ok in enumerate(np.asarray(everyone).reshape(-1)) if not ok]
  if blind:
    raise ConfigError(f'workdir {workdir} is not shared: processes {blind} cannot see what '
                      'process 0 wrote there; use a path that every process reaches '
                      '(gs://... on TPU VMs, a shared filesystem on a cluster)')


class PreemptionGuard:
  """Tells every process the same step at which to checkpoint and stop after SIGTERM.

  With several processes, JAX's preemption sync manager (started by
  jax.distributed.initialize) catches the signal on any host and picks a step all
  processes reach; a single process catches SIGTERM itself.
  """

  def __init__(self):
    self._multi_process = jax.process_count() > 1
    self._signalled = False
    if not self._multi_process:
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    logging.warning('SIGTERM received: checkpointing at the end of this step, then exiting')
    self._signalled = True

  def reached(self, step: int) -> bool:
    """Call once per step on every process; True on all at the same step after SIGTERM."""
    if self._multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled

  def close(self) -> None:
    if not self._multi_process:
      signal.signal(signal.SIGTERM, self._previous)
