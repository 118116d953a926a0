"""ResNet-152 v1.5 on ImageNet, 90 epochs; recipe `cosine` (default) or `step`.

Commands (prepare imagenet2012 first, see docs/data.md):
  python -m resnet_jax.main --config=configs/imagenet152.py --workdir=/tmp/imagenet152
  python -m resnet_jax.main --config=configs/imagenet152.py:step --workdir=/tmp/imagenet152_step

Recipes (configs/recipes.py): `step` is He et al. 2015 as torchvision's reference trains
it (batch 256, lr 0.1 ÷10 at epochs 30 and 60); `cosine` is NVIDIA's (batch 1024, lr 0.4,
5 warmup epochs, cosine, label smoothing 0.1). Both bfloat16 compute.
Expected top-1 (single 224 centre crop):
- step: 78.31 % (torchvision's IMAGENET1K_V1 weights, trained with this recipe);
- cosine: no published anchor at this depth; at ResNet-50 the cosine recipe gives
  ~1 point more than the step one (77.12 vs 76.13 %).
Runtime: ~4.6 h on 8 A100s, an estimate (ResNet-50 at NVIDIA's 2,470 img/s per A100,
NVIDIA DeepLearningExamples'
RN50 v1.5 README, scaled by 11.51/4.09 GMACs), not a measurement. Not yet run with this code.
"""

import ml_collections

from configs import recipes


def get_config(recipe: str = 'cosine') -> ml_collections.ConfigDict:
  return recipes.imagenet('resnet152', recipe)
