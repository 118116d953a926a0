"""ResNet-20 on CIFAR-10 with the recipe of He et al. 2015, §4.2.

Command:
  python -m resnet_jax.main --config=configs/cifar10_resnet20.py --workdir=/tmp/cifar20

Batch 128, SGD momentum 0.9 (not Nesterov), weight decay 1e-4, lr 0.1 divided by 10 at
32k and 48k iterations, 64k iterations, 4-pixel pad + random 32×32 crop + flip. The paper
reports 8.75 % test error (Table 6). It picked these step counts on a 45k/5k train/val
split; to reproduce that, add --config.dataset.train_split='train[:45000]'
--config.dataset.eval_split='train[45000:]'. Not yet run with this code.
"""

from configs import default

CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)


def get_config():
  config = default.get_config()
  config.model = 'resnet20'
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
