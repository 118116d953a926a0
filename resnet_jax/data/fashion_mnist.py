"""Fashion-MNIST (Xiao et al. 2017) from its four IDX files, offline.

Debian's package `dataset-fashion-mnist` installs the files TFDS's `fashion_mnist`
downloads into /usr/share/datasets/fashion-mnist; `dataset.data_dir` may name another
folder holding them (gzipped or not). Each file is checked against the size and sha256
of its decompressed content below: the gzip wrappers differ between the upstream
download and Debian's copy (26,421,880 vs 26,421,856 bytes for the training images:
the same IDX bytes, other gzip headers), the content does not. The figures were
computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (the upstream
repository zalandoresearch/fashion-mnist at commit 55506a9) on 2026-12-06; the upstream
sizes and gzip checksums are in TFDS's url_checksums/fashion_mnist.txt.
"""

import dataclasses
import hashlib
import os

import numpy as np

from resnet_jax.data import idx
from resnet_jax.errors import ConfigError

NAME = 'fashion_mnist'
DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
INSTALL = 'sudo apt-get install dataset-fashion-mnist'
# TFDS's and the upstream README's label names, in label order.
CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
               'Sneaker', 'Bag', 'Ankle boot')
IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class FileSpec:
  """One IDX file: its name (without .gz) and its decompressed size and sha256."""
  name: str
  size: int
  sha256: str


# split -> (images, labels)
FILES = {
    'train': (FileSpec('train-images-idx3-ubyte', 47_040_016,
                       'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888'),
              FileSpec('train-labels-idx1-ubyte', 60_008,
                       'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9')),
    'test': (FileSpec('t10k-images-idx3-ubyte', 7_840_016,
                      '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b'),
             FileSpec('t10k-labels-idx1-ubyte', 10_008,
                      '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34')),
}
SPLITS = tuple(FILES)


def _path(folder: str, spec: FileSpec) -> str | None:
  for name in (spec.name + '.gz', spec.name):
    if os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name)
  return None


def _has_all(folder: str) -> bool:
  return all(_path(folder, spec) for pair in FILES.values() for spec in pair)


def find_folder(data_dir: str = '') -> str | None:
  """The first of `data_dir` and Debian's folder that holds all four files, or None."""
  for folder in (os.path.expanduser(data_dir) if data_dir else '', DEBIAN_DIR):
    if folder and _has_all(folder):
      return folder
  return None


def missing_files_message(data_dir: str = '') -> str:
  """One line: which file is missing where, and how to get the files."""
  folders = [os.path.expanduser(data_dir)] if data_dir else []
  folders.append(DEBIAN_DIR)
  missing = [spec.name + '.gz' for pair in FILES.values() for spec in pair
             if not any(_path(f, spec) for f in folders)]
  if not missing:  # each file somewhere, but no folder holds all four
    return (f"Fashion-MNIST's four IDX files are spread over {', '.join(folders)}: put all "
            f'four in one folder (dataset.data_dir), or install them with `{INSTALL}`')
  return (f"Fashion-MNIST's {missing[0]} is in none of {', '.join(folders)}: install the "
          f'files with `{INSTALL}`, or put the four IDX files in dataset.data_dir')


def _verified(path: str, spec: FileSpec) -> bytes:
  try:
    content = idx.read_bytes(path)
  except idx.IdxError as error:
    raise ConfigError(f'{error}; reinstall with `{INSTALL.replace("install", "install --reinstall")}`'
                      ) from None
  digest = hashlib.sha256(content).hexdigest()
  if len(content) != spec.size or digest != spec.sha256:
    raise ConfigError(f'{path} is damaged: {len(content):,} bytes with sha256 {digest[:12]}…, '
                      f'expected {spec.size:,} bytes with sha256 {spec.sha256[:12]}…; reinstall '
                      f'with `{INSTALL.replace("install", "install --reinstall")}`')
  return content


def load_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 images [N, 28, 28, 1], int32 labels [N]) of 'train' or 'test', each file
  verified against FILES."""
  if split not in FILES:
    raise ConfigError(f'split {split!r} is not a split of {NAME}; valid: {", ".join(SPLITS)}')
  image_spec, label_spec = FILES[split]
  arrays = []
  for spec in (image_spec, label_spec):
    path = _path(folder, spec)
    if path is None:
      raise ConfigError(missing_files_message(folder))
    try:
      arrays.append(idx.parse(_verified(path, spec), path))
    except idx.IdxError as error:
      raise ConfigError(str(error)) from None
  images, labels = arrays
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise ConfigError(f'{folder}: {split} images {images.shape} and labels {labels.shape} '
                      'do not pair up')
  if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
    raise ConfigError(f'{folder}: {split} labels outside 0..{len(CLASS_NAMES) - 1}')
  return images[..., None].astype(np.uint8), labels.astype(np.int32)
