"""Classify image files with a trained model: the top-k class names and probabilities.

  python -m resnet_jax.tools.predict --workdir=/tmp/digits --top_k=3 a.png b.jpg
  python -m resnet_jax.tools.predict --workdir=/tmp/digits --format=json photos/  # a folder

reads a training workdir (its newest checkpoint; the weight EMA if the run kept one) or a
directory written by resnet_jax.tools.convert, prepares each file as evaluation did
(data.preprocess.eval_image, converted to the model's channels) and prints, per file, the
most probable classes. The same as a function: `predict_files(directory, files)`.
"""

import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from resnet_jax.errors import ConfigError
from resnet_jax.storage import checkpointing, trained

FORMATS = ('text', 'json')
# Leading bytes of what tf.io.decode_image reads: JPEG, PNG, GIF, BMP, WebP ('RIFF'...'WEBP').
_SIGNATURES = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'GIF87a', b'GIF89a', b'BM', b'RIFF')

Prediction = tuple[str, int, float]  # (class name, label index, probability)


class PredictError(ValueError):
  """A file that cannot be classified, or a bad argument; the message names it."""


def check_files(files: Sequence[str]) -> None:
  """Raises PredictError for the first file that is missing, unreadable or not an image.

  Reads only each file's first bytes; a file damaged after them fails in predict_files.
  """
  for path in files:
    try:
      with open(path, 'rb') as f:
        head = f.read(12)
    except OSError as error:
      raise PredictError(f'cannot read {path!r}: {error.strerror}') from None
    if not head.startswith(_SIGNATURES) or (head.startswith(b'RIFF') and head[8:] != b'WEBP'):
      raise PredictError(f'{path!r} is not a JPEG, PNG, GIF, BMP or WebP image')


def _prepare(path: Any, info: trained.ModelInfo) -> Any:
  """One file as evaluation saw its images: uint8 [size, size, channels]."""
  import tensorflow as tf  # noqa: PLC0415  (see _batches)

  from resnet_jax.data import preprocess  # noqa: PLC0415
  size, _, channels = info.image_shape
  return preprocess.eval_image(tf.io.read_file(path), augment=info.augment, image_size=size,
                               channels=channels, crop_fraction=info.eval_crop_fraction)


def _batches(files: list[str], info: trained.ModelInfo, batch_size: int) -> Any:
  """(indices, uint8 images) batches, decoded in parallel, in file order."""
  # TensorFlow prints two lines to stderr when imported, whatever TF_CPP_MIN_LOG_LEVEL
  # says: importing it here keeps an error about the arguments the only line printed.
  import tensorflow as tf  # noqa: PLC0415
  dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(files)), tf.constant(files)))
  dataset = dataset.map(lambda i, path: (i, _prepare(path, info)),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # A file that fails to decode is dropped here; the gap in the indices names it.
  return dataset.ignore_errors().batch(batch_size).prefetch(2).as_numpy_iterator()


def _decode_error(path: str, info: trained.ModelInfo) -> PredictError:
  """The error of preparing `path` alone, eagerly, for its message."""
  import tensorflow as tf  # noqa: PLC0415
  try:
    _prepare(tf.constant(path), info)
    message = 'preprocessing failed'
  except tf.errors.OpError as error:
    # Drop TF's '{{function_node ...}}' prefix and ' [Op:...] name: ' suffix.
    message = re.sub(r'\{\{.*?\}\}\s*|\s*\[Op:\w+\].*', '', error.message.splitlines()[0])
  return PredictError(f'cannot decode {path!r}: {message}')


def _probabilities(restored: trained.Restored, files: list[str], batch_size: int) -> np.ndarray:
  """Softmax probabilities [len(files), num_classes], one compiled forward for all batches."""
  info = restored.info
  logits = restored.logits_fn()
  variables = jax.device_put(restored.variables)

  @jax.jit
  def forward(variables: Any, images: jax.Array) -> jax.Array:
    return jax.nn.softmax(logits(variables, images))

  batch_size = min(batch_size, len(files))  # a few files need no padding to 32
  out = np.zeros((len(files), info.num_classes), np.float32)
  done = 0
  for indices, images in _batches(files, info, batch_size):
    expected = np.arange(done, done + len(indices))
    if not np.array_equal(indices, expected):  # ascending: the first mismatch was dropped
      raise _decode_error(files[expected[np.argmax(indices != expected)]], info)
    # Pad the last batch to the same shape, so that `forward` compiles once.
    padded = np.zeros((batch_size, *images.shape[1:]), images.dtype)
    padded[:len(images)] = images
    out[indices] = np.asarray(forward(variables, padded))[:len(indices)]
    done += len(indices)
  if done < len(files):
    raise _decode_error(files[done], info)
  return out


def predict_files(directory: str | os.PathLike, files: Sequence[str | os.PathLike], *,
                  batch_size: int = 32, top_k: int = 5, step: int | None = None,
                  weights: str = 'auto') -> list[tuple[str, list[Prediction]]]:
  """The most probable classes of each image file.

  Args:
    directory: a training workdir or a directory written by resnet_jax.tools.convert.
    files: JPEG, PNG, GIF, BMP or WebP files, of any size and channel count.
    batch_size: images per forward pass.
    top_k: classes per file (at most the model's).
    step: a checkpoint step of a workdir; None for the newest.
    weights: 'auto', 'ema' or 'live' (see trained.load_variables).

  Returns:
    Per file, in order: (file, [(class name, label index, probability), ...]), most
    probable first.

  Raises:
    PredictError: no files, a bad batch_size or top_k, or a file that cannot be read.
    ConfigError: no model in `directory`, or no such step or weights.
  """
  files = [os.fspath(f) for f in files]
  if not files:
    raise PredictError('no image files given')
  if batch_size < 1 or top_k < 1:
    raise PredictError(f'batch_size and top_k must be ≥ 1, got {batch_size} and {top_k}')
  check_files(files)  # before the model loads: a typo costs no wait
  restored = trained.restore(os.fspath(directory), step=step, weights=weights)
  probabilities = _probabilities(restored, files, batch_size)
  names = restored.info.class_names
  results = []
  for path, row in zip(files, probabilities):
    order = np.argsort(-row, kind='stable')[:top_k]
    results.append((path, [(names[i], int(i), float(row[i])) for i in order]))
  return results


def format_results(results: list[tuple[str, list[Prediction]]], output_format: str) -> str:
  """Text (a header line per file, then `  1. name  0.9876` lines) or a JSON list."""
  if output_format == 'json':
    return json.dumps([{'file': path, 'predictions': [
        {'class': name, 'index': index, 'probability': p} for name, index, p in predictions]}
                       for path, predictions in results], indent=2)
  lines = []
  for path, predictions in results:
    width = max(len(name) for name, _, _ in predictions)
    lines.append(path)
    lines += [f'  {rank}. {name:<{width}}  {p:.4f}'
              for rank, (name, _, p) in enumerate(predictions, 1)]
  return '\n'.join(lines)


def expand_folders(paths: Sequence[str]) -> list[str]:
  """`paths` with each folder replaced by the image files below it (sorted, by the
  extensions image folders read); files stay as given, checked later."""
  from resnet_jax.data import image_folder  # noqa: PLC0415
  files = []
  for path in paths:
    if not os.path.isdir(path):
      files.append(path)
      continue
    found = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                   for name in names
                   if name.lower().endswith(image_folder.IMAGE_EXTENSIONS))
    if not found:
      raise PredictError(f'folder {path!r} holds no image files '
                         f'({", ".join(image_folder.IMAGE_EXTENSIONS)})')
    files.extend(found)
  return files


def main(argv: list[str]) -> None:
  from absl import flags, logging  # noqa: PLC0415
  logging.set_verbosity(logging.WARNING)  # orbax logs a dozen INFO lines per restore
  values = flags.FLAGS
  try:
    results = predict_files(values.workdir, expand_folders(argv[1:]),
                            batch_size=values.batch_size,
                            top_k=values.top_k, step=values.step, weights=values.weights)
  except (PredictError, ConfigError, checkpointing.CheckpointError) as error:
    sys.exit(f'error: {error}')
  print(format_results(results, values.format))


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_string('workdir', None, 'A training workdir or a resnet_jax.tools.convert output.')
  flags.DEFINE_integer('batch_size', 32, 'Images per forward pass.', lower_bound=1)
  flags.DEFINE_integer('top_k', 5, 'Classes per file (at most the model\'s).', lower_bound=1)
  flags.DEFINE_integer('step', None, 'Checkpoint step of a workdir; default the newest.')
  flags.DEFINE_enum('weights', 'auto', list(trained.WEIGHTS),
                    'auto (the weight EMA if the run kept one), ema or live.')
  flags.DEFINE_enum('format', 'text', list(FORMATS), 'Output: text or json.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
