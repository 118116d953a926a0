"""The Identity Mappings paper's unit ablations (He et al. 2016, arXiv:1603.05027), on the
production units' parameter names, so any of them trains, checkpoints and converts as the
production units do.

`UnitAblation` says which ablation a unit runs:

- `placement`, where BN and ReLU sit (the paper's Fig. 4): original, bn_after_add,
  relu_before_add, relu_preact (ReLU-only pre-activation), full_preact.
- `shortcut_variant`, what the shortcut of a unit whose shape does not change carries
  (its Table 1): identity; scaling (shortcut_scale × x + residual_scale × F); exclusive
  gating ((1 − g) x + g F) and shortcut-only gating ((1 − g) x + F), g = σ(1×1 conv(x) +
  b) with b initialised to gate_bias_init; conv (a 1×1 conv); dropout (of the shortcut,
  rate shortcut_dropout); none: no shortcut at all, the plain nets of He et al. 2015.

With the defaults (original or full_preact placement, identity) an AblationUnit computes
what the production unit of models/blocks.py does, draw for draw (tests/test_models.py
holds the two together). Extra parameter names: bnN after the addition with bn_after_add,
downsample_conv for the conv shortcut, gate_conv / gate_bias for the gating variants.
"""

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_jax.models.blocks import ResidualUnit, conv_kernel_init

PLACEMENTS = ('original', 'bn_after_add', 'relu_before_add', 'relu_preact', 'full_preact')
SHORTCUT_VARIANTS = ('identity', 'scaling', 'exclusive_gating', 'shortcut_gating', 'conv',
                     'dropout', 'none')


@dataclasses.dataclass(frozen=True)
class UnitAblation:
  """Which of the paper's ablations a unit runs; the defaults are He et al. 2015's unit."""
  placement: str = 'original'
  shortcut_variant: str = 'identity'
  shortcut_scale: float = 0.5
  residual_scale: float = 1.0
  gate_bias_init: float = -6.0
  shortcut_dropout: float = 0.5


class AblationUnit(ResidualUnit):
  """One unit under `ablation`; subclasses say which convolutions its branch holds."""
  ablation: UnitAblation = UnitAblation()
  stride_in_1x1: bool = False  # bottleneck: stride on the first 1×1 conv (v1), not the 3×3

  def layers(self) -> Sequence[tuple[int, int, int]]:
    """(features, kernel size, stride) of each conv of the branch."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jnp.ndarray, drop_key: jax.Array | None = None) -> jnp.ndarray:
    layers = self.layers()
    last, out_filters = len(layers), layers[-1][0]
    placement = self.ablation.placement
    reshapes = not self.keeps_shape(x, out_filters)
    # A plain unit's branch is all there is: starting it at zero would cut the net.
    zero_init = self.zero_init_residual and self.ablation.shortcut_variant != 'none'
    if placement == 'full_preact':
      y = self.act(self.norm(name='bn1')(x))
      shortcut_input = y if reshapes else x  # the reference code's "common BN, ReLU"
    else:
      y = self.act(x) if placement == 'relu_preact' else x
      shortcut_input = x
    for index, (features, kernel, stride) in enumerate(layers, start=1):
      is_last = index == last
      if placement == 'full_preact' and index > 1:
        y = self.act(self.norm(name=f'bn{index}')(y))
      bn_follows = placement != 'full_preact' and not (is_last and placement == 'bn_after_add')
      zero_kernel = is_last and zero_init and not bn_follows
      y = self.conv(features, (kernel, kernel), stride, name=f'conv{index}',
                    kernel_init=nn.initializers.zeros if zero_kernel else conv_kernel_init)(y)
      if bn_follows:
        zero_scale = is_last and zero_init
        y = self.norm(scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
                      name=f'bn{index}')(y)
      if kernel == 3:
        y = self.response(f'conv{index}', y)
      if bn_follows and (not is_last or placement == 'relu_before_add'):
        y = self.act(y)
    plain = self.ablation.shortcut_variant == 'none'
    if not plain:
      y = self.combine(*self._terms(y, x, shortcut_input, out_filters, reshapes, drop_key))
    if placement == 'original':
      y = self.act(y)
    elif placement == 'bn_after_add':
      y = self.act(self.norm(name=f'bn{last}')(y))
    return self.plain_output(x, y) if plain else y

  def plain_output(self, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """A plain unit's output `y` (its input `x` beside it): the seam the lesion study
    overrides, as `combine` is a residual unit's."""
    del x
    return y

  def _terms(self, branch: jnp.ndarray, x: jnp.ndarray, shortcut_input: jnp.ndarray,
             out_filters: int, reshapes: bool,
             drop_key: jax.Array | None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(branch term, shortcut term): the unit adds them before its final activation.
    Every variant is such a sum (scaling and gating weight the terms)."""
    ablation, variant = self.ablation, self.ablation.shortcut_variant
    # timm's place: after the branch's last BN (its last conv, or ReLU, where the placement
    # ends it so), before anything meets the shortcut.
    branch = self.drop_branch(branch, drop_key)
    if reshapes or self.shortcut == 'projection_all':
      # Table 1's variants act on identity shortcuts; these keep option A/B/C.
      return branch, self.shortcut_term(shortcut_input, out_filters,
                                        normalize=ablation.placement != 'full_preact')
    if variant == 'conv':
      return branch, self.conv(out_filters, (1, 1), name='downsample_conv')(shortcut_input)
    if variant == 'scaling':
      return (ablation.residual_scale * branch, ablation.shortcut_scale * shortcut_input)
    if variant == 'dropout':
      return branch, nn.Dropout(ablation.shortcut_dropout, deterministic=self.deterministic)(
          shortcut_input)
    if variant in ('exclusive_gating', 'shortcut_gating'):
      bias = self.param('gate_bias', nn.initializers.constant(ablation.gate_bias_init),
                        (out_filters,), jnp.float32)
      gate = nn.sigmoid(self.conv(out_filters, (1, 1), name='gate_conv')(x) + bias)
      gate = gate.astype(branch.dtype)
      return (gate * branch if variant == 'exclusive_gating' else branch,
              (1 - gate) * shortcut_input)
    return branch, shortcut_input


class AblationBasicBlock(AblationUnit):
  """Two 3×3 convolutions."""

  def layers(self) -> Sequence[tuple[int, int, int]]:
    return ((self.filters, 3, self.strides), (self.filters, 3, 1))


class AblationBottleneckBlock(AblationUnit):
  """1×1 → 3×3 (carries the stride: v1.5; the 1×1 with stride_in_1x1) → 1×1, 4× wider."""
  expansion: int = 4

  def layers(self) -> Sequence[tuple[int, int, int]]:
    first, middle = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
    return ((self.filters, 1, first), (self.filters, 3, middle),
            (self.filters * self.expansion, 1, 1))


UNITS: dict[str, type[AblationUnit]] = {'basic': AblationBasicBlock,
                                        'bottleneck': AblationBottleneckBlock}
"""Block kind → its ablation unit."""


def is_production(ablation: UnitAblation) -> bool:
  """Whether the production units (models/blocks.py) compute `ablation`: the original
  and full pre-activation units with identity shortcuts."""
  return (ablation.placement in ('original', 'full_preact')
          and ablation.shortcut_variant == 'identity')
