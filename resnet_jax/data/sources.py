"""Where examples come from: a TFDS dataset by name, or a folder of images.

A source lists the records of any contiguous part [start, end) of a split as cheap
tf.data elements {'image': encoded bytes or a path, 'label': int32, 'id': string};
`read` turns a record into one holding the encoded image bytes. Shuffling and skipping
happen between the two, so a resumed run skips records without reading images.
"""

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax import distributed
from resnet_jax.data import digits  # noqa: F401  (registers the embedded builder)
from resnet_jax.data import image_folder
from resnet_jax.errors import ConfigError

IMAGE_FOLDER = 'image_folder'


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset before building anything."""
  num_classes: int
  class_names: tuple[str, ...]
  num_train_examples: int
  num_eval_examples: int
  image_shape: tuple[int, int, int]


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
    if split not in self._sizes:
      known = list(self.builder.info.splits)
      try:
        self._sizes[split] = sum(self._end(i) - (i.from_ or 0) for i in self._absolute(split))
      except ValueError as error:
        if known:
          raise ConfigError(f'{key} {split!r} is not a split of {self.builder.name}: '
                            f'{" ".join(str(error).split())}') from None
        self._sizes[split] = self._count(split)
      except (KeyError, TypeError):  # No split metadata (mocked data): count.
        self._sizes[split] = self._count(split)
    return self._sizes[split]

  def _count(self, split: str) -> int:
    return int(self._read(split).reduce(np.int64(0), lambda count, _: count + 1))

  def _end(self, instruction: Any) -> int:
    """An absolute instruction's end; TFDS writes None for "to the end" (and 0 for 0)."""
    if instruction.to is None:
      return self.builder.info.splits[instruction.splitname].num_examples
    return instruction.to

  def _absolute(self, split: str) -> list[Any]:
    return tfds.core.ReadInstruction.from_spec(split).to_absolute(self.builder.info.splits)

  def _part(self, split: str, start: int, end: int) -> Any:
    """A read instruction for examples [start, end) of the concatenated split."""
    pieces, offset = [], 0
    for instruction in self._absolute(split):
      first = instruction.from_ or 0
      last = self._end(instruction)
      lo, hi = max(start, offset), min(end, offset + last - first)
      if lo < hi:
        pieces.append(tfds.core.ReadInstruction(instruction.splitname, from_=first + lo - offset,
                                                to=first + hi - offset, unit='abs'))
      offset += last - first
    return sum(pieces[1:], pieces[0])

  def _read(self, split: Any) -> tf.data.Dataset:
    return self.builder.as_dataset(
        split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(add_tfds_id=True))

  def records(self, split: str, start: int, end: int) -> tf.data.Dataset:
    """Examples [start, end) of `split` with encoded images, in storage order."""
    whole = start == 0 and end == self.split_size(split)
    if start >= end:  # More processes than examples: this one reads nothing.
      dataset = self._read(split).take(0)
    else:
      dataset = self._read(split if whole else self._part(split, start, end))
    return dataset.map(lambda ex: {'image': ex['image'], 'label': tf.cast(ex['label'], tf.int32),
                                   'id': ex['tfds_id']})

  def read(self, record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return record  # Records already carry the encoded image.

  def file_pieces(self, split: str, start: int, end: int) -> list[Any] | None:
    """TFDS's file instructions (filename, skip, take) for examples [start, end) of
    `split`, in storage order; None where the files are not TFRecords (then read the
    split through `records`)."""
    if self.builder.info.file_format != tfds.core.FileFormat.TFRECORD or start >= end:
      return None
    whole = start == 0 and end == self.split_size(split)
    try:
      return list(self.builder.info.splits[split if whole else
                                           self._part(split, start, end)].file_instructions)
    except (KeyError, TypeError, ValueError):  # No split metadata (mocked data).
      return None

  def read_piece(self, filename: tf.Tensor, skip: tf.Tensor,
                 take: tf.Tensor) -> tf.data.Dataset:
    """Records `skip` to `skip + take` of one TFRecord file, in the format of `records`
    (ids as TFDS writes them: '<file name>__<index in the file>')."""
    features = self.builder.info.features
    name = tf.strings.split(filename, '/')[-1]

    def parse(serialized: tf.Tensor, index: tf.Tensor) -> dict[str, tf.Tensor]:
      example = features.deserialize_example(serialized,
                                             decoders={'image': tfds.decode.SkipDecoding()})
      return {'image': example['image'], 'label': tf.cast(example['label'], tf.int32),
              'id': tf.strings.join([name, tf.strings.as_string(index)], '__')}

    serialized = tf.data.TFRecordDataset(filename).skip(skip).take(take)
    indices = tf.data.Dataset.range(skip, skip + take)
    return tf.data.Dataset.zip((serialized, indices)).map(parse)


class FolderSource:
  """`data_dir/<split>/<class>/<image>`, checked once at start-up."""

  def __init__(self, config: ml_collections.ConfigDict):
    data_dir = config.dataset.data_dir
    splits = (config.dataset.train_split, config.dataset.eval_split)
    self.class_names = image_folder.class_names(data_dir, splits)
    self.channels = 3
    self.splits = {split: image_folder.load_split(data_dir, split, self.class_names)
                   for split in splits}

  def split_size(self, split: str, key: str = 'split') -> int:
    del key  # A missing split folder is refused when the source is made.
    return len(self.splits[split].paths)

  def records(self, split: str, start: int, end: int) -> tf.data.Dataset:
    """Paths [start, end) of `split`, in sorted (class, file) order."""
    paths = self.splits[split].paths[start:end]
    return tf.data.Dataset.from_tensor_slices({
        'image': paths, 'label': self.splits[split].labels[start:end], 'id': paths})

  def read(self, record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
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
      image_shape=(config.dataset.image_size, config.dataset.image_size, source.channels))
