"""The production residual units, written out: BasicBlock and BottleneckBlock (He et al.
2015, post-activation) and their full pre-activation forms (He et al. 2016, "Identity
Mappings"), with the parts they share: Conv, the shortcut, drop path, BlurPool, remat.

Parts are injected as flax's and timm's blocks take them: `conv` and `norm` are partial
modules, `act` a function. Options every unit has:

- `shortcut`, of a unit that changes the shape (He et al. 2015, Table 3): zero_pad
  (option A: subsample, zero-pad the channels), projection (B: 1×1 conv + BN, BN-free in
  pre-activation units), projection_all (C: projections on every unit).
- `zero_init_residual`: the branch's last BN scale starts at zero (the last conv's kernel
  in pre-activation units, where no BN follows it), so each unit starts as its shortcut.
- `drop_path_rate`: stochastic depth as timm's ResNet applies it (the branch, per example,
  times Bernoulli(1 − p) / (1 − p) in training, just before the addition); Conv's
  `blurpool`: FFCV's blur before strided convolutions.

The Identity Mappings paper's ablations (BN/ReLU placements, scaled, gated, conv and
dropout shortcuts, plain nets) are units of their own in models/ablations.py, on the same
parameter names; the lesion study's hooks live in resnet_jax/studies/paths.py.

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

SHORTCUTS = ('zero_pad', 'projection', 'projection_all')  # He et al. 2015 options A, B, C
DIAGNOSTICS = 'diagnostics'  # the collection the response stds are sown into
# The per-unit scalars the path studies pass in (resnet_jax.studies.paths); named here
# because a scanned stage must give the collection its block axis (block_stack).
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


def _subsample_and_zero_pad(x: jnp.ndarray, filters: int, strides: int) -> jnp.ndarray:
  """Option A shortcut: identity, stride-s subsampling, zero-padded channels."""
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
  missing = filters - x.shape[-1]
  if missing:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, missing)))
  return x


class ResidualUnit(nn.Module):
  """What every unit shares: its fields, its shortcut, and the addition.

  Parameter names: conv1..convN and bnI beside convI (after it; before it in
  pre-activation units), downsample_conv / downsample_bn on projection shortcuts.
  `drop_path_rate` is this unit's stochastic-depth rate (a traced scalar inside a scanned
  stage); the call's `drop_key` draws its masks (None: the 'dropout' RNG stream).
  """
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  act: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  shortcut: str = 'projection'
  zero_init_residual: bool = False
  drop_path_rate: float | jax.Array = 0.0
  deterministic: bool = True  # no drop path (evaluation)

  def last_norm(self, name: str) -> nn.Module:
    """The branch's last BN: scale zero-initialised with zero_init_residual."""
    return self.norm(scale_init=nn.initializers.zeros if self.zero_init_residual
                     else nn.initializers.ones, name=name)

  def last_conv(self, features: int, kernel: int, name: str) -> nn.Module:
    """A pre-activation branch's last conv: kernel zero-initialised with zero_init_residual."""
    return self.conv(features, (kernel, kernel), name=name, kernel_init=(
        nn.initializers.zeros if self.zero_init_residual else conv_kernel_init))

  def response(self, name: str, y: jnp.ndarray) -> jnp.ndarray:
    """`y`, its standard deviation sown as `name`_response_std when diagnostics are on."""
    if self.is_mutable_collection(DIAGNOSTICS) and not self.is_initializing():
      self.sow(DIAGNOSTICS, f'{name}_response_std', jnp.std(y.astype(jnp.float32)))
    return y

  def keeps_shape(self, x: jnp.ndarray, out_filters: int) -> bool:
    """Whether the unit's output has its input's shape (stride 1, as many channels)."""
    return self.strides == 1 and x.shape[-1] == out_filters

  def shortcut_term(self, x: jnp.ndarray, out_filters: int, *,
                    normalize: bool = True) -> jnp.ndarray:
    """What the shortcut carries: `x` itself, unless the unit changes the shape (or
    `shortcut` is projection_all). A pre-activation unit passes normalize=False: its
    projection is added as is, the next unit normalises."""
    if self.keeps_shape(x, out_filters) and self.shortcut != 'projection_all':
      return x
    if self.shortcut == 'zero_pad':
      return _subsample_and_zero_pad(x, out_filters, self.strides)
    y = self.conv(out_filters, (1, 1), self.strides, name='downsample_conv')(x)
    return self.norm(name='downsample_bn')(y) if normalize else y

  def preact_shortcut_term(self, x: jnp.ndarray, activated: jnp.ndarray,
                           out_filters: int) -> jnp.ndarray:
    """A pre-activation unit's shortcut: where the unit changes the shape, from its input
    after the first BN-ReLU (the reference code's "common BN, ReLU"), else from `x`; a
    projection is added as is (the next unit normalises)."""
    return self.shortcut_term(x if self.keeps_shape(x, out_filters) else activated,
                              out_filters, normalize=False)

  def add(self, branch: jnp.ndarray, shortcut: jnp.ndarray,
          drop_key: jax.Array | None) -> jnp.ndarray:
    """branch + shortcut, the branch dropped per example in training (drop path)."""
    return self.combine(self.drop_branch(branch, drop_key), shortcut)

  def drop_branch(self, branch: jnp.ndarray, drop_key: jax.Array | None) -> jnp.ndarray:
    """The branch under drop path: as is in evaluation or at rate 0."""
    rate = self.drop_path_rate
    if self.deterministic or (isinstance(rate, (int, float)) and rate == 0):
      return branch
    return drop_path(branch, rate, self.make_rng('dropout') if drop_key is None else drop_key)

  def combine(self, branch: jnp.ndarray, shortcut: jnp.ndarray) -> jnp.ndarray:
    """The sum itself: the seam the path studies override (studies/paths.py)."""
    return branch + shortcut


class BasicBlock(ResidualUnit):
  """He et al. 2015's basic unit: 3×3 conv-BN-ReLU, 3×3 conv-BN, add, ReLU."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, drop_key: jax.Array | None = None) -> jnp.ndarray:
    y = self.conv(self.filters, (3, 3), self.strides, name='conv1')(x)
    y = self.act(self.response('conv1', self.norm(name='bn1')(y)))
    y = self.conv(self.filters, (3, 3), name='conv2')(y)
    y = self.response('conv2', self.last_norm('bn2')(y))
    return self.act(self.add(y, self.shortcut_term(x, self.filters), drop_key))


class BottleneckBlock(ResidualUnit):
  """He et al. 2015's bottleneck, v1.5: 1×1 conv-BN-ReLU, 3×3 conv-BN-ReLU (strided),
  1×1 conv-BN (4× wider), add, ReLU. `stride_in_1x1`: the stride on the first 1×1 (v1,
  and the CIFAR bottleneck nets' reference code)."""
  stride_in_1x1: bool = False
  expansion: int = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, drop_key: jax.Array | None = None) -> jnp.ndarray:
    out_filters = self.filters * self.expansion
    first, middle = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
    y = self.conv(self.filters, (1, 1), first, name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), middle, name='conv2')(y)
    y = self.act(self.response('conv2', self.norm(name='bn2')(y)))
    y = self.conv(out_filters, (1, 1), name='conv3')(y)
    y = self.last_norm('bn3')(y)
    return self.act(self.add(y, self.shortcut_term(x, out_filters), drop_key))


class PreActBasicBlock(ResidualUnit):
  """He et al. 2016's full pre-activation basic unit: BN-ReLU-3×3 conv, twice; add."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, drop_key: jax.Array | None = None) -> jnp.ndarray:
    y = self.act(self.norm(name='bn1')(x))
    shortcut = self.preact_shortcut_term(x, y, self.filters)
    y = self.response('conv1', self.conv(self.filters, (3, 3), self.strides, name='conv1')(y))
    y = self.act(self.norm(name='bn2')(y))
    y = self.response('conv2', self.last_conv(self.filters, 3, 'conv2')(y))
    return self.add(y, shortcut, drop_key)


class PreActBottleneckBlock(ResidualUnit):
  """He et al. 2016's full pre-activation bottleneck: BN-ReLU-conv for 1×1, 3×3 (strided),
  1×1 (4× wider); add. `stride_in_1x1` as in BottleneckBlock."""
  stride_in_1x1: bool = False
  expansion: int = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, drop_key: jax.Array | None = None) -> jnp.ndarray:
    out_filters = self.filters * self.expansion
    first, middle = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
    y = self.act(self.norm(name='bn1')(x))
    shortcut = self.preact_shortcut_term(x, y, out_filters)
    y = self.conv(self.filters, (1, 1), first, name='conv1')(y)
    y = self.act(self.norm(name='bn2')(y))
    y = self.response('conv2', self.conv(self.filters, (3, 3), middle, name='conv2')(y))
    y = self.act(self.norm(name='bn3')(y))
    y = self.last_conv(out_filters, 1, 'conv3')(y)
    return self.add(y, shortcut, drop_key)


UNITS: dict[tuple[str, bool], type[ResidualUnit]] = {
    ('basic', False): BasicBlock, ('bottleneck', False): BottleneckBlock,
    ('basic', True): PreActBasicBlock, ('bottleneck', True): PreActBottleneckBlock}
"""(block kind, pre-activation) → the production unit."""


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
