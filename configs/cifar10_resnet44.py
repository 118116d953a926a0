"""ResNet-44 on CIFAR-10 with the recipe of He et al. 2015, §4.2.

Command:
  python -m resnet_jax.main --config=configs/cifar10_resnet44.py --workdir=/tmp/cifar44

Batch 128, SGD momentum 0.9 (not Nesterov), weight decay 1e-4, lr 0.1 divided by 10 at
32k and 48k iterations, 64k iterations, 4-pixel pad + random 32×32 crop + flip.
Expected: 7.17 % test error (92.83 % top-1), the paper's Table 6. The paper
chose the step counts on a 45k/5k train/val split; to reproduce that, add
--config.dataset.train_split='train[:45000]' --config.dataset.eval_split='train[45000:]'.
Runtime: ~14 h on a 2-core CPU VM (64k steps × the 0.77 s step that
`python -m resnet_jax.bench.benchmark --mode=train --model=resnet44 --batch_size=128
--image_size=32` measured there, 167 img/s); on a GPU, far less (not measured).
Not yet run to the end with this code.
"""

import ml_collections

from configs import recipes


def get_config() -> ml_collections.ConfigDict:
  return recipes.cifar10_paper('resnet44')
