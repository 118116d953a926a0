"""He et al. 2015, CIFAR-10 (§4.2, Fig. 6, Table 6): plain and residual nets, 20 to 1202 layers.

Command (the argument is the model; default plain56):
  python -m resnet_jax.main --config=configs/cifar10_table6.py:plain56 --workdir=/tmp/plain56

Models: plain20, plain32, plain44, plain56, plain110 and resnet20, resnet32, resnet44,
resnet56, resnet110, resnet1202 (also configs/cifar10_resnetN.py). Recipe as
configs/recipes.py's cifar10_paper: batch 128, SGD momentum 0.9, weight decay 1e-4,
lr 0.1 ÷10 at 32k and 48k iterations, 64k iterations, 4-pixel pad + random crop + flip.
110 and 1202 layers: the paper warms up at lr 0.01 until training error is below 80 %
(~400 iterations); here a linear warmup over the first epoch (391 steps).

Expected, the paper's test error (Table 6): ResNet-20 8.75 %, -32 7.51 %, -44 7.17 %,
-56 6.97 %, -110 6.43 % (best of 5; mean 6.61 ± 0.16), -1202 7.93 % (19.4M parameters;
the paper blames overfitting). Plain nets (Fig. 6, left; no table): training and test
error grow with depth, plain-56 above plain-20 throughout. Not yet run here.
Runtime: resnet56 ~17 h, resnet110 ~54 h on a 2-core CPU VM (the cifar10_resnetN
configs' step times); plain nets about as long as their residual twins; on a GPU, far
less (not measured).
"""

import ml_collections

from configs import recipes

MODELS = ('plain20', 'plain32', 'plain44', 'plain56', 'plain110', 'resnet20', 'resnet32',
          'resnet44', 'resnet56', 'resnet110', 'resnet1202')
# Table 6 (test error, %); the plain nets are only drawn (Fig. 6).
PAPER_TEST_ERROR = {'resnet20': 8.75, 'resnet32': 7.51, 'resnet44': 7.17, 'resnet56': 6.97,
                    'resnet110': 6.43, 'resnet1202': 7.93}


def get_config(model: str = 'plain56') -> ml_collections.ConfigDict:
  if model not in MODELS:
    raise ValueError(f'unknown model {model!r}; valid models: {", ".join(MODELS)} '
                     '(--config=configs/cifar10_table6.py:plain56)')
  config = recipes.cifar10_paper(model)
  if model in ('plain110', 'resnet110', 'resnet1202'):
    config.warmup_epochs = 1.0
  return config
