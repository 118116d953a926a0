"""Multi-process JAX: start-up, barriers, results computed once and shared, a
shared-workdir check, and one process's failure ending the whole run.

Each host runs the same command; `jax.distributed` wires the processes together. On TPU
VMs (gcloud or queued resources), GKE, SLURM, Open MPI and Kubernetes,
`jax.distributed.initialize()` finds the coordinator itself (clusters.py);
anywhere else pass --coordinator_address, --num_processes and --process_id.

A failing process must not leave the others waiting in a collective: it reports its
error through jax.distributed's key-value store and every peer's PeerFailureWatch, which
polls it (a blocking get would crash a daemon thread at interpreter exit), ends its own
process within seconds (exit code PEER_FAILED_EXIT_CODE). A process that dies
without a word (kill -9, out of memory) misses its heartbeats, and the coordination
service aborts the others after `heartbeat_timeout` seconds.
"""

import json
import os
import sys
import threading
import time
import traceback
import uuid
import zlib
from typing import Any, Callable, NoReturn

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from resnet_jax import clusters, stopping
from resnet_jax.errors import ConfigError, check_choice

MODES = ('auto', 'yes', 'no')
PEER_FAILED_EXIT_CODE = 3
_FAILURE_KEY = 'resnet_jax/failed_process'


def _poll_seconds() -> float:
  """How often each process asks the coordination service for a failure report: once
  a second, less often on big pods, so process 0's service answers ~100 asks a second."""
  return min(10.0, max(1.0, jax.process_count() / 100))


def initialize(mode: str = 'auto', coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               heartbeat_timeout: int = 30) -> None:
  """Starts jax.distributed when the run has several processes; a no-op otherwise.

  Args:
    mode: 'auto' (initialise when given a coordinator or a cluster is detected), 'yes'
      (always; let JAX detect the cluster), 'no' (single process).
    coordinator_address: 'host:port' of process 0, for clusters JAX cannot detect.
    num_processes: with coordinator_address.
    process_id: with coordinator_address.
    heartbeat_timeout: seconds without a process's heartbeat before the others abort
      (JAX's default, 100 s, leaves a run hanging for minutes after a host dies).
  """
  check_choice('--distributed', mode, MODES, error=ConfigError)
  if heartbeat_timeout <= 0:
    raise ConfigError(f'--heartbeat_timeout {heartbeat_timeout} must be a positive number '
                      'of seconds')
  if mode == 'no':
    return
  # The processes are SLURM's own tasks (not ones launch/local.sh started inside an srun
  # step, which pass their coordinator): check the GPU binding that JAX will rely on.
  slurm_tasks = not coordinator_address and 'SLURM_STEP_NUM_TASKS' in os.environ
  started = True
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout)
  elif mode == 'yes' or clusters.detected_cluster():
    if slurm_tasks:
      clusters.check_gpu_binding(os.environ)
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout)
  else:
    started = False
  if not started:
    return
  if slurm_tasks:
    clusters.check_allocation(os.environ, jax.default_backend(), jax.local_device_count(),
                              jax.device_count(),
                              [d.local_hardware_id for d in jax.local_devices()])
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def barrier(name: str) -> None:
  """Waits until every process gets here (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def computed_once(compute: Callable[[], Any], what: str) -> Any:
  """compute() run by process 0 alone, its result (JSON data) given to every process.

  A ConfigError on process 0 is raised on every process, so none waits for a result that
  never comes. The result travels compressed through one broadcast: no shared filesystem
  is needed, and nothing is written.
  """
  if jax.process_count() == 1:
    return compute()
  payload = b''
  if jax.process_index() == 0:
    try:
      message = {'result': compute()}
    except ConfigError as error:
      message = {'error': str(error)}
    payload = zlib.compress(json.dumps(message).encode(), 1)
  size = int(multihost_utils.broadcast_one_to_all(np.array([len(payload)], np.int64))[0])
  data = np.zeros(size, np.uint8)
  data[:len(payload)] = np.frombuffer(payload, np.uint8)
  message = json.loads(zlib.decompress(multihost_utils.broadcast_one_to_all(data).tobytes()))
  logging.info('%s: %d bytes from process 0', what, size)
  if 'error' in message:
    raise ConfigError(message['error'])
  return message['result']


def gathered(value: int) -> list[int]:
  """Every process's `value` (an int), indexed by process; [value] with one process."""
  if jax.process_count() == 1:
    return [int(value)]
  everyone = multihost_utils.process_allgather(np.array(value, np.int64))
  return [int(v) for v in np.asarray(everyone).reshape(-1)]


def shared_from(source: int, value: Any) -> Any:
  """Process `source`'s `value` (JSON data), given to every process.

  Every process calls it with the same `source`; the others' `value` is ignored.
  """
  if jax.process_count() == 1:
    return value
  is_source = jax.process_index() == source
  payload = zlib.compress(json.dumps(value).encode(), 1) if is_source else b''
  size = int(multihost_utils.broadcast_one_to_all(np.array([len(payload)], np.int64),
                                                  is_source=is_source)[0])
  data = np.zeros(size, np.uint8)
  data[:len(payload)] = np.frombuffer(payload, np.uint8)
  data = multihost_utils.broadcast_one_to_all(data, is_source=is_source)
  return json.loads(zlib.decompress(np.asarray(data).tobytes()))


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


def _key_value_store():
  """jax.distributed's coordination-service client, or None with one process. Its
  key-value store has no public API; multihost_utils uses this same client."""
  if jax.process_count() == 1:
    return None
  from jax._src import distributed as jax_distributed  # noqa: PLC0415
  return jax_distributed.global_state.client


class PeerFailureWatch:
  """Ends this process when another process of the run reports a failure (fail_run)."""

  def __init__(self):
    self._client = _key_value_store()
    self._stopped = threading.Event()
    if self._client is not None:
      threading.Thread(target=self._watch, name='peer-failure-watch', daemon=True).start()

  def _watch(self) -> None:
    me, every = str(jax.process_index()), _poll_seconds()
    while not self._stopped.wait(every):
      try:
        report = self._client.key_value_try_get(_FAILURE_KEY)
      except Exception:  # noqa: BLE001  (NOT_FOUND: nobody failed; a lost service: heartbeats)
        continue
      failed, _, message = report.partition(': ')
      if failed == me or self._stopped.is_set():
        continue
      logging.error('process %s failed (%s); ending process %s too', failed, message, me)
      logging.flush()
      sys.stderr.flush()
      os._exit(PEER_FAILED_EXIT_CODE)  # peers may be stuck in a collective: no clean exit

  def stop(self) -> None:
    self._stopped.set()


def fail_run(message: str, exit_code: int = 1) -> NoReturn:
  """Reports this process's failure to its peers, then exits with `exit_code`.

  It skips jax.distributed's shutdown barrier, which would wait for peers that may be
  stuck in a collective. The report lives in process 0's coordination service, so
  process 0 waits until its peers have read it.
  """
  client = _key_value_store()
  if client is not None:
    try:
      client.key_value_set(_FAILURE_KEY, f'{jax.process_index()}: {message[:500]}')
    except Exception:  # noqa: BLE001  (another process reported first)
      pass
    if jax.process_index() == 0:
      time.sleep(2 * _poll_seconds() + 1)
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(exit_code)


def run(main: Callable[[], None], *, one_line_errors: tuple[type[BaseException], ...],
        mode: str = 'auto', coordinator_address: str | None = None,
        num_processes: int | None = None, process_id: int | None = None,
        heartbeat_timeout: int = 30) -> NoReturn:
  """Starts jax.distributed (`initialize`), runs `main`, and ends a failed run everywhere.

  A `main` that returns exits at once with status 0 (see _exit_finished).

  A stop (stopping.RunStopped: SIGTERM or Ctrl-C, checkpoint saved) prints its one line
  and exits with stopping.EXIT_STOPPED on every process.
  An error of `one_line_errors` (or a bad argument here) prints `error: ...` and exits 1;
  any other one raises as usual. With several processes, either kind also ends every
  other process of the run (fail_run; their PeerFailureWatch), and a peer's failure
  ends this one.
  """
  try:
    initialize(mode, coordinator_address, num_processes, process_id, heartbeat_timeout)
  except ConfigError as error:
    sys.exit(f'error: {error}')
  watch = PeerFailureWatch()
  try:
    main()
  except stopping.RunStopped as stop:  # every process stops at the same step
    watch.stop()
    print(stop, file=sys.stderr)
    sys.exit(stopping.EXIT_STOPPED)
  except one_line_errors as error:
    watch.stop()
    if jax.process_count() == 1:
      sys.exit(f'error: {error}')
    print(f'error: {error}', file=sys.stderr)
    fail_run(str(error))
  except BaseException as error:
    watch.stop()
    if jax.process_count() == 1:
      raise
    traceback.print_exc()
    fail_run(f'{type(error).__name__}: {error}')
  watch.stop()
  _exit_finished()


def _exit_finished() -> NoReturn:
  """Ends a finished run at once, exit status 0.

  Everything is written and closed by now; the interpreter's own teardown of TensorFlow
  and XLA would follow the closing line with seconds of silence that read as a hang
  (1.4-1.8 s for digits on a 2-core VM, against 0.1 s). jax.distributed's shutdown runs
  first, as its exit hook would: its barrier has every process finish.
  """
  if jax.process_count() > 1:
    jax.distributed.shutdown()
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)
