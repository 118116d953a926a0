"""The degradation experiment and the studies of its nets on Fashion-MNIST: plain-20/56
against ResNet-20/56 (python -m resnet_jax.studies.degradation, landscape, lesion).

Command (offline with Debian's dataset-fashion-mnist; no TensorFlow):
  python -m resnet_jax.studies.degradation --config=configs/fashion_mnist_degradation.py \
      --depths=20,56 --workdir=/tmp/degradation_fmnist
  python -m resnet_jax.studies.landscape --config=configs/fashion_mnist_degradation.py \
      --workdir=/tmp/degradation_fmnist
  python -m resnet_jax.studies.lesion --config=configs/fashion_mnist_degradation.py \
      --workdir=/tmp/degradation_fmnist

The CPU-sized study: the first 10,000 training images, 12 epochs (936 steps of 128), the
first 2,000 test images for evaluation; one recipe for plain and residual nets alike:
SGD Nesterov 0.9, lr 0.1 after 2 warmup epochs, cosine, weight decay 1e-4, 4-pixel pad +
crop + flip, He et al.'s CIFAR nets (option A shortcuts, 28×28×1 input). The full data
and length on an accelerator: --config.dataset.train_split=train
--config.dataset.eval_split=test --config.num_epochs=160 (He et al.'s 64k steps are
~137 epochs of 60,000 at batch 128).

Studies: the landscape on 512 training images, a 15 × 15 grid (a 21 × 21 grid on 1,024
images, the digits study's, would take ~64 min for the four nets on the CPU); lesions on the 2,000
evaluation images; the gradient per path length from 64 sampled paths per length, each
on its own batch of 32 training images (Veit et al. measure 1,000; the spread over the
draws is drawn with the curve).

Expected: plain-56 ends with a higher training error than plain-20, ResNet-56 no worse
than ResNet-20 (He et al. 2015, Fig. 6, on CIFAR-10). Measured (2-core CPU VM, 2026-12-06,
docs/residual-study.md "On Fashion-MNIST"): training error plain-20 8.4 %, ResNet-20 7.4 %,
plain-56 19.7 %, ResNet-56 7.5 %. Runtime on that VM, shared with test runs (upper bounds):
degradation 2 h 02 min for the four nets (plain-56 30 min, ResNet-56 52 min), landscape
41 min, lesions 101 min (the 56-layer nets 46 and 48 min of it): the ≤ 60 minutes this
config was sized for was not met on the shared VM (not measured alone).
"""

from configs import default, fashion_mnist


def get_config():
  config = default.get_config()
  config.model = 'resnet20'  # replaced by each run
  config.zero_init_residual = False
  fashion_mnist.set_data(config)
  config.dataset.train_split = 'train[:10000]'
  config.dataset.eval_split = 'test[:2000]'
  config.batch_size = 128
  config.num_epochs = 12.0
  config.optimizer = 'sgd'
  config.nesterov = True
  config.momentum = 0.9
  config.base_lr = 0.2  # × 128 / 256 = 0.1
  config.schedule = 'cosine'
  config.warmup_epochs = 2.0
  config.weight_decay = 1e-4
  config.log_every_steps = 39
  config.eval_every_steps = 78  # each epoch (10,000 // 128)
  config.checkpoint_every_steps = 936
  config.study.landscape_points = 15
  config.study.landscape_examples = 512
  config.study.lesion_examples = 0  # the whole evaluation split: 2,000
  config.study.path_draws = 64
  config.study.path_examples = 32
  config.study.eval_batch_size = 500
  return config
