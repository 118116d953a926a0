"""Schedules, LR scaling, the weight-decay mask and optimizer choices."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from resnet_jax import optim


def _config(**overrides):
  config = default.get_config()
  for key, value in overrides.items():
    config[key] = value
  return config


def test_lr_scales_linearly_with_global_batch():
  assert optim.scaled_learning_rate(0.1, 1024) == pytest.approx(0.4)
  assert optim.scaled_learning_rate(0.1, 128) == pytest.approx(0.05)


def test_warmup_then_cosine():
  config = _config(batch_size=512, base_lr=0.1, warmup_epochs=2.0, schedule='cosine')
  fn = optim.create_learning_rate_fn(config, steps_per_epoch=10, num_train_steps=100)
  assert fn(0) == pytest.approx(0.0)
  assert fn(10) == pytest.approx(0.1)  # halfway through warmup, peak 0.2
  assert fn(20) == pytest.approx(0.2)
  assert fn(60) == pytest.approx(0.1, rel=1e-5)  # cosine midpoint
  assert fn(100) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_counts_boundaries_from_the_start():
  config = _config(batch_size=256, base_lr=0.1, warmup_epochs=1.0, schedule='step',
                   lr_boundaries_epochs=(3, 6), lr_decay_factor=0.1)
  fn = optim.create_learning_rate_fn(config, steps_per_epoch=10, num_train_steps=90)
  assert fn(5) == pytest.approx(0.05)
  assert [float(fn(s)) for s in (10, 29, 30, 59, 60, 89)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
  config = _config(batch_size=256, base_lr=0.1, warmup_epochs=0.0, schedule='step',
                   lr_boundaries_steps=(32_000, 48_000))
  fn = optim.create_learning_rate_fn(config, steps_per_epoch=390, num_train_steps=64_000)
  assert [float(fn(s)) for s in (0, 31_999, 32_000, 48_000)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.001])


def test_constant_schedule():
  config = _config(batch_size=256, base_lr=0.3, warmup_epochs=0.0, schedule='constant')
  fn = optim.create_learning_rate_fn(config, steps_per_epoch=10, num_train_steps=50)
  assert float(fn(0)) == float(fn(49)) == pytest.approx(0.3)


def test_weight_decay_only_on_kernels():
  params = {'conv': {'kernel': jnp.ones((3, 3, 1, 1))}, 'bn': {'scale': jnp.ones(2),
            'bias': jnp.ones(2)}, 'head': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}
  assert optim.weight_decay_mask(params) == {
      'conv': {'kernel': True}, 'bn': {'scale': False, 'bias': False},
      'head': {'kernel': True, 'bias': False}}
  config = _config(weight_decay=0.5, momentum=0.0, nesterov=False)
  tx = optim.create_optimizer(config, optax.constant_schedule(1.0))
  zero_grads = {k: {n: jnp.zeros_like(v) for n, v in d.items()} for k, d in params.items()}
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5)
  np.testing.assert_allclose(updates['bn']['scale'], 0.0)
  np.testing.assert_allclose(updates['head']['bias'], 0.0)


def test_nesterov_differs_from_heavy_ball():
  params = {'w': {'kernel': jnp.ones(3)}}
  grads = {'w': {'kernel': jnp.ones(3)}}
  results = []
  for nesterov in (False, True):
    tx = optim.create_optimizer(_config(weight_decay=0.0, nesterov=nesterov),
                                optax.constant_schedule(1.0))
    opt_state = tx.init(params)
    for _ in range(2):
      updates, opt_state = tx.update(grads, opt_state, params)
    results.append(float(updates['w']['kernel'][0]))
  assert results == pytest.approx([-1.9, -2.71])


@pytest.mark.parametrize('key,value,pattern', [
    ('optimizer', 'adagrad', r"unknown optimizer 'adagrad'; valid optimizers: sgd, adamw"),
    ('schedule', 'linear', r"unknown schedule 'linear'; valid schedules: cosine, step"),
])
def test_bad_choices_name_the_valid_ones(key, value, pattern):
  with pytest.raises(ValueError, match=pattern):
    optim.check_choices(_config(**{key: value}))


def test_warmup_then_polynomial_decay():
  config = _config(batch_size=256, base_lr=2.0, warmup_epochs=1.0, schedule='polynomial',
                   lr_poly_power=2.0)
  fn = optim.create_learning_rate_fn(config, steps_per_epoch=10, num_train_steps=110)
  assert fn(10) == pytest.approx(2.0)
  assert fn(60) == pytest.approx(2.0 * 0.5**2)  # halfway through the decay
  assert fn(110) == pytest.approx(0.0, abs=1e-7)


def test_lars_adapts_kernels_layer_wise_but_not_batchnorm():
  config = _config(optimizer='lars', weight_decay=0.0, momentum=0.0, nesterov=False,
                   lars_trust_coefficient=0.001)
  tx = optim.create_optimizer(config, lambda step: 1.0)
  params = {'conv': {'kernel': jnp.full((2, 2), 3.0)}, 'bn': {'scale': jnp.full((2,), 3.0)}}
  grads = {'conv': {'kernel': jnp.full((2, 2), 0.5)}, 'bn': {'scale': jnp.full((2,), 0.5)}}
  updates, _ = tx.update(grads, tx.init(params), params)
  # Kernel: lr × trust × ‖w‖ / ‖g‖ × g = 0.001 × 6 / 1 × 0.5 (norms over the 2×2 kernel).
  np.testing.assert_allclose(updates['conv']['kernel'], -0.003, rtol=1e-5)
  np.testing.assert_allclose(updates['bn']['scale'], -0.5, rtol=1e-6)  # plain SGD
