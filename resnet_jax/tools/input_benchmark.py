"""Input-pipeline throughput: our training pipeline against a bare decode-and-resize loop.

Both read the same folder of JPEGs in the same process run, so their ratio is robust to
a busy machine even when the absolute figures are not.
"""

import os
import pathlib
import time
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from resnet_jax.data import pipeline, sources


def usable_cores() -> int:
  """CPU cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def write_jpegs(directory: str, count: int, *, height: int = 375, width: int = 500,
                num_classes: int = 4, seed: int = 0) -> str:
  """Writes `count` photo-like JPEGs (smooth shapes plus grain, quality 90) as
  `directory/train/class_<k>/<i>.jpg`, ~500×375 like an average ImageNet image."""
  rng = np.random.RandomState(seed)
  root = pathlib.Path(directory)
  for i in range(count):
    class_dir = root / 'train' / f'class_{i % num_classes}'
    class_dir.mkdir(parents=True, exist_ok=True)
    coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (height, width), method='bicubic').numpy()
    # Grain sigma 24 makes ~109 KB files at quality 90: the size of an average ImageNet JPEG.
    pixels = np.clip(smooth + rng.normal(0, 24, smooth.shape), 0, 255).astype(np.uint8)
    (class_dir / f'{i}.jpg').write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())
  return str(root)


def _images_per_second(batches: Iterator[dict], *, warmup: int, timed: int,
                       batch_size: int) -> float:
  for _ in range(warmup):
    next(batches)
  start = time.perf_counter()
  for _ in range(timed):
    next(batches)
  return timed * batch_size / (time.perf_counter() - start)


def bare_loop(paths: list[str], *, image_size: int, batch_size: int) -> Iterator[dict]:
  """read_file → decode_jpeg → bilinear resize → batch, repeated: the floor of any pipeline."""

  def load(path):
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    return tf.image.resize(image, (image_size, image_size), method='bilinear')

  dataset = tf.data.Dataset.from_tensor_slices(paths).repeat()
  dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return dataset.as_numpy_iterator()


def measure(config: ml_collections.ConfigDict, image_dir: str, *, warmup_batches: int,
            timed_batches: int, rounds: int) -> dict[str, float]:
  """Images/s of the training pipeline of `config` and of the bare loop, on `image_dir`.

  Each round times both, alternating; the best round of each is reported, the usual
  way to read a benchmark on a shared machine.
  """
  with config.unlocked():
    config.dataset.name = sources.IMAGE_FOLDER
    config.dataset.data_dir = image_dir
    config.dataset.train_split = config.dataset.eval_split = 'train'
    config.dataset.cache = False
  source = sources.create_source(config)
  info = sources.dataset_info(source, config)
  paths = [str(p) for p in source.splits['train'].paths]
  kwargs = dict(warmup=warmup_batches, timed=timed_batches, batch_size=config.batch_size)
  ours, bare = [], []
  for _ in range(rounds):
    ours.append(_images_per_second(
        pipeline.train_batches(source, config, info, start_step=0, process_index=0,
                               process_count=1), **kwargs))
    bare.append(_images_per_second(
        bare_loop(paths, image_size=config.dataset.image_size, batch_size=config.batch_size),
        **kwargs))
  cores = usable_cores()
  return {
      'images': len(paths),
      'cores': cores,
      'batch_size': config.batch_size,
      'image_size': config.dataset.image_size,
      'augment': config.dataset.augment,
      'images_per_sec': max(ours),
      'images_per_sec_per_core': max(ours) / cores,
      'bare_images_per_sec': max(bare),
      'bare_images_per_sec_per_core': max(bare) / cores,
      'ratio_vs_bare': max(ours) / max(bare),
  }
