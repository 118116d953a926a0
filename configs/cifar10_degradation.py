"""The degradation experiment on CIFAR-10 with He et al. 2015's recipe (§4.2, Fig. 6).

Command (on an accelerator; the paper's depths):
  python -m resnet_jax.studies.degradation --config=configs/cifar10_degradation.py \
      --depths=20,32,44,56 --workdir=/tmp/degradation_cifar10

Batch 128, SGD momentum 0.9, weight decay 1e-4, lr 0.1 ÷10 at 32k and 48k iterations,
64k iterations, 4-pixel pad + random crop + flip (configs/recipes.py).
Expected (the paper's Fig. 6 and Table 6): plain-20/32/44/56 end with training error
rising with depth (plain-56 above plain-20); ResNet-20/32/44/56 with test error falling
with depth: 8.75, 7.51, 7.17, 6.97 %. Not yet run here.
Runtime: 8 runs × 64k steps, days on a 2-core CPU (~17 h for each 56-layer net); on a
GPU, far less (not measured).

The studies of the trained nets, with the papers' settings (config.study):
  python -m resnet_jax.studies.landscape --config=configs/cifar10_degradation.py --workdir=...
  python -m resnet_jax.studies.lesion --config=configs/cifar10_degradation.py --workdir=...
Li et al. 2018 (Fig. 5): a 51 × 51 grid over [−1, 1]² on the whole training split (50,000
images). Veit et al. 2016 (Fig. 3, 5): the whole test split (10,000). Not yet run here:
2,601 grid evaluations of 50,000 images at 32 × 32 are ~3,000 times the digits study's
landscape work per net (441 of 512 images at 14 × 14), ~5 days for a 56-layer net on the
2-core CPU VM where the digits' took 150 s: meant for an accelerator.
"""

from configs import recipes


def get_config():
  config = recipes.cifar10_paper('resnet20')  # the model is set per run
  config.diagnostics_every_steps = 2_000
  config.study.landscape_points = 51
  config.study.landscape_examples = 0  # the whole training split
  config.study.lesion_examples = 0  # the whole test split
  config.study.eval_batch_size = 1000
  return config
