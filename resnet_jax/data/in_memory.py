"""Whole splits as uint8 host arrays, for the device input (device_input.py).

Fashion-MNIST (from its IDX files) and scikit-learn's digits are read without TensorFlow
or TFDS; any other TFDS dataset or image folder is decoded once through the tf.data
source (sources.py) and then held in memory. Every split is resized once, here, to the
size the model reads. A split may be sliced as TFDS slices: 'train[:10000]',
'train[10000:]', 'train[:90%]'.
"""

import dataclasses
import re

import ml_collections
import numpy as np

from resnet_jax.data import dataset_info, fashion_mnist, sklearn_digits
from resnet_jax.errors import ConfigError

# Datasets read without TensorFlow and TFDS: name -> their split names.
NATIVE = {fashion_mnist.NAME: fashion_mnist.SPLITS, sklearn_digits.NAME: sklearn_digits.SPLITS}
# A split this large is better streamed (dataset.pipeline=tf_data) than held on every device.
MAX_SPLIT_BYTES = 8 << 30
_SLICE = re.compile(r'^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$')


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: uint8 images [N, H, W, C] and int32 labels [N]."""
  images: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class Splits:
  """The training and evaluation splits of a config, with the dataset's class names."""
  train: Split
  eval: Split
  class_names: tuple[str, ...]
  train_fingerprint: str = ''

  def info(self) -> dataset_info.DatasetInfo:
    return dataset_info.DatasetInfo(
        num_classes=len(self.class_names), class_names=self.class_names,
        num_train_examples=len(self.train.labels), num_eval_examples=len(self.eval.labels),
        image_shape=tuple(self.train.images.shape[1:]), train_fingerprint=self.train_fingerprint)


def parse_split(spec: str, key: str, valid: tuple[str, ...]) -> tuple[str, slice]:
  """'train[a:b]' -> ('train', slice), a and b integers or percentages; ConfigError naming
  `key` when the name is not in `valid` or the slice is malformed."""
  match = _SLICE.match(spec.replace(' ', ''))
  if not match:
    raise ConfigError(f"{key} {spec!r} is not a split spec; valid: a split name ({', '.join(valid)}) "
                      "optionally sliced, e.g. 'train[:10000]', 'train[10000:]', 'train[:90%]'")
  name, start, stop = match.groups()
  if name not in valid:
    raise ConfigError(f'{key} {spec!r} names no split of this dataset; valid: {", ".join(valid)}')
  return name, slice(start, stop)


def _bound(value: str | None, size: int) -> int | None:
  if value is None:
    return None
  if value.endswith('%'):  # TFDS rounds percentage boundaries to the nearest example
    return int(round(size * int(value[:-1]) / 100))
  return int(value)


def _sliced(split: Split, part: slice) -> Split:
  size = len(split.labels)
  window = slice(_bound(part.start, size), _bound(part.stop, size))
  return Split(split.images[window], split.labels[window])


def _resized(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize to size×size on the host CPU (once per run), rounded to uint8."""
  if images.shape[1:3] == (size, size):
    return images
  import jax  # noqa: PLC0415
  with jax.default_device(jax.local_devices(backend='cpu')[0]):
    resized = jax.image.resize(images.astype(np.float32),
                               (len(images), size, size, images.shape[-1]), 'bilinear')
    return np.asarray(np.clip(np.round(resized), 0, 255)).astype(np.uint8)


def _native_split(name: str, data_dir: str, split: str) -> Split:
  if name == sklearn_digits.NAME:
    images, labels, _ = sklearn_digits.arrays()[split]
    return Split(images, labels)
  folder = fashion_mnist.find_folder(data_dir)
  if folder is None:
    raise ConfigError(fashion_mnist.missing_files_message(data_dir))
  return Split(*fashion_mnist.load_split(folder, split))


def _tf_split(config: ml_collections.ConfigDict, key: str
              ) -> tuple[Split, tuple[str, ...], str]:
  """A TFDS split or image folder decoded through tf.data at the config's image size, its
  class names and fingerprint."""
  import tensorflow as tf  # noqa: PLC0415
  import tensorflow_datasets as tfds  # noqa: PLC0415

  from resnet_jax.data import pipeline, preprocess, resolution, sources  # noqa: PLC0415
  pipeline.configure_tensorflow()  # before TF runs anything: off the GPUs, sized pools
  source = sources.create_source(config)
  spec = config.dataset[key]
  count = source.split_size(spec, f'dataset.{key}')
  size = (resolution.eval_image_size(config) if key == 'eval_split'
          else config.dataset.image_size)
  needed = count * size * size * source.channels
  if needed > MAX_SPLIT_BYTES:
    raise ConfigError(f'dataset.{key} {spec!r} needs {needed / 2**30:.1f} GiB as uint8 at '
                      f'{size}², more than the in-memory limit of {MAX_SPLIT_BYTES >> 30} GiB; '
                      'stream it with dataset.pipeline=tf_data')

  def decoded(record):
    record = source.read(record)
    return {'image': preprocess.eval_image(record['image'], augment='none', image_size=size,
                                           channels=source.channels),
            'label': record['label']}

  dataset = source.records(spec).map(decoded, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
  images, labels = [], []
  for batch in tfds.as_numpy(dataset):
    images.append(batch['image'])
    labels.append(batch['label'])
  shape = (0, size, size, source.channels)
  return (Split(np.concatenate(images) if images else np.zeros(shape, np.uint8),
                np.concatenate(labels).astype(np.int32) if labels else np.zeros(0, np.int32)),
          tuple(source.class_names), source.fingerprint(spec))


def fashion_mnist_via_tfds(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` names Fashion-MNIST but its IDX files are absent (then TFDS's own
  `fashion_mnist`, same features and splits, is read or downloaded)."""
  return (config.dataset.name == fashion_mnist.NAME and
          fashion_mnist.find_folder(config.dataset.data_dir) is None)


def load(config: ml_collections.ConfigDict) -> Splits:
  """The config's training and evaluation splits at their model resolution.

  Raises:
    ConfigError: a missing or damaged file, a split that does not exist or is empty, a
      split too large to hold in memory.
  """
  name = config.dataset.name
  image_size = config.dataset.image_size
  eval_size = config.dataset.eval_image_size or image_size
  if name in NATIVE and not fashion_mnist_via_tfds(config):
    splits = {}
    for key in ('train_split', 'eval_split'):
      split, part = parse_split(config.dataset[key], f'dataset.{key}', NATIVE[name])
      splits[key] = _sliced(_native_split(name, config.dataset.data_dir, split), part)
    class_names = (fashion_mnist.CLASS_NAMES if name == fashion_mnist.NAME
                   else sklearn_digits.CLASS_NAMES)
    # The files are checked against fixed checksums: name, spec and size say what it is.
    train_fingerprint = dataset_info.fingerprint(
        (name, config.dataset.train_split, str(len(splits['train_split'].labels))))
  else:
    try:
      splits, names, fingerprints = {}, (), {}
      for key in ('train_split', 'eval_split'):
        splits[key], names, fingerprints[key] = _tf_split(config, key)
      class_names, train_fingerprint = names, fingerprints['train_split']
    except ConfigError:
      raise
    except Exception as error:  # A download that fails offline, most likely.
      if name != fashion_mnist.NAME:
        raise
      raise ConfigError(f'{fashion_mnist.missing_files_message(config.dataset.data_dir)} '
                        f'(TFDS could not get it either: {" ".join(str(error).split())[:200]})'
                        ) from None
  for key, split in splits.items():
    if not len(split.labels):
      raise ConfigError(f'dataset.{key} {config.dataset[key]!r} holds no examples')
  return Splits(train=Split(_resized(splits['train_split'].images, image_size),
                            splits['train_split'].labels),
                eval=Split(_resized(splits['eval_split'].images, eval_size),
                           splits['eval_split'].labels),
                class_names=tuple(class_names), train_fingerprint=train_fingerprint)


def split_bytes(split: Split) -> int:
  """Bytes the split takes on each device (images and labels)."""
  return int(split.images.nbytes + split.labels.nbytes)


def describe(splits: Splits) -> str:
  """'60,000 train + 10,000 eval images 28×28×1 (55.2 MB per device)'."""
  h, w, c = splits.train.images.shape[1:]
  total = split_bytes(splits.train) + split_bytes(splits.eval)
  return (f'{len(splits.train.labels):,} train + {len(splits.eval.labels):,} eval images '
          f'{h}×{w}×{c} ({total / 1e6:.1f} MB per device)')
