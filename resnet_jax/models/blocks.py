"""Residual blocks (basic, bottleneck; post- and pre-activation) and their convolution.

Convolutions pad like torchvision (k // 2 on each side) and initialise like it, so
weights converted from PyTorch see the same pixels.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

# torchvision initialises convolutions with kaiming_normal(mode='fan_out').
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _subsample_and_zero_pad(x: jnp.ndarray, filters: int, strides: int) -> jnp.ndarray:
  """Option A shortcut: identity, stride-s subsampling, zero-padded channels."""
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
  missing = filters - x.shape[-1]
  if missing:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, missing)))
  return x


class BasicBlock(nn.Module):
  """Two 3×3 convolutions; post-activation (v1) or pre-activation (v2)."""
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  preact: bool = False
  shortcut: str = 'projection'  # or 'zero_pad' (option A)
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    last_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    needs_shortcut = self.strides != 1 or x.shape[-1] != self.filters
    if self.preact:
      y = nn.relu(self.norm(name='bn1')(x))
      residual = _shortcut(self, y if needs_shortcut else x, self.filters, needs_shortcut)
      y = self.conv(self.filters, (3, 3), self.strides, name='conv1')(y)
      y = nn.relu(self.norm(name='bn2')(y))
      kernel_init = nn.initializers.zeros if self.zero_init_residual else conv_kernel_init
      y = self.conv(self.filters, (3, 3), kernel_init=kernel_init, name='conv2')(y)
      return y + residual
    residual = _shortcut(self, x, self.filters, needs_shortcut)
    y = self.conv(self.filters, (3, 3), self.strides, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), name='conv2')(y)
    y = self.norm(scale_init=last_init, name='bn2')(y)
    return nn.relu(y + residual)


class BottleneckBlock(nn.Module):
  """1×1 → 3×3 (carries the stride: v1.5) → 1×1 with 4× expansion."""
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  preact: bool = False
  shortcut: str = 'projection'
  zero_init_residual: bool = False
  expansion: int = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    out_filters = self.filters * self.expansion
    needs_shortcut = self.strides != 1 or x.shape[-1] != out_filters
    if self.preact:
      y = nn.relu(self.norm(name='bn1')(x))
      residual = _shortcut(self, y if needs_shortcut else x, out_filters, needs_shortcut)
      y = self.conv(self.filters, (1, 1), name='conv1')(y)
      y = nn.relu(self.norm(name='bn2')(y))
      y = self.conv(self.filters, (3, 3), self.strides, name='conv2')(y)
      y = nn.relu(self.norm(name='bn3')(y))
      kernel_init = nn.initializers.zeros if self.zero_init_residual else conv_kernel_init
      y = self.conv(out_filters, (1, 1), kernel_init=kernel_init, name='conv3')(y)
      return y + residual
    last_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    residual = _shortcut(self, x, out_filters, needs_shortcut)
    y = self.conv(self.filters, (1, 1), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), self.strides, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(out_filters, (1, 1), name='conv3')(y)
    y = self.norm(scale_init=last_init, name='bn3')(y)
    return nn.relu(y + residual)


def _shortcut(block: nn.Module, x: jnp.ndarray, filters: int, needed: bool) -> jnp.ndarray:
  """The residual path of `block`; must be called inside its compact __call__."""
  if not needed:
    return x
  if block.shortcut == 'zero_pad':
    return _subsample_and_zero_pad(x, filters, block.strides)
  y = block.conv(filters, (1, 1), block.strides, name='downsample_conv')(x)
  # A pre-activation block adds the projection as is: the next block normalises.
  return y if block.preact else block.norm(name='downsample_bn')(y)


class Conv(nn.Module):
  """Bias-free convolution with torchvision's symmetric padding and init."""
  features: int
  kernel_size: Sequence[int]
  strides: int = 1
  kernel_init: Callable = conv_kernel_init
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None  # None: lax's

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    padding = [(k // 2, k // 2) for k in self.kernel_size]
    return nn.Conv(self.features, tuple(self.kernel_size), (self.strides, self.strides),
                   padding=padding, use_bias=False, kernel_init=self.kernel_init,
                   dtype=self.dtype, param_dtype=jnp.float32,
                   conv_general_dilated=self.conv_general_dilated, name='conv')(x)
