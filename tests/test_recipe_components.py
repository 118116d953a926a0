"""Issue 16's training components against references: timm's LAMB and BCE (transcribed from
timm, which CI does not install), torch's BCE, the weight-decay scopes of torchvision and
NVIDIA, warmup start and final factors, the periodic EMA and flip test-time augmentation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from conftest import needs_torch
from resnet_jax import losses, models, optim, sharding, steps, train_state
from resnet_jax.step_options import StepOptions, UpdateOptions


def _config(**overrides):
  config = default.get_config()
  for key, value in overrides.items():
    config[key] = value
  return config


def _timm_lamb(params, grads_per_step, *, lr, weight_decay, decays, b1=0.9, b2=0.999,
               eps=1e-6, max_grad_norm=1.0):
  """timm/optim/lamb.py's Lamb.step (bias_correction, grad_averaging, always_adapt=False,
  trust_clip=False), transcribed to NumPy; `decays[name]`: the parameter's group has
  weight decay."""
  params = {k: v.astype(np.float64).copy() for k, v in params.items()}
  exp_avg = {k: np.zeros_like(v) for k, v in params.items()}
  exp_avg_sq = {k: np.zeros_like(v) for k, v in params.items()}
  for step, grads in enumerate(grads_per_step, start=1):
    global_norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads.values()))
    clip = global_norm / max_grad_norm if global_norm > max_grad_norm else 1.0
    bias_correction1, bias_correction2 = 1 - b1 ** step, 1 - b2 ** step
    for name, p in params.items():
      grad = grads[name].astype(np.float64) / clip
      exp_avg[name] = b1 * exp_avg[name] + (1 - b1) * grad
      exp_avg_sq[name] = b2 * exp_avg_sq[name] + (1 - b2) * grad * grad
      denom = np.sqrt(exp_avg_sq[name]) / np.sqrt(bias_correction2) + eps
      update = (exp_avg[name] / bias_correction1) / denom
      wd = weight_decay if decays[name] else 0.0
      if wd:
        update = update + wd * p
        w_norm, g_norm = np.linalg.norm(p), np.linalg.norm(update)
        update = update * (w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0)
      params[name] = p - lr * update
  return params


def test_lamb_equals_timms_lamb_with_its_gradient_clipping():
  rng = np.random.RandomState(0)
  params = {'conv': {'kernel': rng.normal(size=(3, 3, 2, 4))},
            'bn': {'scale': 1 + 0.1 * rng.normal(size=4), 'bias': 0.1 * rng.normal(size=4)}}
  flat = lambda tree: {f'{a}/{b}': v for a, sub in tree.items() for b, v in sub.items()}  # noqa: E731
  grads = [jax.tree.map(lambda x, s=s: np.random.RandomState(s).normal(size=x.shape) * 0.7,
                        params) for s in range(1, 5)]
  config = _config(optimizer='lamb', adam_eps=1e-6, weight_decay=0.02, grad_clip_norm=1.0)
  tx = optim.create_optimizer(config, optax.constant_schedule(5e-3))
  ours = jax.tree.map(jnp.asarray, params)
  opt_state = tx.init(ours)
  for g in grads:
    updates, opt_state = tx.update(jax.tree.map(jnp.asarray, g), opt_state, ours)
    ours = optax.apply_updates(ours, updates)
  expected = _timm_lamb(flat(params), [flat(g) for g in grads], lr=5e-3, weight_decay=0.02,
                        decays={'conv/kernel': True, 'bn/scale': False, 'bn/bias': False})
  for name, value in flat(jax.device_get(ours)).items():
    np.testing.assert_allclose(value, expected[name], rtol=2e-5, atol=1e-7, err_msg=name)
  # The clipping matters here (global norms ~3): without it the result differs.
  unclipped = _timm_lamb(flat(params), [flat(g) for g in grads], lr=5e-3, weight_decay=0.02,
                         decays={'conv/kernel': True, 'bn/scale': False, 'bn/bias': False},
                         max_grad_norm=1e9)
  assert not np.allclose(unclipped['bn/bias'], expected['bn/bias'], rtol=1e-4)


def _timm_bce_target(labels, num_classes, smoothing, threshold):
  """timm/loss/binary_cross_entropy.py's dense target, then its target_threshold."""
  import torch  # The slow tier installs it; the fast tier never imports it.
  off = smoothing / num_classes
  target = torch.full((len(labels), num_classes), off)
  target.scatter_(1, torch.as_tensor(labels).long().view(-1, 1), 1.0 - smoothing + off)
  return target.gt(threshold).to(target.dtype) if threshold is not None else target


@needs_torch
@pytest.mark.parametrize('smoothing,threshold', [(0.0, None), (0.1, None), (0.1, 0.2)])
def test_bce_equals_torchs_binary_cross_entropy_with_timms_targets(smoothing, threshold):
  import torch  # The slow tier installs it; the fast tier never imports it.
  rng = np.random.RandomState(3)
  logits = rng.normal(size=(6, 10)).astype(np.float32) * 3
  labels = rng.randint(0, 10, 6)
  reference = torch.nn.functional.binary_cross_entropy_with_logits(
      torch.as_tensor(logits), _timm_bce_target(labels, 10, smoothing, threshold))
  from resnet_jax import mixing
  targets = mixing.soft_targets(jnp.asarray(labels), 10, smoothing)
  ours = losses.per_example_loss(jnp.asarray(logits), targets, loss='bce',
                                 bce_target_threshold=threshold or 0.0).mean()
  np.testing.assert_allclose(float(ours), float(reference), rtol=1e-6)


def test_bce_threshold_binarises_mixed_targets():
  targets = jnp.asarray([[0.7, 0.3, 0.0], [0.15, 0.85, 0.0]])
  logits = jnp.zeros((2, 3))
  binarised = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
  np.testing.assert_allclose(losses.binary_cross_entropy(logits, targets, 0.2),
                             losses.binary_cross_entropy(logits, binarised))
  with pytest.raises(ValueError, match="unknown loss 'hinge'; valid losses: softmax, bce"):
    losses.per_example_loss(logits, targets, loss='hinge')


def test_weight_decay_scopes():
  params = {'stage1_block1': {'bn1': {'scale': jnp.ones(2), 'bias': jnp.ones(2)},
                              'conv1': {'conv': {'kernel': jnp.ones((1, 1, 2, 2))}},
                              'downsample_bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}},
            'final_bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)},
            'head': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}
  norm = optim.norm_mask(params)
  assert norm['head'] == {'kernel': True, 'bias': True}  # torchvision decays the fc bias
  assert norm['stage1_block1']['conv1']['conv']['kernel']
  assert not any(jax.tree.leaves([norm['final_bn'], norm['stage1_block1']['bn1'],
                                  norm['stage1_block1']['downsample_bn']]))
  grads = jax.tree.map(jnp.zeros_like, params)
  shortcut = optim.decay_mask('norm_except_shortcut')(params)['stage1_block1']
  assert shortcut['downsample_bn'] == {'scale': True, 'bias': True} and not any(
      jax.tree.leaves(shortcut['bn1']))
  for skip, decayed in (('norm_and_bias', 2), ('norm', 3), ('norm_except_shortcut', 5),
                        ('none', 9)):
    tx = optim.create_optimizer(_config(weight_decay=0.5, momentum=0.0, nesterov=False,
                                        weight_decay_skip=skip), optax.constant_schedule(1.0))
    updates, _ = tx.update(grads, tx.init(params), params)
    assert sum(int(jnp.any(u != 0)) for u in jax.tree.leaves(updates)) == decayed, skip
  with pytest.raises(ValueError, match="unknown weight_decay_skip 'bn'"):
    optim.check_choices(_config(weight_decay_skip='bn'))


def test_warmup_start_and_final_factors():
  config = _config(batch_size=256, base_lr=1.0, warmup_epochs=1.0, warmup_start_factor=0.01,
                   final_lr_factor=0.1, schedule='cosine')
  fn = optim.create_learning_rate_fn(config, steps_per_epoch=10, num_train_steps=110)
  assert float(fn(0)) == pytest.approx(0.01)  # torchvision's lr_warmup_decay
  assert float(fn(10)) == pytest.approx(1.0)
  assert float(fn(110)) == pytest.approx(0.1)
  linear = optim.create_learning_rate_fn(  # FFCV's triangle: up for 2 epochs, down to 0
      _config(batch_size=256, base_lr=1.0, warmup_epochs=2.0, schedule='polynomial',
              lr_poly_power=1.0), steps_per_epoch=10, num_train_steps=100)
  assert [float(linear(s)) for s in (0, 10, 20, 60, 100)] == pytest.approx(
      [0.0, 0.5, 1.0, 0.5, 0.0], abs=1e-6)


def _tiny_state(mesh, use_ema):
  model = models.create_model('resnet20', num_classes=5)
  return train_state.create_train_state(jax.random.key(0), model, optax.sgd(0.1), (8, 8, 3),
                                        use_ema=use_ema, mesh=mesh)


def _batch(seed=0):
  rng = np.random.RandomState(seed)
  return {'image': rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
          'label': rng.randint(0, 5, size=(8,)).astype(np.int32)}


def test_periodic_ema_and_its_copy_during_warmup():
  """torchvision's reference: the EMA steps every ema_every_steps; during warmup each of its
  steps copies the weights (n_averaged reset to 0)."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  step = jax.jit(functools.partial(steps.train_step, learning_rate_fn=optax.constant_schedule(0.1),
                                   options=StepOptions(update=UpdateOptions(
                                       ema_decay=0.5, ema_every_steps=2, ema_copy_steps=2))))
  state = _tiny_state(mesh, use_ema=True)
  history = []
  for index in range(6):
    before = state.ema['params']
    state, _ = step(state, sharding.to_global(_batch(index), mesh))
    history.append((before, state.ema['params'], state.params))
  leaf = lambda tree: np.asarray(tree['head']['kernel'])  # noqa: E731
  for index, (before, ema, live) in enumerate(history, start=1):
    if index % 2:  # no EMA step
      np.testing.assert_array_equal(leaf(ema), leaf(before))
    elif index == 2:  # its previous EMA step (0) lies in the warmup: a copy
      np.testing.assert_array_equal(leaf(ema), leaf(live))
    else:
      np.testing.assert_allclose(leaf(ema), 0.5 * leaf(before) + 0.5 * leaf(live), rtol=1e-6)


def test_flip_tta_averages_the_logits_of_both_mirror_images():
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = _tiny_state(mesh, use_ema=False)
  batch = _batch() | {'mask': np.ones(8, np.int32)}
  flipped = batch | {'image': batch['image'][:, :, ::-1]}
  plain = steps.eval_step(state, batch)
  with_tta = steps.eval_step(state, batch, flip=True)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  logits = 0.5 * (state.apply_fn(variables, batch['image'], train=False) +
                  state.apply_fn(variables, flipped['image'], train=False))
  np.testing.assert_allclose(with_tta['loss'], steps.cross_entropy(logits, batch['label']),
                             rtol=1e-5)
  assert not np.allclose(with_tta['loss'], plain['loss'])
  # Symmetric by construction: a mirrored batch scores the same.
  np.testing.assert_allclose(steps.eval_step(state, flipped, flip=True)['loss'],
                             with_tta['loss'], rtol=1e-5)
