"""Model zoo: exact parameter counts, shapes, dtypes, init options, bad names."""

import functools
import hashlib
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models
from resnet_jax.models import ablations, blocks

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
    # He et al. 2015, Table 6: "19.4M". The Identity Mappings paper (Table 3 and its
    # reference code, resnet-1k-layers): ResNet-164 "1.7M", ResNet-1001 "10.2M"; the
    # latter counts the weights (10,178,480), BN's scales and offsets add 149,226.
    'resnet1202': 19_421_274, 'preact_resnet1202': 19_421_274,
    'resnet164': 1_704_154, 'preact_resnet164': 1_703_258,
    'resnet1001': 10_328_602, 'preact_resnet1001': 10_327_706,
    # Plain twins: the same nets without shortcuts, so without the projections of the
    # ImageNet nets (the CIFAR basic nets' option A has no parameters).
    'plain18': 11_515_688, 'plain34': 21_623_848, 'plain50': 22_780_456,
    'plain101': 41_772_584, 'plain152': 57_416_232, 'plain200': 61_897_256,
    'plain20': 269_722, 'plain32': 464_154, 'plain44': 658_586, 'plain56': 853_018,
    'plain110': 1_727_962, 'plain1202': 19_421_274, 'plain164': 1_661_274,
    'plain1001': 10_285_722,
    # The same rule at n = 1 (6n + 2 = 8 layers), counted by hand: stem 432 + 32, one unit
    # per stage 4,672 / 13,952 / 55,552, classifier 650.
    'resnet8': 75_290, 'preact_resnet8': 75_290, 'plain8': 75_290,
}
# The parameter and statistics shapes of the models that existed before issue 15's
# options, captured from that commit's code (sha256 of the sorted path → shape list).
BEFORE = json.loads((pathlib.Path(__file__).parent / 'data' /
                     'models_before_issue15.json').read_text())
DEEP = 300  # layers beyond which the count is taken from the scanned model (same shapes)


def _is_cifar(name):
  return models.VARIANTS[name][0].stem == 'cifar'


def _abstract_variables(name, dtype=jnp.float32, **overrides):
  model = models.create_model(name, num_classes=10 if _is_cifar(name) else 1000, dtype=dtype,
                              **overrides)
  size = 32 if _is_cifar(name) else 224
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                  jnp.zeros((1, size, size, 3)), train=False))


def test_every_variant_has_an_expected_count():
  assert set(models.VARIANTS) == set(EXPECTED_PARAMS)


def _shape_digest(variables):
  shapes = {'/'.join(str(key.key) for key in path): list(x.shape)
            for path, x in jax.tree_util.tree_leaves_with_path(variables)}
  return hashlib.sha256(json.dumps(sorted(shapes.items())).encode()).hexdigest()[:16]


@pytest.mark.parametrize('name', sorted(EXPECTED_PARAMS))
def test_parameter_count(name):
  # Tracing 300+ blocks takes seconds; the scanned model has the same parameter count.
  deep = int(''.join(filter(str.isdigit, name))) > DEEP
  _, variables = _abstract_variables(name, scan_blocks=deep)
  assert sum(x.size for x in jax.tree.leaves(variables['params'])) == EXPECTED_PARAMS[name]
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  if name in BEFORE['shape_digests']:  # today's models keep every name and shape
    assert _shape_digest(variables) == BEFORE['shape_digests'][name]


@pytest.mark.parametrize('name', sorted(BEFORE['fingerprints']))
def test_todays_models_compute_what_they_did(name):
  """Same init and same training-mode outputs and statistics as before the ablation
  options existed (float rounding aside)."""
  before = BEFORE['fingerprints'][name]
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  model = models.create_model(name, num_classes=10, conv_impl='xla', zero_init_residual=False)
  variables = model.init(jax.random.key(0), images[:1], train=False)
  logits, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
  assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(variables['params'])) == \
      pytest.approx(before['param_abs_sum'], rel=1e-6)
  # Captured with XLA's optimisations on; the suite runs without them: rounding differs.
  # ResNet-50 at 32² ends in 1×1 maps, its last BNs over 4 values: rounding grows to ~4e-3.
  np.testing.assert_allclose(logits, before['logits'], atol=1e-2)
  assert sum(float(x.sum()) for x in jax.tree.leaves(updates['batch_stats'])) == \
      pytest.approx(before['stats_sum'], rel=1e-4)


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


@pytest.mark.parametrize('kind', ['basic', 'bottleneck'])
@pytest.mark.parametrize('preact', [False, True])
@pytest.mark.parametrize('shortcut,strides', [('zero_pad', 2), ('projection', 2),
                                              ('projection', 1), ('projection_all', 1)])
def test_production_units_compute_the_ablation_units_default(kind, preact, shortcut, strides):
  """The written-out units of blocks.py and ablations.py's general unit at its defaults
  agree on every variable, output, statistic, sown response and gradient, drop path and
  zero-init included: a change to one that the other lacks fails here."""
  norm = functools.partial(nn.BatchNorm, use_running_average=False, momentum=0.9)
  fields = dict(filters=4, strides=strides, conv=blocks.Conv, norm=norm, shortcut=shortcut,
                zero_init_residual=True, deterministic=False, drop_path_rate=0.25)
  if kind == 'bottleneck':
    fields['stride_in_1x1'] = strides == 2 and shortcut == 'zero_pad'
  written = blocks.UNITS[kind, preact](**fields)
  general = ablations.UNITS[kind](ablation=ablations.UnitAblation(
      placement='full_preact' if preact else 'original'), **fields)
  out_filters = 16 if kind == 'bottleneck' else 4
  x = jax.random.normal(jax.random.key(3), (6, 8, 8, out_filters // strides))
  variables = written.init(jax.random.key(0), x)
  jax.tree.map(np.testing.assert_array_equal, general.init(jax.random.key(0), x), variables)

  def run(unit, params, x):
    out, state = unit.apply(variables | {'params': params}, x,
                            mutable=['batch_stats', blocks.DIAGNOSTICS],
                            rngs={'dropout': jax.random.key(5)})
    return jnp.sum(out * jnp.cos(out)), (out, state)

  results = [jax.grad(run, argnums=(1, 2), has_aux=True)(unit, variables['params'], x)
             for unit in (written, general)]
  jax.tree.map(np.testing.assert_array_equal, *results)
  out, state = results[0][1]
  assert len(state[blocks.DIAGNOSTICS]) and float(jnp.abs(out).sum()) > 0


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
