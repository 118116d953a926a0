"""tf.data pipelines: deterministic resumable order, per-process reading, exact evaluation.

Training order is a function of (seed, epoch): epoch e shuffles the records with seed
(seed, e), epochs follow each other without a gap, and every example gets a stateless
augmentation seed from its position. Resuming at step k skips the records already used
before any image is read or decoded. Two ways to split the work over P processes
(`dataset.order`):

- 'global': every process walks the same shuffled stream of the whole split and keeps
  its slice of each global batch, so the global batches, and hence the trained
  parameters, do not depend on P. Every process reads every record (for an image
  folder: every path; the images themselves are read only by their process).
- 'per_process': process p reads only examples [p·N/P, (p+1)·N/P) and shuffles them:
  each host reads 1/P of the data, and an epoch is still the whole split.

With one process the two are the same. Evaluation always reads per process, pads the
last batch and masks the padding, so every example counts exactly once.
"""

import math
from typing import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax.data import preprocess, randaugment, sources

# (epoch < 2**15, process < 2**16, position < 2**32) packs into one int64 seed.
_MAX_EPOCHS = 1 << 15
ORDERS = ('global', 'per_process')


def part_bounds(num_examples: int, index: int, count: int) -> tuple[int, int]:
  """[start, end) of part `index` of `count` near-equal contiguous parts."""
  return num_examples * index // count, num_examples * (index + 1) // count


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = True
  return options


def _drop_ids(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {key: value for key, value in batch.items() if key != 'id'}


def train_batches(source: sources.TfdsSource | sources.FolderSource,
                  config: ml_collections.ConfigDict, info: sources.DatasetInfo, *,
                  start_step: int, process_index: int | None = None,
                  process_count: int | None = None,
                  with_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """This process's training batches for global steps start_step, start_step + 1, ...

  Args:
    source: from sources.create_source().
    config: the run config (dataset.*, batch_size, seed).
    info: from sources.dataset_info().
    start_step: the first step the batches are for (0, or the restored step).
    process_index: this process (default: jax.process_index()).
    process_count: all processes (default: jax.process_count()).
    with_ids: also yield each example's id (TFDS id or file path).

  Yields:
    {'image': uint8 [local_batch, H, W, C], 'label': int32 [local_batch]} (+ 'id').
  """
  index, count = _processes(process_index, process_count)
  local_batch = config.batch_size // count
  shared_stream = config.dataset.order == 'global'
  start, end = ((0, info.num_train_examples) if shared_stream else
                part_bounds(info.num_train_examples, index, count))
  epoch_length = end - start
  stream_batch = config.batch_size if shared_stream else local_batch
  start_epoch, skip = divmod(start_step * stream_batch, epoch_length)
  records = source.records(config.dataset.train_split, start, end)
  read_after_shuffle = not config.dataset.cache
  if config.dataset.cache:
    records = records.map(source.read, num_parallel_calls=tf.data.AUTOTUNE).cache()
  buffer = (epoch_length if isinstance(source, sources.FolderSource)  # paths: shuffle fully
            else config.dataset.shuffle_buffer)
  seed_base = np.int64(config.seed) * 1_000_003
  # Augmentation seeds: unique per (epoch, stream, position); the same for every process
  # when they share the stream.
  first_position = np.int64(0 if shared_stream else index) * (1 << 32)

  def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
    shuffled = records.shuffle(buffer, seed=seed_base + epoch, reshuffle_each_iteration=False)
    first = epoch * (1 << 48) + first_position
    return shuffled.enumerate().map(
        lambda position, record: (record, tf.stack([np.int64(config.seed), first + position]),
                                  epoch * epoch_length + position))

  def mine(record, seed, stream_index):
    del record, seed
    return (stream_index % config.batch_size) // local_batch == index

  def preprocess_one(record, seed, stream_index):
    del stream_index
    if read_after_shuffle:
      record = source.read(record)
    image = preprocess.train_image(
        record['image'], seed, augment=config.dataset.augment,
        image_size=config.dataset.image_size, channels=info.image_shape[-1],
        random_flip=config.dataset.random_flip, crop_padding=config.dataset.crop_padding)
    if config.dataset.randaugment_layers:
      # A seed of its own, so the crops and flips stay those of a run without RandAugment.
      image = randaugment.randaugment(
          image, tf.random.experimental.stateless_fold_in(seed, 1),
          num_layers=config.dataset.randaugment_layers,
          magnitude=config.dataset.randaugment_magnitude)
    return {'image': image, 'label': record['label'], 'id': record['id']}

  stream = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(one_epoch)
  stream = stream.skip(skip)  # Before reading or decoding: cheap.
  if shared_stream and count > 1:
    stream = stream.filter(mine)
  stream = stream.map(preprocess_one, num_parallel_calls=tf.data.AUTOTUNE)
  stream = stream.batch(local_batch, drop_remainder=True)
  if not with_ids:
    stream = stream.map(_drop_ids)
  stream = stream.prefetch(tf.data.AUTOTUNE).with_options(_options())
  return iter(tfds.as_numpy(stream))


def num_eval_batches(config: ml_collections.ConfigDict, info: sources.DatasetInfo,
                     process_count: int | None = None) -> int:
  """Evaluation steps that cover the largest process's part of the split."""
  count = jax.process_count() if process_count is None else process_count
  largest_part = math.ceil(info.num_eval_examples / count)
  return math.ceil(largest_part / (config.batch_size // count))


def eval_batches(source: sources.TfdsSource | sources.FolderSource,
                 config: ml_collections.ConfigDict, info: sources.DatasetInfo, *,
                 process_index: int | None = None, process_count: int | None = None,
                 with_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """This process's evaluation batches, padded to full size, with a 0/1 int32 `mask`.

  Every process yields num_eval_batches() batches; each example of the split is in
  exactly one of them with mask 1, so masked metrics count every example once.
  """
  index, count = _processes(process_index, process_count)
  local_batch = config.batch_size // count
  start, end = part_bounds(info.num_eval_examples, index, count)
  records = source.records(config.dataset.eval_split, start, end)

  def preprocess_one(record):
    record = source.read(record)
    image = preprocess.eval_image(record['image'], augment=config.dataset.augment,
                                  image_size=config.dataset.image_size,
                                  channels=info.image_shape[-1])
    return {'image': image, 'label': record['label'], 'id': record['id'],
            'mask': tf.constant(1, tf.int32)}

  dataset = records.map(preprocess_one, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(local_batch)
  if not with_ids:
    dataset = dataset.map(_drop_ids)
  dataset = dataset.prefetch(tf.data.AUTOTUNE).with_options(_options())
  emitted = 0
  for batch in tfds.as_numpy(dataset):
    yield _pad(batch, local_batch)
    emitted += 1
  empty = {'image': np.zeros((local_batch, *info.image_shape), np.uint8),
           'label': np.zeros((local_batch,), np.int32), 'mask': np.zeros((local_batch,), np.int32)}
  if with_ids:
    empty['id'] = np.full((local_batch,), b'', object)
  for _ in range(num_eval_batches(config, info, count) - emitted):
    yield empty


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  missing = size - len(batch['label'])
  if not missing:
    return batch
  def padding(value):
    if value.dtype == object:  # example ids
      return np.full((missing, *value.shape[1:]), b'', object)
    return np.zeros((missing, *value.shape[1:]), value.dtype)
  return {key: np.concatenate([value, padding(value)]) for key, value in batch.items()}
