"""What a run prints: library noise kept off the console unless asked for (--verbosity=1).

Kept off: orbax's, TFDS's and TensorBoard's INFO lines, orbax's "Metadata file does not
exist" warning on every restore (harmless: the restore does not need that file), JAX's
"Unable to initialize backend 'tpu'" on machines without one, TensorFlow's deprecation
notices from inside tensorflow-datasets, and the oneDNN and CPU-feature banner TensorFlow's
C++ prints while it is imported (TF_CPP_MIN_LOG_LEVEL does not reach it).
"""

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from typing import Iterator

from absl import logging as absl_logging

# (path fragment of the emitting module, text in the message): each a line nobody acts on.
_NOISE = (('/jax/_src/xla_bridge.py', 'Unable to initialize backend'),
          ('/orbax/', 'Metadata file does not exist'),
          ('/tensorflow/python/util/deprecation', ''),
          ('/tensorflow_datasets/', 'is deprecated'))
# Packages whose INFO lines are theirs, not the run's (their warnings stay): orbax's per
# checkpoint, TFDS's "Reusing dataset", TensorBoard's event-file reader.
_INFO_NOISE = ('/orbax/', '/tensorflow_datasets/', '/tensorboard/')


def _is_noise(record: logging.LogRecord) -> bool:
  path = record.pathname.replace(os.sep, '/')
  if record.levelno < logging.WARNING and any(package in path for package in _INFO_NOISE):
    return True
  return any(fragment in path and text in record.getMessage() for fragment, text in _NOISE)


def quiet_libraries() -> None:
  """Filters the noise above out of absl's handler, unless --verbosity is above 0."""
  if absl_logging.get_verbosity() > 0:
    return
  absl_logging.get_absl_handler().addFilter(lambda record: not _is_noise(record))


@contextlib.contextmanager
def stderr_held_back() -> Iterator[None]:
  """Holds back what C++ code writes to file descriptor 2 inside the block; shown after
  all if the block raises (an import that fails keeps its reasons). Not held with
  --verbosity>0, nor in a multi-process run, where a peer's failure may end this process
  inside the block (its last words must reach the console)."""
  import jax  # noqa: PLC0415
  if absl_logging.get_verbosity() > 0 or jax.process_count() > 1:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode='w+b') as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      held.seek(0)
      os.write(2, held.read())
      raise
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow with its import-time banner held back (a no-op once imported)."""
  if 'tensorflow' in sys.modules:
    return
  with stderr_held_back():
    importlib.import_module('tensorflow')
