"""Your own images, trained from scratch: DATA_DIR/{train,validation}/<class>/<images>.

Command:
  python -m resnet_jax.main --config=configs/folder.py --workdir=/tmp/mine \
      --config.dataset.data_dir=DATA_DIR

Any size of folder, any format TensorFlow decodes (.jpg .jpeg .png .bmp .gif .webp; other
files are counted in one warning). What the images decide is measured from a sample of
512 training images when the run starts and recorded in WORKDIR/config.json
(resnet_jax/data/folder_settings.py has the rules): the image size (their median shorter
side; up to 64 px as it is, larger ones a multiple of 32 up to 224), the channels (1 if the
images are grayscale), the normalisation (per-channel mean and std), the model (resnet20,
CIFAR-style, up to 64 px; resnet18 above), the augmentation (pad + crop up to 64 px,
random-resized crop above; flips on: --config.dataset.random_flip=False for text or
digits) and the batch (128, halved until an epoch has 8 steps). Any of them given on the
command line is used as given, e.g. --config.dataset.image_size=96 --config.model=resnet50.
Other split names: --config.dataset.eval_split=test.

Recipe: 30 epochs, SGD Nesterov, lr 0.1 at batch 128 (scaled with the batch) after a
2-epoch warmup, cosine to 0, weight decay 5e-4, label smoothing 0.1; evaluated every epoch.
Expected: it depends on your images. On a 2,000-image folder of Fashion-MNIST PNGs
(1,600 train / 400 validation, 28×28 grayscale: resnet20, batch 128), measured 2026-12-06
on the 2-core CPU VM: 85.92 ± 0.88 % final validation top-1 over seeds 0-2 (best epochs
86.50 %; docs/data.md, "Your own images"). Runtime: 7-8.5 minutes there (shared with a CI
run); in general 30 epochs of your training images: `python -m resnet_jax.bench.benchmark
--model=resnet20` prints this machine's images per second. Pretrained weights instead:
configs/finetune_folder.py.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  # Left to the images (resnet_jax/data/folder_settings.py).
  config.model = 'auto'
  config.batch_size = 0
  config.dataset.image_size = 0
  config.dataset.channels = 0
  config.dataset.mean = ()
  config.dataset.std = ()
  config.dataset.augment = 'auto'

  config.zero_init_residual = False
  config.dataset.name = 'image_folder'
  config.dataset.data_dir = ''  # required: --config.dataset.data_dir=DATA_DIR
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.num_epochs = 30.0
  config.optimizer = 'sgd'
  config.nesterov = True
  config.base_lr = 0.2  # × batch / 256: 0.1 at batch 128
  config.schedule = 'cosine'
  config.warmup_epochs = 2.0
  config.weight_decay = 5e-4
  config.label_smoothing = 0.1
  config.eval_every_steps = -1  # every epoch
  config.checkpoint_every_steps = 500
  config.log_every_steps = 20
  return config
