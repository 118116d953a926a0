"""Pure step functions under jit over a mesh: learning, device-count independence, EMA, masks."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import metrics as metrics_lib
from resnet_jax import models, optim, sharding, steps, train_state
from resnet_jax.models.norm import GroupBatchNorm
from resnet_jax.step_options import ForwardOptions, InputOptions, StepOptions, UpdateOptions

NUM_CLASSES = 5


def _batch(seed=0, size=16):
  rng = np.random.RandomState(seed)
  return {'image': rng.normal(size=(size, 8, 8, 3)).astype(np.float32),
          'label': rng.randint(0, NUM_CLASSES, size=(size,)).astype(np.int32)}


def _jitted_step(mesh, ema_decay=0.0, learning_rate=0.1):
  options = StepOptions(inputs=InputOptions(label_smoothing=0.1),
                        update=UpdateOptions(ema_decay=ema_decay))
  step = functools.partial(steps.train_step, learning_rate_fn=optax.constant_schedule(learning_rate),
                           options=options)
  return jax.jit(step, in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh), donate_argnums=0)


def _state(mesh, use_ema=False, model_name='resnet8', **model_overrides):
  model = models.create_model(model_name, num_classes=NUM_CLASSES, **model_overrides)
  tx = optax.sgd(0.1, momentum=0.9)
  return train_state.create_train_state(jax.random.key(0), model, tx, (8, 8, 3), use_ema=use_ema,
                                        mesh=mesh)


def test_train_step_lowers_loss_on_a_fixed_batch():
  mesh = sharding.make_mesh(jax.devices()[:1])
  state, train_step = _state(mesh), _jitted_step(mesh)
  batch = sharding.to_global(_batch(), mesh)
  losses = []
  for _ in range(8):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['loss']))
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < 0.8 * losses[0], losses
  assert int(state.step) == 8


def test_state_is_replicated_and_batch_sharded():
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 8
  state = _state(mesh)
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state))
  batch = sharding.to_global(_batch(), mesh)
  assert batch['image'].sharding.spec == sharding.batch_sharding(mesh).spec
  assert {s.data.shape[0] for s in batch['image'].addressable_shards} == {2}


@pytest.mark.parametrize('model_name', ['resnet8', 'preact_resnet8'])
def test_eight_devices_match_one_device(model_name):
  """BatchNorm statistics span the global batch, so the device count changes nothing."""
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh = sharding.make_mesh(devices)
    state, train_step = _state(mesh, model_name=model_name), _jitted_step(mesh)
    for seed in range(3):
      state, _ = train_step(state, sharding.to_global(_batch(seed), mesh))
    results.append(jax.device_get((state.params, state.batch_stats)))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5), *results)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), results[0][0],
                                       jax.device_get(_state(sharding.make_mesh(
                                           jax.devices()[:1]), model_name=model_name).params)))
  assert max(moved) > 1e-3  # the comparison is not between two untouched states


def _train_three_steps(devices, **model_overrides):
  mesh = sharding.make_mesh(devices)
  state, train_step = _state(mesh, **model_overrides), _jitted_step(mesh)
  for seed in range(3):
    state, _ = train_step(state, sharding.to_global(_batch(seed), mesh))
  return jax.device_get((state.params, state.batch_stats))


def test_bn_group_size_gives_the_same_result_on_any_device_count():
  """Groups of 4 examples: 1 device and 8 devices (2 examples each) agree."""
  one = _train_three_steps(jax.devices()[:1], bn_group_size=4)
  eight = _train_three_steps(jax.devices()[:8], bn_group_size=4)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5), one, eight)
  whole_batch = _train_three_steps(jax.devices()[:1])
  gap = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), one[0],
                                         whole_batch[0])))
  assert gap > 1e-3  # groups of 4 really are not the whole batch


def test_group_batchnorm_of_the_whole_batch_is_batchnorm():
  x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3)) * 3 + 1
  variables = nn.BatchNorm(use_running_average=False).init(jax.random.key(1), x)
  y_ref, stats_ref = nn.BatchNorm(use_running_average=False, momentum=0.8).apply(
      variables, x, mutable=['batch_stats'])
  y, stats = GroupBatchNorm(group_size=8, momentum=0.8).apply(variables, x,
                                                               mutable=['batch_stats'])
  np.testing.assert_allclose(y, y_ref, atol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5), stats, stats_ref)
  y_half, _ = GroupBatchNorm(group_size=4).apply(variables, x, mutable=['batch_stats'])
  y_first, _ = nn.BatchNorm(use_running_average=False).apply(variables, x[:4],
                                                              mutable=['batch_stats'])
  np.testing.assert_allclose(y_half[:4], y_first, atol=1e-5)


def test_ema_tracks_params():
  mesh = sharding.make_mesh(jax.devices()[:2])
  state = _state(mesh, use_ema=True)
  initial = jax.device_get(state.params)
  train_step = _jitted_step(mesh, ema_decay=0.5)
  state, _ = train_step(state, sharding.to_global(_batch(), mesh))
  expected = jax.tree.map(lambda old, new: 0.5 * old + 0.5 * new, initial,
                          jax.device_get(state.params))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
               jax.device_get(state.ema['params']), expected)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ema['batch_stats']),
               jax.tree.map(lambda old, new: 0.5 * old + 0.5 * new,
                            jax.device_get(_state(mesh).batch_stats),
                            jax.device_get(state.batch_stats)))


def test_eval_step_ignores_masked_examples():
  mesh = sharding.make_mesh()
  state = _state(mesh)
  batch = _batch(size=16)
  batch['mask'] = np.array([1] * 11 + [0] * 5, np.int32)
  per_example = jax.jit(steps.eval_step)(state, sharding.to_global(batch, mesh))
  metrics = metrics_lib.EvalMetrics.single_from_model_output(**per_example).compute()
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          batch['image'][:11], train=False)
  expected_top1 = np.mean(np.argmax(logits, -1) == batch['label'][:11])
  expected_loss = np.mean(steps.cross_entropy(logits, jnp.asarray(batch['label'][:11])))
  assert int(metrics['num_examples']) == 11
  assert float(metrics['top1']) == pytest.approx(expected_top1)
  assert float(metrics['loss']) == pytest.approx(float(expected_loss), rel=1e-5)
  assert float(metrics['top5']) >= float(metrics['top1'])


def test_normalize_images_per_channel():
  images = np.full((2, 1, 1, 3), 100, np.uint8)
  out = steps.normalize_images(images, (100.0, 50.0, 0.0), (1.0, 10.0, 100.0))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out[0, 0, 0], [0.0, 5.0, 1.0])


def test_cross_entropy_label_smoothing():
  logits = jnp.array([[2.0, 0.0, 0.0]])
  plain = steps.cross_entropy(logits, jnp.array([0]))
  smoothed = steps.cross_entropy(logits, jnp.array([0]), label_smoothing=0.3)
  log_p = jax.nn.log_softmax(logits)[0]
  assert float(plain[0]) == pytest.approx(float(-log_p[0]))
  assert float(smoothed[0]) == pytest.approx(float(-(0.8 * log_p[0] + 0.1 * log_p[1] +
                                                     0.1 * log_p[2])))


def test_a_non_finite_step_is_dropped_and_counted():
  mesh = sharding.make_mesh(jax.devices()[:2])
  state, train_step = _state(mesh), _jitted_step(mesh)
  state, _ = train_step(state, sharding.to_global(_batch(0), mesh))
  before = jax.device_get(state)
  poisoned = _batch(1)
  poisoned['image'][3, 2, 2, 0] = np.nan
  state, metrics = train_step(state, sharding.to_global(poisoned, mesh))
  after = jax.device_get(state)
  assert int(after.step) == 2 and int(after.skipped_steps) == 1
  assert int(after.first_skipped_step) == 2
  for key in ('params', 'batch_stats', 'opt_state'):
    jax.tree.map(np.testing.assert_array_equal, getattr(before, key), getattr(after, key))
  assert int(metrics['skipped_steps']) == 1 and np.isnan(float(metrics['loss']))
  assert not bool(metrics['finite'])
  state, metrics = train_step(state, sharding.to_global(_batch(2), mesh))
  assert int(state.skipped_steps) == 1 and int(state.first_skipped_step) == 2
  assert np.isfinite(float(metrics['loss']))


def _l2(tree):
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                           for x in jax.tree.leaves(tree))))


def test_the_step_reports_the_global_norms_of_gradient_parameters_and_update():
  mesh = sharding.make_mesh(jax.devices()[:2])
  state, train_step = _state(mesh), _jitted_step(mesh)
  batch = _batch(0)
  before = jax.device_get(state.params)
  # The gradient the step takes, computed here without the step's code.
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  images = steps.normalize_images(batch['image'], (0.0,), (1.0,))
  targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], NUM_CLASSES), 0.1)

  def loss(params):
    logits, _ = state.apply_fn({**variables, 'params': params}, images, train=True,
                               mutable=['batch_stats'])
    return optax.softmax_cross_entropy(logits, targets).mean()

  grads = jax.jit(jax.grad(loss))(state.params)  # jitted: op by op took 15 s on 2 cores
  state, metrics = train_step(state, sharding.to_global(batch, mesh))
  after = jax.device_get(state.params)
  assert float(metrics['grad_norm']) == pytest.approx(_l2(grads), rel=1e-4)
  assert float(metrics['param_norm']) == pytest.approx(_l2(after), rel=1e-5)
  update = jax.tree.map(lambda a, b: a - b, after, before)
  assert float(metrics['update_norm']) == pytest.approx(_l2(update), rel=1e-4)
  assert float(metrics['update_norm']) > 0


def test_the_logged_norms_leave_out_a_dropped_step():
  """grad_norm and grad_norm_max average and bound the finite steps only: a non-finite
  step shows in skipped_steps, not as a NaN norm."""
  mesh = sharding.make_mesh(jax.devices()[:2])
  state, train_step = _state(mesh), _jitted_step(mesh)
  poisoned = _batch(1)
  poisoned['image'][3, 2, 2, 0] = np.nan
  totals, norms = metrics_lib.TrainMetrics.empty(), []
  for batch in (_batch(0), poisoned, _batch(2)):
    state, step_metrics = train_step(state, sharding.to_global(batch, mesh))
    totals = metrics_lib.accumulate(totals, step_metrics)
    norms.append(float(step_metrics['grad_norm']))
  assert not np.isfinite(norms[1])
  logged = jax.device_get(totals.compute())
  assert float(logged['grad_norm']) == pytest.approx((norms[0] + norms[2]) / 2, rel=1e-5)
  assert float(logged['grad_norm_max']) == pytest.approx(max(norms[0], norms[2]), rel=1e-6)
  assert np.isfinite(float(logged['update_norm'])) and int(logged['skipped_steps']) == 1


def test_without_drop_nonfinite_a_bad_step_is_counted_not_dropped():
  """nonfinite_policy 'halt': the update goes through (the trainer stops the run)."""
  mesh = sharding.make_mesh(jax.devices()[:2])
  state = _state(mesh)
  step = jax.jit(functools.partial(steps.train_step,
                                   options=StepOptions(update=UpdateOptions(drop_nonfinite=False)),
                                   learning_rate_fn=optax.constant_schedule(0.1)))
  poisoned = _batch(1)
  poisoned['image'][3, 2, 2, 0] = np.nan
  state, metrics = step(state, sharding.to_global(poisoned, mesh))
  assert int(state.skipped_steps) == 1 and int(state.first_skipped_step) == 1
  assert not bool(metrics['finite'])
  assert not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))


def test_the_logged_learning_rate_follows_the_optimizers_count():
  """A dropped step advances state.step but not optax's count, nor the schedule."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  schedule = lambda count: 0.01 * (count + 1)  # noqa: E731  (rises every update)
  model = models.create_model('resnet8', num_classes=NUM_CLASSES)
  state = train_state.create_train_state(jax.random.key(0), model, optax.sgd(schedule), (8, 8, 3),
                                         use_ema=False, mesh=mesh)
  step = jax.jit(functools.partial(steps.train_step, learning_rate_fn=schedule))
  poisoned = _batch(1)
  poisoned['image'][0, 0, 0, 0] = np.inf
  rates = []
  for batch in (_batch(0), poisoned, _batch(2)):
    state, metrics = step(state, sharding.to_global(batch, mesh))
    rates.append(float(metrics['learning_rate']))
  assert int(state.step) == 3 and int(state.skipped_steps) == 1
  assert int(optim.applied_updates(state.opt_state, state.step)) == 2
  assert rates == pytest.approx([0.01, 0.02, 0.02])  # the third update is the second applied


@pytest.mark.parametrize('freeze_batch_stats', [False, True])
def test_frozen_statistics_keep_stochastic_depth_and_shortcut_dropout(freeze_batch_stats):
  """Frozen statistics used to apply the model with train=False: drop path 0.9 and the
  dropout shortcut were off, and two dropout seeds gave one loss (21.70 / 21.70)."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  batch = sharding.to_global(_batch(), mesh)
  # Branches that start at zero would make the drops invisible.
  for overrides in ({'drop_path_rate': 0.9, 'zero_init_residual': False},
                    {'shortcut_variant': 'dropout', 'zero_init_residual': False}):
    step = jax.jit(functools.partial(
        steps.train_step, learning_rate_fn=optax.constant_schedule(0.1),
        options=StepOptions(forward=ForwardOptions(freeze_batch_stats=freeze_batch_stats,
                                                   dropout_seed=0))))
    losses = []
    # The dropout key folds in the step counter: steps 0 and 1 of one state draw two
    # masks from one compile.
    for counter in (0, 1):
      state = _state(mesh, **overrides)
      state = state.replace(step=state.step + counter)
      stats = jax.device_get(state.batch_stats)
      state, metrics = step(state, batch)
      losses.append(float(metrics['loss']))
      kept = jax.tree.leaves(jax.tree.map(np.array_equal, jax.device_get(state.batch_stats),
                                          stats))
      assert all(kept) == freeze_batch_stats
    assert abs(losses[0] - losses[1]) > 1e-3, (overrides, losses)


def _accumulation_step(mesh, accumulate, bn_group_size):
  state = _state(mesh, bn_group_size=bn_group_size)
  options = StepOptions(inputs=InputOptions(label_smoothing=0.1),
                        forward=ForwardOptions(grad_accum_steps=accumulate))
  step = jax.jit(functools.partial(steps.train_step, learning_rate_fn=optax.constant_schedule(0.1),
                                   options=options),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))
  return state, step


@pytest.mark.parametrize('num_devices,loop', [(1, 'unrolled'), (8, 'unrolled'), (8, 'scan')])
def test_accumulated_micro_batches_make_the_update_of_the_whole_batch(num_devices, loop,
                                                                      monkeypatch):
  """k = 4 micro-batches of 8 (example i in micro-batch i mod 4), BN per micro-batch,
  equal one batch of 32 with BN groups of 8 over the same micro-batches made contiguous:
  parameters, statistics, loss and per-example top1 after two updates."""
  if loop == 'scan':  # what accelerators run; the CPU unrolls it
    monkeypatch.setattr(steps, '_micro_batch_unroll', lambda k: 1)
  mesh = sharding.make_mesh(jax.devices()[:num_devices])
  batch = _batch(size=32)
  contiguous = np.concatenate([np.arange(j, 32, 4) for j in range(4)])
  permuted = {name: value[contiguous] for name, value in batch.items()}
  accumulated, accumulate_step = _accumulation_step(mesh, 4, bn_group_size=0)
  whole, whole_step = _accumulation_step(mesh, 1, bn_group_size=8)
  for _ in range(2):
    accumulated, accumulated_metrics = accumulate_step(accumulated, sharding.to_global(batch, mesh))
    whole, whole_metrics = whole_step(whole, sharding.to_global(permuted, mesh))
  close = functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5)
  jax.tree.map(close, jax.device_get(accumulated.params), jax.device_get(whole.params))
  jax.tree.map(close, jax.device_get(accumulated.batch_stats), jax.device_get(whole.batch_stats))
  close(accumulated_metrics['loss'], whole_metrics['loss'])
  np.testing.assert_array_equal(np.asarray(accumulated_metrics['top1'])[contiguous],
                                np.asarray(whole_metrics['top1']))


@pytest.mark.parametrize('loop', ['unrolled', 'scan'])
def test_accumulation_moves_no_images_between_devices(loop, monkeypatch):
  if loop == 'scan':
    monkeypatch.setattr(steps, '_micro_batch_unroll', lambda k: 1)
  mesh = sharding.make_mesh()
  state, step = _accumulation_step(mesh, 4, bn_group_size=0)
  hlo = step.lower(state, sharding.to_global(_batch(size=64), mesh)).compile().as_text()
  # The replicated outputs gather the per-example top1 ([64]); images or activations
  # ([64, 8, 8, ...] and up) must stay where they are.
  moved = [line for line in hlo.splitlines()
           if re.search(r'(all-to-all|all-gather|collective-permute)(-start)?\(', line)
           and not re.search(r'= \w+\[64\]\{0\} ', line)]
  assert moved == [], moved[:3]


def test_top5_counts_the_label_among_the_five_largest_logits_without_top_k():
  """steps.top_k_correct for k > 1 counts the logits above the label's (batch-local),
  as lax.top_k would choose where there are no ties."""
  rng = np.random.RandomState(0)
  logits = jnp.asarray(rng.randn(256, 10).astype(np.float32))
  labels = jnp.asarray(rng.randint(0, 10, 256).astype(np.int32))
  _, top = jax.lax.top_k(logits, 5)
  expected = np.any(np.asarray(top) == np.asarray(labels)[:, None], axis=-1)
  np.testing.assert_array_equal(np.asarray(steps.top_k_correct(logits, labels, 5)), expected)
  assert 0 < expected.mean() < 1
