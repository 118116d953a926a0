"""TrivialAugment-wide (Müller & Hutter 2021, arXiv:2103.10158) in TensorFlow, stateless.

As torchvision's transforms.TrivialAugmentWide on uint8 tensors with BILINEAR resampling
and fill None (its V2 ImageNet recipe): one op drawn uniformly from OPS, one of 31
magnitude bins drawn uniformly, and for the signed ops a sign ±1 with probability 1/2:

  Identity, AutoContrast, Equalize   -
  ShearX, ShearY                     s·[0, 0.99] about the top-left corner
  TranslateX, TranslateY             s·[0, 32] pixels, truncated to an integer
  Rotate                             s·[0°, 135°] counter-clockwise about the centre
  Brightness, Color, Contrast,       factor 1 + s·[0, 0.99]
  Sharpness
  Posterize                          keeps 8 → 2 bits
  Solarize                           pixels >= 255 → 0 inverted

The colour ops follow torchvision's tensor kernels, not PIL's (which randaugment.py
follows): blends truncate instead of rounding, gray is 0.2989·R + 0.587·G + 0.114·B
truncated to uint8, and Sharpness rounds its smoothed image first. Geometric ops fill
with 0 (torchvision's grid_sample zero padding) and reuse randaugment.py's warps.
All randomness comes from the int64 [2] seed through stateless ops.
"""

import functools
import math
from typing import Callable

import numpy as np
import tensorflow as tf

from resnet_jax.data import randaugment

NUM_BINS = 31
_FILL = 0.0  # torchvision's fill None: grid_sample's zero padding.

# torch.linspace(0, 0.99, 31) and torch.linspace(0, 32, 31) as torch 2.14 computes them in
# float32; not correctly rounded, which matters: bin 15 of the translation is 15.999999,
# i.e. 15 pixels after torchvision's int().
_UNIT = (
    0.0, 0.033, 0.066, 0.099, 0.132, 0.16499999, 0.198, 0.231, 0.264, 0.297, 0.32999998,
    0.363, 0.396, 0.429, 0.462, 0.495, 0.528, 0.561, 0.594, 0.62700003, 0.66, 0.693, 0.726,
    0.759, 0.792, 0.825, 0.85800004, 0.89100003, 0.924, 0.957, 0.99)
_PIXELS = (
    0.0, 1.0666667, 2.1333334, 3.2000003, 4.266667, 5.3333335, 6.4000006, 7.466667,
    8.533334, 9.6, 10.666667, 11.733334, 12.800001, 13.866668, 14.933334, 15.999999,
    17.066666, 18.133333, 19.199999, 20.266666, 21.333332, 22.4, 23.466667, 24.533333, 25.6,
    26.666666, 27.733334, 28.8, 29.866667, 30.933332, 32.0)
_BINS = np.arange(NUM_BINS)
_NONE = np.zeros(NUM_BINS)
# op name: (magnitude of each bin, signed), in torchvision's order.
_SPACE: dict[str, tuple[np.ndarray, bool]] = {
    'Identity': (_NONE, False), 'ShearX': (np.array(_UNIT), True),
    'ShearY': (np.array(_UNIT), True), 'TranslateX': (np.array(_PIXELS), True),
    'TranslateY': (np.array(_PIXELS), True), 'Rotate': (4.5 * _BINS, True),
    'Brightness': (np.array(_UNIT), True), 'Color': (np.array(_UNIT), True),
    'Contrast': (np.array(_UNIT), True), 'Sharpness': (np.array(_UNIT), True),
    'Posterize': (8.0 - np.round(_BINS / 5.0), False),
    'Solarize': (255.0 - 8.5 * _BINS, False),
    'AutoContrast': (_NONE, False), 'Equalize': (_NONE, False)}
OPS = tuple(_SPACE)


def magnitudes(op_name: str) -> np.ndarray:
  """Float32 [NUM_BINS]: the unsigned magnitude of each bin of `op_name`."""
  return _SPACE[op_name][0].astype(np.float32)


def _blend(image: tf.Tensor, degenerate: tf.Tensor, ratio: tf.Tensor) -> tf.Tensor:
  """torchvision's _blend: ratio·image + (1 − ratio)·degenerate in float32, truncated."""
  # torch takes the Python float ratio and 1 − ratio (float64) to float32 separately.
  mixed = (tf.cast(ratio, tf.float32) * tf.cast(image, tf.float32)
           + tf.cast(1.0 - ratio, tf.float32) * tf.cast(degenerate, tf.float32))
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _gray(image: tf.Tensor) -> tf.Tensor:
  """uint8 [H, W, 1], torchvision's rgb_to_grayscale (term by term, as torch adds)."""
  if image.shape[-1] == 1:
    return image
  r, g, b = tf.unstack(tf.cast(image, tf.float32), axis=-1)
  return tf.cast(0.2989 * r + 0.587 * g + 0.114 * b, tf.uint8)[..., None]


def _auto_contrast(image: tf.Tensor) -> tf.Tensor:
  pixels = tf.cast(image, tf.float32)
  low = tf.reduce_min(pixels, axis=(0, 1))
  high = tf.reduce_max(pixels, axis=(0, 1))
  # torch's `255 / tensor` is reciprocal(tensor) · 255, which rounds differently.
  scale = tf.math.reciprocal(high - low) * 255.0
  # A flat channel (infinite scale) keeps offset 0, scale 1.
  scale = tf.where(high > low, scale, 1.0)
  low = tf.where(high > low, low, 0.0)
  return tf.cast(tf.clip_by_value((pixels - low) * scale, 0.0, 255.0), tf.uint8)


def _sharpness_degenerate(image: tf.Tensor) -> tf.Tensor:
  # torch rounds the smoothed interior to uint8 before blending.
  return tf.cast(tf.round(randaugment.smooth(image)), tf.uint8)


# Every op: (uint8 image, float64 magnitude as torchvision's _apply_op takes it) -> uint8.
_OP_FUNCTIONS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    'Identity': lambda image, m: image,
    'ShearX': lambda image, m: randaugment.shear_x(image, m, _FILL),
    'ShearY': lambda image, m: randaugment.shear_y(image, m, _FILL),
    # torchvision translates the content by +int(m): output x reads input x − int(m).
    'TranslateX': lambda image, m: randaugment.translate(
        image, -tf.cast(tf.cast(m, tf.int32), tf.float64), 0.0, _FILL),
    'TranslateY': lambda image, m: randaugment.translate(
        image, 0.0, -tf.cast(tf.cast(m, tf.int32), tf.float64), _FILL),
    'Rotate': lambda image, m: randaugment.rotate(image, m * (math.pi / 180.0), _FILL),
    'Brightness': lambda image, m: _blend(image, tf.constant(0, tf.uint8), 1.0 + m),
    'Color': lambda image, m: (
        image if image.shape[-1] == 1 else _blend(image, _gray(image), 1.0 + m)),
    'Contrast': lambda image, m: _blend(
        image, tf.reduce_mean(tf.cast(_gray(image), tf.float32)), 1.0 + m),
    'Sharpness': lambda image, m: _blend(image, _sharpness_degenerate(image), 1.0 + m),
    'Posterize': lambda image, m: randaugment.posterize(image, tf.cast(m, tf.int32)),
    'Solarize': lambda image, m: randaugment.solarize(image, tf.cast(m, tf.float32)),
    'AutoContrast': lambda image, m: _auto_contrast(image),
    'Equalize': lambda image, m: randaugment.equalize(image),
}


def apply_op(image: tf.Tensor, op: str | int | tf.Tensor,
             magnitude: float | tf.Tensor) -> tf.Tensor:
  """torchvision's `_apply_op(img, op_name, magnitude, BILINEAR, fill=None)` on uint8 HWC.

  Args:
    image: uint8 [H, W, C], C = 1 or 3, static shape.
    op: a name in OPS, or its index (a tensor index runs through tf.switch_case).
    magnitude: the signed amount torchvision's _apply_op takes: pixels (truncated),
      degrees, shear factor, enhance factor − 1, bits kept, solarize threshold.
  """
  image = tf.convert_to_tensor(image)
  randaugment.check_image(image, 'TrivialAugment')
  magnitude = tf.cast(magnitude, tf.float64)  # torch's amounts are Python floats.
  branches = [functools.partial(_OP_FUNCTIONS[name], image, magnitude) for name in OPS]
  if isinstance(op, str):
    op = OPS.index(op)
  if isinstance(op, int):  # Known now: build only that op.
    return branches[op]()
  return tf.ensure_shape(tf.switch_case(op, branches), image.shape)


def sample(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(op index int32, bin int32, signed magnitude float32) drawn from the int64 [2] seed."""
  op_seed, bin_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  op = tf.random.stateless_uniform([], op_seed, maxval=len(OPS), dtype=tf.int32)
  bin_index = tf.random.stateless_uniform([], bin_seed, maxval=NUM_BINS, dtype=tf.int32)
  table = tf.constant(np.stack([magnitudes(name) for name in OPS]))
  signed = tf.constant([_SPACE[name][1] for name in OPS])
  negative = signed[op] & (tf.random.stateless_uniform([], sign_seed) < 0.5)
  magnitude = table[op, bin_index]
  return op, bin_index, tf.where(negative, -magnitude, magnitude)


def trivial_augment_wide(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """uint8 [H, W, C] (C = 1 or 3, static shape) -> uint8 same shape; seed: int64 [2]
  stateless seed, unique to this example and epoch."""
  image = tf.convert_to_tensor(image)
  randaugment.check_image(image, 'TrivialAugment')
  op, _, magnitude = sample(seed)
  return apply_op(image, op, magnitude)
