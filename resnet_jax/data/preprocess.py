"""Image preprocessing in TensorFlow, deterministic given a per-example seed.

Per example: decode (cropping inside the JPEG decoder where possible), resize, flip;
the output is uint8. Normalisation happens on the accelerator, fused into the first
convolution (steps.normalize_images): on the host it would cost a third of the
pipeline's time (measured), and uint8 crosses to the device in a quarter of float32's
bytes. Augmentations use stateless random ops seeded per example, so a resumed run
draws the same crops and flips.
"""

import tensorflow as tf

from resnet_jax.data import AUGMENTATIONS  # noqa: F401  (re-exported: none, cifar, imagenet)

# Eval resizes the shorter side to image_size / CROP_FRACTION, then centre-crops; the
# random-resized crop falls back to the same centre square when no window is found.
CROP_FRACTION = 0.875
_AREA_RANGE = (0.08, 1.0)
_ASPECT_RANGE = (3 / 4, 4 / 3)
_ATTEMPTS = 10


def _resize(image: tf.Tensor, size: int, antialias: bool) -> tf.Tensor:
  # Antialiasing costs 3× the whole training pipeline's time (measured: 2,600 vs 1,000
  # img/s on 2 cores), so only evaluation, which sees each image once, pays for it.
  return tf.image.resize(image, (size, size), method='bilinear', antialias=antialias)


def _resize_if_needed(image: tf.Tensor, size: int, antialias: bool) -> tf.Tensor:
  """Float32 size×size; skips the resampling when the image already has that size."""
  shape = tf.shape(image)
  return tf.cond(tf.logical_and(shape[0] == size, shape[1] == size),
                 lambda: tf.ensure_shape(tf.cast(image, tf.float32), (size, size, None)),
                 lambda: _resize(image, size, antialias))


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
  if channels != 1:
    return tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  # decode_image gives one channel only for JPEG and PNG (GIF, BMP and WebP raise): the
  # others are decoded to RGB, then converted.
  return tf.cond(
      tf.logical_or(tf.io.is_jpeg(encoded), tf.strings.substr(encoded, 0, 8) == _PNG_SIGNATURE),
      lambda: tf.io.decode_image(encoded, channels=1, expand_animations=False),
      lambda: tf.image.rgb_to_grayscale(
          tf.io.decode_image(encoded, channels=3, expand_animations=False)))


def _image_shape(encoded: tf.Tensor, channels: int) -> tf.Tensor:
  """[height, width, channels] without decoding a JPEG; other formats are decoded."""
  return tf.cond(tf.io.is_jpeg(encoded),
                 lambda: tf.io.extract_jpeg_shape(encoded),
                 lambda: tf.shape(_decode(encoded, channels)))


def _center_window(shape: tf.Tensor, crop_fraction: float = CROP_FRACTION) -> tf.Tensor:
  """[top, left, height, width] of the centred square of side crop_fraction × shorter side."""
  side = tf.cast(crop_fraction * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
  return tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])


def _random_window(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Inception crop window: area 8–100 %, aspect 3/4–4/3, 10 tries, else the centre."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)), seed=seed,
      min_object_covered=_AREA_RANGE[0], aspect_ratio_range=_ASPECT_RANGE, area_range=_AREA_RANGE,
      max_attempts=_ATTEMPTS, use_image_if_no_bounding_boxes=True)
  # When every attempt fails, the sampler returns the whole image: use the centre instead.
  failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  return tf.cond(failed, lambda: _center_window(shape), lambda: window)


def _decode_window(encoded: tf.Tensor, window: tf.Tensor, channels: int) -> tf.Tensor:
  """Decodes only `window` of a JPEG; other formats are decoded whole, then cropped."""
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_and_crop_jpeg(encoded, window, channels=channels),
      lambda: tf.image.crop_to_bounding_box(_decode(encoded, channels), window[0], window[1],
                                            window[2], window[3]))


def _to_uint8(image: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  return tf.ensure_shape(tf.saturate_cast(tf.round(image), tf.uint8),
                         (image_size, image_size, channels))


def train_image(encoded: tf.Tensor, seed: tf.Tensor, *, augment: str, image_size: int,
                channels: int, random_flip: bool, crop_padding: int) -> tf.Tensor:
  """One training image, uint8 [image_size, image_size, channels].

  Args:
    encoded: JPEG/PNG/... bytes.
    seed: int64 [2] stateless seed, unique to this example and epoch.
    augment: 'none', 'cifar' (pad, random crop) or 'imagenet' (random-resized crop).
    image_size: output side.
    channels: output channels.
    random_flip: random horizontal flip.
    crop_padding: zero padding on each side for 'cifar'.
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if augment == 'imagenet':
    window = _random_window(_image_shape(encoded, channels), crop_seed)
    image = _resize(_decode_window(encoded, window, channels), image_size, antialias=False)
  else:
    image = _resize_if_needed(_decode(encoded, channels), image_size, antialias=False)
    if augment == 'cifar':
      image = tf.pad(image, [[crop_padding] * 2, [crop_padding] * 2, [0, 0]])
      image = tf.image.stateless_random_crop(image, (image_size, image_size, channels),
                                             seed=crop_seed)
  if random_flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return _to_uint8(image, image_size, channels)


def eval_image(encoded: tf.Tensor, *, augment: str, image_size: int, channels: int,
               crop_fraction: float = CROP_FRACTION) -> tf.Tensor:
  """One evaluation image, uint8: the centre crop for 'imagenet', a plain resize otherwise."""
  if augment == 'imagenet':
    shape = _image_shape(encoded, channels)
    # Shorter side to image_size / crop_fraction, then the central image_size square
    # (torchvision's Resize + CenterCrop): the same as cropping the centre crop_fraction
    # square, then resizing it.
    image = _resize(_decode_window(encoded, _center_window(shape, crop_fraction), channels),
                    image_size, antialias=True)
  else:
    image = _resize_if_needed(_decode(encoded, channels), image_size, antialias=True)
  return _to_uint8(image, image_size, channels)
