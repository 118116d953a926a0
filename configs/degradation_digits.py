"""The degradation experiment's recipe on the embedded digits (resnet_jax.studies.degradation).

Command (no download):
  python -m resnet_jax.studies.degradation --workdir=/tmp/degradation
  (the same as --config=configs/degradation_digits.py --depths=20,56)

One recipe for plain and residual nets alike: batch 128, 264 steps (23.5 epochs of the
1,437 training images), SGD with Nesterov momentum 0.9 at lr 0.1 (base_lr 0.2 per 256),
3 warmup epochs then cosine, weight decay 1e-4, digits upscaled to 14×14 with ±2-pixel
shifts, no zero-init of the residual branches (He et al. 2015 had none; a plain net has
no branch to zero). The warmup is what makes it fair: without it, ResNet-56 also
stumbled in so short a run (21.6 % training error in the stand-alone probe this recipe
comes from; not re-measured with this code). The
model is set per run by the command (plainN / resnetN). Add
--config.diagnostics_every_steps=33 for the diagnostics and resnet_jax.tools.report's
plots of them (a second compile of each net's step: about 20 s more per 56-layer net).

Expected: plain-56 ends with a clearly higher training error than plain-20, ResNet-56
no worse than ResNet-20 and well below plain-56 (the README's table: 2026-12-01).
Runtime: 9 min 38 s for the four nets on a 2-core CPU VM, 2026-12-01 (the README's table).
"""

from configs import digits


def get_config():
  config = digits.get_config()
  config.model = 'resnet20'  # replaced by each run
  config.zero_init_residual = False
  config.dataset.image_size = 14  # 16 (the demo's): 10.9 min for the four nets
  config.batch_size = 128
  config.num_train_steps = 264
  config.optimizer = 'sgd'
  config.nesterov = True
  config.momentum = 0.9
  config.base_lr = 0.2  # × 128 / 256 = 0.1
  config.schedule = 'cosine'
  config.warmup_epochs = 3.0
  config.weight_decay = 1e-4
  config.log_every_steps = 11
  config.eval_every_steps = 33
  config.checkpoint_every_steps = 264
  return config
