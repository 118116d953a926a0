"""ResNet-50 v1.5 on ImageNet, 90 epochs; recipe `cosine` (default) or `step`.

Commands (prepare imagenet2012 first, see docs/data.md):
  python -m resnet_jax.main --config=configs/imagenet50.py --workdir=/tmp/imagenet50
  python -m resnet_jax.main --config=configs/imagenet50.py:step --workdir=/tmp/imagenet50_step

Recipes (configs/recipes.py): `step` is He et al. 2015 as torchvision's reference trains
it (batch 256, lr 0.1 ÷10 at epochs 30 and 60); `cosine` is NVIDIA's (batch 1024, lr 0.4,
5 warmup epochs, cosine, label smoothing 0.1). Both bfloat16 compute.
Expected top-1 (single 224 centre crop):
- step: 76.13 % (torchvision's IMAGENET1K_V1 weights, trained with this recipe); the
  ResNet-50 released with the paper (KaimingHe/deep-residual-networks) gives 75.3 %;
- cosine: 77.12 % (NVIDIA DeepLearningExamples, RN50 v1.5, 90 epochs); the flax example
  reaches 76.3–76.7 % in 100 epochs (google/flax examples/imagenet README).
Runtime: ~1.6 h on 8 A100s, an estimate from NVIDIA's 2,470 img/s per A100 (NVIDIA
DeepLearningExamples' RN50 v1.5 README), not a measurement. Not yet run with this code.
"""

import ml_collections

from configs import recipes


def get_config(recipe: str = 'cosine') -> ml_collections.ConfigDict:
  return recipes.imagenet('resnet50', recipe)
