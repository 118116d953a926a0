"""A user's folder of images as a dataset: `<data_dir>/<split>/<class>/<image>`.

Class names are the sorted subfolder names, identical across splits. Start-up only lists
the files (no image is opened: a 1.28M-image folder starts in the time of its listing);
with several processes, process 0 lists and the others receive its listing. A file that
cannot be read or decoded is found when the pipeline first reads it: training puts the
next readable image of the batch in its place and counts it, evaluation leaves it out
(pipeline.py), and both log its path.
"""

import collections
import contextlib
import dataclasses
import os
from typing import Iterator

import numpy as np
from absl import logging

from resnet_jax import distributed
from resnet_jax.errors import ConfigError

IMAGE_FOLDER = 'image_folder'  # its config.dataset.name
# What tf.io.decode_image reads; other files are left out and counted (list_splits).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


@dataclasses.dataclass(frozen=True)
class FolderSplit:
  """The image files of one split, in sorted (class, file) order."""
  paths: np.ndarray  # object (str)
  labels: np.ndarray  # int32


def _image_files(directory: str, others: collections.Counter | None = None) -> list[str]:
  """The image files of `directory`, sorted; `others` counts the rest by extension
  (hidden files aside)."""
  # scandir's entries know their type without a stat per file (d_type), unlike isfile().
  images = []
  with os.scandir(directory) as entries:
    for entry in entries:
      if entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
        images.append(entry.name)
      elif others is not None and not entry.name.startswith('.') and entry.is_file():
        others[os.path.splitext(entry.name)[1].lower() or '(none)'] += 1
  return sorted(images)


def _class_folders(data_dir: str, splits: tuple[str, ...],
                   keys: dict[str, str]) -> tuple[str, ...]:
  """The sorted class folders, checked to be the same in every split (no file listed)."""
  layout = f'<data_dir>/{{{",".join(splits)}}}/<class>/<image files>'
  if not data_dir:
    raise ConfigError(f'dataset.data_dir is empty: give --config.dataset.data_dir=DATA_DIR, '
                      f'the folder of {layout}')
  if not os.path.isdir(data_dir):
    raise ConfigError(f'dataset.data_dir {data_dir!r} is not a directory; image_folder needs '
                      f'{layout}')
  per_split = {}
  for split in splits:
    split_dir = os.path.join(data_dir, split)
    if not os.path.isdir(split_dir):
      key = keys.get(split, 'dataset.train_split')
      found = sorted(e.name for e in os.scandir(data_dir) if e.is_dir())
      raise ConfigError(f'split folder {split_dir!r} does not exist ({key}={split!r}); found: '
                        f'{found}: set --config.{key} to one of them')
    with os.scandir(split_dir) as entries:
      names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith('.'))
    if not names:
      raise ConfigError(f'split folder {split_dir!r} has no class subfolders')
    per_split[split] = names
  first, *others = splits
  for split in others:
    if per_split[split] != per_split[first]:
      only_first = sorted(set(per_split[first]) - set(per_split[split]))
      only_other = sorted(set(per_split[split]) - set(per_split[first]))
      raise ConfigError(f'classes differ between splits {first!r} and {split!r}: only in '
                        f'{first!r}: {only_first}; only in {split!r}: {only_other}')
  return tuple(per_split[first])


def _list_files(data_dir: str, splits: tuple[str, ...],
                names: tuple[str, ...]) -> dict[str, list[list[str]]]:
  """{split: [file names of class 0, of class 1, ...]}; ConfigError for an empty class."""
  listing = {}
  for split in splits:
    others = collections.Counter()
    listing[split] = [_image_files(os.path.join(data_dir, split, name), others)
                      for name in names]
    if others:
      logging.warning('%s: left out %d files that are not images (%s); read: %s',
                      os.path.join(data_dir, split), sum(others.values()),
                      ', '.join(f'{ext} {n}' for ext, n in others.most_common()),
                      ', '.join(IMAGE_EXTENSIONS))
    for name, files in zip(names, listing[split]):
      if not files:
        raise ConfigError(f'class folder {os.path.join(data_dir, split, name)!r} holds no '
                          f'images ({", ".join(IMAGE_EXTENSIONS)})')
  return listing


def config_splits(config) -> tuple[tuple[str, ...], dict[str, str]]:
  """The config's split folders (training first) and the config key naming each."""
  keys = {}
  for key in ('dataset.eval_split', 'dataset.train_split'):  # one folder for both: train's
    keys[config.dataset[key.split('.')[1]]] = key
  return tuple(reversed(keys)), keys


# A run lists its folder once: folder_settings measures the images of the listing that the
# source then reads. Only inside `one_listing()`: elsewhere each call lists anew (a notebook
# may add images between two runs).
_listings: dict[tuple, dict[str, list[list[str]]]] | None = None


@contextlib.contextmanager
def one_listing() -> Iterator[None]:
  """Within the block, list_splits lists each folder once and reuses that listing."""
  global _listings
  outer = _listings
  _listings = {} if outer is None else outer
  try:
    yield
  finally:
    _listings = outer


def list_splits(data_dir: str, splits: tuple[str, ...], keys: dict[str, str] | None = None
                ) -> tuple[tuple[str, ...], dict[str, FolderSplit]]:
  """The class names and each split's files. Every process checks the class folders;
  process 0 alone lists the files and sends the listing to the others. `keys`: the config
  key naming each split, for the error of a missing one.

  Raises:
    ConfigError: a missing data_dir or split folder, a split without class folders, an
      empty class folder, or a class present in one split but not in another.
  """
  names = _class_folders(data_dir, splits, keys or {})
  reuse_key = (os.path.abspath(data_dir), splits, tuple(names))
  if _listings is not None and reuse_key in _listings:
    listing = _listings[reuse_key]
  else:
    listing = distributed.computed_once(lambda: _list_files(data_dir, splits, names),
                                        'image folder listing')
    if _listings is not None:
      _listings[reuse_key] = listing
  result = {}
  for split in splits:
    paths, labels = [], []
    for label, (name, files) in enumerate(zip(names, listing[split])):
      class_dir = os.path.join(data_dir, split, name)
      paths.extend(os.path.join(class_dir, file) for file in files)
      labels.extend([label] * len(files))
    result[split] = FolderSplit(paths=np.array(paths, object), labels=np.array(labels, np.int32))
  return names, result
