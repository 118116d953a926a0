"""The embedded demo: ResNet-20 on scikit-learn's handwritten digits, upscaled to 16×16.

Command (no download; the data ships inside scikit-learn):
  python -m resnet_jax.main --config=configs/digits.py --workdir=/tmp/digits

1,437 training and 360 held-out images. Expected: ≥ 98.5 % eval/top1 (measured 99.4–100 %
over four seeds). Runtime: about 40–100 s on a 2-core CPU (the README's results table).
"""

from configs import default

DIGITS_MEAN = (77.85,)  # measured over all 1,797 images, 0..255 scale
DIGITS_STD = (95.85,)


def get_config():
  config = default.get_config()
  config.model = 'resnet20'
  config.zero_init_residual = False
  config.dataset.name = 'sklearn_digits'
  config.dataset.eval_split = 'test'
  config.dataset.image_size = 16
  config.dataset.augment = 'cifar'  # small random shifts; no flips for digits
  config.dataset.random_flip = False
  config.dataset.crop_padding = 2
  config.dataset.mean = DIGITS_MEAN
  config.dataset.std = DIGITS_STD
  config.dataset.cache = True
  config.dataset.shuffle_buffer = 2_048
  config.batch_size = 128
  config.num_epochs = 30.0
  config.base_lr = 0.2
  config.weight_decay = 5e-4
  config.warmup_epochs = 1.0
  config.nesterov = True
  config.log_every_steps = 22
  config.eval_every_steps = 110
  config.checkpoint_every_steps = 110
  return config
