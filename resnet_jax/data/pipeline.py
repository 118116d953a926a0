"""tf.data pipelines: deterministic resumable order, per-process reading, exact evaluation.

Training order is a function of (seed, epoch), epochs follow each other without a gap,
and every example gets a stateless augmentation seed from its position in the stream.
A TFDS split stored as TFRecord files is read file by file: each epoch draws its own
order of the files from (seed, epoch), and shuffles each file's records with a seed of
(seed, epoch, file) in a buffer that never spans two files. Resuming at step k therefore
skips whole files unopened, by the lengths TFDS records for them, and reads at most one
file's records before its first batch. The files of a TFDS split are each a random
sample of it (TFDS shuffles examples when it writes them), so batches drawn from one or
two files at a time are unbiased. Image folders (paths only) and cached splits (in
memory) are shuffled whole each epoch instead, and skipping costs nothing there. Two
ways to split the work over P processes (`dataset.order`):

- 'global': every process walks the same shuffled stream of the whole split and keeps
  its slice of each global batch, so the global batches, and hence the trained
  parameters, do not depend on P. Every process reads every record (for an image
  folder: every path; the images themselves are read only by their process).
- 'per_process': process p reads only examples [p·N/P, (p+1)·N/P) and shuffles them:
  each host reads 1/P of the data, and an epoch is still the whole split.

With one process the two are the same. Evaluation always reads per process, pads the
last batch and masks the padding, so every example counts exactly once.
"""

import functools
import math
import os
from typing import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from clu import deterministic_data

from resnet_jax.data import preprocess, randaugment, resolution, sources, trivialaugment

# (epoch < 2**15, process < 2**16, position < 2**32) packs into one int64 seed.
_MAX_EPOCHS = 1 << 15
ORDERS = ('global', 'per_process')


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def host_cpus() -> int:
  """CPUs this process may use: its affinity mask (taskset, srun --cpu-bind, cgroups
  cpusets), capped by SLURM_CPUS_PER_TASK; not the node's count, which every process
  of a multi-process node would otherwise claim for itself."""
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  slurm = os.environ.get('SLURM_CPUS_PER_TASK', '')
  if slurm.isdigit() and int(slurm) > 0:
    cpus = min(cpus or 1, int(slurm))
  return max(cpus or 1, 1)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = True
  cpus = host_cpus()
  options.autotune.cpu_budget = cpus
  options.threading.private_threadpool_size = cpus
  # Parallelism comes from the maps' parallel calls on that pool; ops that also split
  # themselves across threads would oversubscribe it (TF's tf.data performance guide).
  options.threading.max_intra_op_parallelism = 1
  return options


def _drop_ids(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {key: value for key, value in batch.items() if key != 'id'}


def _file_ordered(source: sources.TfdsSource, pieces: list, start_epoch: int, skip: int,
                  seed: int, buffer: int) -> tf.data.Dataset:
  """(record, epoch, position in epoch) from `pieces` (TFDS file instructions) read file
  by file in an order drawn per epoch, from position `skip` of `start_epoch` on."""
  filenames = tf.constant([piece.filename for piece in pieces])
  firsts = tf.constant([piece.skip for piece in pieces], tf.int64)
  lengths = np.array([piece.take for piece in pieces], np.int64)
  takes = tf.constant(lengths)

  def order(epoch) -> tf.Tensor:  # the same op eagerly (below) and inside tf.data
    draws = tf.random.stateless_uniform([len(pieces)], seed=tf.stack(
        [tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]))
    return tf.cast(tf.argsort(draws), tf.int64)

  def one_file(epoch, piece) -> tf.data.Dataset:
    records = source.read_piece(filenames[piece], firsts[piece], takes[piece])
    return records.shuffle(tf.minimum(takes[piece], buffer),
                           seed=seed + epoch * 1_000_003 + piece + 1,
                           reshuffle_each_iteration=False)

  def epoch_records(epoch, first_piece=0) -> tf.data.Dataset:
    files = tf.data.Dataset.from_tensor_slices(order(epoch)[first_piece:])
    return files.flat_map(lambda piece: one_file(epoch, piece))

  first_order = order(start_epoch).numpy()
  ends = np.cumsum(lengths[first_order])
  whole_files = int(np.searchsorted(ends, skip, side='right'))
  within = skip - (int(ends[whole_files - 1]) if whole_files else 0)
  if skip:
    logging.info('Resuming the data at epoch %d, example %d: %d of %d files skipped unread, '
                 '%d records of the next read and dropped', start_epoch, skip, whole_files,
                 len(pieces), within)
  first = epoch_records(start_epoch, whole_files).skip(within).enumerate(start=skip).map(
      lambda position, record: (record, tf.constant(start_epoch, tf.int64), position))
  rest = tf.data.Dataset.range(start_epoch + 1, _MAX_EPOCHS).flat_map(
      lambda epoch: epoch_records(epoch).enumerate().map(
          lambda position, record: (record, epoch, position)))
  return first.concatenate(rest)


def _fully_shuffled(records: tf.data.Dataset, start_epoch: int, skip: int, seed: int,
                    buffer: int) -> tf.data.Dataset:
  """(record, epoch, position in epoch): `records` shuffled each epoch with (seed, epoch),
  from position `skip` of `start_epoch` on (skipped before anything is read)."""
  def one_epoch(epoch):
    shuffled = records.shuffle(buffer, seed=seed + epoch, reshuffle_each_iteration=False)
    return shuffled.enumerate().map(lambda position, record: (record, epoch, position))
  return tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(one_epoch).skip(skip)


def train_batches(source: sources.TfdsSource | sources.FolderSource,
                  config: ml_collections.ConfigDict, info: sources.DatasetInfo, *,
                  start_step: int, examples_before: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  with_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """This process's training batches for global steps start_step, start_step + 1, ...

  Args:
    source: from sources.create_source().
    config: the run config (dataset.*, batch_size, seed).
    info: from sources.dataset_info().
    start_step: the first step the batches are for (0, or the restored step).
    examples_before: training examples the run consumed before start_step (default:
      start_step × batch_size; workdir.examples_trained after a batch-size change).
    process_index: this process (default: jax.process_index()).
    process_count: all processes (default: jax.process_count()).
    with_ids: also yield each example's id (TFDS id or file path).

  Yields:
    {'image': uint8 [local_batch, H, W, C], 'label': int32 [local_batch]} (+ 'id').
  """
  index, count = _processes(process_index, process_count)
  local_batch = config.batch_size // count
  shared_stream = config.dataset.order == 'global'
  part = (0, 1) if shared_stream else (index, count)
  # Repeated augmentation: each group (a global batch, or this process's share of it with
  # per_process reading) holds `repeats` copies of ceil(group / repeats) images drawn from
  # the stream, copy after copy (the last copy cut short where repeats does not divide the
  # group, as timm's RepeatAugSampler pads), so the copies of an image lie
  # ceil(group / repeats) apart: on different devices as long as repeats <= the devices
  # the group spans.
  repeats = config.dataset.repeated_augmentation
  group = config.batch_size if shared_stream else local_batch
  per_group = -(-group // repeats)
  epoch_length = source.part_size(config.dataset.train_split, *part)
  consumed = start_step * config.batch_size if examples_before is None else examples_before
  # The stream's own position: every example counted once, however many copies it gets.
  start_epoch, skip = divmod((consumed if shared_stream else consumed // count) * per_group
                             // group, epoch_length)
  seed_base = int(config.seed) * 1_000_003
  pieces = (source.file_pieces(config.dataset.train_split, *part)
            if isinstance(source, sources.TfdsSource) and not config.dataset.cache else None)
  if pieces:
    stream = _file_ordered(source, pieces, start_epoch, skip, seed_base,
                           config.dataset.shuffle_buffer)
  else:
    records = source.records(config.dataset.train_split, *part)
    if config.dataset.cache:
      records = records.map(source.read, num_parallel_calls=tf.data.AUTOTUNE).cache()
    # Paths and cached records are cheap to hold: shuffle whole epochs.
    whole = isinstance(source, sources.FolderSource) or config.dataset.cache
    stream = _fully_shuffled(records, start_epoch, skip, seed_base,
                             epoch_length if whole else config.dataset.shuffle_buffer)
  read_after_shuffle = not config.dataset.cache
  # Augmentation seeds: unique per (epoch, stream, position, copy); the same for every
  # process when they share the stream.
  first_position = np.int64(0 if shared_stream else index) * (1 << 32)
  # Batch b of this iterator trains step start_step + b + 1; its resolution is fixed.
  changes = resolution.schedule(config, info.num_train_examples // config.batch_size)
  first_batches = tf.constant([first for first, _ in changes], tf.int64)
  sizes = [size for _, size in changes]

  if repeats > 1:
    def copies(record, epoch, position):
      window = tf.data.Dataset.zip((record, epoch, position))
      copy = tf.data.Dataset.range(group).map(lambda i: i // per_group)
      return tf.data.Dataset.zip((window.repeat(repeats).take(group), copy))

    stream = stream.window(per_group, drop_remainder=True).flat_map(copies)
  else:
    stream = stream.map(lambda record, epoch, position: ((record, epoch, position),
                                                         tf.constant(0, tf.int64)))
  stream = stream.enumerate()  # the n-th example this iterator yields, over all processes

  def with_seed(n, element):
    (record, epoch, position), copy = element
    seed = tf.stack([np.int64(config.seed), epoch * (1 << 48) + first_position + position])
    # Copy 0 keeps the seed of a run without repeats; the others draw their own crops.
    seed = tf.where(copy > 0, tf.random.experimental.stateless_fold_in(seed, 1000 + copy), seed)
    batch = start_step + n // group
    size_index = tf.searchsorted(first_batches, batch[None], side='right')[0] - 1
    return record, seed, n, size_index

  def mine(record, seed, n, size_index):
    del record, seed, size_index
    return (n % config.batch_size) // local_batch == index

  def augment(record, seed, image_size):
    image = preprocess.train_image(
        record['image'], seed, augment=config.dataset.augment, image_size=image_size,
        channels=info.image_shape[-1], random_flip=config.dataset.random_flip,
        crop_padding=config.dataset.crop_padding)
    if config.dataset.randaugment_layers:
      # A seed of its own, so the crops and flips stay those of a run without RandAugment.
      image = randaugment.randaugment(
          image, tf.random.experimental.stateless_fold_in(seed, 1),
          num_layers=config.dataset.randaugment_layers,
          magnitude=config.dataset.randaugment_magnitude)
    if config.dataset.trivial_augment:
      image = trivialaugment.trivial_augment_wide(
          image, tf.random.experimental.stateless_fold_in(seed, 2))
    return image

  def preprocess_one(record, seed, n, size_index):
    del n
    if read_after_shuffle:
      record = source.read(record)
    if len(sizes) == 1:
      image = augment(record, seed, sizes[0])
    else:  # Each branch has its static size; a batch never mixes two (see with_seed).
      image = tf.switch_case(tf.cast(size_index, tf.int32),
                             [functools.partial(augment, record, seed, size) for size in sizes])
    return {'image': image, 'label': record['label'], 'id': record['id']}

  stream = stream.map(with_seed)
  if shared_stream and count > 1:
    stream = stream.filter(mine)
  stream = stream.map(preprocess_one, num_parallel_calls=tf.data.AUTOTUNE)
  stream = stream.batch(local_batch, drop_remainder=True)
  if not with_ids:
    stream = stream.map(_drop_ids)
  stream = stream.prefetch(tf.data.AUTOTUNE).with_options(_options())
  return iter(tfds.as_numpy(stream))


def num_eval_batches(source: sources.TfdsSource | sources.FolderSource,
                     config: ml_collections.ConfigDict, process_count: int | None = None) -> int:
  """Evaluation steps that cover the largest process's part of the split."""
  count = jax.process_count() if process_count is None else process_count
  largest_part = max(source.part_size(config.dataset.eval_split, index, count)
                     for index in range(count))
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
  records = source.records(config.dataset.eval_split, index, count)

  def preprocess_one(record):
    record = source.read(record)
    image = preprocess.eval_image(record['image'], augment=config.dataset.augment,
                                  image_size=resolution.eval_image_size(config),
                                  channels=info.image_shape[-1],
                                  crop_fraction=config.dataset.eval_crop_fraction)
    return {'image': image, 'label': record['label'], 'id': record['id']}

  dataset = records.map(preprocess_one, num_parallel_calls=tf.data.AUTOTUNE)
  # Every process pads its part up to the same number of batches, with mask 0.
  dataset = deterministic_data.pad_dataset(
      dataset, batch_dims=[local_batch], pad_up_to_batches=num_eval_batches(source, config, count),
      cardinality=source.part_size(config.dataset.eval_split, index, count))
  dataset = dataset.map(lambda example: example | {'mask': tf.cast(example['mask'], tf.int32)})
  dataset = dataset.batch(local_batch, drop_remainder=True)
  if not with_ids:
    dataset = dataset.map(_drop_ids)
  dataset = dataset.prefetch(tf.data.AUTOTUNE).with_options(_options())
  yield from tfds.as_numpy(dataset)
