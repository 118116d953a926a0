"""The trainer's one door to data: `create(config, mesh)` gives an input with `info`,
global training batches and global evaluation batches, from either pipeline
(`dataset.pipeline`):

- 'tf_data' (pipeline.py): streams any TFDS dataset or image folder through tf.data on
  the host, any augmentation;
- 'device' (device_input.py): holds the whole splits on the devices and augments there;
  no TensorFlow at all for Fashion-MNIST's IDX files and scikit-learn's digits.
"""

import copy
from typing import Generator, Iterator, Protocol

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from resnet_jax import sharding
from resnet_jax.data import dataset_info, device_input, fashion_mnist, in_memory
from resnet_jax.errors import ConfigError, check_choice

PIPELINES = ('tf_data', 'device')


class Input(Protocol):
  info: dataset_info.DatasetInfo
  description: str

  def train_batches(self, *, start_step: int = 0, examples_before: int | None = None
                    ) -> Generator[dict[str, jax.Array], None, None]:
    """Endless; `close()` frees its threads and buffers."""

  def eval_batches(self) -> Iterator[dict[str, jax.Array]]: ...


class TfDataInput:
  """The tf.data pipeline's batches, copied to the mesh."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, source=None):
    """`source`: an existing sources.create_source(config) (default: a new one)."""
    from resnet_jax.data import pipeline, sources  # noqa: PLC0415  (TensorFlow: ~7 s)
    pipeline.configure_tensorflow()
    self._pipeline, self.config, self.mesh = pipeline, config, mesh
    self.source = sources.create_source(config) if source is None else source
    self.info = sources.dataset_info(self.source, config)
    self.description = (f'{self.info.num_train_examples:,} train + '
                        f'{self.info.num_eval_examples:,} eval examples, streamed by tf.data')

  def train_batches(self, *, start_step: int = 0, examples_before: int | None = None
                    ) -> Generator[dict[str, jax.Array], None, None]:
    return sharding.prefetch_to_mesh(self._pipeline.train_batches(
        self.source, self.config, self.info, start_step=start_step,
        examples_before=examples_before), self.mesh)

  def eval_batches(self) -> Iterator[dict[str, jax.Array]]:
    for batch in self._pipeline.eval_batches(self.source, self.config, self.info):
      yield sharding.to_global(batch, self.mesh)


def create(config: ml_collections.ConfigDict, mesh: Mesh) -> Input:
  """The input `config.dataset.pipeline` names."""
  if config.dataset.pipeline == 'device':
    return device_input.DeviceInput(config, mesh)
  return TfDataInput(config, mesh)


def check(config: ml_collections.ConfigDict) -> None:
  """ValueError naming the first setting the chosen pipeline cannot do."""
  data = config.dataset
  check_choice('dataset.pipeline', data.pipeline, PIPELINES)
  if data.pipeline != 'device':
    return
  if config.seed < 0:  # numpy's PCG64 draws the epoch orders from [seed, epoch]
    raise ValueError(f'seed {config.seed} must be >= 0 with dataset.pipeline=device')
  check_choice('dataset.augment (with dataset.pipeline=device)', data.augment,
               device_input.AUGMENTATIONS)
  unsupported = {
      'dataset.randaugment_layers': (data.randaugment_layers, 0),
      'dataset.trivial_augment': (data.trivial_augment, False),
      'dataset.repeated_augmentation': (data.repeated_augmentation, 1),
      'dataset.min_image_size': (data.min_image_size, 0),
      'dataset.order': (data.order, 'global'),
  }
  for key, (value, supported) in unsupported.items():
    if value != supported:
      raise ValueError(f'{key} {value!r} needs dataset.pipeline=tf_data (the device input '
                       f'supports {supported!r} only)')


def check_tensorflow_available(config: ml_collections.ConfigDict) -> None:
  """ConfigError in one line where the config's data needs TensorFlow and it is not
  installed (a bare accelerator image): for Fashion-MNIST, how to get its files."""
  try:
    import tensorflow  # noqa: F401, PLC0415
    import tensorflow_datasets  # noqa: F401, PLC0415
  except ImportError as error:
    if config.dataset.name == fashion_mnist.NAME:
      raise ConfigError(fashion_mnist.missing_files_message(config.dataset.data_dir)) from None
    raise ConfigError(
        f'dataset {config.dataset.name!r} with dataset.pipeline={config.dataset.pipeline} is '
        f'read through TensorFlow and TFDS, which cannot be imported here ({error}); install '
        'them, or use a dataset the device input reads without them: '
        f'{", ".join(in_memory.NATIVE)} with dataset.pipeline=device') from None


def needs_tensorflow(config: ml_collections.ConfigDict) -> bool:
  """Whether the config's data is read through TensorFlow."""
  return (config.dataset.pipeline != 'device' or config.dataset.name not in in_memory.NATIVE
          or in_memory.fashion_mnist_via_tfds(config))


def host_examples(config: ml_collections.ConfigDict, split: str, count: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 images, int32 labels) of `split`'s first `count` examples (0: all) as the
  config's evaluation prepares them, on the host: what the studies of trained nets read.
  The device pipeline's datasets are read without TensorFlow."""
  on_split = copy.deepcopy(config)
  with on_split.unlocked():
    on_split.dataset.eval_split = split
  if config.dataset.pipeline == 'device':
    examples = in_memory.load(on_split).eval
    images, labels = examples.images, examples.labels
  else:
    from resnet_jax.data import pipeline, sources  # noqa: PLC0415  (TensorFlow)
    source = sources.create_source(on_split)
    info = sources.dataset_info(source, on_split)
    image_parts, label_parts = [], []
    for batch in pipeline.eval_batches(source, on_split, info, process_index=0,
                                       process_count=1):
      keep = batch['mask'].astype(bool)
      image_parts.append(batch['image'][keep])
      label_parts.append(batch['label'][keep])
      # A big split is not read whole for a few examples; a cached one is (tf.data drops
      # a cache read in part, with a warning).
      if 0 < count <= sum(map(len, label_parts)) and not config.dataset.cache:
        break
    images, labels = np.concatenate(image_parts), np.concatenate(label_parts)
  return (images, labels) if count <= 0 else (images[:count], labels[:count])


def padded_batches(images: np.ndarray, labels: np.ndarray, batch_size: int
                   ) -> Iterator[dict[str, np.ndarray]]:
  """Host batches {'image', 'label', 'mask'} of whole `batch_size`, the last one padded
  with zeros and mask 0: one compiled shape for a forward pass over a split."""
  for start in range(0, len(labels), batch_size):
    count = len(labels[start:start + batch_size])
    pad = ((0, batch_size - count),)
    yield {'image': np.pad(images[start:start + batch_size], pad + ((0, 0),) * 3),
           'label': np.pad(labels[start:start + batch_size], pad),
           'mask': np.pad(np.ones(count, np.int32), pad)}
