"""A user's folder of images as a dataset: `<data_dir>/<split>/<class>/<image>`.

Class names are the sorted subfolder names, identical across splits. Every file is
checked once by a parallel decode before training; unreadable or corrupt ones are
skipped, counted and logged with their path, so training never crashes on them.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from resnet_jax.errors import ConfigError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


@dataclasses.dataclass(frozen=True)
class FolderSplit:
  """The readable images of one split, in sorted (class, file) order."""
  paths: np.ndarray  # str
  labels: np.ndarray  # int32
  skipped: tuple[str, ...]  # unreadable or corrupt files left out


def class_names(data_dir: str, splits: tuple[str, ...]) -> tuple[str, ...]:
  """The sorted class folders, checked to be the same and non-empty in every split.

  Raises:
    ConfigError: a missing data_dir or split folder, an empty class folder, or a class
      present in one split but not in another.
  """
  if not data_dir or not os.path.isdir(data_dir):
    raise ConfigError(f'dataset.data_dir {data_dir!r} is not a directory; image_folder needs '
                      f'<data_dir>/{{{",".join(splits)}}}/<class>/<image files>')
  per_split = {}
  for split in splits:
    split_dir = os.path.join(data_dir, split)
    if not os.path.isdir(split_dir):
      raise ConfigError(f'split folder {split_dir!r} does not exist; found: '
                        f'{sorted(os.listdir(data_dir))}')
    names = sorted(d for d in os.listdir(split_dir)
                   if os.path.isdir(os.path.join(split_dir, d)) and not d.startswith('.'))
    if not names:
      raise ConfigError(f'split folder {split_dir!r} has no class subfolders')
    for name in names:
      if not _image_files(os.path.join(split_dir, name)):
        raise ConfigError(f'class folder {os.path.join(split_dir, name)!r} holds no images '
                          f'({", ".join(IMAGE_EXTENSIONS)})')
    per_split[split] = names
  first, *others = splits
  for split in others:
    if per_split[split] != per_split[first]:
      only_first = sorted(set(per_split[first]) - set(per_split[split]))
      only_other = sorted(set(per_split[split]) - set(per_split[first]))
      raise ConfigError(f'classes differ between splits {first!r} and {split!r}: only in '
                        f'{first!r}: {only_first}; only in {split!r}: {only_other}')
  return tuple(per_split[first])


def _image_files(directory: str) -> list[str]:
  return sorted(f for f in os.listdir(directory)
                if f.lower().endswith(IMAGE_EXTENSIONS) and
                os.path.isfile(os.path.join(directory, f)))


def _decodes(path: tf.Tensor) -> tf.Tensor:
  """A cheap full check: reads the file and decodes it (JPEG at 1/8 scale)."""
  data = tf.io.read_file(path)
  image = tf.cond(tf.io.is_jpeg(data),
                  lambda: tf.io.decode_jpeg(data, channels=3, ratio=8),
                  lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
  return tf.size(image) > 0


def _readable(paths: list[str]) -> np.ndarray:
  """A bool per path: does the file decode? Runs in parallel, errors become False."""
  dataset = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
  checks = dataset.map(lambda p: (p, _decodes(p)), num_parallel_calls=tf.data.AUTOTUNE)
  # A failing element is dropped by ignore_errors; the survivors tell which were fine.
  good = {p.decode() for p, ok in checks.ignore_errors().as_numpy_iterator() if ok}
  return np.array([p in good for p in paths], bool)


def load_split(data_dir: str, split: str, names: tuple[str, ...]) -> FolderSplit:
  """Lists and checks one split's images; logs each skipped file with its path."""
  paths, labels = [], []
  for label, name in enumerate(names):
    class_dir = os.path.join(data_dir, split, name)
    for filename in _image_files(class_dir):
      paths.append(os.path.join(class_dir, filename))
      labels.append(label)
  ok = _readable(paths) if paths else np.zeros(0, bool)
  skipped = tuple(p for p, good in zip(paths, ok) if not good)
  for path in skipped:
    logging.warning('image_folder: skipping unreadable or corrupt image %s', path)
  if skipped:
    logging.warning('image_folder: skipped %d of %d images in split %r', len(skipped),
                    len(paths), split)
  labels = np.array(labels, np.int32)
  for label, name in enumerate(names):
    if not ok[labels == label].any():
      raise ConfigError(f'class folder {os.path.join(data_dir, split, name)!r} holds no '
                        'readable images')
  return FolderSplit(paths=np.array(paths)[ok], labels=labels[ok], skipped=skipped)
