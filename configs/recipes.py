"""Recipe builders shared by the ImageNet and CIFAR-10 config files (not a config itself).

Each config file's `get_config()` calls one of these; every key comes from
configs/default.py. Figures quoted in the config docstrings are anchors from their
sources, not measurements of this code unless the README's results table says so.
"""

import ml_collections

from configs import default

IMAGENET_RECIPES = ('step', 'cosine')
IMAGENET_TRAIN_IMAGES = 1_281_167
CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)


def imagenet(model: str, recipe: str = 'cosine') -> ml_collections.ConfigDict:
  """ImageNet-1k, 90 epochs, one of two recipes.

  Args:
    model: resnet18/34/50/101/152.
    recipe: 'step': He et al. 2015 as torchvision's reference trains it (batch 256,
      SGD momentum 0.9, lr 0.1 ÷10 at epochs 30 and 60, weight decay 1e-4, no
      warmup, no label smoothing). 'cosine': NVIDIA DeepLearningExamples' RN50 v1.5
      recipe (batch 1024, lr 0.4, 5 warmup epochs, cosine, label smoothing 0.1, zero-init
      of the last BN scale of each block).
  """
  if recipe not in IMAGENET_RECIPES:
    raise ValueError(f'unknown recipe {recipe!r}; valid recipes: {", ".join(IMAGENET_RECIPES)} '
                     "(--config=configs/imagenet50.py:step)")
  config = default.get_config()
  config.model = model
  config.dtype = 'bfloat16'
  config.dataset.name = 'imagenet2012'
  # Each host reads only its share of the 1.28M records; with one host this changes nothing.
  config.dataset.order = 'per_process'
  config.num_epochs = 90.0
  config.base_lr = 0.1  # per 256 images; the trainer scales it by batch_size / 256
  config.weight_decay = 1e-4
  config.nesterov = False
  config.checkpoint_every_steps = 2000
  if recipe == 'step':
    config.batch_size = 256
    config.schedule = 'step'
    config.lr_boundaries_epochs = (30.0, 60.0)
    config.warmup_epochs = 0.0
    config.label_smoothing = 0.0
    config.zero_init_residual = False
  else:
    config.batch_size = 1024
    config.schedule = 'cosine'
    config.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.zero_init_residual = True
  return config


def cifar10_paper(model: str) -> ml_collections.ConfigDict:
  """He et al. 2015 §4.2: batch 128, SGD momentum 0.9, weight decay 1e-4, lr 0.1 ÷10 at
  32k and 48k iterations, 64k iterations, 4-pixel pad + random 32×32 crop + flip."""
  config = default.get_config()
  config.model = model
  config.zero_init_residual = False
  config.dataset.name = 'cifar10'
  config.dataset.eval_split = 'test'
  config.dataset.image_size = 32
  config.dataset.augment = 'cifar'
  config.dataset.crop_padding = 4
  config.dataset.mean = CIFAR10_MEAN
  config.dataset.std = CIFAR10_STD
  config.dataset.cache = True
  config.dataset.shuffle_buffer = 50_000
  config.batch_size = 128
  config.num_train_steps = 64_000
  config.optimizer = 'sgd'
  config.nesterov = False
  config.base_lr = 0.2  # × 128 / 256 = the paper's 0.1
  config.weight_decay = 1e-4
  config.schedule = 'step'
  config.warmup_epochs = 0.0
  config.lr_boundaries_steps = (32_000, 48_000)
  config.eval_every_steps = 4_000
  config.checkpoint_every_steps = 4_000
  return config
