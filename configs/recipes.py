"""Recipe builders shared by the ImageNet and CIFAR-10 config files (not a config itself).

Each config file's `get_config()` calls one of these; every key comes from
configs/default.py. Figures quoted in the config docstrings are anchors from their
sources, not measurements of this code unless the README's results table says so.
"""

import ml_collections

from configs import default

IMAGENET_RECIPES = ('nvidia', 'nvidia250', 'step', 'flax')
IMAGENET_TRAIN_IMAGES = 1_281_167
CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)
FFCV_EPOCHS = (16, 24, 32, 40, 56, 88)
# libffcv/ffcv-imagenet rn50_configs/ and rn18_configs/rn*_<epochs>_epochs.yaml:
# resolution.start_ramp and end_ramp (the same for both models).
FFCV_RAMPS = {16: (11, 13), 24: (17, 20), 32: (23, 27), 40: (29, 34), 56: (41, 48),
              88: (65, 76)}
RSB_PROCEDURES = ('a1', 'a2', 'a3')


def _imagenet_base(model: str) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = model
  config.dataset.name = 'imagenet2012'
  # Each host reads only its share of the 1.28M records; with one host this changes nothing.
  config.dataset.order = 'per_process'
  config.checkpoint_every_steps = 2000
  return config


def imagenet(model: str, recipe: str = 'nvidia') -> ml_collections.ConfigDict:
  """ImageNet-1k with one of IMAGENET_RECIPES, each key as its source sets it.

  Args:
    model: resnet18/34/50/101/152.
    recipe: 'nvidia' (90 epochs) and 'nvidia250' (250, with mixup 0.2): NVIDIA
      DeepLearningExamples' RN50 v1.5 (PyTorch/Classification/ConvNets: configs.yml
      resnet50/DGXA100, image_classification/optimizers.py, resnet50v1.5/README.md,
      resnet50v1.5/training/AMP/DGXA100_resnet50_AMP_{90,250}E.sh). 'step':
      torchvision's classic reference
      (references/classification/README.md, train.py defaults), which trained
      IMAGENET1K_V1. 'flax': google/flax examples/imagenet (configs/default.py, tpu.py,
      train.py).
  """
  if recipe not in IMAGENET_RECIPES:
    raise ValueError(f'unknown recipe {recipe!r}; valid recipes: {", ".join(IMAGENET_RECIPES)} '
                     "(--config=configs/imagenet50.py:step)")
  config = _imagenet_base(model)
  if recipe in ('nvidia', 'nvidia250'):
    epochs = 250 if recipe == 'nvidia250' else 90
    config.dtype = 'bfloat16'  # NVIDIA trains with AMP (float16); bfloat16 needs no scaling
    config.batch_size = 2048  # 256 per GPU × 8 A100s
    config.bn_group_size = 256  # plain DDP: BatchNorm over each GPU's 256 images
    config.num_epochs = float(epochs)
    config.base_lr = 0.256  # "lr 0.256 for batch 256", × 2048/256 = configs.yml's 2.048
    config.momentum = 0.875
    config.nesterov = False
    config.weight_decay = 1 / 32768  # 3.0517578125e-05
    config.weight_decay_skip = 'norm_except_shortcut'  # --bn-weight-decay off, name filter
    config.label_smoothing = 0.1
    config.schedule = 'cosine'
    # lr_cosine_policy: base × (e + 1) / 8 in epoch e < 8, stepped per epoch; here per step
    # from base / 8.
    config.warmup_epochs = 8.0
    config.warmup_start_factor = 1 / 8
    config.zero_init_residual = False  # last_bn_0_init False
    config.mixup_alpha = 0.2 if epochs == 250 else 0.0
  elif recipe == 'step':
    config.dtype = 'float32'
    config.batch_size = 256  # 32 per GPU × 8
    config.bn_group_size = 32
    config.num_epochs = 90.0
    config.base_lr = 0.1
    config.momentum = 0.9
    config.nesterov = False
    config.weight_decay = 1e-4
    config.weight_decay_skip = 'none'  # --norm-weight-decay unset: every parameter decays
    config.schedule = 'step'  # StepLR(step_size=30, gamma=0.1)
    config.lr_boundaries_epochs = (30.0, 60.0)
    config.warmup_epochs = 0.0
    config.label_smoothing = 0.0
    config.zero_init_residual = False
  else:  # flax
    config.dtype = 'bfloat16'  # configs/tpu.py: half_precision
    config.batch_size = 1024  # configs/tpu.py
    config.bn_group_size = 0  # BatchNorm(axis_name='batch'): the whole global batch
    config.num_epochs = 100.0
    config.base_lr = 0.1  # × batch / 256
    config.momentum = 0.9
    config.nesterov = True
    config.weight_decay = 1e-4  # an L2 term on kernels (ndim > 1): the same gradient
    config.weight_decay_skip = 'norm_and_bias'
    config.schedule = 'cosine'
    config.warmup_epochs = 5.0
    config.label_smoothing = 0.0
    config.zero_init_residual = True
  return config


def torchvision_v2(model: str = 'resnet50') -> ml_collections.ConfigDict:
  """torchvision's "new recipe" (IMAGENET1K_V2): the command of pytorch/vision#3995
  (comment 1013906621) and the blog "How to Train State-Of-The-Art Models Using
  TorchVision's Latest Primitives"; train.py and presets.py for what the flags do."""
  config = _imagenet_base(model)
  config.dtype = 'float32'  # the command uses no --amp
  config.batch_size = 1024  # 128 per GPU × 8
  config.bn_group_size = 128  # no --sync-bn
  config.num_epochs = 600.0
  config.base_lr = 0.125  # --lr 0.5 at batch 1024
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 2e-5
  config.weight_decay_skip = 'norm'  # --norm-weight-decay 0.0; biases keep 2e-5
  config.schedule = 'cosine'  # CosineAnnealingLR(T_max=595) after the warmup
  config.warmup_epochs = 5.0
  config.warmup_start_factor = 0.01  # --lr-warmup-method linear, --lr-warmup-decay 0.01
  config.label_smoothing = 0.1
  config.mixup_alpha = 0.2
  config.cutmix_alpha = 1.0
  config.mix_switch_prob = 0.5  # RandomChoice([RandomMixup, RandomCutmix])
  config.dataset.trivial_augment = True  # --auto-augment ta_wide
  config.random_erasing = 0.1  # --random-erase 0.1, value 0 after Normalize
  config.random_erasing_mode = 'const'
  config.dataset.repeated_augmentation = 4  # --ra-sampler --ra-reps 4
  config.dataset.image_size = 176  # --train-crop-size 176
  config.dataset.eval_image_size = 224  # --val-crop-size 224
  config.dataset.eval_crop_fraction = 224 / 232  # --val-resize-size 232
  # --model-ema --model-ema-steps 32 --model-ema-decay 0.99998: train.py adjusts the
  # decay by world_size × batch × steps / epochs = 8 × 128 × 32 / 600.
  config.ema_decay = 1 - min(1.0, (1 - 0.99998) * 8 * 128 * 32 / 600)
  config.ema_every_steps = 32
  config.ema_copy_during_warmup = True  # n_averaged reset while epoch < warmup epochs
  config.zero_init_residual = False
  config.checkpoint_every_steps = 5000
  return config


def ffcv(model: str, epochs: int) -> ml_collections.ConfigDict:
  """libffcv/ffcv-imagenet's rn50_configs/ or rn18_configs/rn*_<epochs>_epochs.yaml, with
  train_imagenet.py for what the keys do."""
  if epochs not in FFCV_EPOCHS:
    raise ValueError(f'FFCV epochs {epochs}; valid: {", ".join(map(str, FFCV_EPOCHS))}')
  config = _imagenet_base(model)
  config.dtype = 'bfloat16'  # autocast + GradScaler (float16) there
  if model == 'resnet50':
    config.batch_size = 4096  # training.batch_size 512 per GPU × 8 A100s
    config.bn_group_size = 512
    config.base_lr = 1.7 * 256 / 4096  # lr 1.7 at that batch (FFCV never rescales it)
    config.weight_decay = 1e-4
  else:
    config.batch_size = 1024  # one A100
    config.bn_group_size = 0
    config.base_lr = 0.5 * 256 / 1024  # lr 0.5
    config.weight_decay = 5e-5
  config.num_epochs = float(epochs)
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay_skip = 'norm_except_shortcut'  # params named *bn*: no decay
  config.label_smoothing = 0.1
  # lr_schedule_type cyclic: np.interp(epoch, [0, 2, epochs], [1e-4 × lr, lr, 0]), per step.
  config.schedule = 'polynomial'
  config.lr_poly_power = 1.0
  config.warmup_epochs = 2.0  # lr_peak_epoch
  config.warmup_start_factor = 1e-4
  config.dataset.min_image_size = 160  # resolution.min_res
  config.dataset.image_size = 192  # resolution.max_res
  config.dataset.resize_start_epoch, config.dataset.resize_end_epoch = map(
      float, FFCV_RAMPS[epochs])
  config.dataset.resize_multiple = 32
  config.dataset.eval_image_size = 256  # validation.resolution
  config.dataset.eval_crop_fraction = 224 / 256  # DEFAULT_CROP_RATIO
  config.eval_flip = True  # validation.lr_tta
  config.blurpool = True  # training.use_blurpool 1
  config.zero_init_residual = False  # torchvision's default init
  config.checkpoint_every_steps = 1000
  return config


def rsb(procedure: str, model: str = 'resnet50') -> ml_collections.ConfigDict:
  """"ResNet strikes back" (Wightman, Touvron & Jégou 2021, arXiv 2110.00476) procedure
  A1, A2 or A3, as timm trains it. timm's code (optim/lamb.py, loss/
  binary_cross_entropy.py, models/resnet.py, data/distributed_sampler.py) fixes the
  components; the per-procedure values come from OpenMMLab's port of the recipes
  (mmpretrain configs/resnet/resnet50_8xb256-rsb-a{1,2,3}-*_in1k.py), since the
  paper's Table 1 could not be read here: see the config's docstring for which values
  are unconfirmed."""
  if procedure not in RSB_PROCEDURES:
    raise ValueError(f'unknown RSB procedure {procedure!r}; valid: {", ".join(RSB_PROCEDURES)}')
  config = _imagenet_base(model)
  a1, a3 = procedure == 'a1', procedure == 'a3'
  config.dtype = 'bfloat16'  # AMP
  config.batch_size = 2048
  config.bn_group_size = 256  # 8 × 256 (mmpretrain's 8xb256)
  config.num_epochs = {'a1': 600.0, 'a2': 300.0, 'a3': 100.0}[procedure]
  config.optimizer = 'lamb'
  config.adam_b1, config.adam_b2, config.adam_eps = 0.9, 0.999, 1e-6  # timm Lamb defaults
  config.grad_clip_norm = 1.0  # timm Lamb's built-in max_grad_norm
  peak = 8e-3 if a3 else 5e-3  # absolute, at batch 2048
  config.base_lr = peak * 256 / 2048
  config.weight_decay = 0.01 if a1 else 0.02
  config.weight_decay_skip = 'norm_and_bias'  # timm: no decay (nor trust ratio) on 1-D params
  config.schedule = 'cosine'
  config.warmup_epochs = 5.0
  config.warmup_start_factor = 1e-4 / peak  # timm's --warmup-lr 1e-4
  config.final_lr_factor = 1e-6 / peak  # timm's --min-lr 1e-6
  config.loss = 'bce'
  config.bce_target_threshold = 0.2
  config.label_smoothing = 0.0
  config.mixup_alpha = 0.2 if a1 else 0.1
  config.cutmix_alpha = 1.0
  config.mix_switch_prob = 0.5
  config.dataset.randaugment_layers = 2  # rand-m7-mstd0.5-inc1 (A3: m6)
  config.dataset.randaugment_magnitude = 6.0 if a3 else 7.0
  config.dataset.repeated_augmentation = 1 if a3 else 3
  config.drop_path_rate = 0.0 if a3 else 0.05
  config.dataset.image_size = 160 if a3 else 224
  config.dataset.eval_image_size = 224
  config.dataset.eval_crop_fraction = 0.95  # timm's crop_pct for the a1/a2/a3 weights
  config.zero_init_residual = True  # timm's ResNet zero-inits each block's last BN
  config.checkpoint_every_steps = 5000
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
