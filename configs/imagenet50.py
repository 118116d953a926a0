"""ResNet-50 v1.5 on ImageNet; recipe `nvidia` (default, 90 epochs), `nvidia250`, `step`
or `flax` (configs/recipes.py: each key as its source sets it, with the source's files).

Commands (prepare imagenet2012 first, see docs/data.md):
  python -m resnet_jax.main --config=configs/imagenet50.py --workdir=/tmp/imagenet50
  python -m resnet_jax.main --config=configs/imagenet50.py:nvidia250 --workdir=/tmp/r50_250
  python -m resnet_jax.main --config=configs/imagenet50.py:step --workdir=/tmp/imagenet50_step
  python -m resnet_jax.main --config=configs/imagenet50.py:flax --workdir=/tmp/imagenet50_flax

Recipes:
- nvidia / nvidia250: NVIDIA DeepLearningExamples' RN50 v1.5 (PyTorch/Classification/
  ConvNets, configs.yml resnet50 DGXA100): batch 2048 (256 per GPU × 8, BN per GPU), lr
  0.256 per 256, momentum 0.875, weight decay 1/32768 with none on BN
  (--bn-weight-decay off), 8 warmup epochs, cosine, label smoothing 0.1, no zero-init;
  250 epochs add mixup 0.2. NVIDIA steps warmup and cosine per epoch; here per step.
- step: torchvision's classic reference (references/classification): batch 256 (32 per
  GPU × 8), lr 0.1 ÷10 every 30 epochs, momentum 0.9, weight decay 1e-4 on every
  parameter, 90 epochs, float32.
- flax: google/flax examples/imagenet (configs/tpu.py): batch 1024, lr 0.1 per 256,
  Nesterov 0.9, weight decay 1e-4 on kernels, 5 warmup epochs, cosine, 100 epochs,
  zero-init of each block's last BN, bfloat16 (the flax example's images are bicubic,
  ours bilinear).
Expected top-1 (single 224 centre crop):
- nvidia: 77.12 % (AMP) / 76.95 % (TF32), nvidia250: 78.43 % / 78.38 %
  (resnet50v1.5/README.md, 8 A100s);
- step: 76.13 % (torchvision's IMAGENET1K_V1 weights, trained with this recipe);
- flax: 76.37-76.72 % in 100 epochs (google/flax examples/imagenet README).
Runtime: nvidia ~3 h on 8 A100s with AMP (NVIDIA's README: 16,621 img/s; 250 epochs
~8 h by proportion, not stated there); flax 2.1 h on a TPU v3-32 (its README). Not yet
run with this code.
"""

import ml_collections

from configs import recipes


def get_config(recipe: str = 'nvidia') -> ml_collections.ConfigDict:
  return recipes.imagenet('resnet50', recipe)
