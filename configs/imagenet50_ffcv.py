"""ResNet-50 with FFCV's ImageNet schedule of 16, 24, 32, 40, 56 or 88 epochs (default 88).

Commands (prepare imagenet2012 first, see docs/data.md):
  python -m resnet_jax.main --config=configs/imagenet50_ffcv.py --workdir=/tmp/r50_ffcv88
  python -m resnet_jax.main --config=configs/imagenet50_ffcv.py:16 --workdir=/tmp/r50_ffcv16

libffcv/ffcv-imagenet rn50_configs/rn50_<epochs>_epochs.yaml with train_imagenet.py
(configs/recipes.py: ffcv): batch 4096 (512 per GPU × 8, BN per GPU), lr 1.7 (never
rescaled), SGD momentum 0.9, weight decay 1e-4 except on parameters named *bn*, label
smoothing 0.1, the learning rate rising linearly from 1e-4 × lr to lr over 2 epochs, then
falling linearly to 0; progressive resizing 160 → 192 between each schedule's start_ramp
and end_ramp epochs (rounded to multiples of 32), BlurPool, evaluation at 256 (the centre
224/256 of the shorter side) with the logits of each image and its mirror image added,
bfloat16 (FFCV: float16 AMP).
Expected top-1 and time (libffcv/ffcv-imagenet README):
16: 73.8 % in 14.9 min, 24: 75.6 % in 21.7, 32: 76.6 % in 28.7, 40: 77.2 % in 35.6,
56: 78.0 % in 49.4, 88: 78.4 % in 77.2 (8 A100s; assets/agg.csv agrees).
Runtime: as above on FFCV's hardware; not yet run with this code.
"""

import ml_collections

from configs import recipes


def get_config(epochs: str = '88') -> ml_collections.ConfigDict:
  return recipes.ffcv('resnet50', int(epochs))
