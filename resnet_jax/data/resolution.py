"""Training resolution by epoch (progressive resizing, as FFCV's ImageNet example does it)
and the evaluation resolution (FixRes: test at another size than you train).

FFCV (libffcv/ffcv-imagenet, train_imagenet.py, get_resolution): min_res up to
start_ramp, max_res from end_ramp on, in between the linear interpolation rounded to the
nearest multiple of 32; the resolution changes only between epochs. Pure Python: the
pipeline and the trainer read the same schedule.
"""

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  import ml_collections


def check(config: 'ml_collections.ConfigDict') -> None:
  """Raises ValueError naming a bad resolution setting."""
  data = config.dataset
  if data.eval_image_size < 0:
    raise ValueError(f'dataset.eval_image_size {data.eval_image_size} must be >= 0 '
                     '(0: dataset.image_size)')
  if not 0 < data.eval_crop_fraction <= 1:
    raise ValueError(f'dataset.eval_crop_fraction {data.eval_crop_fraction} must be in (0, 1]')
  if not data.min_image_size:
    return
  if not 0 < data.min_image_size <= data.image_size:
    raise ValueError(f'dataset.min_image_size {data.min_image_size} must be in '
                     f'(0, dataset.image_size {data.image_size}] (0: no resize ramp)')
  if not 0 <= data.resize_start_epoch <= data.resize_end_epoch:
    raise ValueError(f'dataset.resize_start_epoch {data.resize_start_epoch} and '
                     f'resize_end_epoch {data.resize_end_epoch}: need 0 <= start <= end')
  if data.resize_multiple < 1:
    raise ValueError(f'dataset.resize_multiple {data.resize_multiple} must be >= 1')


def eval_image_size(config: 'ml_collections.ConfigDict') -> int:
  """The evaluation resolution: dataset.eval_image_size, or image_size when it is 0."""
  return config.dataset.eval_image_size or config.dataset.image_size


def train_image_size(config: 'ml_collections.ConfigDict', epoch: int) -> int:
  """The training resolution of 0-based `epoch`."""
  data = config.dataset
  if not data.min_image_size:
    return data.image_size
  if epoch <= data.resize_start_epoch:
    return data.min_image_size
  if epoch >= data.resize_end_epoch:
    return data.image_size
  size = np.interp(epoch, [data.resize_start_epoch, data.resize_end_epoch],
                   [data.min_image_size, data.image_size])
  multiple = data.resize_multiple
  return int(min(max(np.round(size / multiple) * multiple, data.min_image_size),
                 data.image_size))


def schedule(config: 'ml_collections.ConfigDict',
             steps_per_epoch: int) -> list[tuple[int, int]]:
  """[(first batch, resolution), ...]: the batches (0-based: batch b trains step b + 1)
  from which each resolution holds, in order; one entry without a ramp."""
  changes = [(0, train_image_size(config, 0))]
  if config.dataset.min_image_size:
    for epoch in range(1, int(np.ceil(config.dataset.resize_end_epoch)) + 1):
      size = train_image_size(config, epoch)
      if size != changes[-1][1]:
        changes.append((epoch * steps_per_epoch, size))
  return changes
