"""Batch mixup / cutmix: exact image and target algebra on tiny arrays, under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import losses, mixing

NUM_CLASSES = 5
LABELS = np.array([0, 1, 2, 3], np.int32)  # distinct from their reversed partners
SEEDS = range(8)

mix = jax.jit(mixing.mix_batch, static_argnames=(
    'num_classes', 'mixup_alpha', 'cutmix_alpha', 'switch_prob', 'label_smoothing', 'group_size'))


def _images(shape=(4, 8, 8, 3), dtype=jnp.float32):
  # Continuous random values: no pixel equals its partner's, so provenance is decidable.
  return jax.random.normal(jax.random.key(42), shape).astype(dtype)


def _run(seed, images=None, labels=LABELS, **kwargs):
  images = _images() if images is None else images
  out, targets = mix(jax.random.key(seed), images, jnp.asarray(labels), NUM_CLASSES, **kwargs)
  return np.asarray(images, np.float32), np.asarray(out, np.float32), np.asarray(targets)


def _expected_targets(lam, labels=LABELS, smoothing=0.0):
  onehot = np.asarray(optax.smooth_labels(jax.nn.one_hot(labels, NUM_CLASSES), smoothing))
  return lam * onehot + (1 - lam) * onehot[::-1]


def _check_mixup(x, out, targets):
  lam = targets[0, LABELS[0]]
  assert 0.0 < lam < 1.0
  np.testing.assert_allclose(targets, _expected_targets(lam), atol=1e-6)
  np.testing.assert_allclose(out, lam * x + (1 - lam) * x[::-1], rtol=1e-5, atol=1e-6)
  # lam read back from every pixel agrees with the targets' lam.
  np.testing.assert_allclose((out - x[::-1]) / (x - x[::-1]), lam, rtol=1e-3, atol=1e-4)
  return lam


def _check_cutmix(x, out, targets):
  lam = targets[0, LABELS[0]]
  np.testing.assert_allclose(targets, _expected_targets(lam), atol=1e-6)
  own, other = out == x, out == x[::-1]
  assert np.all(own | other), 'every pixel comes from the example or its partner'
  from_partner = other.all(axis=-1)  # [B, H, W]; all channels move together
  assert np.all(from_partner | own.all(axis=-1))
  box = from_partner[0]
  assert np.all(from_partner == box), 'one box shared by the whole batch'
  # The partner's pixels form one axis-aligned rectangle (or none).
  if box.any():
    ys, xs = np.nonzero(box)
    assert box[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
  # lam is corrected to the kept fraction: exact pixel count.
  assert round((1 - lam) * box.size) == box.sum()
  np.testing.assert_allclose(1 - lam, box.mean(), atol=1e-6)
  return lam


def test_mixup_is_a_blend_with_the_reversed_batch():
  lams = []
  for seed in SEEDS:
    x, out, targets = _run(seed, mixup_alpha=1.0)
    assert out.shape == x.shape and targets.shape == (4, NUM_CLASSES)
    assert targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)
    lams.append(_check_mixup(x, out, targets))
  assert len(set(lams)) == len(lams), 'different rngs give different lam'


def test_cutmix_pastes_one_rectangle_and_corrects_lam():
  sizes = set()
  for seed in SEEDS:
    x, out, targets = _run(seed, cutmix_alpha=1.0)
    np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)
    lam = _check_cutmix(x, out, targets)
    sizes.add(round((1 - lam) * 64))
  assert len(sizes) > 2 and any(0 < s < 64 for s in sizes)  # the boxes really vary


def test_same_rng_same_output():
  a = _run(3, mixup_alpha=1.0, cutmix_alpha=1.0)
  b = _run(3, mixup_alpha=1.0, cutmix_alpha=1.0)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_no_alphas_is_identity(smoothing):
  x, out, targets = _run(0, label_smoothing=smoothing)
  np.testing.assert_array_equal(out, x)
  np.testing.assert_allclose(targets, _expected_targets(1.0, smoothing=smoothing), atol=1e-7)


def test_label_smoothing_composes_with_mixing():
  x, out, targets = _run(1, mixup_alpha=1.0, label_smoothing=0.1)
  lam = (out[0, 0, 0, 0] - x[3, 0, 0, 0]) / (x[0, 0, 0, 0] - x[3, 0, 0, 0])
  np.testing.assert_allclose(targets, _expected_targets(lam, smoothing=0.1), atol=1e-4)
  np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)


def test_switch_prob_picks_the_method():
  for seed in SEEDS:
    _check_cutmix(*_run(seed, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0))
    _check_mixup(*_run(seed, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.0))
  kinds = {bool(np.all(np.isin(o, np.stack([x, x[::-1]]))))
           for x, o, _ in (_run(s, mixup_alpha=1.0, cutmix_alpha=1.0) for s in SEEDS)}
  assert kinds == {True, False}, 'switch_prob=0.5 gives both over 8 seeds'


def test_bfloat16_odd_batch_and_channels():
  for batch, alphas in ((3, dict(mixup_alpha=1.0, cutmix_alpha=1.0)), (1, dict(mixup_alpha=1.0))):
    images = _images((batch, 6, 5, 1), jnp.bfloat16)
    labels = np.arange(batch, dtype=np.int32)
    out, targets = mix(jax.random.key(0), images, jnp.asarray(labels), NUM_CLASSES, **alphas)
    assert out.dtype == jnp.bfloat16 and out.shape == images.shape
    assert targets.dtype == jnp.float32 and targets.shape == (batch, NUM_CLASSES)
    np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, atol=1e-6)
  # A batch of one is its own partner: nothing changes.
  np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(images, np.float32))
  np.testing.assert_allclose(targets, jax.nn.one_hot(labels, NUM_CLASSES), atol=1e-6)


def test_mixed_cross_entropy_matches_optax():
  logits = jax.random.normal(jax.random.key(1), (4, NUM_CLASSES), jnp.bfloat16)
  _, _, targets = _run(2, mixup_alpha=1.0)
  loss = losses.softmax_cross_entropy(logits, jnp.asarray(targets))
  assert loss.dtype == jnp.float32 and loss.shape == (4,)
  np.testing.assert_allclose(
      loss, optax.softmax_cross_entropy(logits.astype(jnp.float32), targets), rtol=1e-6)


@pytest.mark.parametrize('alpha', [0.1, 0.2, 1.0, 4.0])
def test_the_loop_free_beta_sampler_draws_beta(alpha):
  """Kolmogorov–Smirnov against scipy's Beta(alpha, alpha), on min(lam, 1 − lam) taken
  from the logit (float32 rounds lam itself to 1 for a tenth of the draws at alpha 0.1),
  and against jax.random.loggamma's own sampler."""
  import scipy.special
  import scipy.stats
  keys = jax.random.split(jax.random.key(7), 20_000)
  logits = np.asarray(jax.jit(jax.vmap(lambda k: mixing.beta_logit(k, alpha)))(keys),
                      np.float64)
  low_side = scipy.special.expit(-np.abs(logits))
  beta = scipy.stats.beta(alpha, alpha)
  assert scipy.stats.kstest(low_side, lambda x: 2 * beta.cdf(x)).pvalue > 1e-3

  def reference(key):
    x_key, y_key = jax.random.split(key)
    return jax.random.loggamma(x_key, alpha) - jax.random.loggamma(y_key, alpha)
  expected = np.asarray(jax.jit(jax.vmap(reference))(keys), np.float64)
  assert scipy.stats.ks_2samp(logits, expected).pvalue > 1e-3
  lam = np.asarray(jax.jit(lambda k: mixing.sample_beta(k, alpha))(keys[0]))
  assert lam.dtype == np.float32 and 0.0 <= lam <= 1.0


def test_a_wrong_beta_would_be_caught():
  """The test above can fail: Beta(0.5, 0.5) draws are rejected as Beta(1, 1)."""
  import scipy.special
  import scipy.stats
  keys = jax.random.split(jax.random.key(7), 20_000)
  logits = np.asarray(jax.vmap(lambda k: mixing.beta_logit(k, 0.5))(keys), np.float64)
  low_side = scipy.special.expit(-np.abs(logits))
  assert scipy.stats.kstest(low_side, lambda x: 2 * scipy.stats.beta(1, 1).cdf(x)).pvalue < 1e-6


def test_partners_are_mirrored_within_groups():
  x = jnp.arange(8)
  np.testing.assert_array_equal(mixing.partners(x), x[::-1])
  np.testing.assert_array_equal(mixing.partners(x, 4), [3, 2, 1, 0, 7, 6, 5, 4])
  np.testing.assert_array_equal(mixing.partners(x, 8), x[::-1])
  with pytest.raises(ValueError, match='not a multiple of the mixing group size 3'):
    mixing.partners(x, 3)
  images = _images((8, 4, 4, 1))
  labels = np.arange(8, dtype=np.int32) % NUM_CLASSES
  out, targets = mix(jax.random.key(0), images, jnp.asarray(labels), NUM_CLASSES,
                     mixup_alpha=1.0, group_size=4)
  lam = float(targets[0, labels[0]])
  np.testing.assert_allclose(out, lam * images + (1 - lam) * mixing.partners(images, 4),
                             rtol=1e-5, atol=1e-6)
