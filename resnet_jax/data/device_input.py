"""The device input: whole uint8 splits held on every device, each batch gathered and
augmented there (dataset.pipeline=device). No TensorFlow and no host work per image.

The training order is the tf.data pipeline's contract (pipeline.py): a stream of epochs
without a gap, epoch e a permutation of the split drawn from (seed, e), example n of the
stream augmented from a key derived from (seed, n) alone. Step s of a run reads stream
positions [c, c + batch_size), c the examples trained before it, so a resumed run gets
bitwise the batches an uninterrupted one does, for any number of devices or processes.

The splits are replicated, not sharded: a batch's rows are then read where they are
needed (a local gather, no traffic between devices; tests/test_device_input.py checks the
compiled HLO), and the order cannot depend on the device count. The price is the split on
every device: 55 MB for Fashion-MNIST, 184 MB for CIFAR-10 (train + test), far below any
accelerator's memory. Stream positions are uint32 in the example keys: 4.29e9 examples
(71,000 Fashion-MNIST epochs) before they wrap. Augmentation: pad + random crop ('cifar'), horizontal flip; random erasing,
mixup and cutmix run in the train step as with tf.data.
"""

import functools
from typing import Any, Generator, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from resnet_jax import sharding
from resnet_jax.data import dataset_info, in_memory

AUGMENTATIONS = ('none', 'cifar')
_STREAM_TAG = 0x64617461  # 'data': the example keys' stream, apart from the model's init key


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  """The permutation of a split of `size` examples that epoch `epoch` reads."""
  return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(size).astype(np.int32)


class StreamOrder:
  """Split indices of stream positions, epoch after epoch (each epoch's order kept once
  drawn; a run holds at most two at a time)."""

  def __init__(self, seed: int, size: int):
    self.seed, self.size = seed, size
    self._orders: dict[int, np.ndarray] = {}

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
      self._orders[epoch] = epoch_order(self.seed, epoch, self.size)
    return self._orders[epoch]

  def indices(self, start: int, count: int) -> np.ndarray:
    """int32 split indices of stream positions start .. start + count - 1."""
    positions = np.arange(start, start + count, dtype=np.int64)
    epochs, within = np.divmod(positions, self.size)
    result = np.empty(count, np.int32)
    for epoch in np.unique(epochs):
      chosen = epochs == epoch
      result[chosen] = self._order(int(epoch))[within[chosen]]
    return result


def augmented_batch(images: jax.Array, labels: jax.Array, indices: jax.Array,
                    positions: jax.Array, *, seed: int, augment: str, crop_padding: int,
                    random_flip: bool) -> dict[str, jax.Array]:
  """{'image': uint8 [B, H, W, C], 'label': int32 [B]}: rows `indices` of the split,
  example i augmented from (seed, positions[i]). Pure and jittable; keywords static."""
  image, label = images[indices], labels[indices]
  base = jax.random.fold_in(jax.random.key(seed), _STREAM_TAG)
  keys = jax.vmap(lambda position: jax.random.fold_in(base, position))(positions)
  crop_keys, flip_keys = jnp.moveaxis(jax.vmap(lambda key: jax.random.split(key))(keys), 1, 0)
  if augment == 'cifar' and crop_padding:
    height, width = image.shape[1:3]
    pad = crop_padding
    padded = jnp.pad(image, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.vmap(lambda key: jax.random.randint(key, (2,), 0, 2 * pad + 1))(crop_keys)
    image = jax.vmap(lambda x, o: jax.lax.dynamic_slice(
        x, (o[0], o[1], 0), (height, width, x.shape[-1])))(padded, offsets)
  if random_flip:
    flip = jax.vmap(jax.random.bernoulli)(flip_keys)
    image = jnp.where(flip[:, None, None, None], image[:, :, ::-1], image)
  return {'image': image, 'label': label}


def _on_every_device(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """`array` replicated over the mesh (every process passes the same array)."""
  return jax.make_array_from_callback(array.shape, sharding.replicated(mesh),
                                      lambda index: array[index])


class DeviceInput:
  """The in-memory splits of `config` on `mesh`'s devices, and their batches."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh,
               splits: in_memory.Splits | None = None):
    self.config, self.mesh = config, mesh
    splits = in_memory.load(config) if splits is None else splits
    self.info: dataset_info.DatasetInfo = splits.info()
    self.description = in_memory.describe(splits)
    self._train = (_on_every_device(splits.train.images, mesh),
                   _on_every_device(splits.train.labels, mesh))
    self._eval = (_on_every_device(splits.eval.images, mesh),
                  _on_every_device(splits.eval.labels, mesh))
    data = config.dataset
    batch, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    self._augmented = jax.jit(
        functools.partial(augmented_batch, seed=config.seed, augment=data.augment,
                          crop_padding=data.crop_padding, random_flip=data.random_flip),
        in_shardings=(replicated, replicated, batch, batch), out_shardings=batch)
    self._gathered = jax.jit(_gathered, in_shardings=(replicated, replicated, batch, batch),
                             out_shardings=batch)
    self._wait_for_batches = _several_cpu_devices(mesh)

  def _ready(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`batch`, computed before the step that reads it is dispatched when the mesh holds
    several CPU devices (see _several_cpu_devices); as it is otherwise."""
    return jax.block_until_ready(batch) if self._wait_for_batches else batch

  def _local(self, values: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Global arrays from the same global values on every process: each process passes
    its block (the mesh orders devices process by process)."""
    count, index = jax.process_count(), jax.process_index()
    local = {key: np.split(value, count)[index] for key, value in values.items()}
    return sharding.to_global(local, self.mesh)

  def train_batches(self, *, start_step: int = 0,
                    examples_before: int | None = None
                    ) -> Generator[dict[str, jax.Array], None, None]:
    """Global training batches for steps start_step + 1, ... (see the module docstring);
    `examples_before` as in pipeline.train_batches."""
    batch_size = self.config.batch_size
    position = start_step * batch_size if examples_before is None else examples_before
    order = StreamOrder(self.config.seed, self.info.num_train_examples)
    while True:
      indices = order.indices(position, batch_size)
      positions = np.arange(position, position + batch_size, dtype=np.int64).astype(np.uint32)
      steered = self._local({'index': indices, 'position': positions})
      yield self._ready(self._augmented(*self._train, steered['index'], steered['position']))
      position += batch_size

  def num_eval_batches(self) -> int:
    return -(-self.info.num_eval_examples // self.config.batch_size)

  def eval_batches(self) -> Iterator[dict[str, jax.Array]]:
    """The evaluation split in order, in global batches padded with mask 0."""
    batch_size, size = self.config.batch_size, self.info.num_eval_examples
    for start in range(0, self.num_eval_batches() * batch_size, batch_size):
      positions = np.arange(start, start + batch_size)
      mask = (positions < size).astype(np.int32)
      steered = self._local({'index': np.where(mask, positions, 0).astype(np.int32),
                             'mask': mask})
      yield self._ready(self._gathered(*self._eval, steered['index'], steered['mask']))


def _several_cpu_devices(mesh: Mesh) -> bool:
  """Whether `mesh` holds several CPU devices of this process. Runs on two CPU devices
  deadlocked in XLA:CPU's collectives on a busy host, a step's collective waiting for a
  device that had not launched it; with every batch computed before the step that reads it
  is dispatched, none has yet (measured in resnet_jax/cpu/devices.py's docstring)."""
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  return len(local) > 1 and all(d.platform == 'cpu' for d in local)


def _gathered(images: jax.Array, labels: jax.Array, indices: jax.Array,
              mask: jax.Array) -> dict[str, Any]:
  return {'image': images[indices], 'label': labels[indices], 'mask': mask}
