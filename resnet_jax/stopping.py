"""How a run ends, and the signals that stop it early with a checkpoint.

Exit statuses of `python -m resnet_jax.main` (docs/reliability.md, "How a run ends"):
  0   finished: the last step trained, evaluated and saved (or a finished run re-run:
      nothing to do);
  1   failed: a bad config or workdir (one `error:` line), or an exception;
  3   another process of the run failed (distributed.PEER_FAILED_EXIT_CODE);
  75  stopped: SIGTERM or Ctrl-C before the last step; the checkpoint of the step every
      process reached is saved, and the same command resumes from it. 75 is sysexits.h's
      EX_TEMPFAIL ("temporary failure; the user is invited to retry"): a launcher that
      sees it keeps the machines and resumes (launch/*.sh);
  130 a second Ctrl-C: the process ends at once, without a new checkpoint.
"""

import os
import signal
from types import FrameType

import jax
from absl import logging
from jax.experimental import multihost_utils

EXIT_STOPPED = 75


class RunStopped(Exception):
  """The run stopped before its last step, its checkpoint saved: exit with EXIT_STOPPED."""

  def __init__(self, step: int, last_step: int, cause: str, *, saved: bool = True):
    self.step, self.last_step, self.cause = step, last_step, cause
    what = f'checkpoint {step} saved' if saved else f'nothing new to save (checkpoint {step})'
    super().__init__(f'stopped by {cause} at step {step} of {last_step}: {what}; run the same '
                     f'command to resume (exit status {EXIT_STOPPED})')


class StopSignals:
  """SIGTERM and SIGINT (Ctrl-C) ask the run to checkpoint and stop at a step every process
  reaches; a second Ctrl-C ends the process at once.

  With several processes, JAX's preemption sync manager (started by
  jax.distributed.initialize) catches SIGTERM on any host and picks a step all processes
  reach; Ctrl-C is handed to it as a SIGTERM to this process. A single process catches both
  itself. Python runs a handler only between bytecodes: the loop asks `reached` once per
  step, so the stop comes at the end of the step in flight. A SIGINT that the parent set
  to be ignored (launch/local.sh, nohup) stays ignored.
  """

  def __init__(self):
    self._multi_process = jax.process_count() > 1
    self.cause: str | None = None
    self._step = 0
    self._previous: dict[int, object] = {}
    if not self._multi_process:
      self._install(signal.SIGTERM, self._on_sigterm)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
      self._install(signal.SIGINT, self._on_sigint)

  def _install(self, signum: int, handler) -> None:
    self._previous[signum] = signal.signal(signum, handler)

  def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
    del signum, frame
    self._request('SIGTERM')

  def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
    del signum, frame
    # The next Ctrl-C is the default one: the kernel ends the process even while it waits
    # in a collective or in C++, where no Python handler would run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    self._request('SIGINT (Ctrl-C)')
    logging.warning('Press Ctrl-C again to end at once, without a checkpoint')
    if self._multi_process:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's notifier, which tells every process

  def _request(self, cause: str) -> None:
    if self.cause is None:
      self.cause = cause
      logging.warning('%s received after step %d: checkpointing at the end of the step in '
                      'flight, then exiting with status %d', cause, self._step, EXIT_STOPPED)

  def reached(self, step: int) -> bool:
    """Call once per step on every process; True on all at the same step after a stop."""
    self._step = step
    if self._multi_process:
      stop = multihost_utils.reached_preemption_sync_point(step)
      if stop and self.cause is None:
        self.cause = 'SIGTERM'  # caught by JAX on this or another process
      return stop
    return self.cause is not None

  def close(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
