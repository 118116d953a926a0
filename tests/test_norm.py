"""GroupBatchNorm (models/norm.py): flax's BatchNorm for a whole-batch group, a float64
reference for sub-groups, the one-pass variance's accuracy, eval mode, and the layer
microbenchmark (bench/norm_benchmark.py)."""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.models.norm import GroupBatchNorm
from resnet_jax.bench import norm_benchmark

EPS = 1e-5


def _variables(features, seed=0):
  """Non-trivial parameters and running statistics, in flax BatchNorm's layout."""
  rng = np.random.RandomState(seed)
  return {'params': {'scale': rng.uniform(0.5, 2, features).astype(np.float32),
                     'bias': rng.normal(size=features).astype(np.float32)},
          'batch_stats': {'mean': rng.normal(size=features).astype(np.float32),
                          'var': rng.uniform(0.5, 2, features).astype(np.float32)}}


def _train(module, variables, x, dy):
  """Output, updated statistics and the gradients of sum(dy · module(x)) wrt params, x."""
  def loss(params, x):
    y, stats = module.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
    return jnp.sum(dy * y.astype(jnp.float32)), (y, stats['batch_stats'])
  (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      variables['params'], x)
  return y, stats, grads


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_a_whole_batch_group_is_flax_batchnorm(dtype):
  """Outputs, running statistics and gradients match nn.BatchNorm's within rounding."""
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.normal(size=(8, 4, 4, 6)) * 3 + 1, dtype)
  dy = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  variables = _variables(6)
  ours = _train(GroupBatchNorm(group_size=8, momentum=0.8, dtype=dtype), variables, x, dy)
  ref = _train(nn.BatchNorm(use_running_average=False, momentum=0.8, dtype=dtype),
               variables, x, dy)
  assert ours[0].dtype == ref[0].dtype == dtype
  # float32 everywhere but the bfloat16 output (one bfloat16 rounding: 2⁻⁸ relative) and
  # the input's gradient, which is bfloat16 like the input.
  out_tol = {'rtol': 1e-5, 'atol': 1e-5} if dtype == jnp.float32 else {'rtol': 2**-8, 'atol': 2**-8}
  f32_tol = {'rtol': 1e-5, 'atol': 1e-5}
  np.testing.assert_allclose(np.float32(ours[0]), np.float32(ref[0]), **out_tol)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **f32_tol), ours[1], ref[1])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **f32_tol), ours[2][0], ref[2][0])
  np.testing.assert_allclose(np.float32(ours[2][1]), np.float32(ref[2][1]), **out_tol)


def test_sub_groups_match_a_float64_reference():
  """Batch 16 in groups of 4: each group normalised by its own biased statistics; the
  running statistics move toward the groups' average mean and variance; the gradients
  are those of flax's BatchNorm applied to each group alone."""
  rng = np.random.RandomState(2)
  x = (rng.normal(size=(16, 3, 3, 5)) * rng.uniform(0.5, 3, 5) + rng.normal(size=5) * 2)
  x = x.astype(np.float32)
  variables = _variables(5)
  y, stats = GroupBatchNorm(group_size=4, momentum=0.7).apply(variables, x,
                                                               mutable=['batch_stats'])
  groups = x.astype(np.float64).reshape(4, 4, 3, 3, 5)
  mean, var = groups.mean(axis=(1, 2, 3)), groups.var(axis=(1, 2, 3))
  p, s = variables['params'], variables['batch_stats']
  expected = ((groups - mean[:, None, None, None]) / np.sqrt(var[:, None, None, None] + EPS)
              * p['scale'] + p['bias']).reshape(x.shape)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats['batch_stats']['mean'],
                             0.7 * s['mean'] + 0.3 * mean.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats['batch_stats']['var'],
                             0.7 * s['var'] + 0.3 * var.mean(0), rtol=1e-5, atol=1e-6)

  dy = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  _, _, (dparams, dx) = _train(GroupBatchNorm(group_size=4), variables, x, dy)
  per_group = [_train(nn.BatchNorm(use_running_average=False), variables, x[i:i + 4],
                      dy[i:i + 4])[2] for i in range(0, 16, 4)]
  np.testing.assert_allclose(dx, np.concatenate([g[1] for g in per_group]), rtol=1e-4,
                             atol=1e-5)
  for name in ('scale', 'bias'):
    np.testing.assert_allclose(dparams[name], sum(g[0][name] for g in per_group), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize('group_size', [64, 16])
def test_one_pass_variance_with_a_large_mean_offset(group_size):
  """Inputs 100 + N(0, 1) in float32 (mean/std = 100): E[x²] − E[x]² cancels ~4 of
  float32's 7 digits, so the normalised output is off by ~ε·(mean/std)² ≈ 1e-3 of a
  standard deviation (seen on CPU: 3e-3 for one group, 7e-3 for groups of 16; tolerance
  2e-2), as with flax's use_fast_variance. The two-pass variance (use_fast_variance=False)
  stays within 1e-4 (seen: 2e-5)."""
  rng = np.random.RandomState(3)
  x = (100 + rng.normal(size=(64, 8, 8, 16))).astype(np.float32)
  groups = x.astype(np.float64).reshape(-1, group_size, 8, 8, 16)
  mean = groups.mean(axis=(1, 2, 3), keepdims=True)
  expected = ((groups - mean) / np.sqrt(groups.var(axis=(1, 2, 3), keepdims=True) + EPS))
  expected = expected.reshape(x.shape)
  for fast, tolerance in ((True, 2e-2), (False, 1e-4)):
    module = GroupBatchNorm(group_size=group_size, use_fast_variance=fast)
    y, _ = module.apply(module.init(jax.random.key(0), x), x, mutable=['batch_stats'])
    assert np.abs(np.asarray(y) - expected).max() < tolerance, fast


@pytest.mark.parametrize('group_size', [16, 4])
@pytest.mark.parametrize('value', [0.1, 1000.3, 12345.678])
def test_one_pass_variance_of_constant_inputs_is_never_negative(value, group_size):
  """E[x²] − E[x]² of a constant is rounding noise of either sign, up to ~n·ε·x² for sums
  of n terms (on CPU −6e-8 for 0.1, +8 for 1000.3): clipped at 0, so the output and the
  statistics stay finite."""
  x = jnp.full((16, 4, 4, 8), value, jnp.float32)
  module = GroupBatchNorm(group_size=group_size, momentum=0.0)  # running var = groups' var
  y, stats = module.apply(module.init(jax.random.key(0), x), x, mutable=['batch_stats'])
  var = np.asarray(stats['batch_stats']['var'])
  assert np.isfinite(np.asarray(y)).all() and np.abs(np.asarray(y)).max() < 1e-2
  assert (var >= 0).all() and (var <= 1e-4 * value**2).all()


def test_eval_uses_the_running_statistics():
  """use_running_average: the running statistics, not the batch's (any batch size), and
  nothing updated."""
  variables = _variables(5, seed=4)
  x = np.random.RandomState(5).normal(size=(3, 2, 2, 5)).astype(np.float32) * 4
  y, updates = GroupBatchNorm(group_size=4, use_running_average=True).apply(
      variables, x, mutable=['batch_stats'])
  p, s = variables['params'], variables['batch_stats']
  expected = (x - s['mean']) / np.sqrt(s['var'] + EPS) * p['scale'] + p['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, updates['batch_stats'], s)


def test_a_batch_that_is_not_a_multiple_of_the_group_size_is_an_error():
  x = jnp.zeros((6, 2, 2, 3))
  with pytest.raises(ValueError, match='not a multiple of bn_group_size 4'):
    GroupBatchNorm(group_size=4).init(jax.random.key(0), x)


def test_norm_benchmark_prints_every_variant_against_flax(tmp_path, capsys):
  path = tmp_path / 'norm.json'
  result = norm_benchmark.main(['--shapes', '8x4x4x8', '--repeats', '2', '--dtype', 'float32',
                                '--json', str(path)])
  assert json.loads(path.read_text()) == result
  assert result['backend'] == jax.default_backend() and result['command']
  rows = result['rows']
  assert [r['variant'] for r in rows] == list(norm_benchmark.VARIANTS)
  assert all(math.isfinite(r['ratio_vs_flax']) and r['ratio_vs_flax'] > 0 for r in rows)
  assert rows[0]['ratio_vs_flax'] == 1.0
  assert {r['group_size'] for r in rows} == {8, 2}
  printed = capsys.readouterr().out
  assert all(f' {v} ' in printed for v in norm_benchmark.VARIANTS)
