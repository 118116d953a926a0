"""Photo-like JPEGs of ImageNet's size, as a folder or as a TFDS dataset of N TFRecord files.

For measuring input pipelines at the size users run (ImageNet: 1,024 training files of
~1,250 records, ~110 KB a JPEG) without the data, and for tests (tiny images, few files).
A pool of distinct JPEGs is encoded once and reused across records: decoding costs what a
real file of that size costs, and a big dataset is written in seconds.
"""

import os
import pathlib

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

TFDS_NAME = 'synthetic_jpegs'


def jpeg_pool(count: int, *, height: int = 375, width: int = 500, seed: int = 0) -> list[bytes]:
  """`count` distinct JPEGs, quality 90: smooth colour fields plus grain. At 500×375
  (an average ImageNet image) each is ~109 KB, an average ImageNet file's size."""
  rng = np.random.RandomState(seed)
  pool = []
  for _ in range(count):
    coarse = rng.uniform(0, 255, (height // 25 + 2, width // 25 + 2, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (height, width), method='bicubic').numpy()
    pixels = np.clip(smooth + rng.normal(0, 24, smooth.shape), 0, 255).astype(np.uint8)
    pool.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
  return pool


def write_folder(directory: str, count: int, *, splits: tuple[str, ...] = ('train',),
                 num_classes: int = 4, pool_size: int = 64, height: int = 375,
                 width: int = 500) -> str:
  """`directory/<split>/class_<k>/<i>.jpg`, `count` files per split; returns `directory`."""
  pool = jpeg_pool(min(pool_size, count), height=height, width=width)
  root = pathlib.Path(directory)
  for split in splits:
    for k in range(num_classes):
      (root / split / f'class_{k}').mkdir(parents=True, exist_ok=True)
    for i in range(count):
      (root / split / f'class_{i % num_classes}' / f'{i}.jpg').write_bytes(pool[i % len(pool)])
  return str(root)


class SyntheticJpegs(tfds.core.GeneratorBasedBuilder):
  """JPEG records ('image', 'label') in the layout TFDS gives ImageNet; see write_tfds."""

  VERSION = tfds.core.Version('1.0.0')

  NUM_CLASSES = 1000  # fixed: a reader rebuilds the builder with the defaults below

  def __init__(self, *, examples: tuple[int, int] = (0, 0), height: int = 375,
               width: int = 500, pool_size: int = 64, **kwargs):
    self._examples = dict(zip(('train', 'validation'), examples))
    self._shape, self._pool_size = (height, width), pool_size
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='Synthetic photo-like JPEGs for input-pipeline benchmarks and tests.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)}),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    pool = jpeg_pool(self._pool_size, height=self._shape[0], width=self._shape[1])
    return {split: self._generate_examples(pool, count)
            for split, count in self._examples.items() if count}

  def _generate_examples(self, pool: list[bytes], count: int):
    for i in range(count):
      yield i, {'image': pool[i % len(pool)], 'label': i % self.NUM_CLASSES}


def write_tfds(data_dir: str, *, num_files: int, per_file: int, eval_examples: int = 0,
               height: int = 375, width: int = 500, pool_size: int = 64) -> str:
  """Prepares `synthetic_jpegs` in `data_dir`: a train split of `num_files` TFRecord files
  of `per_file` records each (and a validation split of `eval_examples` in as many files,
  if any); returns `data_dir`. Read it with dataset.name='synthetic_jpegs' once this
  module is imported (which registers the builder)."""
  os.makedirs(data_dir, exist_ok=True)
  builder = SyntheticJpegs(data_dir=data_dir, examples=(num_files * per_file, eval_examples),
                           height=height, width=width, pool_size=pool_size)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      num_shards=num_files))
  return data_dir
