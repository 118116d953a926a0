"""Config values an image folder's own images decide (configs/folder.py).

A value left to the data is measured from a sample of the training split when a run
starts (process 0 measures, every process receives the result); a resumed run takes the
values its config.json recorded, so it never measures anew. The rules:

  dataset.image_size 0    the median shorter side of the sample: as it is up to 64 px;
                          above, rounded down to a multiple of 32, at most 224
  dataset.channels 0      1 if every sampled image is grayscale (and no init_checkpoint,
                          whose stem wants 3), else 3
  dataset.mean, .std ()   per channel, over the sample's pixels (0..255 scale)
  model 'auto'            resnet20 (CIFAR-style stem, 0.27M parameters) up to 64 px,
                          resnet18 (ImageNet stem) above
  dataset.augment 'auto'  cifar (pad + random crop, padding image_size // 8) up to 64 px,
                          imagenet (random-resized crop) above
  batch_size 0            128, halved (down to 16) until an epoch has at least 8 steps, at
                          most the split's size, a multiple of the device count
"""

import copy
import os

import ml_collections
import numpy as np
from absl import logging
from etils import epath

from resnet_jax import distributed
from resnet_jax.data import image_folder
from resnet_jax.errors import ConfigError
from resnet_jax.storage import workdir as workdir_lib

AUTO = 'auto'
SAMPLE_SIZE = 512  # images decoded to measure; 512 puts the mean's sampling error < 1 %
SMALL_IMAGE = 64  # up to this side: a CIFAR-style network and augmentation
LARGEST_IMAGE = 224
BATCH_SIZE = 128
MIN_STEPS_PER_EPOCH = 8


def left_to_data(config: ml_collections.ConfigDict) -> list[str]:
  """The config keys whose values the images are to decide."""
  data = config.dataset
  left = {'model': config.model == AUTO, 'dataset.image_size': data.image_size == 0,
          'dataset.channels': data.channels == 0, 'dataset.mean': len(data.mean) == 0,
          'dataset.std': len(data.std) == 0, 'dataset.augment': data.augment == AUTO,
          'batch_size': config.batch_size == 0}
  return [key for key, is_left in left.items() if is_left]


def resolved(config: ml_collections.ConfigDict, workdir: str,
             num_devices: int) -> ml_collections.ConfigDict:
  """`config` with the values left to the data filled in (the same config if none is).

  Raises:
    ConfigError: a value left to the data of a dataset that is not an image folder, a
      channel count other than 0, 1 or 3, or a folder that cannot be read (named).
  """
  if config.dataset.name == image_folder.IMAGE_FOLDER and config.dataset.channels not in (0, 1, 3):
    raise ConfigError(f'dataset.channels {config.dataset.channels} must be 1 (grayscale), 3 '
                      '(RGB) or 0 (measured from the images)')
  keys = left_to_data(config)
  if not keys:
    return config
  if config.dataset.name != image_folder.IMAGE_FOLDER:
    given = ', '.join(f'{key}={_get(config, key)!r}' for key in keys)
    raise ConfigError(f'{given}: left to the images, which only an image folder '
                      f'(dataset.name=image_folder) has measured; dataset '
                      f'{config.dataset.name!r} needs a value for each (configs/default.py)')
  recorded = _recorded(workdir, keys)
  if recorded:
    values = recorded
  else:
    # Every process lists (a collective: process 0 lists, the others receive); process 0
    # alone decodes the sample.
    _, listing = image_folder.list_splits(config.dataset.data_dir,
                                          *image_folder.config_splits(config))
    paths = listing[config.dataset.train_split].paths.tolist()
    values = distributed.computed_once(lambda: measure(config, keys, paths, num_devices),
                                       'image folder settings')
  config = copy.deepcopy(config)
  with config.unlocked():
    for key, value in values.items():
      *parents, leaf = key.split('.')
      _get(config, '.'.join(parents))[leaf] = tuple(value) if isinstance(value, list) else value
  logging.info('%s the images of %s: %s', 'Recorded by the run, measured from' if recorded
               else 'Measured from', os.path.join(config.dataset.data_dir,
                                                  config.dataset.train_split),
               ', '.join(f'{key}={value}' for key, value in values.items()))
  return config


def _recorded(workdir: str, keys: list[str]) -> dict | None:
  """The values of `keys` the run in `workdir` recorded at its start; None for a new run
  (or one recorded before a key existed)."""
  if not (epath.Path(workdir) / workdir_lib.CONFIG_FILE).exists():
    return None
  record = workdir_lib.read_config(workdir)
  try:
    values = {key: _get(record, key) for key in _with_followers(keys)}
  except (KeyError, AttributeError):
    return None
  return {key: list(value) if isinstance(value, tuple) else value
          for key, value in values.items()}


def _get(config: ml_collections.ConfigDict, key: str):
  for part in filter(None, key.split('.')):
    config = config[part]
  return config


def _with_followers(keys: list[str]) -> list[str]:
  """`keys` and the values set with them (augment 'auto' sets the crop padding too)."""
  return keys + ['dataset.crop_padding'] * ('dataset.augment' in keys)


def measure(config: ml_collections.ConfigDict, keys: list[str], paths: list[str],
            num_devices: int) -> dict[str, object]:
  """{key: value} for `keys` (and the crop padding with an 'auto' augmentation), from a
  sample of up to SAMPLE_SIZE of the training split's `paths`, drawn with a fixed seed
  (JSON data)."""
  import tensorflow as tf  # noqa: PLC0415  (the decoder training uses: every format it reads)
  chosen = np.sort(np.random.default_rng(0).choice(len(paths), min(len(paths), SAMPLE_SIZE),
                                                    replace=False))
  images = []
  for path in np.asarray(paths, object)[chosen].tolist():
    try:
      images.append(tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy())
    except (tf.errors.OpError, ValueError):  # training skips it too (data/unreadable.py)
      logging.warning('%s: unreadable, left out of the measurement', path)
  if not images:
    raise ConfigError(f'none of the {len(chosen)} sampled images of '
                      f'{os.path.join(config.dataset.data_dir, config.dataset.train_split)!r} '
                      'could be decoded')
  size = config.dataset.image_size or _image_size(images)
  channels = config.dataset.channels or (
      1 if all(image.shape[-1] <= 2 for image in images) and not config.init_checkpoint else 3)
  mean, std = _mean_and_std([_to_channels(image, channels) for image in images])
  small = size <= SMALL_IMAGE
  values = {'model': 'resnet20' if small else 'resnet18', 'dataset.image_size': size,
            'dataset.channels': channels, 'dataset.mean': mean, 'dataset.std': std,
            'dataset.augment': 'cifar' if small else 'imagenet',
            'dataset.crop_padding': max(1, size // 8) if small else config.dataset.crop_padding,
            'batch_size': _batch_size(len(paths), num_devices)}
  return {key: values[key] for key in _with_followers(keys)}


def _image_size(images: list[np.ndarray]) -> int:
  side = int(np.median([min(image.shape[:2]) for image in images]))
  if side <= SMALL_IMAGE:
    return side
  return min(LARGEST_IMAGE, side // 32 * 32)


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """As tf.io.decode_image(..., channels=channels) gives it: alpha dropped, gray <-> RGB."""
  colour = image[..., :1] if image.shape[-1] <= 2 else image[..., :3]
  if channels == colour.shape[-1]:
    return colour
  if channels == 3:
    return np.repeat(colour, 3, axis=-1)
  # ITU-R 601-2 luma, the weights of tf.image.rgb_to_grayscale (what decode_image uses).
  return (colour @ np.array([0.2989, 0.5870, 0.1140]))[..., None]


def _mean_and_std(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
  pixels = np.concatenate([image.reshape(-1, image.shape[-1]) for image in images])
  pixels = pixels.astype(np.float64)
  # A channel constant over the sample gets std 1 rather than 0 (a division by zero).
  return ([round(float(v), 2) for v in pixels.mean(0)],
          [round(float(v), 2) for v in np.maximum(pixels.std(0), 1.0)])


def _batch_size(num_train_examples: int, num_devices: int) -> int:
  batch = BATCH_SIZE
  while batch > 16 and num_train_examples // batch < MIN_STEPS_PER_EPOCH:
    batch //= 2
  batch = min(batch, num_train_examples)
  return max(num_devices, batch // num_devices * num_devices)
