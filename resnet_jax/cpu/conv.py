"""Convolutions expressed the way XLA's CPU backend runs fastest.

XLA:CPU computes a convolution's weight gradient several times slower than its forward
pass (docs/performance.md: 3×3 at 56², 64→64, batch 16: forward 30 ms, weight gradient
109 ms; 1×1: 6 ms and 45 ms); its 1×1 convolutions are slow even forward, and on tiny feature maps
(the last stages of a ResNet on 32² images) a 3×3 convolution runs at ~5 GFLOP/s instead
of ~240. Written as dots, all of these run near the matmul peak:

  1×1:  y[n, h, w] = x[n, s·h, s·w] @ W               (one dot over the pixels)
  k×k:  y[n, h, w] = [x_pad[n, s·h + i, s·w + j] for all taps i, j] @ W.reshape(k·k·C, ·)

and their gradients, by autodiff, are dots too (dW = xᵀ g). The k×k ("patches") form
copies its input k·k times, so it only pays on small maps (≤ PATCHES_MAX_PIXELS output
pixels) and for strided 3×3 convolutions, whose input gradient XLA computes slowly;
the other k×k convolutions stay XLA's. `conv_general_dilated` below is a drop-in
for lax's that flax.linen.Conv accepts: parameter names, shapes and checkpoints do not
change, and the outputs agree to float rounding. The stem's max pool gets a cheaper
gradient too (`max_pool`).
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from resnet_jax.errors import check_choice

CONV_IMPLS = ('auto', 'xla', 'dot')
"""auto: dot on CPU; XLA's own on GPU and TPU, whose convolution kernels are fast."""

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def check_conv_impl(conv_impl: str) -> None:
  """Raises ValueError naming `conv_impl` and the valid choices if it is not one."""
  check_choice('conv_impl', conv_impl, CONV_IMPLS)


def use_dot(conv_impl: str) -> bool:
  """Whether `conv_impl` (one of CONV_IMPLS) selects the dot formulation here."""
  check_conv_impl(conv_impl)
  if conv_impl == 'auto':
    return jax.default_backend() == 'cpu'
  return conv_impl == 'dot'


def model_kernels(conv_impl: str) -> dict[str, Any]:
  """The ResNet fields (models/resnet.py) that route its convolutions and stem pool
  through this module when `conv_impl` selects the dot forms; {} otherwise."""
  if not use_dot(conv_impl):
    return {}
  return {'conv_general_dilated': conv_general_dilated, 'max_pool': flax_max_pool}


def _pointwise_forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                       precision) -> jax.Array:
  stride_h, stride_w = strides
  if stride_h > 1 or stride_w > 1:
    x = x[:, ::stride_h, ::stride_w, :]
  return lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _pointwise(x, kernel, strides, precision):
  return _pointwise_forward(x, kernel, strides, precision)


def _pointwise_fwd(x, kernel, strides, precision):
  return _pointwise_forward(x, kernel, strides, precision), (x, kernel)


def _pointwise_bwd(strides, precision, residuals, g):
  # Autodiff would contract x and g over (n, h, w) as 4-D arrays; XLA:CPU then transposes
  # g inside the BatchNorm-backward fusion that makes it, which runs ~3× slower. A 2-D
  # dot contracting the leading (pixel) axis needs no transpose at all.
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _pointwise_forward(x, kernel, strides, precision), x)
  (dx,) = input_vjp(g)
  stride_h, stride_w = strides
  x = x[:, ::stride_h, ::stride_w, :]
  dw = lax.dot_general(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]),
                       (((0,), (0,)), ((), ())), precision=precision)
  return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def pointwise_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], *,
                   precision=None) -> jax.Array:
  """A 1×1, unpadded NHWC/HWIO convolution as one dot over the (strided) pixels."""
  return _pointwise(x, kernel, tuple(strides), precision)


PATCHES_MAX_PIXELS = 49
"""k×k convolutions with at most this many output pixels (7×7) run as patches @ W."""


def patches_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                 padding: Sequence[tuple[int, int]], precision=None) -> jax.Array:
  """A k×k NHWC/HWIO convolution as one dot of its k·k shifted windows (im2col)."""
  kernel_h, kernel_w, channels_in, channels_out = kernel.shape
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  stride_h, stride_w = strides
  out_h = (x.shape[1] - kernel_h) // stride_h + 1
  out_w = (x.shape[2] - kernel_w) // stride_w + 1
  windows = [lax.slice(x, (0, i, j, 0),
                       (x.shape[0], i + stride_h * (out_h - 1) + 1,
                        j + stride_w * (out_w - 1) + 1, channels_in),
                       (1, stride_h, stride_w, 1))
             for i in range(kernel_h) for j in range(kernel_w)]
  patches = jnp.concatenate(windows, axis=-1)  # tap-major, channel-minor, as W reshapes
  return lax.dot_general(patches, kernel.reshape(-1, channels_out), (((3,), (0,)), ((), ())),
                         precision=precision)


def _output_pixels(lhs_shape, rhs_shape, strides, padding) -> int:
  pixels = 1
  for size, kernel, stride, (low, high) in zip(lhs_shape[1:3], rhs_shape[:2], strides, padding):
    pixels *= (size + low + high - kernel) // stride + 1
  return pixels


def _dot_form(lhs: jax.Array, rhs: jax.Array, strides, padding, lhs_dilation, rhs_dilation,
              dimension_numbers, feature_group_count) -> str | None:
  """'pointwise', 'patches', or None (leave it to XLA) for this convolution."""
  if lhs.ndim != 4 or feature_group_count != 1 or isinstance(padding, str):
    return None
  if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
    return None
  if dimension_numbers != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC):
    return None
  padding = [tuple(p) for p in padding]
  if tuple(rhs.shape[:2]) == (1, 1) and padding == [(0, 0), (0, 0)]:
    return 'pointwise'
  if _output_pixels(lhs.shape, rhs.shape, strides, padding) <= PATCHES_MAX_PIXELS:
    return 'patches'
  if tuple(rhs.shape[:2]) == (3, 3) and max(strides) > 1:  # XLA's strided dX is slow
    return 'patches'
  return None


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Sequence[tuple[int, int]] | str, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, preferred_element_type=None) -> jax.Array:
  """lax.conv_general_dilated, with 1×1 and small-map NHWC convolutions as dots.

  Everything else (large maps, dilation, groups, string padding) goes to lax unchanged.
  """
  form = _dot_form(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, feature_group_count)
  if form is not None:
    conv = pointwise_conv if form == 'pointwise' else functools.partial(patches_conv,
                                                                        padding=padding)
    y = conv(lhs, rhs, window_strides, precision=precision)
    return y if preferred_element_type is None else y.astype(preferred_element_type)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                  rhs_dilation, dimension_numbers, feature_group_count,
                                  precision=precision,
                                  preferred_element_type=preferred_element_type)


def _window_taps(x_pad: jax.Array, window: int, stride: int, out_h: int, out_w: int):
  """(i, j, x_pad's strided slice under tap (i, j) of every window), row-major."""
  for i in range(window):
    for j in range(window):
      yield i, j, x_pad[:, i:i + stride * (out_h - 1) + 1:stride,
                        j:j + stride * (out_w - 1) + 1:stride]


def _pad(x: jax.Array, padding: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                 constant_values=-jnp.inf)


def _max_pool_forward(x, window, stride, padding):
  return lax.reduce_window(_pad(x, padding), -jnp.inf, lax.max, (1, window, window, 1),
                           (1, stride, stride, 1), 'VALID')


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
  """nn.max_pool over NHWC (square window, -inf padding) with a cheaper gradient.

  XLA:CPU differentiates reduce_window max through an argmax with four int32 index
  tensors (~0.25 s of a ResNet-50 step at batch 16). Here each window's gradient goes to
  its first maximum in row-major order, as XLA's select_and_scatter sends it, and is
  gathered per output phase (input pixel mod stride) from window-sized arrays.
  """
  return _max_pool_forward(x, window, stride, padding)


def _max_pool_fwd(x, window, stride, padding):
  y = _max_pool_forward(x, window, stride, padding)
  return y, (x, y)


def _max_pool_bwd(window, stride, padding, residuals, g):
  x, y = residuals
  x_pad = _pad(x, padding)
  batch, out_h, out_w, channels = y.shape
  phase_h = -(-x_pad.shape[1] // stride)  # ceil: padded rows of each phase
  phase_w = -(-x_pad.shape[2] // stride)
  phases = {(r, c): jnp.zeros((batch, phase_h, phase_w, channels), g.dtype)
            for r in range(stride) for c in range(stride)}
  taken = jnp.zeros(y.shape, bool)
  for i, j, tap in _window_taps(x_pad, window, stride, out_h, out_w):
    first = (tap == y) & ~taken
    taken = taken | first
    # Input row stride·o + i is row o + i // stride of phase i % stride.
    shift_h, shift_w = i // stride, j // stride
    share = jnp.pad(jnp.where(first, g, 0), (
        (0, 0), (shift_h, phase_h - out_h - shift_h), (shift_w, phase_w - out_w - shift_w),
        (0, 0)))
    phases[i % stride, j % stride] = phases[i % stride, j % stride] + share
  rows = [jnp.stack([phases[r, c] for c in range(stride)], axis=3) for r in range(stride)]
  dx_pad = jnp.stack(rows, axis=2).reshape(batch, phase_h * stride, phase_w * stride,
                                           channels)
  return (dx_pad[:, padding:padding + x.shape[1], padding:padding + x.shape[2]],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def flax_max_pool(x: jax.Array, window_shape: Sequence[int], strides: Sequence[int],
                  padding: Sequence[tuple[int, int]]) -> jax.Array:
  """`max_pool` behind flax.linen.max_pool's signature (square windows and strides,
  equal padding on every side)."""
  (window, other_window), (stride, other_stride) = window_shape, strides
  pads = {p for pair in padding for p in pair}
  if window != other_window or stride != other_stride or len(pads) != 1:
    raise ValueError(f'max pool {window_shape}/{strides}/{padding}: only square windows '
                     'and strides with equal padding have the dot form')
  return max_pool(x, window, stride, pads.pop())
