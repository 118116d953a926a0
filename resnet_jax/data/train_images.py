"""The training image of each element of the stream: its stateless augmentation key
(from the epoch and the record, so a resume draws the same crops), the host-side
augmentations of the recipe, and the resolution of the step the element is for."""

import functools
from typing import Callable

import ml_collections
import numpy as np
import tensorflow as tf

from resnet_jax.data import order, preprocess, randaugment, sources, trivialaugment


def example_key(seed: int, element: dict[str, tf.Tensor], stream_id: int,
                position: tf.Tensor) -> tf.Tensor:
  """The augmentation key of one example: (seed, epoch) folded with the stream (0 when
  processes share it, else the process) and the record's position in the epoch; copies
  of repeated augmentation beyond the first fold in their number, so copy 0 draws what
  a run without repeats draws."""
  fold = tf.random.experimental.stateless_fold_in
  key = order.epoch_key(seed, element['epoch'], order.AUGMENT)
  key = fold(fold(key, np.int64(stream_id)), tf.cast(position, tf.int64))
  if 'copy' not in element:
    return key
  return tf.where(element['copy'] > 0, fold(key, element['copy']), key)


def augmenter(config: ml_collections.ConfigDict, info: sources.DatasetInfo, *, stream_id: int,
              group: int, start_step: int, changes: list[tuple[int, int]],
              position: Callable[[dict], tf.Tensor], decode: bool) -> Callable[..., tf.Tensor]:
  """(encoded image, n, element) -> the training image of stream element n.

  Args:
    stream_id: 0 where processes share the stream, else the process.
    group: elements one step takes from the stream (n // group steps after start_step).
    changes: resolution.schedule's [(first batch, size)]; n is only read with several.
    position: element -> its record's number in the epoch (the key's position).
    decode: False gives a constant 1×1 image instead (the benchmark's read + parse).
  """
  data = config.dataset
  first_batches = tf.constant([first for first, _ in changes], tf.int64)
  sizes = [size for _, size in changes]
  channels = info.image_shape[-1]

  def augment(encoded, key, image_size):
    if not decode:  # The benchmark's read + parse figure: a constant image, no decoding.
      return tf.fill([1, 1, channels], tf.cast(tf.strings.length(encoded) % 2, tf.uint8))
    image = preprocess.train_image(
        encoded, key, augment=data.augment, image_size=image_size, channels=channels,
        random_flip=data.random_flip, crop_padding=data.crop_padding)
    if data.randaugment_layers:
      # A key of its own, so the crops and flips stay those of a run without RandAugment.
      image = randaugment.randaugment(
          image, tf.random.experimental.stateless_fold_in(key, 1),
          num_layers=data.randaugment_layers, magnitude=data.randaugment_magnitude)
    if data.trivial_augment:
      image = trivialaugment.trivial_augment_wide(
          image, tf.random.experimental.stateless_fold_in(key, 2))
    return image

  def image(encoded, n, element):
    key = example_key(config.seed, element, stream_id, position(element))
    if len(sizes) == 1:
      return augment(encoded, key, sizes[0])
    # Each branch has its static size; a batch never mixes two (its steps share one).
    # Batch b of this iterator trains step start_step + b + 1.
    batch = start_step + n // group
    size_index = tf.searchsorted(first_batches, batch[None], side='right')[0] - 1
    return tf.switch_case(tf.cast(size_index, tf.int32),
                          [functools.partial(augment, encoded, key, size) for size in sizes])
  return image
