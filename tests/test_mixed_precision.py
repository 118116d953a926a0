"""float16 with dynamic loss scaling: overflowing steps are skipped, the rest track float32."""

import functools

import jax
import numpy as np
import optax

from resnet_jax import config_checks, models, sharding, steps, train_state
from tests.conftest import small_config


def _run(dtype, loss_scale_init, num_steps, loss_scale='auto', learning_rate=0.01):
  config = small_config(dtype=dtype, loss_scale=loss_scale, loss_scale_init=loss_scale_init,
                        loss_scale_period=2)
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.model_from_config(config, num_classes=4)
  state = train_state.create_train_state(
      jax.random.key(0), model, optax.sgd(learning_rate, momentum=0.9), (8, 8, 3),
      use_ema=False, mesh=mesh, loss_scale=train_state.create_loss_scale(config))
  train_step = jax.jit(functools.partial(steps.train_step,
                                         learning_rate_fn=optax.constant_schedule(learning_rate)))
  rng = np.random.RandomState(0)
  history = []
  for _ in range(num_steps):
    batch = {'image': rng.normal(size=(16, 8, 8, 3)).astype(np.float32),
             'label': rng.randint(0, 4, size=(16,)).astype(np.int32)}
    state, metrics = train_step(state, batch)
    history.append({k: float(v) for k, v in metrics.items() if k != 'top1'})
  return state, history


def test_float16_overflow_steps_are_skipped_and_the_scale_backs_off():
  # 2**22 overflows float16 gradients (max 65504) at once; each overflow halves it.
  state, history = _run('float16', 2.0**22, num_steps=12)
  skipped = [h['skipped_steps'] for h in history]
  scales = [h['loss_scale'] for h in history]
  assert skipped[:4] == [1, 2, 3, 4] and scales[:4] == [2.0**22, 2.0**21, 2.0**20, 2.0**19]
  assert int(state.first_skipped_step) == 1
  assert int(state.skipped_steps) == skipped[-1] < 12  # later steps went through
  assert np.isfinite(history[-1]['loss']) or np.isfinite(history[-2]['loss'])
  assert float(state.loss_scale.loss_scale) <= 2.0**17


def test_float16_with_loss_scaling_tracks_float32():
  state16, history16 = _run('float16', 2.0**10, num_steps=4)
  state32, history32 = _run('float32', 2.0**10, num_steps=4, loss_scale='none')
  assert state32.loss_scale is None and int(state16.skipped_steps) == 0
  np.testing.assert_allclose([h['loss'] for h in history16], [h['loss'] for h in history32],
                             rtol=2e-2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-2, rtol=2e-2),
               state16.params, state32.params)
  assert float(state16.loss_scale.loss_scale) == 2.0**12  # doubled after steps 2 and 4


def test_bad_loss_scale_is_a_config_error():
  import pytest

  from resnet_jax.errors import ConfigError
  with pytest.raises(ConfigError, match=r"unknown loss_scale 'static'; valid: auto, dynamic"):
    config_checks.check_config(small_config(loss_scale='static'), sharding.make_mesh())
