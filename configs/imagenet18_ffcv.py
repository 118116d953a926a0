"""ResNet-18 with FFCV's ImageNet schedule of 16, 24, 32, 40, 56 or 88 epochs (default 88).

Commands (prepare imagenet2012 first, see docs/data.md):
  python -m resnet_jax.main --config=configs/imagenet18_ffcv.py --workdir=/tmp/r18_ffcv88
  python -m resnet_jax.main --config=configs/imagenet18_ffcv.py:16 --workdir=/tmp/r18_ffcv16

libffcv/ffcv-imagenet rn18_configs/rn18_<epochs>_epochs.yaml with train_imagenet.py
(configs/recipes.py: ffcv): batch 1024 (one GPU), lr 0.5 (never rescaled), SGD momentum
0.9, weight decay 5e-5 except on parameters named *bn*, label smoothing 0.1, the learning
rate rising linearly from 1e-4 × lr to lr over 2 epochs, then falling linearly to 0;
progressive resizing 160 → 192 between each schedule's start_ramp and end_ramp epochs
(rounded to multiples of 32), BlurPool, evaluation at 256 (the centre 224/256 of the
shorter side) with the logits of each image and its mirror image added, bfloat16 (FFCV:
float16 AMP).
Expected top-1 and time (libffcv/ffcv-imagenet README):
16: 66.9 % in 35.0 min, 24: 68.8 % in 51.6, 32: 70.0 % in 68.9, 40: 70.6 % in 85.5,
56: 71.3 % in 119.4, 88: 72.4 % in 187.3 (one A100).
Runtime: as above on FFCV's hardware; not yet run with this code.
"""

import ml_collections

from configs import recipes


def get_config(epochs: str = '88') -> ml_collections.ConfigDict:
  return recipes.ffcv('resnet18', int(epochs))
