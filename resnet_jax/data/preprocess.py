"""Per-example image preprocessing in TensorFlow, deterministic given a per-example seed.

Augmentations use stateless random ops seeded by (run seed, epoch, position in epoch),
so a resumed run draws the same crops and flips as an uninterrupted one.
"""

from typing import Sequence

import tensorflow as tf

AUGMENTATIONS = ('none', 'cifar', 'imagenet')
# Eval resizes the shorter side to image_size / CROP_FRACTION, then centre-crops.
CROP_FRACTION = 0.875


def _normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  image = tf.cast(image, tf.float32)
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
  return tf.image.resize(image, (size, size), method='bilinear', antialias=True)


def _decode(image: tf.Tensor, channels: int) -> tf.Tensor:
  """Decodes an encoded image; passes an already decoded one through."""
  if image.dtype == tf.string:
    return tf.io.decode_image(image, channels=channels, expand_animations=False)
  return image


def _inception_crop(encoded: tf.Tensor, seed: tf.Tensor, channels: int) -> tf.Tensor:
  """Random-resized crop (area 8–100 %, aspect 3/4–4/3) decoded straight from the JPEG."""
  shape = tf.io.extract_jpeg_shape(encoded)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)), seed=seed,
      min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  return tf.io.decode_and_crop_jpeg(encoded, window, channels=channels)


def _center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """Shorter side to size / CROP_FRACTION, then the central size×size square."""
  shape = tf.shape(image)
  scale = (size / CROP_FRACTION) / tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
  new_hw = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32)
  image = tf.image.resize(image, new_hw, method='bilinear', antialias=True)
  top = (new_hw[0] - size) // 2
  left = (new_hw[1] - size) // 2
  return image[top:top + size, left:left + size]


def train_image(image: tf.Tensor, seed: tf.Tensor, *, augment: str, image_size: int,
                channels: int, random_flip: bool, crop_padding: int,
                mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """One training image, float32 [image_size, image_size, channels], normalised.

  Args:
    image: encoded bytes (required for 'imagenet') or a decoded uint8 image.
    seed: int32/int64 [2] stateless seed unique to this example and epoch.
    augment: 'none', 'cifar' (pad, random crop) or 'imagenet' (random-resized crop).
    image_size: output side.
    channels: output channels.
    random_flip: random horizontal flip.
    crop_padding: pixels of zero padding on each side for 'cifar'.
    mean: per-channel mean on the 0..255 scale.
    std: per-channel standard deviation on the 0..255 scale.
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if augment == 'imagenet':
    image = _resize(_inception_crop(image, crop_seed, channels), image_size)
  else:
    image = _decode(image, channels)
    if image.shape[0] != image_size or image.shape[1] != image_size:
      image = _resize(image, image_size)
    if augment == 'cifar':
      image = tf.pad(image, [[crop_padding] * 2, [crop_padding] * 2, [0, 0]])
      image = tf.image.stateless_random_crop(image, (image_size, image_size, channels),
                                             seed=crop_seed)
  if random_flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return _normalize(image, mean, std)


def eval_image(image: tf.Tensor, *, augment: str, image_size: int, channels: int,
               mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """One evaluation image: centre crop for 'imagenet', a plain resize otherwise."""
  image = _decode(image, channels)
  if augment == 'imagenet':
    image = _center_crop(image, image_size)
  elif image.shape[0] != image_size or image.shape[1] != image_size:
    image = _resize(image, image_size)
  return _normalize(image, mean, std)
