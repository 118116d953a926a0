"""The training loop's progress line: step, epoch, images/s, time left, and the share of
time evaluation and checkpointing took (in place of clu's ReportProgress, which needs
TensorFlow through clu's metric writers)."""

import contextlib
import sys
import time
from typing import Iterator

from absl import logging


def duration(seconds: float) -> str:
  """'1h02m', '12m34s', '45s'."""
  seconds = int(round(max(seconds, 0.0)))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m'
  return f'{minutes}m{seconds:02d}s' if minutes else f'{seconds}s'


def _bar(fraction: float, width: int = 24) -> str:
  """' |██████▌     |  55%' (eighths of a cell, as tqdm draws it)."""
  eighths = int(round(min(max(fraction, 0.0), 1.0) * width * 8))
  full, part = divmod(eighths, 8)
  cells = '█' * full + (' ▏▎▍▌▋▊▉'[part] if part else '')
  return f' |{cells.ljust(width)}| {100 * fraction:3.0f}%'


class Progress:
  """Call with each finished step; logs a line every `every_secs` seconds of training."""

  def __init__(self, *, first_step: int, last_step: int, steps_per_epoch: int,
               batch_size: int, every_secs: float = 30.0):
    self._last_step, self._steps_per_epoch = last_step, steps_per_epoch
    self._batch_size, self._every = batch_size, every_secs
    self._start = self._mark = time.perf_counter()
    self._first_step = self._mark_step = first_step
    self._paused = {'eval': 0.0, 'checkpoint': 0.0}
    self._paused_mark = 0.0
    self._terminal = sys.stderr.isatty()  # the bar only where a person watches

  def __call__(self, step: int) -> None:
    now = time.perf_counter()
    if now - self._mark < self._every and step != self._last_step:
      return
    paused = sum(self._paused.values())
    if step == self._last_step:
      # The whole run's rate: the last steps are dispatched, not yet run (asynchronous
      # dispatch), so a window of a few of them would read as thousands of images/s.
      self._mark, self._mark_step, self._paused_mark = self._start, self._first_step, 0.0
    training = (now - self._mark) - (paused - self._paused_mark)
    rate = (step - self._mark_step) / training if training > 0 else 0.0
    left = (self._last_step - step) / rate if rate > 0 else float('nan')
    elapsed = now - self._start
    shares = ', '.join(f'{name} {100 * seconds / elapsed:.0f}%'
                       for name, seconds in self._paused.items() if seconds)
    logging.info('step %d/%d%s (epoch %.2f): %.0f img/s, %s elapsed, %s left%s', step,
                 self._last_step, _bar(step / max(self._last_step, 1)) if self._terminal else '',
                 step / max(self._steps_per_epoch, 1),
                 rate * self._batch_size, duration(elapsed),
                 duration(left) if left == left else '?', f' ({shares} of the time)' if shares else '')
    self._mark, self._mark_step, self._paused_mark = now, step, paused

  @contextlib.contextmanager
  def timed(self, name: str) -> Iterator[None]:
    """Counts the block's time as `name` ('eval', 'checkpoint'), not as training."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self._paused[name] = self._paused.get(name, 0.0) + time.perf_counter() - start


def _evaluation(metrics: dict[str, float]) -> str:
  """'eval/top1 93.81 %, eval/loss 0.2531' (and the EMA's top-1 where there is one)."""
  parts = [f'{tag} {100 * metrics[tag]:.2f} %' for tag in ('eval/top1', 'eval_ema/top1')
           if tag in metrics]
  return ', '.join(parts + [f'eval/loss {metrics["eval/loss"]:.4g}'] if 'eval/loss' in metrics
                   else parts) or 'no evaluation'


def closing_line(*, step: int, last_step: int, seconds: float, final: dict[str, float],
                 best: tuple[int, dict[str, float]] | None, workdir: str) -> str:
  """The run's last line: where it ended, its final and best evaluation, its wall time and
  where its files are."""
  best_text = ''
  if best is not None and best[0] != step:
    best_text = f'; best at step {best[0]}: {_evaluation(best[1])}'
  return (f'Done: step {step} of {last_step} in {duration(seconds)}; final: '
          f'{_evaluation(final)}{best_text}. In {workdir}: config.json, checkpoints/, '
          'TensorBoard events, last_evaluation.json')
