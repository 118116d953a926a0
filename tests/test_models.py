"""Model zoo: exact parameter counts, shapes, dtypes, init options, bad names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models

# torchvision's counts at 1000 classes (resnet200: timm's), He et al. 2015 §4.2 at 10.
EXPECTED_PARAMS = {
    'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032,
    'resnet101': 44_549_160, 'resnet152': 60_192_808, 'resnet200': 64_673_832,
    'resnet20': 269_722, 'resnet32': 464_154, 'resnet44': 658_586, 'resnet56': 853_018,
    'resnet110': 1_727_962,
    # Pre-activation: no stem BN, no BN after projections, BN before each block (on its
    # input width), one final BN.
    'preact_resnet18': 11_687_720, 'preact_resnet34': 21_795_880,
    'preact_resnet50': 25_549_352, 'preact_resnet101': 44_541_480,
    'preact_resnet152': 60_185_128, 'preact_resnet200': 64_666_152,
    'preact_resnet20': 269_722, 'preact_resnet32': 464_154, 'preact_resnet44': 658_586,
    'preact_resnet56': 853_018, 'preact_resnet110': 1_727_962,
}
CIFAR = ('resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110')


def _is_cifar(name):
  return name.removeprefix('preact_') in CIFAR


def _abstract_variables(name, dtype=jnp.float32, **overrides):
  model = models.create_model(name, num_classes=10 if _is_cifar(name) else 1000, dtype=dtype,
                              **overrides)
  size = 32 if _is_cifar(name) else 224
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                  jnp.zeros((1, size, size, 3)), train=False))


def test_every_variant_has_an_expected_count():
  assert set(models.VARIANTS) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize('name', sorted(EXPECTED_PARAMS))
def test_parameter_count(name):
  _, variables = _abstract_variables(name)
  assert sum(x.size for x in jax.tree.leaves(variables['params'])) == EXPECTED_PARAMS[name]
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


@pytest.mark.parametrize('name,size', [('resnet18', 64), ('preact_resnet50', 64),
                                       ('resnet20', 32), ('preact_resnet20', 16)])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'float16'])
def test_forward_shapes_and_dtypes(name, size, dtype):
  model = models.create_model(name, num_classes=7, dtype=dtype)
  images = jnp.ones((2, size, size, 3))
  variables = model.init(jax.random.key(0), images, train=False)
  logits, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(updates))
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_zero_init_residual_zeroes_last_bn_scale():
  model = models.create_model('resnet18', num_classes=10)
  variables = model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)), train=False)
  block = variables['params']['stage1_block1']
  assert np.all(block['bn2']['scale'] == 0) and np.all(block['bn1']['scale'] == 1)
  model = models.create_model('resnet18', num_classes=10, zero_init_residual=False)
  variables = model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)), train=False)
  assert np.all(variables['params']['stage1_block1']['bn2']['scale'] == 1)


def test_bottleneck_strides_on_3x3_conv():
  """v1.5: the stride-2 sits on the 3×3 convolution, not on the first 1×1."""
  _, variables = _abstract_variables('resnet50')
  block = variables['params']['stage2_block1']
  assert block['conv1']['conv']['kernel'].shape == (1, 1, 256, 128)
  assert block['conv2']['conv']['kernel'].shape == (3, 3, 128, 128)
  assert block['downsample_conv']['conv']['kernel'].shape == (1, 1, 256, 512)
  model = models.create_model('resnet50', num_classes=1000)
  intermediates = model.apply(
      jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables), jnp.zeros((1, 64, 64, 3)),
      train=False, capture_intermediates=lambda mdl, _: mdl.name in ('conv1', 'conv2'),
      mutable=['intermediates'])[1]['intermediates']['stage2_block1']
  assert intermediates['conv1']['__call__'][0].shape == (1, 16, 16, 128)
  assert intermediates['conv2']['__call__'][0].shape == (1, 8, 8, 128)


def test_bn_momentum_and_epsilon_reach_the_layers():
  model = models.create_model('resnet20', num_classes=10, bn_momentum=0.5, bn_epsilon=1e-3)
  images = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) + 3.0
  variables = model.init(jax.random.key(0), images, train=False)
  _, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
  stem_mean = updates['batch_stats']['stem_bn']['mean']
  conv = model.apply(variables, images, train=False, capture_intermediates=True,
                     mutable=['intermediates'])[1]['intermediates']['stem_conv']['__call__'][0]
  np.testing.assert_allclose(stem_mean, 0.5 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_unknown_model_names_the_choices():
  with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*resnet18.*preact_resnet110"):
    models.create_model('resnet19', num_classes=10)
  with pytest.raises(ValueError, match=r"unknown dtype 'float8'.*bfloat16"):
    models.create_model('resnet18', num_classes=10, dtype='float8')
