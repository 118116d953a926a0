"""ResNet-18 v1.5 on ImageNet; recipe `nvidia` (default, 90 epochs), `nvidia250`, `step`
or `flax` (configs/recipes.py: each key as its source sets it, with the source's files).

Commands (prepare imagenet2012 first, see docs/data.md):
  python -m resnet_jax.main --config=configs/imagenet18.py --workdir=/tmp/imagenet18
  python -m resnet_jax.main --config=configs/imagenet18.py:step --workdir=/tmp/imagenet18_step

Recipes: `nvidia` is NVIDIA DeepLearningExamples' RN50 v1.5 (batch 2048, lr 0.256 per 256,
momentum 0.875, weight decay 1/32768 not on BN, 8 warmup epochs, cosine, label smoothing
0.1, BN per 256 images); `step` is torchvision's classic reference (batch 256, lr 0.1 ÷10
at epochs 30 and 60, weight decay 1e-4 on every parameter, BN per 32 images); `flax` is
google/flax examples/imagenet (batch 1024, lr 0.1 per 256, Nesterov, 5 warmup epochs,
cosine, 100 epochs, BN over the whole batch).
Expected top-1 (single 224 centre crop):
- step: 69.76 % (torchvision's IMAGENET1K_V1 weights, trained with this recipe);
- nvidia, flax: the sources publish ResNet-50 only (77.12 % and 76.3-76.7 %; see
  configs/imagenet50.py).
Runtime: ~0.72 h on 8 A100s, an estimate (ResNet-50 at NVIDIA's 2,470 img/s per A100,
NVIDIA DeepLearningExamples'
RN50 v1.5 README, scaled by 1.81/4.09 GMACs), not a measurement. Not yet run with this code.
"""

import ml_collections

from configs import recipes


def get_config(recipe: str = 'nvidia') -> ml_collections.ConfigDict:
  return recipes.imagenet('resnet18', recipe)
