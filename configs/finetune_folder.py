"""Fine-tune ImageNet weights on your own images: DATA_DIR/{train,validation}/<class>/*.jpg.

Commands (the torchvision file is the one torchvision downloads, e.g. resnet50-11ad3fa6.pth,
or timm's model.safetensors; the conversion needs no network):
  python -m resnet_jax.tools.convert --source=torchvision --model=resnet50 \
      --input=resnet50-11ad3fa6.pth --output=/tmp/r50_imagenet
  python -m resnet_jax.main --config=configs/finetune_folder.py --workdir=/tmp/mine \
      --config.init_checkpoint=/tmp/r50_imagenet --config.dataset.data_dir=DATA_DIR

A new head for your classes; the backbone learns at a tenth of the head's rate, and
BatchNorm keeps ImageNet's running statistics (small batches estimate them badly).
For a linear probe add --config.freeze_backbone=True; for a small model,
--config.model=resnet18 with resnet18 weights. Accuracy depends on your data: no
expected figure. Runtime: 20 epochs over your training images; `python -m
resnet_jax.bench.benchmark --model=resnet50` prints this machine's images per second.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = 'resnet50'
  config.init_checkpoint = ml_collections.config_dict.placeholder(str)  # required: set it
  config.reset_head = True
  config.backbone_lr_multiplier = 0.1
  config.freeze_batch_stats = True
  config.zero_init_residual = False
  config.dataset.name = 'image_folder'
  config.dataset.data_dir = ''  # required: --config.dataset.data_dir=DATA_DIR
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.dataset.image_size = 224
  config.dataset.augment = 'imagenet'
  config.batch_size = 64
  config.num_epochs = 20.0
  config.base_lr = 0.04  # × 64/256: a peak of 0.01 for the head, 0.001 for the backbone
  config.schedule = 'cosine'
  config.warmup_epochs = 1.0
  config.weight_decay = 1e-4
  config.label_smoothing = 0.1
  config.log_every_steps = 10
  config.checkpoint_every_steps = 500
  return config
