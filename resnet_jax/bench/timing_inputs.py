"""What the step-timing tools share: their size flags and one synthetic digits-shaped batch.

Each tool is its own process, so each calls `define_flags` once at import with its own
defaults.
"""

from typing import Any

from absl import flags


def define_flags(*, model: str, image_size: int, batch_size: int, steps: int,
                 rounds: int) -> None:
  """--model, --image_size, --batch_size, --steps (per timed round) and --rounds."""
  flags.DEFINE_string('model', model, 'Model name.')
  flags.DEFINE_integer('image_size', image_size, 'Image side.')
  flags.DEFINE_integer('batch_size', batch_size, 'Global batch size.')
  flags.DEFINE_integer('steps', steps, 'Steps per timed round.')
  flags.DEFINE_integer('rounds', rounds, 'Alternating rounds of each variant.')


def synthetic_batch(batch_size: int, image_size: int, channels: int,
                    mesh: Any) -> tuple[Any, dict[str, Any]]:
  """A 10-class DatasetInfo of 100 batches and one random uint8 batch on `mesh`."""
  import numpy as np

  from resnet_jax import sharding
  from resnet_jax.data import sources
  shape = (image_size, image_size, channels)
  info = sources.DatasetInfo(num_classes=10, class_names=tuple(map(str, range(10))),
                             num_train_examples=100 * batch_size, num_eval_examples=1,
                             image_shape=shape)
  rng = np.random.default_rng(0)
  batch = sharding.to_global({
      'image': rng.integers(0, 256, (batch_size, *shape), np.uint8),
      'label': rng.integers(0, 10, (batch_size,), np.int32)}, mesh)
  return info, batch
