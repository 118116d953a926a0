"""Every config key, with defaults; the other configs start from this one.

Durations are in epochs or steps (`*_epochs`, `*_steps`). Values that depend on the
batch size (the scaled learning rate, steps per epoch) are derived in the trainer,
so `--config.batch_size=...` on the command line keeps them right.
"""

import ml_collections

from resnet_jax.data import IMAGENET_MEAN, IMAGENET_STD


def get_config() -> ml_collections.ConfigDict:
  """The defaults: ResNet-50 on ImageNet, SGD + cosine, float32."""
  config = ml_collections.ConfigDict()

  # Model.
  # Values an image folder's images may decide ('auto', 0 or (): measured from a sample of
  # the training split when a run starts; resnet_jax/data/folder_settings.py): model,
  # dataset.image_size, .channels, .mean, .std, .augment and batch_size. configs/folder.py.
  config.model = 'resnet50'  # resnet_jax.models.VARIANTS, or auto
  config.dtype = 'float32'  # compute dtype: float32, bfloat16, float16
  config.zero_init_residual = True  # last BN scale of each residual branch starts at 0
  config.bn_momentum = 0.9  # running = momentum * running + (1 - momentum) * batch
  config.bn_epsilon = 1e-5
  config.bn_group_size = 0  # BN statistics over: 0 the whole global batch, N groups of N
  # The residual units' ablations (resnet_jax/models/blocks.py; the defaults change nothing).
  # Shortcut of the units that change shape: auto (the model's own), zero_pad (He et al.
  # 2015's option A), projection (B), projection_all (C: a projection on every unit).
  config.shortcut = 'auto'
  # Where BN and ReLU sit (He et al. 2016, Fig. 4): auto (the model's own), original,
  # bn_after_add, relu_before_add, relu_preact, full_preact.
  config.placement = 'auto'
  # The shortcut of the other units (He et al. 2016, Table 1): identity, scaling,
  # exclusive_gating, shortcut_gating, conv (1×1), dropout. Plain nets: model plainN.
  config.shortcut_variant = 'identity'
  config.shortcut_scale = 0.5  # scaling: shortcut_scale × x + residual_scale × F(x)
  config.residual_scale = 1.0
  config.gate_bias_init = -6.0  # the gating variants' initial gate bias b_g
  config.shortcut_dropout = 0.5  # dropout's rate on the shortcut
  # Stochastic depth (Huang et al. 2016, as timm's drop_path): in training, each example
  # drops each unit's residual branch with probability drop_path_rate × i / (units − 1) for
  # the i-th unit (0-based, over the whole net), and scales kept branches by 1 / (1 − p);
  # evaluation uses every branch. 0: off.
  config.drop_path_rate = 0.0
  # FFCV's BlurPool: a fixed 3×3 binomial blur ([1,2,1]⊗[1,2,1]/16, zero padding) before
  # every strided conv with at least 16 input channels (Zhang 2019, "Making CNNs
  # shift-invariant again").
  config.blurpool = False
  # Speed and memory; none of these changes the numbers beyond float rounding.
  # CPU-only hosts: split the CPU into N JAX devices, each running its share of the batch
  # (0: JAX's default, one). 2 on a 2-core VM: ResNet-20 at 28² 1.3x faster
  # (configs/fashion_mnist.py:cpu; a busy host's deadlock and its mitigation: cpu/devices.py).
  config.cpu_devices = 0
  config.conv_impl = 'auto'  # auto (dot on CPU), xla, dot: resnet_jax/cpu/conv.py says which convs
  config.scan_blocks = False  # nn.scan over each stage's identical blocks (GPU/TPU: faster
  #                             compiles; XLA:CPU runs the loop 6-17x slower)
  config.remat = False  # recompute block activations in the backward pass: less memory
  # What remat keeps from the forward pass: full (only each block's input; everything
  # else recomputed) or conv_outputs (convolution outputs kept, BN/ReLU recomputed).
  config.remat_policy = 'full'
  # float16 needs loss scaling; auto: dynamic with float16, none otherwise.
  config.loss_scale = 'auto'  # auto, dynamic, none
  config.loss_scale_init = 2.0**15
  config.loss_scale_period = 2000  # finite steps before the scale doubles

  # Data.
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'imagenet2012'  # a TFDS name (sklearn_digits ships with us;
  #   fashion_mnist with pipeline=device reads Debian's dataset-fashion-mnist files
  #   offline, through TFDS otherwise), or image_folder: data_dir/<split>/<class>/<images>
  config.dataset.data_dir = ''  # TFDS data_dir ('' = ~/tensorflow_datasets), the folder, or
  #                               one holding Fashion-MNIST's four IDX files
  config.dataset.manual_dir = ''  # where ImageNet's tar files lie, for preparing it
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.dataset.image_size = 224  # training resolution (the largest, with a resize ramp)
  config.dataset.channels = 3  # image folders: 1 (grayscale) or 3 (RGB); TFDS: its own
  # Evaluation: the centre crop of eval_crop_fraction × the shorter side, resized to
  # eval_image_size (0: image_size). FixRes (Touvron et al. 2019): train smaller than you test.
  config.dataset.eval_image_size = 0
  config.dataset.eval_crop_fraction = 0.875
  # Progressive resizing (FFCV): the training resolution ramps linearly from
  # min_image_size at resize_start_epoch to image_size at resize_end_epoch, rounded to a
  # multiple of resize_multiple, changing only at epoch boundaries; 0: off. Each
  # resolution compiles the step once.
  config.dataset.min_image_size = 0
  config.dataset.resize_start_epoch = 0.0
  config.dataset.resize_end_epoch = 0.0
  config.dataset.resize_multiple = 32
  config.dataset.augment = 'imagenet'  # none, cifar (pad + crop), imagenet (random-resized crop)
  #                                     or auto
  config.dataset.random_flip = True
  config.dataset.crop_padding = 4  # pixels each side, for augment='cifar'
  config.dataset.mean = IMAGENET_MEAN  # normalisation, applied on the device
  config.dataset.std = IMAGENET_STD
  # RandAugment (resnet_jax/data/randaugment.py) after the crop and flip; 0 layers: off.
  config.dataset.randaugment_layers = 0
  config.dataset.randaugment_magnitude = 9.0  # 0..10
  # TrivialAugment-wide (Müller & Hutter 2021; torchvision's TrivialAugmentWide): one op
  # per image at a uniform magnitude bin out of 31; not together with RandAugment.
  config.dataset.trivial_augment = False
  # Repeated augmentation (Hoffer et al. 2020; timm's and torchvision's RASampler): each
  # image appears this many times in its global batch, on different devices, each copy
  # with its own augmentation draws. An epoch is still as many examples as the split
  # (steps per epoch do not change); the images come from one shuffled pass over the
  # split after another, so every `repeated_augmentation` epochs cover the whole split.
  config.dataset.repeated_augmentation = 1
  # tf_data: stream through tf.data on the host (any dataset, any augmentation); device:
  # hold the whole splits on every device and augment there (augment none or cifar, flip;
  # erasing, mixup and cutmix as always in the step), no TensorFlow for fashion_mnist's IDX
  # files and sklearn_digits (resnet_jax/data/device_input.py).
  config.dataset.pipeline = 'tf_data'
  config.dataset.cache = False  # keep a TFDS split's encoded images in memory (small sets)
  config.dataset.shuffle_buffer = 16_384  # TFDS records; image folders shuffle fully
  # TFRecord files read at once, interleaved record by record (each shuffled within
  # itself): part of the data order, so fixed here rather than measured from the
  # machine. 16 (TFDS's default) keeps 16 reader threads busy, ~6× what 8 GPUs at ~7,000
  # img/s need; memory ~ cycle_length × min(file, shuffle_buffer) records (docs/data.md).
  config.dataset.cycle_length = 16
  # global: batches independent of the process count (each process reads all records);
  # per_process: process p reads only part p of the split (big TFDS data on many hosts).
  config.dataset.order = 'global'

  # Duration and batch.
  config.batch_size = 1024  # global, over all processes and devices
  # k > 1: each update's batch is split into k micro-batches (example i in micro-batch
  # i mod k), one forward and backward pass each, BatchNorm statistics per micro-batch;
  # batch_size, the learning rate and the epochs stay those of the whole batch.
  config.grad_accum_steps = 1
  config.num_epochs = 90.0
  config.num_train_steps = -1  # > 0 overrides num_epochs

  # Optimizer and schedule.
  config.optimizer = 'sgd'  # sgd, adamw, lamb (timm's, as RSB trains), lars (large batches)
  config.momentum = 0.9  # sgd and lars
  config.nesterov = True
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8  # adamw and lamb
  config.grad_clip_norm = 0.0  # > 0: clip the global gradient norm to it (timm's LAMB: 1.0)
  config.base_lr = 0.1  # for a batch of 256; the trainer scales it by batch_size / 256
  config.weight_decay = 1e-4
  # What weight decay skips: norm_and_bias (BN scales/offsets and biases: kernels only;
  # timm, the flax example), norm (BN only; torchvision's norm_weight_decay=0),
  # norm_except_shortcut (BN but the projection shortcut's, as NVIDIA's and FFCV's name
  # filters do), none (every parameter; torchvision's classic reference).
  config.weight_decay_skip = 'norm_and_bias'
  config.schedule = 'cosine'  # cosine, step, constant, polynomial (each after linear warmup)
  config.lr_poly_power = 2.0  # schedule='polynomial': peak × (1 - t)^power, t from 0 to 1
  config.lars_trust_coefficient = 0.001
  config.warmup_epochs = 5.0
  config.warmup_start_factor = 0.0  # the warmup starts at this × the peak rate
  config.final_lr_factor = 0.0  # cosine and polynomial end at this × the peak rate
  config.lr_boundaries_epochs = ()  # schedule='step': decay at these epochs ...
  config.lr_boundaries_steps = ()  # ... or at these steps (not both)
  config.lr_decay_factor = 0.1
  config.label_smoothing = 0.0
  # softmax: cross-entropy over the classes; bce: per-class binary cross-entropy averaged
  # over classes and examples (timm's BinaryCrossEntropy, "ResNet strikes back").
  config.loss = 'softmax'
  config.bce_target_threshold = 0.0  # bce: targets above it become 1, the rest 0; 0: off
  # Random erasing (Zhong et al. 2020) on the device after normalisation, per example with
  # this probability: a box of 2-33 % of the image, aspect 0.3-3.3; 0: off. Mode const
  # fills it with 0 (the mean colour; torchvision's RandomErasing), pixel with N(0, 1)
  # noise per pixel and channel (timm's mode 'pixel').
  config.random_erasing = 0.0
  config.random_erasing_mode = 'const'
  # The box's geometry: torchvision (the figures above) or zhong (Zhong et al.'s code:
  # area 2-40 %, aspect ratio uniform in [0.3, 1/0.3], 100 tries; resnet_jax/erasing.py).
  config.random_erasing_box = 'torchvision'
  # Batch-level mixing on the device (resnet_jax/mixing.py); alpha 0: off. With both on,
  # each batch takes cutmix with probability mix_switch_prob, else mixup.
  config.mixup_alpha = 0.0
  config.cutmix_alpha = 0.0
  config.mix_switch_prob = 0.5
  # Partners are mirror images within groups of this many consecutive examples; 0: the
  # bn_group_size groups (0 there: the whole batch). Groups inside one device's share
  # of the batch mix without traffic between devices.
  config.mix_group_size = 0
  config.ema_decay = 0.0  # > 0 keeps an EMA of weights and BN statistics, evaluated too
  config.ema_every_steps = 1  # the EMA takes a step every this many steps (torchvision: 32)
  # During the learning-rate warmup the EMA copies the weights (torchvision's reference).
  config.ema_copy_during_warmup = False
  # Evaluation also averages the logits of each image and its mirror image (FFCV's
  # test-time augmentation); metrics eval/... are then those of the averaged logits.
  config.eval_flip = False
  # A step with a non-finite loss or gradient: skip (drop its update, count it in
  # train/skipped_steps and go on) or halt (stop with an error naming the step, before
  # that state is evaluated or saved). auto: skip with float16, halt otherwise.
  config.nonfinite_policy = 'auto'

  # Fine-tuning: start a new run from trained weights. Ignored once the workdir holds a
  # checkpoint (then the run resumes from it).
  config.init_checkpoint = ''  # '' (random init), a workdir (its newest checkpoint) or a
  #                              directory written by `python -m resnet_jax.tools.convert`
  config.init_weights = 'auto'  # auto (the run's weight EMA if it kept one), ema, live
  config.reset_head = False  # a new, randomly initialised classifier (needed when the class
  #                            count differs from the checkpoint's)
  config.freeze_backbone = False  # train the head only
  config.backbone_lr_multiplier = 1.0  # everything but the head learns at this × the rate
  config.freeze_batch_stats = False  # BatchNorm normalises with, and keeps, its running
  #                                    statistics (small batches, small datasets)
  config.eval_only = False  # restore (or init) and evaluate; no training, nothing saved

  # Periodic work.
  config.log_every_steps = 100
  config.eval_every_steps = -1  # -1: once per epoch
  config.checkpoint_every_steps = 1000
  config.max_checkpoints_to_keep = 3
  # Async: training goes on while a checkpoint is written, so a crash in that window
  # redoes those steps too. Sync: at most checkpoint_every_steps are ever redone.
  config.checkpoint_async = True
  # Every N steps, log per-block gradient norm, parameter norm and update/parameter ratio,
  # and each 3×3 conv's response std (He et al. 2015, Fig. 7) under diagnostics/...;
  # 0: off (the ordinary steps compile and run exactly as without it).
  config.diagnostics_every_steps = 0
  # jax.profiler trace of a step range, e.g. '10-15' (inclusive), written under
  # workdir/plugins/profile for TensorBoard's profile plugin; '': off.
  config.profile_steps = ''
  # JAX's persistent compilation cache: a second start or a resume loads its compiled
  # steps instead of recompiling. '': off. Shared by runs on this machine.
  config.compilation_cache_dir = '~/.cache/resnet_jax/jax_compilation_cache'
  config.seed = 0

  # The studies of trained plain and residual nets (python -m resnet_jax.studies.landscape and
  # resnet_jax.studies.lesion on a degradation workdir; docs/residual-study.md).
  config.study = ml_collections.ConfigDict()
  # Loss landscape (Li et al. 2018): a points × points grid over [−range, range]² along
  # two filter-normalised random directions (the paper: 51 points, range 1), on the
  # training split's first `landscape_examples` examples (0: all, as the paper).
  config.study.landscape_points = 21
  config.study.landscape_range = 1.0
  config.study.landscape_examples = 512
  # Lesions (Veit et al. 2016): the evaluation split's first `lesion_examples` (0: all);
  # `lesion_draws` random sets of k units per k.
  config.study.lesion_examples = 0
  config.study.lesion_draws = 10
  # Gradient per path length (Veit et al.'s Fig. 6b): `path_draws` sampled paths per
  # length, each measured on its own batch of `path_examples` training examples (the
  # split's first path_draws × path_examples).
  config.study.path_draws = 4
  config.study.path_examples = 64
  config.study.eval_batch_size = 512  # examples per compiled evaluation
  config.study.seed = 0  # the directions and the random deletions and paths
  return config
