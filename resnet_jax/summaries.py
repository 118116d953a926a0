"""Scalars to TensorBoard event files and to the log, without TensorFlow.

clu's metric writers import TensorFlow, which a bare accelerator image lacks (and the
device input never needs), so the trainer writes events with TensorBoard's own
pure-Python event writer. Scalars are `simple_value` summaries: TensorBoard's
EventAccumulator lists them under Tags()['scalars'], and the plugin accumulator that
tools/report.py reads converts them to its tensors.
"""

import time

from absl import logging


class SummaryWriter:
  """write_scalars(step, {tag: value}) to `logdir`'s event file (unless `just_logging`,
  e.g. on processes other than 0) and as one log line."""

  def __init__(self, logdir: str | None, *, just_logging: bool = False):
    self._events = None
    if logdir is not None and not just_logging:
      # Imported here: TensorBoard's import costs ~1 s that a logging-only writer skips.
      from tensorboard.summary.writer import event_file_writer  # noqa: PLC0415
      self._events = event_file_writer.EventFileWriter(logdir)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if not scalars:
      return
    # clu's LoggingWriter's line, which scripts and tests read: '[step] tag=value, ...'.
    logging.info('[%d] %s', step, ', '.join(f'{tag}={float(value):.6g}'
                                            for tag, value in sorted(scalars.items())))
    if self._events is None:
      return
    from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: PLC0415
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
        for tag, value in scalars.items()])
    self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary))

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None
