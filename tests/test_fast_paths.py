"""The speed and memory options compute what the plain formulation computes.

Dot-form convolutions, the shifted max pool, scanned blocks and rematerialisation each
change how XLA computes a ResNet, never what: values and gradients are checked against
the plain lax/flax formulation.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from resnet_jax import models, sharding, train_state
from resnet_jax.cpu import conv
from resnet_jax.models import block_stack

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _conv_and_grads(fn, x, kernel):
  y, vjp = jax.vjp(fn, x, kernel)
  cotangent = jnp.asarray(np.random.RandomState(2).normal(size=y.shape), y.dtype)
  return (y, *vjp(cotangent))


@pytest.mark.parametrize('size,kernel_size,strides,channels,expected_form', [
    (8, 1, 1, (16, 32), 'pointwise'),
    (8, 1, 2, (16, 32), 'pointwise'),
    (4, 3, 1, (8, 16), 'patches'),
    (7, 3, 2, (8, 16), 'patches'),
    (2, 3, 1, (32, 8), 'patches'),
    (1, 3, 1, (16, 16), 'patches'),
    (16, 3, 1, (8, 8), None),  # 256 output pixels: XLA's own
    (16, 3, 2, (8, 8), 'patches'),  # strided 3×3: patches at any size
    (32, 7, 2, (3, 8), None),  # the stem
])
def test_dot_convolutions_match_lax_values_and_gradients(size, kernel_size, strides, channels,
                                                         expected_form):
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.normal(size=(4, size, size, channels[0])), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, *channels)) * 0.1,
                       jnp.float32)
  padding = [(kernel_size // 2, kernel_size // 2)] * 2
  dimension_numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC)
  assert conv._dot_form(x, kernel, (strides, strides), padding, None, None,
                        dimension_numbers, 1) == expected_form

  def plain(x, kernel):
    return lax.conv_general_dilated(x, kernel, (strides, strides), padding,
                                    dimension_numbers=dimension_numbers)

  def dot(x, kernel):
    return conv.conv_general_dilated(x, kernel, (strides, strides), padding,
                                     dimension_numbers=dimension_numbers)

  for want, got in zip(_conv_and_grads(plain, x, kernel),
                       jax.jit(lambda x, k: _conv_and_grads(dot, x, k))(x, kernel)):
    assert want.shape == got.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


@pytest.mark.parametrize('shape,ties', [((2, 9, 10, 4), False), ((2, 8, 8, 3), True),
                                         ((1, 112, 112, 2), True)])
def test_max_pool_matches_flax_values_and_gradients(shape, ties):
  x = jnp.asarray(np.random.RandomState(0).normal(size=shape), jnp.float32)
  if ties:  # after a ReLU, whole windows are 0: the gradient goes to the first of them
    x = jnp.round(jax.nn.relu(x))

  def plain(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

  def fast(x):
    return conv.max_pool(x, 3, 2, 1)

  np.testing.assert_array_equal(fast(x), plain(x))
  weights = jnp.asarray(np.random.RandomState(1).normal(size=plain(x).shape), jnp.float32)
  # A pixel in two windows sums two shares, in another order than XLA's scatter-add.
  np.testing.assert_allclose(jax.jit(jax.grad(lambda x: jnp.sum(fast(x) * weights)))(x),
                             jax.jit(jax.grad(lambda x: jnp.sum(plain(x) * weights)))(x),
                             rtol=1e-6, atol=1e-6)


def _loss_and_grads(model, variables, images, labels):
  def loss_fn(params):
    logits, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                  images, train=True, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, updates['batch_stats'])
  (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      variables['params'])
  return loss, logits, stats, grads


def _assert_trees_close(got, want, rtol=1e-4, scaled_atol=1e-4):
  """Elementwise close, with an absolute slack relative to each leaf's largest value
  (float32 rounding differences of a deep chain scale with it)."""
  assert jax.tree.structure(got) == jax.tree.structure(want)

  def check(g, w):
    np.testing.assert_allclose(g, w, rtol=rtol, atol=scaled_atol * float(np.abs(w).max()))
  jax.tree.map(check, got, want)


def _inputs(size, batch=4, classes=10, seed=0):
  rng = np.random.RandomState(seed)
  return (jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32),
          jnp.asarray(rng.randint(0, classes, size=(batch,)), jnp.int32))


@pytest.mark.parametrize('name,size', [('resnet18', 32),
                                       pytest.param('resnet50', 64, marks=pytest.mark.slow)])
def test_dot_model_matches_xla_model(name, size):
  # In float64: a deep net's float32 gradients (no zero-init) differ by ~1e-3 between
  # any two summation orders, which would hide a real error; float64 leaves ~1e-9.
  with jax.enable_x64(True):
    images, labels = _inputs(size, batch=8)
    images = images.astype(jnp.float64)
    plain, fast = (models.create_model(name, num_classes=10, conv_impl=impl,
                                       zero_init_residual=False, dtype=jnp.float64)
                   for impl in ('xla', 'dot'))
    variables = jax.jit(lambda: plain.init(jax.random.key(0), images[:1], train=False))()
    want = jax.jit(lambda v: _loss_and_grads(plain, v, images, labels))(variables)
    got = jax.jit(lambda v: _loss_and_grads(fast, v, images, labels))(variables)
  _assert_trees_close(got, want, rtol=1e-6, scaled_atol=1e-6)


@pytest.mark.parametrize('name', ['resnet20', 'preact_resnet20',
                                  pytest.param('resnet50', marks=pytest.mark.slow)])
def test_scanned_blocks_compute_the_same_as_unrolled_ones(name):
  size = 8 if name.endswith('20') else 32
  images, labels = _inputs(size)
  unrolled = models.create_model(name, num_classes=10, zero_init_residual=False)
  scanned = models.create_model(name, num_classes=10, zero_init_residual=False,
                                scan_blocks=True)
  variables = jax.jit(lambda: unrolled.init(jax.random.key(0), images[:1], train=False))()
  scanned_variables = {k: block_stack.scan_layout(v) for k, v in variables.items()}
  assert jax.tree.structure(scanned_variables) == jax.tree.structure(
      jax.eval_shape(lambda: scanned.init(jax.random.key(0), images[:1], train=False)))
  want = jax.jit(lambda v: _loss_and_grads(unrolled, v, images, labels))(variables)
  loss, logits, stats, grads = jax.jit(
      lambda v: _loss_and_grads(scanned, v, images, labels))(scanned_variables)
  _assert_trees_close((loss, logits, block_stack.unscanned_layout(stats),
                       block_stack.unscanned_layout(grads)), want)
  _assert_trees_close(block_stack.unscanned_layout(scanned_variables['params']),
                      variables['params'], rtol=0, scaled_atol=0)


@pytest.mark.parametrize('name', ['resnet20', pytest.param('resnet50', marks=pytest.mark.slow)])
def test_scanned_model_initialises_the_unscanned_weights(name):
  size = 8 if name == 'resnet20' else 32
  mesh = sharding.make_mesh(jax.devices()[:1])
  unrolled, scanned = (
      train_state.create_train_state(jax.random.key(3), models.create_model(
          name, num_classes=10, scan_blocks=scan), optax.sgd(0.1), (size, size, 3),
          use_ema=False, mesh=mesh) for scan in (False, True))
  assert any(key.endswith('_blocks') for key in scanned.params)  # really scanned
  for collection in ('params', 'batch_stats'):
    np.testing.assert_equal(
        jax.device_get(block_stack.scan_layout(dict(getattr(unrolled, collection)))),
        jax.device_get(dict(getattr(scanned, collection))))


def test_remat_computes_the_same_gradients():
  images, labels = _inputs(8)
  plain = models.create_model('resnet20', num_classes=10, zero_init_residual=False)
  variables = jax.jit(lambda: plain.init(jax.random.key(0), images[:1], train=False))()
  want = jax.jit(lambda v: _loss_and_grads(plain, v, images, labels))(variables)
  for options in ({'remat': True}, {'remat': True, 'scan_blocks': True}):
    model = models.create_model('resnet20', num_classes=10, zero_init_residual=False, **options)
    layout = block_stack.scan_layout if options.get('scan_blocks') else (lambda c: c)
    got = jax.jit(lambda v: _loss_and_grads(model, v, images, labels))(
        {k: layout(v) for k, v in variables.items()})
    if options.get('scan_blocks'):
      got = (*got[:2], block_stack.unscanned_layout(got[2]), block_stack.unscanned_layout(got[3]))
    _assert_trees_close(got, want)


def test_bad_conv_impl_names_the_choices():
  with pytest.raises(ValueError, match=r"unknown conv_impl 'fast'; valid: auto, xla, dot"):
    conv.use_dot('fast')
