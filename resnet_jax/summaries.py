"""Scalars to TensorBoard event files and to the log, without TensorFlow.

clu's metric writers import TensorFlow, which a bare accelerator image lacks and the
device input never needs; TensorBoard's own EventFileWriter imports it too wherever it is
installed (for tf.io.gfile). So a local workdir's events are written here with
TensorBoard's record format and protos alone; a remote one (gs://...) goes through
EventFileWriter, whose gfile reaches it. Scalars are `simple_value` summaries: TensorBoard's
EventAccumulator lists them under Tags()['scalars'], and its plugin accumulator (which
tools/results.py reads) converts them to tensors. The config goes in as hyper-parameters
(TensorBoard's HPARAMS tab).
"""

import itertools
import os
import socket
import time

from absl import logging


_FILE_NUMBERS = itertools.count()  # two writers of one process in one second: two files


class _LocalEvents:
  """An event file in a local folder: TensorBoard's records, flushed after each write."""

  def __init__(self, logdir: str):
    from tensorboard.summary.writer import record_writer  # noqa: PLC0415
    os.makedirs(logdir, exist_ok=True)
    name = (f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.'
            f'{os.getpid()}.{next(_FILE_NUMBERS)}')
    self._records = record_writer.RecordWriter(open(os.path.join(logdir, name), 'wb'))
    self.add_event(_event(file_version='brain.Event:2'))

  def add_event(self, event) -> None:
    self._records.write(event.SerializeToString())
    self._records.flush()

  def close(self) -> None:
    self._records.close()


def _event(**fields):
  from tensorboard.compat.proto import event_pb2  # noqa: PLC0415
  return event_pb2.Event(wall_time=time.time(), **fields)


class SummaryWriter:
  """write_scalars(step, {tag: value}) to `logdir`'s event file (unless `just_logging`,
  e.g. on processes other than 0) and as one log line."""

  def __init__(self, logdir: str | None, *, just_logging: bool = False):
    self._events = None
    if logdir is not None and not just_logging:
      if '://' in logdir:
        from tensorboard.summary.writer import event_file_writer  # noqa: PLC0415
        self._events = event_file_writer.EventFileWriter(logdir)
      else:
        self._events = _LocalEvents(logdir)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if not scalars:
      return
    # clu's LoggingWriter's line, which scripts and tests read: '[step] tag=value, ...'.
    logging.info('[%d] %s', step, ', '.join(f'{tag}={float(value):.6g}'
                                            for tag, value in sorted(scalars.items())))
    if self._events is None:
      return
    from tensorboard.compat.proto import summary_pb2  # noqa: PLC0415
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
        for tag, value in scalars.items()])
    self._events.add_event(_event(step=int(step), summary=summary))

  def write_hparams(self, hparams: dict[str, bool | int | float | str]) -> None:
    """The run's settings as TensorBoard hyper-parameters (its HPARAMS tab compares runs
    by them); values other than bool, int, float and str are written as their text."""
    if self._events is None:
      return
    from tensorboard.plugins.hparams import summary_v2  # noqa: PLC0415  (no TensorFlow)
    values = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
              for key, value in hparams.items()}
    self._events.add_event(_event(step=0, summary=summary_v2.hparams_pb(values)))

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None
