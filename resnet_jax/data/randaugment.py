"""RandAugment (Cubuk et al. 2019, arXiv:1909.13719) in TensorFlow, stateless per example.

Each of `num_layers` layers applies one of the 14 ops in OPS, chosen uniformly, at a
magnitude on the paper's 0..10 scale (clipped to it, as timm does). With level =
magnitude / 10 and a random sign s = ±1 for the signed ops (timm's `rand_augment_ops`
with the *Increasing variants, i.e. stronger with a higher magnitude):

  Identity                    -
  AutoContrast                per channel, stretched to 0..255 (a flat channel is kept)
  Equalize                    per channel, PIL's ImageOps.equalize
  Rotate                      s·30°·level about the centre
  Solarize                    pixels >= 256·(1 − level) inverted (256: none, 0: all)
  Color                       blend with grayscale, factor 1 + s·0.9·level (identity on C=1)
  Posterize                   keeps 8 − ⌊4·level⌋ bits (8 → 4)
  Contrast                    blend with the gray mean, factor 1 + s·0.9·level
  Brightness                  blend with black, factor 1 + s·0.9·level
  Sharpness                   blend with a 3×3 smoothed image (border kept), 1 + s·0.9·level
  ShearX, ShearY              shear s·0.3·level about the top-left corner (as timm/PIL)
  TranslateX, TranslateY      s·0.45·level of the image's side (timm's translate_pct)

Geometric ops resample BILINEAR and fill with constant gray 128 (timm fills with the
ImageNet mean; one constant suits any dataset). All randomness comes from the int64 [2]
seed through stateless ops, so the same (image, seed) gives the same output bit for bit,
in eager mode and inside a tf.data map alike; tf.switch_case runs only the chosen op.
The public building blocks (warp, rotate, shear_x, ..., smooth) take explicit amounts and a
fill: trivialaugment.py reuses them.
"""

import functools
import math
from typing import Callable

import tensorflow as tf

_MAX_MAGNITUDE = 10.0
_FILL = 128.0  # Gray for the pixels a geometric op brings in from outside the image.
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert('L').


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.saturate_cast(tf.round(image), tf.uint8)


def _gray(image: tf.Tensor) -> tf.Tensor:
  """Float32 [H, W, 1] luma."""
  image = tf.cast(image, tf.float32)
  if image.shape[-1] == 1:
    return image
  return tf.tensordot(image, tf.constant(_LUMA), axes=1)[..., None]


def _blend(image: tf.Tensor, degenerate: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL's ImageEnhance: factor 0 gives `degenerate`, 1 the image, >1 extrapolates."""
  image = tf.cast(image, tf.float32)
  return _to_uint8(degenerate + factor * (image - degenerate))


def warp(image: tf.Tensor, transform: list, fill: float) -> tf.Tensor:
  """Resamples BILINEAR with an output→input map [a0, a1, a2, b0, b1, b2, c0, c1] (TF's
  convention): output (x, y) reads input ((a0·x + a1·y + a2) / k, (b0·x + b1·y + b2) / k),
  k = c0·x + c1·y + 1, pixel centres at integers; taps outside the image read `fill`."""
  # Via float64: the entries may mix float32 and float64; float32 ones pass unchanged.
  transform = tf.cast(tf.stack([tf.cast(t, tf.float64) for t in transform]), tf.float32)
  warped = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[None], transforms=transform[None],
      output_shape=tf.shape(image)[:2], fill_value=fill, interpolation='BILINEAR',
      fill_mode='CONSTANT')
  return _to_uint8(warped[0])


def rotate(image: tf.Tensor, radians: tf.Tensor, fill: float) -> tf.Tensor:
  """Counter-clockwise by `radians` about the centre ((W - 1) / 2, (H - 1) / 2)."""
  cos, sin = tf.cos(radians), tf.sin(radians)
  # Offsets that keep the centre in place.
  width, height = image.shape[1] - 1.0, image.shape[0] - 1.0
  x_offset = (width - (cos * width - sin * height)) / 2.0
  y_offset = (height - (sin * width + cos * height)) / 2.0
  return warp(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0], fill)


# Shears about the top-left corner of the top-left pixel, (-0.5, -0.5) in TF's coordinates
# (pixel centres): hence the 0.5·shear offsets. PIL (timm) and torchvision both do this.
def shear_x(image: tf.Tensor, shear: tf.Tensor, fill: float) -> tf.Tensor:
  """Output (x, y) reads input (x + shear·(y + 0.5), y)."""
  return warp(image, [1.0, shear, 0.5 * shear, 0.0, 1.0, 0.0, 0.0, 0.0], fill)


def shear_y(image: tf.Tensor, shear: tf.Tensor, fill: float) -> tf.Tensor:
  """Output (x, y) reads input (x, y + shear·(x + 0.5))."""
  return warp(image, [1.0, 0.0, 0.0, shear, 1.0, 0.5 * shear, 0.0, 0.0], fill)


def translate(image: tf.Tensor, dx: tf.Tensor, dy: tf.Tensor, fill: float) -> tf.Tensor:
  """Output (x, y) reads input (x + dx, y + dy): positive dx moves the content left."""
  return warp(image, [1.0, 0.0, dx, 0.0, 1.0, dy, 0.0, 0.0], fill)


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  """Inverts the pixels >= threshold."""
  return tf.where(tf.cast(image, tf.float32) >= threshold, 255 - image, image)


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  """Keeps the `bits` (0..8) high bits of every pixel."""
  shift = tf.cast(8 - bits, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL's ImageOps.equalize on one int32 [H, W] channel."""
  histogram = tf.math.bincount(channel, minlength=256, maxlength=256)
  # All pixels but those of the brightest value are spread evenly over 0..255.
  step = (tf.size(channel) - histogram[tf.reduce_max(channel)]) // 255
  lut = (tf.cumsum(histogram, exclusive=True) + step // 2) // tf.maximum(step, 1)
  # step 0 (too few pixels, or one value): PIL leaves the channel as it is.
  return tf.where(step > 0, tf.gather(tf.minimum(lut, 255), channel), channel)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Per channel, PIL's ImageOps.equalize (torchvision's tensor equalize is the same)."""
  channels = tf.unstack(tf.cast(image, tf.int32), axis=-1)
  return tf.cast(tf.stack([_equalize_channel(c) for c in channels], axis=-1), tf.uint8)


def smooth(image: tf.Tensor) -> tf.Tensor:
  """Float32 image under PIL's 3×3 SMOOTH filter, the one-pixel border kept as it is."""
  channels = image.shape[-1]
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  pixels = tf.cast(image, tf.float32)
  smoothed = tf.nn.depthwise_conv2d(pixels[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  # The filter has no full window on the border: keep the original there.
  middle = tf.concat([pixels[1:-1, :1], smoothed, pixels[1:-1, -1:]], axis=1)
  return tf.concat([pixels[:1], middle, pixels[-1:]], axis=0)


def _enhance_factor(level: tf.Tensor, sign: tf.Tensor) -> tf.Tensor:
  return 1.0 + sign * 0.9 * level


# Every op: (uint8 image, level in [0, 1], sign ±1.0) -> uint8 image of the same shape.


def _identity(image, level, sign):
  del level, sign
  return image


def _auto_contrast(image, level, sign):
  del level, sign
  image = tf.cast(image, tf.float32)
  low = tf.reduce_min(image, axis=(0, 1))
  high = tf.reduce_max(image, axis=(0, 1))
  # A flat channel has no range to stretch: scale 1, offset 0 keeps it.
  scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(high > low, low, 0.0)
  return _to_uint8((image - offset) * scale)


def _equalize(image, level, sign):
  del level, sign
  return equalize(image)


def _rotate(image, level, sign):
  return rotate(image, sign * level * (30.0 * math.pi / 180.0), _FILL)


def _solarize(image, level, sign):
  del sign
  return solarize(image, 256.0 * (1.0 - level))


def _color(image, level, sign):
  if image.shape[-1] == 1:  # Already gray: saturation is meaningless.
    return image
  return _blend(image, _gray(image), _enhance_factor(level, sign))


def _posterize(image, level, sign):
  del sign
  return posterize(image, 8 - tf.cast(tf.floor(4.0 * level), tf.int32))


def _contrast(image, level, sign):
  return _blend(image, tf.reduce_mean(_gray(image)), _enhance_factor(level, sign))


def _brightness(image, level, sign):
  return _blend(image, tf.constant(0.0), _enhance_factor(level, sign))


def _sharpness(image, level, sign):
  return _blend(image, smooth(image), _enhance_factor(level, sign))


def _shear_x(image, level, sign):
  return shear_x(image, sign * 0.3 * level, _FILL)


def _shear_y(image, level, sign):
  return shear_y(image, sign * 0.3 * level, _FILL)


def _translate_x(image, level, sign):
  return translate(image, sign * 0.45 * level * image.shape[1], 0.0, _FILL)


def _translate_y(image, level, sign):
  return translate(image, 0.0, sign * 0.45 * level * image.shape[0], _FILL)


_OPS: tuple[tuple[str, Callable[..., tf.Tensor]], ...] = (
    ('Identity', _identity), ('AutoContrast', _auto_contrast), ('Equalize', _equalize),
    ('Rotate', _rotate), ('Solarize', _solarize), ('Color', _color),
    ('Posterize', _posterize), ('Contrast', _contrast), ('Brightness', _brightness),
    ('Sharpness', _sharpness), ('ShearX', _shear_x), ('ShearY', _shear_y),
    ('TranslateX', _translate_x), ('TranslateY', _translate_y))
OPS = tuple(name for name, _ in _OPS)


def check_image(image: tf.Tensor, name: str = 'RandAugment') -> None:
  """Raises unless `image` is uint8 [H >= 3, W >= 3, 1 or 3] of static shape."""
  shape = image.shape
  if (image.dtype != tf.uint8 or not shape.is_fully_defined() or shape.rank != 3
      or shape[-1] not in (1, 3) or shape[0] < 3 or shape[1] < 3):
    raise ValueError(f'{name} needs a uint8 [H >= 3, W >= 3, 1 or 3] image of static '
                     f'shape, got {image.dtype.name} {shape}')


def apply_op(image: tf.Tensor, op_index: int | tf.Tensor, magnitude: float | tf.Tensor,
             seed: tf.Tensor) -> tf.Tensor:
  """Applies OPS[op_index] at `magnitude` (0..10); `seed` (int64 [2]) draws the sign."""
  image = tf.convert_to_tensor(image)
  check_image(image)
  level = tf.clip_by_value(tf.cast(magnitude, tf.float32) / _MAX_MAGNITUDE, 0.0, 1.0)
  sign = tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)
  branches = [functools.partial(op, image, level, sign) for _, op in _OPS]
  if isinstance(op_index, int):  # Known now: build only that op.
    return branches[op_index]()
  return tf.ensure_shape(tf.switch_case(op_index, branches), image.shape)


def randaugment(image: tf.Tensor, seed: tf.Tensor, *, num_layers: int,
                magnitude: float | tf.Tensor) -> tf.Tensor:
  """RandAugment: `num_layers` ops drawn uniformly from OPS, each at `magnitude`.

  Args:
    image: uint8 [H, W, C], C = 1 or 3, static shape.
    seed: int64 [2] stateless seed, unique to this example and epoch.
    num_layers: ops applied one after another (the paper's N).
    magnitude: strength on the 0..10 scale (the paper's M), clipped to it.

  Returns:
    uint8 of the image's shape.
  """
  image = tf.convert_to_tensor(image)
  check_image(image)
  if num_layers == 0:
    return image
  for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
    op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
    op_index = tf.random.stateless_uniform([], op_seed, maxval=len(OPS), dtype=tf.int32)
    image = apply_op(image, op_index, magnitude, sign_seed)
  return image
