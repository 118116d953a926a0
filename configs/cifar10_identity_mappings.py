"""He et al. 2016, "Identity Mappings in Deep Residual Networks", its CIFAR-10 experiments.

Command (the argument is the experiment; default resnet110_original):
  python -m resnet_jax.main --config=configs/cifar10_identity_mappings.py:resnet110_scaling_both \
      --workdir=/tmp/im_scaling

Recipe (the paper's §4 and appendix): batch 128, SGD momentum 0.9, weight decay 1e-4,
lr 0.1 ÷10 at 32k and 48k iterations, 64k iterations, translation + flip; 110 and 1001
layers warm up at lr 0.01 for ~400 iterations (here: linearly over the first epoch).
The units that increase dimensions keep the model's own shortcut (zero padding for the
basic-block nets, 1×1 projections for the bottleneck ones, as resnet-1k-layers'
resnet-pre-act.lua builds them); Table 1's variants act on the other units.

Expected, the paper's test error (%). Table 1 (ResNet-110, shortcut variants):
original 6.61; scaling 0.5 on the shortcut: fail; 0.5 on both: 12.35; exclusive gating
b_g=0: fail (0 to -5 all fail), b_g=-6: 8.70, b_g=-7: 9.81; shortcut-only gating b_g=0:
12.86, b_g=-6: 6.91; 1×1 conv shortcut: 12.22; dropout 0.5 shortcut: fail; plain
(shortcut × 0): fail. Table 2 (activation placements, Fig. 4), ResNet-110 / ResNet-164:
original 6.61 / 5.93, BN after addition 8.17 / 6.50, ReLU before addition 7.84 / 6.14,
ReLU-only pre-activation 6.71 / 5.91, full pre-activation 6.37 / 5.46. Table 3:
ResNet-1001 original 7.61, pre-activation 4.92 (4.89 ± 0.14); 1.7M parameters for
ResNet-164, 10.2M for ResNet-1001 (the weights; with BN's 10.3M). Not yet run here.
Runtime: about the cifar10_resnet110 config's ~54 h on a 2-core CPU VM for the 110-layer
nets, far more for 1001; on a GPU, far less (not measured).
"""

import ml_collections

from configs import recipes

_TABLE1 = {  # the shortcut variants of Table 1, on ResNet-110's identity units
    'original': {},
    'plain': {'model': 'plain110'},
    'scaling_shortcut': {'shortcut_variant': 'scaling', 'shortcut_scale': 0.5,
                         'residual_scale': 1.0},
    'scaling_both': {'shortcut_variant': 'scaling', 'shortcut_scale': 0.5,
                     'residual_scale': 0.5},
    'exclusive_gating_b0': {'shortcut_variant': 'exclusive_gating', 'gate_bias_init': 0.0},
    'exclusive_gating_b-6': {'shortcut_variant': 'exclusive_gating', 'gate_bias_init': -6.0},
    'exclusive_gating_b-7': {'shortcut_variant': 'exclusive_gating', 'gate_bias_init': -7.0},
    'shortcut_gating_b0': {'shortcut_variant': 'shortcut_gating', 'gate_bias_init': 0.0},
    'shortcut_gating_b-6': {'shortcut_variant': 'shortcut_gating', 'gate_bias_init': -6.0},
    'conv_shortcut': {'shortcut_variant': 'conv'},
    'dropout_shortcut': {'shortcut_variant': 'dropout', 'shortcut_dropout': 0.5},
}
_PLACEMENTS = ('original', 'bn_after_add', 'relu_before_add', 'relu_preact')

EXPERIMENTS: dict[str, dict[str, object]] = {
    **{f'resnet110_{name}': {'model': 'resnet110', **options}
       for name, options in _TABLE1.items()},
    **{f'{net}_{placement}': {'model': net, 'placement': placement}
       for net in ('resnet110', 'resnet164') for placement in _PLACEMENTS[1:]},
    'resnet164_original': {'model': 'resnet164'},
    'resnet1001_original': {'model': 'resnet1001'},
    **{f'{net}_full_preact': {'model': f'preact_{net}'}
       for net in ('resnet110', 'resnet164', 'resnet1001')},
}
"""Experiment name → the config keys it sets (besides the recipe)."""


def get_config(experiment: str = 'resnet110_original') -> ml_collections.ConfigDict:
  if experiment not in EXPERIMENTS:
    raise ValueError(f'unknown experiment {experiment!r}; valid experiments: '
                     f'{", ".join(EXPERIMENTS)}')
  options = dict(EXPERIMENTS[experiment])
  config = recipes.cifar10_paper(options.pop('model'))
  config.update(options)
  if config.model.removeprefix('preact_').removeprefix('resnet').removeprefix('plain') in (
      '110', '1001'):
    config.warmup_epochs = 1.0
  return config
