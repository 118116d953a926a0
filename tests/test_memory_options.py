"""The memory options (remat and its policies, scan_blocks) keep what they say they keep,
and compute what the plain model computes.

The memory figures are XLA:CPU's memory analysis of the compiled training step
(resnet_jax/bench/memory_options.py) and the residuals JAX's autodiff keeps; see
docs/models.md, "Memory options", for what they mean on a GPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from resnet_jax import models
from resnet_jax.models import block_stack
from resnet_jax.bench import memory_options


def _inputs(size, batch=4, classes=10, seed=0):
  rng = np.random.RandomState(seed)
  return (jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32),
          jnp.asarray(rng.randint(0, classes, size=(batch,)), jnp.int32))


def _loss_and_grads(model, variables, images, labels):
  def loss_fn(params):
    logits, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                  images, train=True, mutable=['batch_stats'])
    one_hot = jax.nn.one_hot(labels, logits.shape[-1])
    loss = -jnp.mean(jnp.sum(one_hot * jax.nn.log_softmax(logits), axis=-1))
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      variables['params'])
  return loss, logits, stats, grads


def _assert_trees_close(got, want, rtol=1e-5, scaled_atol=1e-5):
  assert jax.tree.structure(got) == jax.tree.structure(want)

  def check(g, w):
    np.testing.assert_allclose(g, w, rtol=rtol, atol=scaled_atol * float(np.abs(w).max()))
  jax.tree.map(check, got, want)


@functools.cache
def _plain_loss_and_grads(name, size):
  """(inputs, variables, plain model's loss, logits, statistics and gradients), once per
  model: every variant below is compared with it."""
  images, labels = _inputs(size)
  plain = models.create_model(name, num_classes=10, zero_init_residual=False)
  variables = jax.jit(lambda: plain.init(jax.random.key(0), images[:1], train=False))()
  want = jax.jit(lambda v: _loss_and_grads(plain, v, images, labels))(variables)
  return images, labels, variables, want


@pytest.mark.parametrize('name,size,variant', [
    *(('resnet20', 8, variant) for variant in ('remat', 'remat_conv_outputs', 'scan_blocks',
                                               'scan_remat', 'scan_remat_conv_outputs')),
    # Bottleneck units, the ImageNet stem and projection shortcuts.
    pytest.param('resnet50', 32, 'remat_conv_outputs', marks=pytest.mark.slow),
    pytest.param('resnet50', 32, 'scan_blocks', marks=pytest.mark.slow),
])
def test_remat_policies_and_scan_compute_the_plain_loss_and_gradients(name, size, variant):
  images, labels, variables, want = _plain_loss_and_grads(name, size)
  options = memory_options.VARIANTS[variant]
  model = models.create_model(name, num_classes=10, zero_init_residual=False, **options)
  scanned = options.get('scan_blocks', False)
  layout = block_stack.scan_layout if scanned else (lambda c: c)
  got = jax.jit(lambda v: _loss_and_grads(model, v, images, labels))(
      {k: layout(v) for k, v in variables.items()})
  if scanned:
    got = (*got[:2], block_stack.unscanned_layout(got[2]), block_stack.unscanned_layout(got[3]))
  _assert_trees_close(got, want)


@pytest.fixture(scope='module')
def resnet20_rows():
  """memory_options' table for ResNet-20 at 16², batch 8, float32, on XLA:CPU."""
  return {variant: memory_options.measure('resnet20', variant, batch_size=8, image_size=16,
                                          num_classes=10)
          for variant in memory_options.VARIANTS}


def test_conv_outputs_policy_recomputes_no_convolution(resnet20_rows):
  convolutions = {variant: row['convolutions'] for variant, row in resnet20_rows.items()}
  # Full remat recomputes each unit's convolutions in the backward pass; keeping their
  # outputs leaves the backward with the plain step's convolutions only.
  assert convolutions['remat_conv_outputs'] == convolutions['plain'] < convolutions['remat']
  assert (convolutions['scan_blocks'] == convolutions['scan_remat_conv_outputs']
          < convolutions['scan_remat'])


def test_remat_policies_keep_less_than_the_plain_model(resnet20_rows):
  residual = {variant: row['residual_mib'] for variant, row in resnet20_rows.items()}
  assert residual['remat'] < residual['remat_conv_outputs'] < residual['plain']
  # A scanned stage keeps the same values as its units rematerialised one by one.
  assert residual['scan_remat'] == residual['remat']
  assert residual['scan_remat_conv_outputs'] == residual['remat_conv_outputs']


def test_scan_blocks_keeps_no_more_than_the_unrolled_model(resnet20_rows):
  """Before scan_blocks rematerialised its units (conv_outputs), a scanned stage stored
  every residual of its backward pass as a [units, ...] array, BN's float32 temporaries
  and ReLU masks included: more than the unrolled model, whose XLA fusions keep far fewer."""
  rows = resnet20_rows
  # Here 4.7 against 7.1 MiB (before: 6.7), and 4.7 against 5.8 MiB of temporaries
  # (before: 6.2), in the suite's XLA settings (tests/conftest.py).
  assert rows['scan_blocks']['residual_mib'] < 0.7 * rows['plain']['residual_mib']
  assert rows['scan_blocks']['temp_mib'] <= rows['plain']['temp_mib']
  # Inside the loop, full remat does save memory on XLA:CPU too (unrolled, it does not:
  # the CPU pipeline moves the recomputation back into the forward pass).
  assert rows['scan_remat']['temp_mib'] < rows['scan_blocks']['temp_mib']


def test_remat_policy_is_checked_and_reaches_the_model():
  with pytest.raises(ValueError, match="unknown remat_policy 'dots'; valid: full, conv_outputs"):
    models.create_model('resnet20', num_classes=10, remat=True, remat_policy='dots')
  config = default_config.get_config()
  config.model, config.remat, config.remat_policy = 'resnet20', True, 'conv_outputs'
  model = models.model_from_config(config, num_classes=10)
  assert model.remat and model.remat_policy == 'conv_outputs'
  assert models.create_model('resnet20', num_classes=10).remat_policy == 'full'
