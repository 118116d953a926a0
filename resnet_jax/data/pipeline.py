"""tf.data pipelines over TFDS builders: per-process, deterministic, resumable, exact eval.

Training order is a function of (seed, epoch): epoch e shuffles this process's part of
the split with seed (seed, e), keeps whole batches, and gives each example a stateless
augmentation seed. Resuming at step k rebuilds the stream from k's epoch and skips the
records already used, before any decoding.
"""

import dataclasses
import math
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax.data import digits  # noqa: F401  (registers the embedded builder)
from resnet_jax.data import preprocess

# Epoch numbers stay below 2**23 so (epoch, process, index) packs into one int64.
_MAX_EPOCHS = 1 << 23


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset before building anything."""
  num_classes: int
  class_names: tuple[str, ...]
  num_train_examples: int
  num_eval_examples: int
  image_shape: tuple[int, int, int]


def check_dataset_name(name: str) -> None:
  """Raises ValueError naming `name` and the valid choices if TFDS knows no such dataset."""
  known = tfds.list_builders(with_community_datasets=False)
  if name.split(':')[0].split('/')[0] not in known:
    raise ValueError(f'unknown dataset {name!r}; valid datasets: any TFDS image '
                     f'classification dataset, e.g. sklearn_digits, cifar10, cifar100, '
                     f'imagenet2012 (all {len(known)}: tfds.list_builders())')


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder of `config.dataset`, prepared (ImageNet from `manual_dir`)."""
  builder = tfds.builder(config.dataset.name, data_dir=config.dataset.data_dir or None)
  download_config = tfds.download.DownloadConfig(
      manual_dir=config.dataset.manual_dir or None)
  builder.download_and_prepare(download_config=download_config)
  return builder


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  """Split size from the metadata, or by counting where there is none (mocked data)."""
  if split in builder.info.splits:
    count = builder.info.splits[split].num_examples
    if count:
      return count
  dataset = builder.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  return int(dataset.reduce(np.int64(0), lambda count, _: count + 1))


def dataset_info(builder: tfds.core.DatasetBuilder,
                 config: ml_collections.ConfigDict) -> DatasetInfo:
  """Class names, split sizes and the model's input shape."""
  label = builder.info.features['label']
  channels = builder.info.features['image'].shape[-1] or 3
  return DatasetInfo(
      num_classes=label.num_classes,
      class_names=tuple(label.names),
      num_train_examples=_num_examples(builder, config.dataset.train_split),
      num_eval_examples=_num_examples(builder, config.dataset.eval_split),
      image_shape=(config.dataset.image_size, config.dataset.image_size, channels))


def _process_split(split: str) -> str:
  return tfds.even_splits(split, jax.process_count())[jax.process_index()]


def _preprocess_kwargs(config: ml_collections.ConfigDict, info: DatasetInfo) -> dict[str, Any]:
  return dict(augment=config.dataset.augment, image_size=config.dataset.image_size,
              channels=info.image_shape[-1], mean=tuple(config.dataset.mean),
              std=tuple(config.dataset.std))


def train_batches(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict,
                  info: DatasetInfo, *, start_step: int) -> Iterator[dict[str, np.ndarray]]:
  """This process's training batches from global step `start_step` on, forever.

  Args:
    builder: a prepared TFDS builder.
    config: the run config (dataset.*, batch_size, seed).
    info: from dataset_info().
    start_step: the first step the batches are for (0, or the restored step).

  Yields:
    {'image': float32 [local_batch, H, W, C], 'label': int32 [local_batch]}.
  """
  local_batch = config.batch_size // jax.process_count()
  steps_per_epoch = info.num_train_examples // config.batch_size
  examples_per_epoch = steps_per_epoch * local_batch
  start_epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
  decoders = ({'image': tfds.decode.SkipDecoding()} if config.dataset.augment == 'imagenet'
              else None)
  records = builder.as_dataset(split=_process_split(config.dataset.train_split),
                               shuffle_files=False, decoders=decoders)
  records = records.map(lambda ex: {'image': ex['image'], 'label': ex['label']})
  if config.dataset.cache:
    records = records.cache()
  buffer = config.dataset.shuffle_buffer
  seed_base = np.int64(config.seed) * 1_000_003
  example_id_base = np.int64(jax.process_index()) * (1 << 32)

  def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
    shuffled = records.shuffle(buffer, seed=seed_base + epoch, reshuffle_each_iteration=False)
    first_id = epoch * (1 << 40) + example_id_base
    return shuffled.take(examples_per_epoch).enumerate().map(
        lambda index, ex: (ex, tf.stack([np.int64(config.seed), first_id + index])))

  kwargs = _preprocess_kwargs(config, info)

  def preprocess_one(example, seed):
    image = preprocess.train_image(example['image'], seed, random_flip=config.dataset.random_flip,
                                   crop_padding=config.dataset.crop_padding, **kwargs)
    return {'image': image, 'label': tf.cast(example['label'], tf.int32)}

  stream = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(one_epoch)
  stream = stream.skip(step_in_epoch * local_batch)  # Before decoding: cheap.
  stream = stream.map(preprocess_one, num_parallel_calls=tf.data.AUTOTUNE)
  stream = stream.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(stream))


def num_eval_batches(config: ml_collections.ConfigDict, info: DatasetInfo) -> int:
  """Evaluation steps that cover the largest process's part of the split."""
  local_batch = config.batch_size // jax.process_count()
  largest_part = math.ceil(info.num_eval_examples / jax.process_count())
  return math.ceil(largest_part / local_batch)


def eval_batches(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict,
                 info: DatasetInfo) -> Iterator[dict[str, np.ndarray]]:
  """This process's evaluation batches, padded to full size, with a 0/1 `mask`.

  Every process yields num_eval_batches() batches; each example of the split is in
  exactly one of them with mask 1, so masked metrics count every example once.
  """
  local_batch = config.batch_size // jax.process_count()
  kwargs = _preprocess_kwargs(config, info)
  dataset = builder.as_dataset(split=_process_split(config.dataset.eval_split),
                               shuffle_files=False)
  dataset = dataset.map(
      lambda ex: {'image': preprocess.eval_image(ex['image'], **kwargs),
                  'label': tf.cast(ex['label'], tf.int32),
                  'mask': tf.constant(1, tf.int32)},
      num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(local_batch).prefetch(tf.data.AUTOTUNE)
  emitted = 0
  for batch in tfds.as_numpy(dataset):
    yield _pad(batch, local_batch)
    emitted += 1
  empty = {'image': np.zeros((local_batch, *info.image_shape), np.float32),
           'label': np.zeros((local_batch,), np.int32), 'mask': np.zeros((local_batch,), np.int32)}
  for _ in range(num_eval_batches(config, info) - emitted):
    yield empty


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  missing = size - len(batch['label'])
  if not missing:
    return batch
  return {key: np.concatenate([value, np.zeros((missing, *value.shape[1:]), value.dtype)])
          for key, value in batch.items()}
