"""Residual units (basic, bottleneck), their shortcuts and the papers' ablations of both.

The defaults are the units of He et al. 2015 (post-activation, "original") and, with
`preact`, of He et al. 2016 ("Identity Mappings", full pre-activation). The other
options are that paper's ablations, on the same parameter names:

- `placement`, where BN and ReLU sit (its Fig. 4): original, bn_after_add,
  relu_before_add, relu_preact (ReLU-only pre-activation), full_preact.
- `shortcut_variant`, what the shortcut of a unit whose shape does not change carries
  (its Table 1): identity; scaling (shortcut_scale × x + residual_scale × F); exclusive
  gating ((1 − g) x + g F) and shortcut-only gating ((1 − g) x + F), g = σ(1×1 conv(x) +
  b) with b initialised to gate_bias_init; conv (a 1×1 conv); dropout (of the shortcut,
  rate shortcut_dropout); none: no shortcut at all, the plain nets of He et al. 2015.
- `shortcut`, the shortcut of a unit that changes the shape (He et al. 2015, Table 3):
  zero_pad (option A), projection (B: 1×1 conv + BN, BN-free in full pre-activation);
  projection_all (C: projections on every unit).

Two regularisers, off by default: `drop_path_rate`, stochastic depth as timm's ResNet
applies it (the branch F(x), per example, times Bernoulli(1 − p) / (1 − p) in training,
just before the addition), and Conv's `blurpool`, FFCV's blur before strided
convolutions.

Convolutions pad like torchvision (k // 2 on each side) and initialise like it, so
weights converted from PyTorch see the same pixels. Every Conv output is named CONV_OUTPUT
for rematerialisation (`remat_policy`): the 'conv_outputs' policy keeps exactly these.
With the `diagnostics` collection mutable, each 3×3 conv's response (its BN's output,
before ReLU and addition; the conv's own output where no BN follows it) is sown as its
standard deviation (He et al. 2015, Fig. 7).
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

ModuleDef = Any

# torchvision initialises convolutions with kaiming_normal(mode='fan_out').
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

PLACEMENTS = ('original', 'bn_after_add', 'relu_before_add', 'relu_preact', 'full_preact')
SHORTCUTS = ('zero_pad', 'projection', 'projection_all')  # He et al. 2015 options A, B, C
SHORTCUT_VARIANTS = ('identity', 'scaling', 'exclusive_gating', 'shortcut_gating', 'conv',
                     'dropout', 'none')
DIAGNOSTICS = 'diagnostics'  # the collection the response stds are sown into
# Per-unit scalars a study passes in (resnet_jax.studies.lesion): `keep`, `backprop_branch`
# (ResidualUnit._add). Absent, the units are as trained.
PATHS = 'paths'
BLUR_MIN_CHANNELS = 16  # FFCV blurs strided convs with at least this many input channels
CONV_OUTPUT = 'conv_out'  # the checkpoint name of every Conv's output

REMAT_POLICIES: dict[str, Callable[..., Any] | None] = {
    # Nothing kept but the unit's input: the backward recomputes the whole unit.
    'full': None,
    # Convolution outputs kept: the backward recomputes only BN, ReLU, the addition
    # (and the shortcut's subsampling or padding), no convolution.
    'conv_outputs': jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT),
}
"""remat_policy name → the jax.checkpoint policy that nn.remat applies to each unit."""


def remat(block_cls: Any, policy: str, *, prevent_cse: bool = True) -> Any:
  """`block_cls` rematerialised under REMAT_POLICIES[policy] (nn.remat). A scan body
  may pass prevent_cse=False: the loop already keeps XLA from merging the recomputation
  into the forward pass, and the barriers would only cost time."""
  return nn.remat(block_cls, policy=REMAT_POLICIES[policy], prevent_cse=prevent_cse)


def drop_path(x: jnp.ndarray, rate: float | jax.Array, key: jax.Array) -> jnp.ndarray:
  """timm's drop_path(scale_by_keep=True) in training: each example of `x` is zeroed with
  probability `rate` (a Bernoulli(1 − rate) draw from `key`, shape [B, 1, 1, 1]) and
  kept ones are scaled by 1 / (1 − rate). `rate` < 1; it may be traced."""
  # float32 whether `rate` is a Python float or a scanned array: the same draws either way.
  keep_prob = 1 - jnp.asarray(rate, jnp.float32)
  keep = jax.random.bernoulli(key, keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * jnp.where(keep, 1 / keep_prob, 0).astype(x.dtype)


def blur(x: jnp.ndarray) -> jnp.ndarray:
  """FFCV's BlurPool filter on NHWC: each channel convolved with [[1,2,1],[2,4,2],[1,2,1]]
  / 16, stride 1, zero padding 1."""
  # The filter is separable: two [1, 2, 1] / 4 passes of shifted sums, cheaper than a
  # depthwise convolution (and its gradient) on every backend.
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  x = (x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]) * 0.25
  return (x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]) * 0.25


def _gradient_scaled(x: jnp.ndarray, scale: jax.Array) -> jnp.ndarray:
  """x in the forward pass; its gradient times `scale` in the backward pass."""
  frozen = jax.lax.stop_gradient(x)
  return frozen + scale.astype(x.dtype) * (x - frozen)


def _subsample_and_zero_pad(x: jnp.ndarray, filters: int, strides: int) -> jnp.ndarray:
  """Option A shortcut: identity, stride-s subsampling, zero-padded channels."""
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
  missing = filters - x.shape[-1]
  if missing:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, missing)))
  return x


class ResidualUnit(nn.Module):
  """One unit; subclasses say which convolutions its branch holds (`layers`).

  Parameter names: conv1..convN, bnI beside convI (after it in post-activation, before
  it in full pre-activation; bnN after the addition with bn_after_add),
  downsample_conv / downsample_bn on projection shortcuts, gate_conv / gate_bias for
  the gating variants.

  `drop_path_rate` is this unit's stochastic-depth rate (a traced scalar inside a scanned
  stage); the call's `drop_key` draws its masks (None: the 'dropout' RNG stream).
  """
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  preact: bool = False  # full pre-activation, whatever `placement` says
  shortcut: str = 'projection'
  zero_init_residual: bool = False
  placement: str = 'original'
  shortcut_variant: str = 'identity'
  shortcut_scale: float = 0.5
  residual_scale: float = 1.0
  gate_bias_init: float = -6.0
  shortcut_dropout: float = 0.5
  stride_in_1x1: bool = False  # bottleneck: stride on the first 1×1 conv (v1), not the 3×3
  deterministic: bool = True  # no shortcut dropout and no drop path (evaluation)
  drop_path_rate: float | jax.Array = 0.0

  def layers(self) -> Sequence[tuple[int, int, int]]:
    """(features, kernel size, stride) of each conv of the branch."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jnp.ndarray, drop_key: jax.Array | None = None) -> jnp.ndarray:
    layers = self.layers()
    last, out_filters = len(layers), layers[-1][0]
    placement = 'full_preact' if self.preact else self.placement
    reshapes = self.strides != 1 or x.shape[-1] != out_filters
    # A plain unit's branch is all there is: starting it at zero would cut the net.
    zero_init = self.zero_init_residual and self.shortcut_variant != 'none'
    if placement == 'full_preact':
      y = nn.relu(self.norm(name='bn1')(x))
      shortcut_input = y if reshapes else x  # the reference code's "common BN, ReLU"
    else:
      y = nn.relu(x) if placement == 'relu_preact' else x
      shortcut_input = x
    for index, (features, kernel, stride) in enumerate(layers, start=1):
      is_last = index == last
      if placement == 'full_preact' and index > 1:
        y = nn.relu(self.norm(name=f'bn{index}')(y))
      bn_follows = placement != 'full_preact' and not (is_last and placement == 'bn_after_add')
      zero_kernel = is_last and zero_init and not bn_follows
      y = self.conv(features, (kernel, kernel), stride, name=f'conv{index}',
                    kernel_init=nn.initializers.zeros if zero_kernel else conv_kernel_init)(y)
      if bn_follows:
        zero_scale = is_last and zero_init
        y = self.norm(scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
                      name=f'bn{index}')(y)
      if kernel == 3 and self.is_mutable_collection(DIAGNOSTICS) and not self.is_initializing():
        self.sow(DIAGNOSTICS, f'conv{index}_response_std', jnp.std(y.astype(jnp.float32)))
      if bn_follows and (not is_last or placement == 'relu_before_add'):
        y = nn.relu(y)
    branch, shortcut = self._terms(y, x, shortcut_input, out_filters, reshapes, placement,
                                   drop_key)
    y = branch if shortcut is None else self._add(branch, shortcut)
    if placement == 'original':
      y = nn.relu(y)
    elif placement == 'bn_after_add':
      y = nn.relu(self.norm(name=f'bn{last}')(y))
    if shortcut is None:
      y = self._plain_lesion(y, x, reshapes)
    return y

  def _terms(self, branch: jnp.ndarray, x: jnp.ndarray, shortcut_input: jnp.ndarray,
             out_filters: int, reshapes: bool, placement: str,
             drop_key: jax.Array | None) -> tuple[jnp.ndarray, jnp.ndarray | None]:
    """(branch term, shortcut term): the unit adds them before its final activation.
    Every variant is such a sum (scaling and gating weight the terms); a plain unit has
    no shortcut (None)."""
    variant = self.shortcut_variant
    if variant == 'none':
      return branch, None
    # timm's place: after the branch's last BN (its last conv, or ReLU, where the placement
    # ends it so), before anything meets the shortcut.
    branch = self._drop_path(branch, drop_key)
    if reshapes:  # Table 1's variants act on identity shortcuts; these keep option A/B/C.
      if self.shortcut == 'zero_pad':
        return branch, _subsample_and_zero_pad(shortcut_input, out_filters, self.strides)
      return branch, self._projection(shortcut_input, out_filters, placement)
    if self.shortcut == 'projection_all':
      return branch, self._projection(shortcut_input, out_filters, placement)
    if variant == 'conv':
      return branch, self.conv(out_filters, (1, 1), name='downsample_conv')(shortcut_input)
    if variant == 'scaling':
      return self.residual_scale * branch, self.shortcut_scale * shortcut_input
    if variant == 'dropout':
      return branch, nn.Dropout(self.shortcut_dropout, deterministic=self.deterministic)(
          shortcut_input)
    if variant in ('exclusive_gating', 'shortcut_gating'):
      bias = self.param('gate_bias', nn.initializers.constant(self.gate_bias_init),
                        (out_filters,), jnp.float32)
      gate = nn.sigmoid(self.conv(out_filters, (1, 1), name='gate_conv')(x) + bias)
      gate = gate.astype(branch.dtype)
      return (gate * branch if variant == 'exclusive_gating' else branch,
              (1 - gate) * shortcut_input)
    return branch, shortcut_input

  def _path_variable(self, name: str) -> jax.Array | None:
    """This unit's entry `name` of the PATHS collection, None where it is absent."""
    return self.get_variable(PATHS, name) if self.has_variable(PATHS, name) else None

  def _add(self, branch: jnp.ndarray, shortcut: jnp.ndarray) -> jnp.ndarray:
    """branch + shortcut, with the PATHS collection's hooks where present: `keep`
    multiplies the branch term (0 deletes it, Veit et al. 2016's lesion); `backprop_branch`
    (0 or 1) routes the backward pass through the branch only (1) or the shortcut only
    (0), leaving the forward values alone (their path-length sampling)."""
    keep = self._path_variable('keep')
    if keep is not None:
      branch = branch * keep.astype(branch.dtype)
    route = self._path_variable('backprop_branch')
    if route is not None:
      branch = _gradient_scaled(branch, route)
      shortcut = _gradient_scaled(shortcut, 1 - route)
    return branch + shortcut

  def _plain_lesion(self, y: jnp.ndarray, x: jnp.ndarray, reshapes: bool) -> jnp.ndarray:
    """A plain unit with `keep` in PATHS: keep × unit(x) + (1 − keep) × x, so 0 replaces
    the unit by the identity (possible only where the unit keeps the shape)."""
    keep = self._path_variable('keep')
    if keep is None:
      return y
    if reshapes:
      raise ValueError(f'{self.name} changes the shape {x.shape} -> {y.shape}: a plain unit '
                       'can be replaced by the identity only where it keeps the shape')
    keep = keep.astype(y.dtype)
    return keep * y + (1 - keep) * x

  def _drop_path(self, branch: jnp.ndarray, key: jax.Array | None) -> jnp.ndarray:
    rate = self.drop_path_rate
    if self.deterministic or (isinstance(rate, (int, float)) and rate == 0):
      return branch
    return drop_path(branch, rate, self.make_rng('dropout') if key is None else key)

  def _projection(self, x: jnp.ndarray, filters: int, placement: str) -> jnp.ndarray:
    y = self.conv(filters, (1, 1), self.strides, name='downsample_conv')(x)
    # A pre-activation unit adds the projection as is: the next unit normalises.
    return y if placement == 'full_preact' else self.norm(name='downsample_bn')(y)


class BasicBlock(ResidualUnit):
  """Two 3×3 convolutions."""

  def layers(self) -> Sequence[tuple[int, int, int]]:
    return ((self.filters, 3, self.strides), (self.filters, 3, 1))


class BottleneckBlock(ResidualUnit):
  """1×1 → 3×3 (carries the stride: v1.5; the 1×1 with stride_in_1x1) → 1×1, 4× wider."""
  expansion: int = 4

  def layers(self) -> Sequence[tuple[int, int, int]]:
    first, middle = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
    return ((self.filters, 1, first), (self.filters, 3, middle),
            (self.filters * self.expansion, 1, 1))


class Conv(nn.Module):
  """Bias-free convolution with torchvision's symmetric padding and init.

  With `blurpool`, FFCV's BlurPoolConv2d where FFCV's apply_blurpool puts it (stride > 1,
  at least BLUR_MIN_CHANNELS input channels): `blur` first, then the same convolution.
  The filter is a constant: the parameters are the same either way.
  """
  features: int
  kernel_size: Sequence[int]
  strides: int = 1
  kernel_init: Callable = conv_kernel_init
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None  # None: lax's
  blurpool: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.blurpool and self.strides > 1 and x.shape[-1] >= BLUR_MIN_CHANNELS:
      x = blur(x)
    padding = [(k // 2, k // 2) for k in self.kernel_size]
    y = nn.Conv(self.features, tuple(self.kernel_size), (self.strides, self.strides),
                padding=padding, use_bias=False, kernel_init=self.kernel_init,
                dtype=self.dtype, param_dtype=jnp.float32,
                conv_general_dilated=self.conv_general_dilated, name='conv')(x)
    return checkpoint_name(y, CONV_OUTPUT)
