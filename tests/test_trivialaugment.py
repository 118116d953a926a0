"""TrivialAugment-wide: every op against torchvision's, the draws, determinism, tf.data."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from resnet_jax.data import trivialaugment as ta

_GEOMETRIC = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate')
_BINS = (0, 1, 15, 22, 30)  # 15: torch's 15.999999 px; 30: the largest.

from conftest import needs_torch  # PyTorch parity: the slow tier

# Runs in a subprocess: torch and TensorFlow (loaded by conftest) crash in one process.
_TORCH_SCRIPT = '''
import sys
import numpy as np
import torch
from torchvision.transforms import InterpolationMode, TrivialAugmentWide
from torchvision.transforms.autoaugment import _apply_op
cases = np.load(sys.argv[1])
out = {}
for i, (name, magnitude) in enumerate(zip(cases['names'], cases['magnitudes'])):
  image = torch.from_numpy(cases[f'image{cases["image_index"][i]}']).permute(2, 0, 1)
  result = _apply_op(image.contiguous(), str(name), float(magnitude),
                     InterpolationMode.BILINEAR, None)
  out[f'out{i}'] = result.permute(1, 2, 0).numpy()
for name, (magnitudes, signed) in TrivialAugmentWide()._augmentation_space(31).items():
  out[f'magnitudes_{name}'] = magnitudes.numpy().astype(np.float32)
  out[f'signed_{name}'] = np.array(signed)
np.savez(sys.argv[2], **out)
'''


def _images():
  """Noise (bilinear errors show on it), non-square to catch swapped H and W, C = 1 and 3;
  one at 40..199 so that AutoContrast and Equalize stretch it."""
  rng = np.random.RandomState(0)
  return [rng.randint(0, 256, (24, 32, 3)), rng.randint(0, 256, (24, 32, 1)),
          rng.randint(40, 200, (32, 32, 3)), rng.randint(0, 256, (32, 32, 1))]


def _cases():
  """(image index, op name, signed magnitude as torchvision's _apply_op takes it)."""
  cases = []
  for image_index in range(len(_images())):
    for name in ta.OPS:
      signed = ta._SPACE[name][1]
      for bin_index in _BINS if name not in ('Identity', 'AutoContrast', 'Equalize') else (0,):
        for sign in (1.0, -1.0) if signed else (1.0,):
          cases.append((image_index, name, sign * float(ta.magnitudes(name)[bin_index])))
  return cases


@pytest.fixture(scope='module')
def torch_reference(tmp_path_factory):
  """{'out<i>': torchvision's output for _cases()[i], 'magnitudes_<op>', 'signed_<op>'}."""
  folder = tmp_path_factory.mktemp('trivialaugment')
  cases = _cases()
  np.savez(folder / 'cases.npz', names=np.array([name for _, name, _ in cases]),
           magnitudes=np.array([magnitude for _, _, magnitude in cases]),
           image_index=np.array([index for index, _, _ in cases]),
           **{f'image{i}': image.astype(np.uint8) for i, image in enumerate(_images())})
  (folder / 'reference.py').write_text(_TORCH_SCRIPT)
  subprocess.run([sys.executable, str(folder / 'reference.py'), str(folder / 'cases.npz'),
                  str(folder / 'reference.npz')], check=True, timeout=300)
  return dict(np.load(folder / 'reference.npz'))


@needs_torch
def test_magnitude_bins_and_signs_are_torchvisions(torch_reference):
  for name in ta.OPS:
    assert bool(torch_reference[f'signed_{name}']) == ta._SPACE[name][1], name
    reference = torch_reference[f'magnitudes_{name}']
    if reference.ndim:  # Identity, AutoContrast, Equalize: a scalar 0, no bins.
      np.testing.assert_array_equal(ta.magnitudes(name), reference, err_msg=name)


@needs_torch
def test_ops_match_torchvision(torch_reference):
  images = _images()
  for i, (image_index, name, magnitude) in enumerate(_cases()):
    image = images[image_index].astype(np.uint8)
    ours = ta.apply_op(image, name, magnitude).numpy()
    reference = torch_reference[f'out{i}']
    assert ours.shape == image.shape and ours.dtype == np.uint8
    where = (name, magnitude, image.shape)
    if name not in _GEOMETRIC:  # Same float32 arithmetic as torch's kernels: bit-exact.
      np.testing.assert_array_equal(ours, reference, err_msg=str(where))
      continue
    # Same sampling grid, but TF's ImageProjectiveTransformV3 and torch's affine_grid +
    # grid_sample compute coordinates and bilinear weights in float32 in different orders
    # (~1e-5 of a pixel apart): a value within that of a .5 rounds the other way. So at
    # most 1 level, on at most 1% of the pixels (these cases: <= 0.5%); a wrong sign, centre (by
    # half a pixel) or swapped H and W moves whole rows of noise and breaks both bounds.
    difference = np.abs(ours.astype(int) - reference)
    assert difference.max() <= 1 and (difference > 0).mean() <= 0.01, where
    flipped = ta.apply_op(image, name, -magnitude).numpy()
    if not np.array_equal(flipped, ours):  # Not 0°, < 1 px, nor shifted out either way.
      # This comparison does see the sign.
      assert (np.abs(flipped.astype(int) - reference) > 1).mean() > 0.05, where


def test_directions_and_centre_exactly():
  image = np.random.RandomState(1).randint(0, 256, (16, 16, 3)).astype(np.uint8)
  # torchvision rotates counter-clockwise about the centre: 90° is np.rot90, pixel for pixel.
  np.testing.assert_array_equal(ta.apply_op(image, 'Rotate', 90.0).numpy(), np.rot90(image))
  # A positive translation moves the content right (down), the rest filled with 0.
  moved = ta.apply_op(image, 'TranslateX', 5.7).numpy()  # int(): 5 pixels.
  np.testing.assert_array_equal(moved[:, 5:], image[:, :-5])
  assert (moved[:, :5] == 0).all()
  moved = ta.apply_op(image, 'TranslateY', -3.2).numpy()
  np.testing.assert_array_equal(moved[:-3], image[3:])
  assert (moved[-3:] == 0).all()
  # ShearX by 1 about the top-left corner: row y reads input x + y + 0.5, half of two pixels.
  sheared = ta.apply_op(image, 'ShearX', 1.0).numpy().astype(int)
  halves = (image[4, 4:-1].astype(int) + image[4, 5:]) / 2
  assert np.abs(sheared[4, :11] - halves).max() <= 0.5


def _seed(*values):
  return tf.constant(values, tf.int64)


def test_transform_is_deterministic_per_seed_and_keeps_shape():
  for channels in (1, 3):
    image = np.random.RandomState(2).randint(0, 256, (20, 24, channels)).astype(np.uint8)
    outputs = [ta.trivial_augment_wide(image, _seed(3, i)).numpy() for i in range(8)]
    for output in outputs:
      assert output.shape == image.shape and output.dtype == np.uint8
    np.testing.assert_array_equal(outputs[0], ta.trivial_augment_wide(image, _seed(3, 0)))
    assert len({output.tobytes() for output in outputs}) > 3
    # The output is the sampled op at the sampled magnitude.
    op, _, magnitude = ta.sample(_seed(3, 5))
    np.testing.assert_array_equal(
        outputs[5], ta.apply_op(image, int(op), float(magnitude)).numpy())


def test_draws_are_uniform():
  count = 1400
  draws = tf.data.Dataset.range(count).map(lambda i: ta.sample(tf.stack([i, 7 * i + 1])))
  ops, bins, magnitudes = next(iter(draws.batch(count)))
  ops, bins, magnitudes = ops.numpy(), bins.numpy(), magnitudes.numpy()

  def chi_square(values, categories):
    expected = len(values) / categories
    return ((np.bincount(values, minlength=categories) - expected) ** 2 / expected).sum()

  # 99.9% quantiles of chi-square with 13 and 30 degrees of freedom.
  assert chi_square(ops, len(ta.OPS)) < 34.5
  assert chi_square(bins, ta.NUM_BINS) < 59.7
  signed = np.array([ta._SPACE[ta.OPS[op]][1] for op in ops]) & (bins > 0)
  negative = (magnitudes[signed] < 0).mean()
  assert abs(negative - 0.5) < 4 * 0.5 / np.sqrt(signed.sum())  # 4 standard deviations.
  assert (magnitudes[~signed] >= 0).all()
  table = np.stack([ta.magnitudes(name) for name in ta.OPS])
  np.testing.assert_array_equal(np.abs(magnitudes), table[ops, bins])


def test_tf_data_map_with_per_element_seeds_matches_eager():
  images = np.random.RandomState(4).randint(0, 256, (8, 16, 16, 3)).astype(np.uint8)
  seeds = np.array([[9, i] for i in range(8)], np.int64)
  dataset = tf.data.Dataset.from_tensor_slices((images, seeds)).map(
      ta.trivial_augment_wide, num_parallel_calls=2, deterministic=True)
  for image, seed, mapped in zip(images, seeds, dataset.as_numpy_iterator()):
    np.testing.assert_array_equal(mapped, ta.trivial_augment_wide(image, tf.constant(seed)))


def test_every_op_through_switch_case_in_tf_data_matches_eager():
  # Graph mode may fuse or reorder float32 arithmetic; the exact colour ops must not change.
  image = np.random.RandomState(5).randint(30, 220, (16, 16, 3)).astype(np.uint8)
  cases = [(op, float(ta.magnitudes(name)[bin_index]) * sign)
           for op, name in enumerate(ta.OPS) for bin_index in (15, 30) for sign in (1, -1)]
  dataset = tf.data.Dataset.from_tensor_slices(
      ([op for op, _ in cases], [magnitude for _, magnitude in cases])).map(
          lambda op, magnitude: ta.apply_op(image, op, magnitude))
  for (op, magnitude), mapped in zip(cases, dataset.as_numpy_iterator()):
    np.testing.assert_array_equal(mapped, ta.apply_op(image, ta.OPS[op], magnitude).numpy())


def test_rejects_images_it_cannot_take():
  with pytest.raises(ValueError, match='TrivialAugment needs a uint8'):
    ta.trivial_augment_wide(np.zeros((8, 8, 4), np.uint8), _seed(0, 0))
  with pytest.raises(ValueError, match='TrivialAugment needs a uint8'):
    ta.apply_op(np.zeros((8, 8, 3), np.float32), 'Rotate', 10.0)
