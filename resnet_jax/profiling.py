"""config.profile_steps: a jax.profiler trace of a range of training steps.

The trace lands in workdir/plugins/profile/<run>/<host>.xplane.pb, where TensorBoard's
profile plugin finds it (`tensorboard --logdir=WORKDIR`, tab PROFILE).
"""

import re
from typing import Any

import jax

_VALID = "must be '' (off) or 'FIRST-LAST' with 1 <= FIRST <= LAST, e.g. '10-15'"


def parse_steps(text: str) -> tuple[int, int] | None:
  """'FIRST-LAST' (inclusive) -> (FIRST, LAST); '' -> None.

  Raises:
    ValueError: a one-line message naming the bad value and the valid form.
  """
  if text == '':
    return None
  match = re.fullmatch(r'(\d+)-(\d+)', str(text))
  if not match or not 1 <= int(match[1]) <= int(match[2]):
    raise ValueError(f'profile_steps {text!r} {_VALID}')
  return int(match[1]), int(match[2])


class StepTrace:
  """Traces the steps of profile_steps that this run executes, on process 0 only.

  clu's periodic_actions.Profile (google/flax's ImageNet example) cannot be told to trace
  exactly FIRST..LAST: it starts after step FIRST ran, stops on time as well as steps,
  profiles again every hour, and has no stop for a run that ends or fails inside the
  range. Hence jax.profiler's start_trace/stop_trace here.

  Call before_step(step, state) before a step is dispatched, after_step(step, state) once
  it was, and stop() in a `finally`. The steps are asynchronous, so both ends wait for
  the state: the trace holds the device work of exactly these steps. A resumed run traces
  what is left of the range; a range already past does nothing.
  """

  def __init__(self, profile_steps: str, logdir: str, *, start_step: int, last_step: int):
    steps = parse_steps(profile_steps)
    # One host's trace shows the step: every process runs the same program.
    if steps is None or jax.process_index() != 0:
      self._first, self._last = 0, -1
    else:
      self._first, self._last = max(steps[0], start_step + 1), min(steps[1], last_step)
    self._logdir = str(logdir)
    self._running = False

  def before_step(self, step: int, state: Any) -> None:
    if step == self._first and self._first <= self._last:
      jax.block_until_ready(state)  # earlier steps' device work stays out of the trace
      jax.profiler.start_trace(self._logdir)
      self._running = True

  def after_step(self, step: int, state: Any) -> None:
    if step == self._last and self._running:
      jax.block_until_ready(state)
      self.stop()

  def stop(self) -> None:
    """Ends the trace, if one is running, and writes it."""
    if self._running:
      self._running = False
      jax.profiler.stop_trace()
