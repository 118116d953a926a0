"""RandAugment: shapes, determinism, each op at magnitude 10 and 0, tf.data equals eager."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps  # matplotlib, a requirement, depends on pillow

from resnet_jax.data import randaugment

_GEOMETRIC = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def _image(channels, size=32, low=0, high=256, seed=0):
  return np.random.RandomState(seed).randint(low, high, (size, size, channels)).astype(np.uint8)


def _seed(*values):
  return tf.constant(values, tf.int64)


def _augment(image, seed, num_layers=2, magnitude=9):
  return randaugment.randaugment(image, seed, num_layers=num_layers,
                                 magnitude=magnitude).numpy()


def test_shape_dtype_and_determinism_for_gray_and_rgb():
  for channels in (1, 3):
    image = _image(channels, 16)
    outputs = [_augment(image, _seed(0, i)) for i in range(6)]
    for output in outputs:
      assert output.shape == (16, 16, channels) and output.dtype == np.uint8
    np.testing.assert_array_equal(outputs[0], _augment(image, _seed(0, 0)))
    assert any(not np.array_equal(outputs[0], other) for other in outputs[1:])


def test_zero_layers_is_the_identity():
  image = _image(3, 16)
  np.testing.assert_array_equal(_augment(image, _seed(1, 2), num_layers=0), image)


@pytest.mark.parametrize('name', randaugment.OPS)
def test_each_op_at_full_and_zero_magnitude(name):
  index = randaugment.OPS.index(name)
  # Values 60..179 only: AutoContrast and Equalize have a range to stretch.
  image = _image(3, low=60, high=180)
  strong = randaugment.apply_op(image, index, 10, _seed(0, 1)).numpy()
  assert strong.shape == image.shape and strong.dtype == np.uint8
  assert np.array_equal(strong, image) == (name == 'Identity')
  gray = randaugment.apply_op(image[..., :1], index, 10, _seed(0, 1)).numpy()
  assert gray.shape == (32, 32, 1) and gray.dtype == np.uint8
  if name not in ('AutoContrast', 'Equalize'):  # These have no magnitude.
    weak = randaugment.apply_op(image, index, 0, _seed(0, 1)).numpy()
    np.testing.assert_array_equal(weak, image)


def test_reference_values():
  image = _image(3, low=60, high=180)

  def op(name, magnitude, seed=(0, 0)):
    return randaugment.apply_op(image, randaugment.OPS.index(name), magnitude,
                                _seed(*seed)).numpy().astype(np.int32)

  np.testing.assert_array_equal(op('Solarize', 10), 255 - image.astype(np.int32))
  np.testing.assert_array_equal(op('Posterize', 10), image & 0xF0)
  stretched = op('AutoContrast', 10)
  assert (stretched.min(axis=(0, 1)) == 0).all() and (stretched.max(axis=(0, 1)) == 255).all()
  equalized = op('Equalize', 10)
  assert equalized.min() < 10 and equalized.max() > 245
  # 0.45 · 6.25 / 10 · 32 = 9 pixels, to the left or the right by the random sign.
  directions = set()
  for i in range(8):
    shifted = op('TranslateX', 6.25, seed=(0, i))
    if np.abs(shifted[:, :-9] - image[:, 9:]).max() <= 1:
      directions.add('left')
      assert (shifted[:, -9:] == 128).all()
    elif np.abs(shifted[:, 9:] - image[:, :-9]).max() <= 1:
      directions.add('right')
      assert (shifted[:, :9] == 128).all()
  assert directions == {'left', 'right'}


def _pil_reference(name, image, level, sign):
  """What timm's RandAugment does with PIL for `name` at `level`, `sign`."""
  factor = 1 + sign * 0.9 * level
  size = image.size[0]
  affine = {'ShearX': (1, sign * 0.3 * level, 0, 0, 1, 0),
            'ShearY': (1, 0, 0, sign * 0.3 * level, 1, 0),
            'TranslateX': (1, 0, sign * 0.45 * level * size, 0, 1, 0),
            'TranslateY': (1, 0, 0, 0, 1, sign * 0.45 * level * size)}
  if name in affine:
    return lambda im, fill: im.transform(im.size, Image.AFFINE, affine[name],
                                         resample=Image.BILINEAR, fillcolor=fill)
  if name == 'Rotate':
    return lambda im, fill: im.rotate(sign * 30 * level, resample=Image.BILINEAR,
                                      fillcolor=fill)
  return {'Identity': lambda: image, 'AutoContrast': lambda: ImageOps.autocontrast(image),
          'Equalize': lambda: ImageOps.equalize(image),
          'Solarize': lambda: ImageOps.solarize(image, 256 * (1 - level)),
          'Posterize': lambda: ImageOps.posterize(image, 8 - int(4 * level)),
          'Color': lambda: ImageEnhance.Color(image).enhance(factor),
          'Contrast': lambda: ImageEnhance.Contrast(image).enhance(factor),
          'Brightness': lambda: ImageEnhance.Brightness(image).enhance(factor),
          'Sharpness': lambda: ImageEnhance.Sharpness(image).enhance(factor)}[name]()


def test_ops_match_pil_as_timm_uses_it():
  image = _image(3, low=40, high=200)
  ops = dict(randaugment._OPS)
  for name in randaugment.OPS:
    for sign in (-1.0, 1.0):
      ours = ops[name](tf.constant(image), tf.constant(0.5), tf.constant(sign)).numpy()
      reference = _pil_reference(name, Image.fromarray(image), 0.5, sign)
      inside = np.ones(image.shape[:2], bool)
      if callable(reference):  # Geometric: compare away from the fill.
        # PIL clamps reads within half a pixel outside the image, TF blends them with the
        # fill: keep only pixels whose neighbours PIL also sampled inside the image.
        valid = np.pad(np.asarray(reference(Image.new('L', (32, 32), 255), 0)) == 255, 1)
        inside = valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2]
        inside &= valid[1:-1, 2:]
        reference = reference(Image.fromarray(image), (128, 128, 128))
      difference = np.abs(ours.astype(int) - np.asarray(reference, int))[inside]
      assert difference.max() <= 1, (name, sign)


def test_tf_data_map_with_per_element_seeds_matches_eager():
  images = np.stack([_image(3, 16, seed=i) for i in range(6)])
  seeds = np.array([[5, i] for i in range(6)], np.int64)
  dataset = tf.data.Dataset.from_tensor_slices((images, seeds)).map(
      lambda image, seed: randaugment.randaugment(image, seed, num_layers=3, magnitude=9),
      num_parallel_calls=2, deterministic=True)
  for image, seed, mapped in zip(images, seeds, dataset.as_numpy_iterator()):
    np.testing.assert_array_equal(mapped, _augment(image, tf.constant(seed), num_layers=3))
