"""Where examples come from: a TFDS dataset by name, or a folder of images.

A source lists the records of any contiguous part [start, end) of a split as cheap
tf.data elements {'image': encoded bytes or a path, 'label': int32, 'id': string};
`read` turns a record into one holding the encoded image bytes. Shuffling and skipping
happen between the two, so a resumed run skips records without reading images. A TFDS
split stored as TFRecord files is also read file by file (`file_pieces`, `file_reader`),
its records parsed where the images are decoded (`parser`).
"""

import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax import distributed
from resnet_jax.data import (
  digits,  # noqa: F401  (registers the embedded builder)
  image_folder,
)
from resnet_jax.data import dataset_info as dataset_info_lib
from resnet_jax.data.dataset_info import DatasetInfo
from resnet_jax.errors import ConfigError

IMAGE_FOLDER = image_folder.IMAGE_FOLDER


def check_dataset_name(name: str) -> None:
  """Raises ConfigError naming `name` and the valid choices if it is no dataset."""
  if name == IMAGE_FOLDER:
    return
  known = tfds.list_builders(with_community_datasets=False)
  if name.split(':')[0].split('/')[0] not in known:
    raise ConfigError(f'unknown dataset {name!r}; valid datasets: {IMAGE_FOLDER}, or a TFDS '
                      f'image classification dataset, e.g. sklearn_digits, cifar10, cifar100, '
                      f'imagenet2012 (all {len(known)}: tfds.list_builders())')


class TfdsSource:
  """A TFDS dataset, prepared on first use (ImageNet from `dataset.manual_dir`)."""

  def __init__(self, config: ml_collections.ConfigDict):
    check_dataset_name(config.dataset.name)
    data_dir = config.dataset.data_dir
    if data_dir and '://' not in data_dir and not os.path.isdir(data_dir):
      raise ConfigError(f'dataset.data_dir {data_dir!r} does not exist; leave it empty for '
                        "TFDS's default (~/tensorflow_datasets) or create it")
    self.builder = tfds.builder(config.dataset.name, data_dir=config.dataset.data_dir or None)
    download_config = tfds.download.DownloadConfig(manual_dir=config.dataset.manual_dir or None)
    # Process 0 prepares; the others wait, then find the dataset ready.
    if jax.process_index() == 0:
      self.builder.download_and_prepare(download_config=download_config)
    distributed.barrier('dataset prepared')
    if jax.process_index() > 0:
      self.builder = tfds.builder(config.dataset.name, data_dir=config.dataset.data_dir or None)
      self.builder.download_and_prepare(download_config=download_config)
    features = self.builder.info.features
    self.class_names = tuple(features['label'].names)
    self.channels = features['image'].shape[-1] or 3
    self._sizes: dict[str, int] = {}

  def split_size(self, split: str, key: str = 'split') -> int:
    """Examples in `split` (a TFDS split spec such as 'train[:45000]'); ConfigError
    naming the config `key` if the spec names no split of the dataset."""
    return self.part_size(split, 0, 1, key)

  def part(self, split: str, index: int, count: int) -> Any:
    """Part `index` of `count` of `split`: tfds.even_splits (each of a compound spec's
    splits divided evenly, the first parts one example larger)."""
    return split if count == 1 else tfds.even_splits(split, count)[index]

  def part_size(self, split: str, index: int, count: int, key: str = 'split') -> int:
    """Examples in part(split, index, count)."""
    if (split, index, count) not in self._sizes:
      try:
        size = self.builder.info.splits[self.part(split, index, count)].num_examples
      except (KeyError, ValueError) as error:
        if not self.builder.info.splits:  # No split metadata (mocked data): count.
          size = self._count(self.part(split, index, count))
        else:
          raise ConfigError(f'{key} {split!r} is not a split of {self.builder.name}: '
                            f'{" ".join(str(error).split())}') from None
      self._sizes[split, index, count] = size
    return self._sizes[split, index, count]

  def fingerprint(self, split: str) -> str:
    """dataset_info.fingerprint of the dataset's name and version, the spec and its size."""
    return dataset_info_lib.fingerprint(
        (self.builder.info.full_name, split, str(self.split_size(split))))

  def _count(self, split: Any) -> int:
    return int(self._read(split).reduce(np.int64(0), lambda count, _: count + 1))

  def _read(self, split: Any) -> tf.data.Dataset:
    return self.builder.as_dataset(
        split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(add_tfds_id=True))

  def records(self, split: str, index: int = 0, count: int = 1) -> tf.data.Dataset:
    """Part `index` of `count` of `split` (see `part`) with encoded images, in storage
    order."""
    if self.part_size(split, index, count):
      dataset = self._read(self.part(split, index, count))
    else:  # More processes than examples; TFDS refuses to read an empty part.
      dataset = self._read(split).take(0)
    return dataset.map(lambda ex: {'image': ex['image'], 'label': tf.cast(ex['label'], tf.int32),
                                   'id': ex['tfds_id']})

  def read(self, record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return record  # Records already carry the encoded image.

  def file_pieces(self, split: str, index: int = 0, count: int = 1) -> list[Any] | None:
    """TFDS's file instructions (filename, skip, take) for part(split, index, count), in
    storage order; None where the files are not TFRecords (then read the split through
    `records`)."""
    if (self.builder.info.file_format != tfds.core.FileFormat.TFRECORD or
        not self.builder.info.splits or not self.part_size(split, index, count)):
      return None
    return list(self.builder.info.splits[self.part(split, index, count)].file_instructions)

  def file_reader(self, pieces: list[Any]) -> Callable[[tf.Tensor], tf.data.Dataset]:
    """file -> the serialized records of pieces[file], a TFDS file instruction: records
    `skip` to `skip + take` of one TFRecord file."""
    filenames = tf.constant([piece.filename for piece in pieces])
    firsts = tf.constant([piece.skip for piece in pieces], tf.int64)
    takes = tf.constant([piece.take for piece in pieces], tf.int64)
    return lambda file: tf.data.TFRecordDataset(filenames[file]).skip(firsts[file]).take(
        takes[file])

  def parser(self, pieces: list[Any]) -> Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """{'serialized', 'file': an index into `pieces`, 'index': the record's within the
    piece} -> a record in the format of `records` (ids as TFDS writes them: '<file
    name>__<index in the file>')."""
    features = self.builder.info.features
    names = tf.constant([os.path.basename(piece.filename) for piece in pieces])
    firsts = tf.constant([piece.skip for piece in pieces], tf.int64)

    def parse(record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
      example = features.deserialize_example(record['serialized'],
                                             decoders={'image': tfds.decode.SkipDecoding()})
      index_in_file = firsts[record['file']] + record['index']
      return {'image': example['image'], 'label': tf.cast(example['label'], tf.int32),
              'id': tf.strings.join([names[record['file']],
                                     tf.strings.as_string(index_in_file)], '__')}
    return parse


class FolderSource:
  """`data_dir/<split>/<class>/<image>`, listed once at start-up (no image is opened)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.data_dir = config.dataset.data_dir
    self.class_names, self.splits = image_folder.list_splits(
        config.dataset.data_dir, *image_folder.config_splits(config))
    self.channels = config.dataset.channels  # files are decoded to it: 1 grayscale, 3 RGB

  def split_size(self, split: str, key: str = 'split') -> int:
    del key  # A missing split folder is refused when the source is made.
    return len(self.splits[split].paths)

  def _part(self, split: str, index: int, count: int) -> np.ndarray:
    # Sizes as tfds.even_splits makes them (the first parts one larger), each part a
    # sample of the class-sorted listing drawn once with a fixed key (not the run's seed,
    # so every run splits a folder alike): a contiguous block would give each process,
    # and so each BN group, a few classes.
    size = self.split_size(split)
    drawn = np.arange(size) if count == 1 else np.random.default_rng(0).permutation(size)
    return np.sort(np.array_split(drawn, count)[index])

  def fingerprint(self, split: str) -> str:
    """dataset_info.fingerprint of the split's file list."""
    start = len(os.path.join(self.data_dir, split, ''))  # paths below it, data_dir apart
    folder = self.splits[split]
    return dataset_info_lib.fingerprint(
        f'{label} {path[start:]}'
        for path, label in zip(folder.paths.tolist(), folder.labels.tolist()))

  def part_size(self, split: str, index: int, count: int, key: str = 'split') -> int:
    del key
    return len(self._part(split, index, count))

  def records(self, split: str, index: int = 0, count: int = 1) -> tf.data.Dataset:
    """Part `index` of `count` of `split`'s paths, in sorted (class, file) order."""
    part = self._part(split, index, count)
    paths = self.splits[split].paths[part]
    return tf.data.Dataset.from_tensor_slices({
        'image': paths, 'label': self.splits[split].labels[part], 'id': paths})

  def read(self, record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The record with the image file's bytes in place of its path."""
    return record | {'image': tf.io.read_file(record['image'])}


def create_source(config: ml_collections.ConfigDict) -> TfdsSource | FolderSource:
  """The source named by `config.dataset.name`."""
  if config.dataset.name == IMAGE_FOLDER:
    return FolderSource(config)
  return TfdsSource(config)


def dataset_info(source: TfdsSource | FolderSource,
                 config: ml_collections.ConfigDict) -> DatasetInfo:
  """Class names, split sizes and the model's input shape.

  Raises:
    ConfigError: a split that does not exist or holds no examples (caught at start-up,
      not after an epoch of training).
  """
  sizes = {}
  for key in ('train_split', 'eval_split'):
    split = config.dataset[key]
    sizes[key] = source.split_size(split, f'dataset.{key}')
    if not sizes[key]:
      raise ConfigError(f'dataset.{key} {split!r} holds no examples')
  return DatasetInfo(
      num_classes=len(source.class_names),
      class_names=source.class_names,
      num_train_examples=sizes['train_split'],
      num_eval_examples=sizes['eval_split'],
      image_shape=(config.dataset.image_size, config.dataset.image_size, source.channels),
      train_fingerprint=source.fingerprint(config.dataset.train_split))
