"""ResNet-50 v1.5 at batch 32,768 with LARS, MLPerf-style: 36 epochs to ~75.9 % top-1.

Command (a TPU pod slice or a GPU cluster; see docs/many-hosts.md):
  python -m resnet_jax.main --config=configs/imagenet50_lars.py --workdir=gs://bucket/r50_lars

LARS (You et al. 2017; optax.lars, BN parameters and biases excluded from the trust
ratio and weight decay), momentum 0.9, 5 warmup epochs then polynomial (power 2) decay to
0, label smoothing 0.1, per-group BatchNorm over 128 images (as MLPerf's per-chip BN:
bn_group_size), bfloat16. The peak learning rate is base_lr × 32768/256 = 12.8: LARS'
best peak does not grow linearly with the batch, so retune base_lr when you change
batch_size; it is a starting point, not a tuned value.
Expected: MLPerf's target is 75.9 % top-1, reached in ~36 epochs by tuned submissions
(mlcommons/training_results_v4.0); this config has not been run, so it is a target, not a result.
Runtime: ~0.6 h on 8 A100s at NVIDIA's 2,470 img/s per A100 (an estimate, not a
measurement; a batch of 32,768 wants far more chips than 8).
"""

import ml_collections

from configs import recipes


def get_config() -> ml_collections.ConfigDict:
  config = recipes.imagenet('resnet50', 'flax')
  config.batch_size = 32_768
  config.num_epochs = 36.0
  config.optimizer = 'lars'
  config.momentum = 0.9
  config.nesterov = False
  config.lars_trust_coefficient = 0.001
  config.base_lr = 0.1  # peak 12.8 at this batch
  config.weight_decay = 5e-5
  config.schedule = 'polynomial'
  config.lr_poly_power = 2.0
  config.warmup_epochs = 5.0
  config.label_smoothing = 0.1
  config.bn_group_size = 128
  config.eval_every_steps = 156  # ~4 epochs
  config.checkpoint_every_steps = 156
  return config
