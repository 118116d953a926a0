"""ResNet-50 v1.5, a long modern recipe: 600 epochs, label smoothing, mixup, cutmix, EMA,
RandAugment, after torchvision's "how to train state-of-the-art models" (V2) recipe.

Command:
  python -m resnet_jax.main --config=configs/imagenet50_long.py --workdir=/tmp/r50_long
  (--config.dataset.randaugment_layers=0 turns RandAugment off)

Batch 1024, lr 0.5 (SGD momentum 0.9), 5 warmup epochs, cosine, weight decay 2e-5,
label smoothing 0.1, mixup α 0.2 and cutmix α 1.0 (one of them per batch), a weight EMA
(decay 0.9999 per step, evaluated as eval_ema/*), RandAugment with 2 layers at magnitude
9. Expected: below 80.86 %, the top-1 of torchvision's V2 recipe (pytorch/vision#3995), which
also uses TrivialAugment, random erasing, train/eval sizes 176/232 and an EMA every 32
steps that this config does not copy. Not yet run with this code.
Runtime: ~10.7 h on 8 A100s (600 epochs at NVIDIA's 2,470 img/s per A100: an estimate,
not a measurement).
"""

import ml_collections

from configs import recipes


def get_config() -> ml_collections.ConfigDict:
  config = recipes.imagenet('resnet50', 'cosine')
  config.num_epochs = 600.0
  config.batch_size = 1024
  config.base_lr = 0.125  # × 1024/256 = 0.5
  config.weight_decay = 2e-5
  config.label_smoothing = 0.1
  config.mixup_alpha = 0.2
  config.cutmix_alpha = 1.0
  config.ema_decay = 0.9999
  config.dataset.randaugment_layers = 2
  config.dataset.randaugment_magnitude = 9.0
  config.checkpoint_every_steps = 5000
  return config
