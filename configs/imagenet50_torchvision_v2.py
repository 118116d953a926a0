"""ResNet-50 with torchvision's V2 recipe (its IMAGENET1K_V2 weights, 80.858 %).

Command (prepare imagenet2012 first, see docs/data.md):
  python -m resnet_jax.main --config=configs/imagenet50_torchvision_v2.py --workdir=/tmp/r50_v2

The command of pytorch/vision#3995 (comment 1013906621; the blog "How to Train
State-Of-The-Art Models Using TorchVision's Latest Primitives"), key by key
(configs/recipes.py: torchvision_v2): 600 epochs at batch 1024 (128 per GPU × 8, BN per
GPU), SGD momentum 0.9, lr 0.5, 5 linear warmup epochs from 0.01 × lr, cosine, weight
decay 2e-5 with none on BN, label smoothing 0.1, mixup 0.2 or cutmix 1.0 per batch,
TrivialAugment-wide, random erasing 0.1, repeated augmentation ×4, train at 176, test at
224 after resizing to 232, an EMA every 32 steps (decay 0.99998 adjusted by train.py to
0.998908 for 8 × 128 images and 600 epochs; it restarts from the weights during warmup),
float32. torchvision steps the schedule per epoch, ours per step.
Expected top-1: 80.858 % (torchvision's ResNet50_Weights.IMAGENET1K_V2, at 232 → 224).
Runtime: not stated by the source; ~11 h on 8 A100s at NVIDIA's 2,470 img/s per A100 in
float32 × 600 epochs (an estimate, not a measurement; training at 176 is ~1.6× cheaper per
image). Not yet run with this code.
"""

import ml_collections

from configs import recipes


def get_config() -> ml_collections.ConfigDict:
  return recipes.torchvision_v2()
