"""Image files that fail to load (deleted, unreadable, corrupt, not an image), found by
the pipeline while it reads them rather than by a scan at start-up.

Loading a file yields a flagged blank instead of an error (`guarded_load`); a training
batch gives each flagged row the next readable image of the batch (`replace_unreadable`),
evaluation masks it out; both log the paths (`log_unreadable`). The replacements depend
on the batch alone, so batch positions and resumed runs never shift.
"""

from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from resnet_jax.errors import ConfigError

# Elements per guarded call (guarded_load): its overhead is per block.
_BLOCK = 16


def blank_image(channels: int) -> tf.Tensor:
  """A black 64×64 PNG (big enough for any crop window): what an unreadable file is
  decoded as, so that its blank has the shape and dtype of every other image."""
  return tf.constant(tf.io.encode_png(np.zeros((64, 64, channels), np.uint8)).numpy())


def guarded_load(stream: tf.data.Dataset, load: Callable[..., dict],
                 load_blank: Callable[..., dict], *, cycle_length: int) -> tf.data.Dataset:
  """stream.map(load) in parallel, except that an element whose load fails (an image
  file deleted, unreadable or corrupt) yields load_blank(element) flagged 'unreadable'.

  tf.data has no per-element try/except, and ignore_errors drops an element silently,
  shifting every later batch (and so breaking resumes). So blocks of _BLOCK elements go
  through a parallel interleave, `cycle_length` blocks at once; inside a block
  ignore_errors drops what fails, and the dropped slots are refilled with blanks. Every
  block yields all its elements, so the order is the stream's. Costs ~3 % of a decode.
  """
  def one_block(*block):
    size = tf.shape(tf.nest.flatten(block)[0])[0]
    survivors = tf.data.Dataset.from_tensor_slices(block).enumerate().map(
        lambda slot, element: (slot, load(*element))).ignore_errors(log_warning=True)
    batched = survivors.batch(_BLOCK)
    spec = batched.element_spec  # When every load fails, one empty batch stands in.
    nothing = tf.nest.map_structure(
        lambda s: tf.zeros([0] + [d or 0 for d in s.shape[1:]], s.dtype), spec)

    def refill(slots, loaded):
      def with_blanks():
        blanks = tf.map_fn(lambda i: load_blank(*tf.nest.map_structure(lambda x: x[i], block)),
                           tf.range(size), fn_output_signature=tf.nest.map_structure(
                               lambda s: tf.TensorSpec(s.shape[1:], s.dtype), spec[1]))
        return tf.nest.map_structure(
            lambda blank, got: tf.tensor_scatter_nd_update(blank, slots[:, None], got),
            blanks, loaded)
      full = tf.cond(tf.shape(slots)[0] == size, lambda: loaded, with_blanks)
      present = tf.scatter_nd(slots[:, None], tf.ones_like(slots, tf.bool), [size])
      return full | {'unreadable': tf.logical_not(present)}

    return batched.concatenate(tf.data.Dataset.from_tensors(nothing)).take(1).map(
        refill).unbatch()

  return stream.batch(_BLOCK).interleave(
      one_block, cycle_length=cycle_length, block_length=_BLOCK,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _next_readable(unreadable: tf.Tensor) -> tf.Tensor:
  """For each row, itself if readable, else the next readable row, cyclically."""
  size = tf.shape(unreadable)[0]
  rows = tf.range(2 * size)
  readable = tf.tile(tf.logical_not(unreadable), [2])
  after = rows[None, :] >= tf.range(size)[:, None]
  return tf.reduce_min(tf.where(readable[None, :] & after, rows[None, :], 2 * size), 1) % size


def replace_unreadable(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """Each unreadable row takes the next readable row's image, label and id."""
  batch = dict(batch)
  unreadable = batch.pop('unreadable')
  skipped = tf.boolean_mask(batch['id'], unreadable)
  rows = tf.cond(tf.reduce_any(unreadable) & tf.logical_not(tf.reduce_all(unreadable)),
                 lambda: _next_readable(unreadable), lambda: tf.range(tf.size(unreadable)))
  return ({key: tf.gather(value, rows) for key, value in batch.items()} |
          {'unreadable': tf.cast(unreadable, tf.int32), 'skipped': skipped})


def log_unreadable(batches: Iterator[dict[str, np.ndarray]], *,
                    training: bool) -> Iterator[dict[str, np.ndarray]]:
  """Logs the paths of unreadable images ('skipped', which it removes)."""
  seen = 0
  for batch in batches:
    skipped = batch.pop('skipped', ())
    for path in skipped:
      logging.warning('image_folder: unreadable or corrupt image %s %s', path.decode(),
                      'replaced by the next image of its batch' if training else
                      'left out of the evaluation')
    seen += len(skipped)
    if training and len(skipped) and len(skipped) == len(batch['label']):
      raise ConfigError(f'every image of a training batch failed to load (e.g. '
                        f'{skipped[0].decode()!r}): is dataset.data_dir still readable?')
    yield batch
  if seen and not training:
    logging.warning('image_folder: evaluation left out %d unreadable images', seen)
