"""Crops and flips: shapes, determinism, the centre-crop fallback, PNG in the JPEG path."""

import numpy as np
import tensorflow as tf

from resnet_jax.data import preprocess


def _encoded(height, width, fmt='jpeg', seed=0):
  pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)
  return tf.io.encode_jpeg(pixels) if fmt == 'jpeg' else tf.io.encode_png(pixels)


def _train(encoded, seed, **kwargs):
  kwargs = dict(augment='imagenet', image_size=32, channels=3, random_flip=True,
                crop_padding=4) | kwargs
  return preprocess.train_image(encoded, tf.constant(seed, tf.int64), **kwargs).numpy()


def test_imagenet_crop_is_deterministic_per_seed_for_jpeg_and_png():
  for fmt in ('jpeg', 'png'):
    encoded = _encoded(75, 100, fmt)
    a, b, c = _train(encoded, [0, 1]), _train(encoded, [0, 1]), _train(encoded, [0, 2])
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_window_statistics():
  shape = tf.constant([375, 500, 3])
  areas, aspects = [], []
  for i in range(600):
    window = preprocess._random_window(shape, tf.constant([7, i], tf.int64)).numpy()
    top, left, height, width = window
    assert top >= 0 and left >= 0 and top + height <= 375 and left + width <= 500
    areas.append(height * width / (375 * 500))
    aspects.append(width / height)
  assert 0.079 <= min(areas) < 0.1 and max(areas) <= 1.0 and 0.3 < np.mean(areas) < 0.7
  assert 0.7 <= min(aspects) and max(aspects) <= 1.4


def test_centre_crop_fallback_when_no_window_fits():
  # 10×1000: any 3/4–4/3 window covers < 2 % of the area, so all 10 tries fail.
  window = preprocess._random_window(tf.constant([10, 1000, 3]), tf.constant([0, 0], tf.int64))
  assert window.numpy().tolist() == [1, 496, 8, 8]


def test_eval_centre_crop_matches_resize_then_crop_geometry():
  # A left-to-right ramp: the centre crop keeps the middle 87.5 % of the shorter side.
  ramp = np.tile(np.linspace(0, 255, 200, dtype=np.float32)[None, :, None], (100, 1, 3))
  image = preprocess.eval_image(tf.io.encode_png(ramp.astype(np.uint8)), augment='imagenet',
                                image_size=8, channels=3).numpy()
  assert image.shape == (8, 8, 3)
  image = image.astype(np.float32)
  assert abs(image[:, :, 0].mean() - 127.5) < 3  # centred horizontally
  assert image[0, -1, 0] - image[0, 0, 0] < 255 * 87.5 / 200 + 5  # spans ~87 of 200 columns


def test_cifar_crop_and_no_flip():
  pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
  encoded = tf.io.encode_png(pixels)
  out = _train(encoded, [1, 2], augment='cifar', image_size=8, random_flip=False,
               crop_padding=2)
  # A shifted copy of the original: some 6×6 block of it appears unchanged.
  assert any(np.array_equal(out[max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)],
                            pixels[max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)])
             for dy in range(-2, 3) for dx in range(-2, 3))
  plain = preprocess.eval_image(encoded, augment='cifar', image_size=8, channels=3).numpy()
  np.testing.assert_array_equal(plain, pixels)

