"""The compiled HLO of the trainer's real step: no host round-trip, mixing stays on its
device; metrics accumulate on the device in one compile."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from resnet_jax import metrics, mixing, models, optim, sharding, train
from resnet_jax.data import sources

_COLLECTIVES = ('collective-permute', 'all-to-all', 'all-gather')


def _compiled_step(batch=64, image_size=16, **overrides):
  config = small_config(batch_size=batch, **overrides)
  config.dataset.image_size = image_size
  mesh = sharding.make_mesh()
  info = sources.DatasetInfo(10, tuple('abcdefghij'), 1000, 100, (image_size, image_size, 3))
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=10,
                                                   num_train_steps=100)
  state = train.create_state(config, info, mesh, learning_rate_fn)
  spec = sharding.batch_sharding(mesh)
  batch_spec = {
      'image': jax.ShapeDtypeStruct((batch, image_size, image_size, 3), np.uint8, sharding=spec),
      'label': jax.ShapeDtypeStruct((batch,), np.int32, sharding=spec)}
  step = train.make_train_step(config, learning_rate_fn, mesh)
  totals = metrics.empty(metrics.TrainMetrics, mesh)
  return step.lower(state, batch_spec, totals).compile().as_text()


def _host_round_trips(hlo: str) -> list[str]:
  """Conditionals, and loops whose trip count XLA does not know (each trip of one
  copies its condition to the host on XLA:GPU)."""
  return [line.strip()[:160] for line in hlo.splitlines()
          if re.search(r'\sconditional\(', line) or
          (re.search(r'\swhile\(', line) and 'known_trip_count' not in line)]


def _elements(hlo_type: str) -> int:
  """Elements of the largest array in an HLO result type such as f32[1,8,16,16,3]{...}."""
  sizes = [int(np.prod([int(d) for d in dims.split(',') if d] or [1]))
           for dims in re.findall(r'\w+\[([\d,]*)\]', hlo_type)]
  return max(sizes, default=0)


def _image_sized_collectives(hlo: str, image_elements: int) -> list[str]:
  found = []
  for line in hlo.splitlines():
    match = re.search(r'=\s*(.+?)\s(' + '|'.join(_COLLECTIVES) + r')(-start)?\(', line)
    if match and _elements(match.group(1)) >= image_elements:
      found.append(line.strip()[:160])
  return found


def test_the_round_trip_detector_sees_a_cond_and_a_rejection_loop():
  """Controls: lax.cond and jax.random.beta's sampler (a while loop) are what it flags."""
  cond = jax.jit(lambda x: jax.lax.cond(x.sum() > 0, lambda y: y * 2, lambda y: y, x))
  assert _host_round_trips(cond.lower(np.ones(3, np.float32)).compile().as_text())
  beta = jax.jit(lambda key: jax.random.beta(key, 0.2, 0.2))
  assert _host_round_trips(beta.lower(jax.random.key(0)).compile().as_text())


@pytest.fixture(scope='module')
def halt_float32_hlo():
  return _compiled_step(mixup_alpha=0.2, cutmix_alpha=1.0)


def test_the_float32_and_bfloat16_train_steps_hold_no_host_round_trip(halt_float32_hlo):
  assert _host_round_trips(halt_float32_hlo) == []
  bfloat16 = _compiled_step(dtype='bfloat16', mixup_alpha=0.2, cutmix_alpha=1.0)
  assert _host_round_trips(bfloat16) == []


def test_skip_drops_updates_with_selects_not_a_conditional(halt_float32_hlo):
  skip = _compiled_step(nonfinite_policy='skip', mixup_alpha=0.2, cutmix_alpha=1.0)
  assert _host_round_trips(skip) == []
  # One select per parameter, optimizer and statistics leaf at least; halt has none of them.
  config = small_config()
  leaves = len(jax.tree.leaves(models.model_from_config(config, 10).init(
      jax.random.key(0), np.zeros((1, 16, 16, 3)), train=False)['params']))
  extra = (len(re.findall(r'\sselect\(', skip)) -
           len(re.findall(r'\sselect\(', halt_float32_hlo)))
  assert extra >= 2 * leaves, (extra, leaves)


def test_mixing_in_bn_groups_moves_no_image_between_devices():
  image_elements = 16 * 16 * 3
  grouped = _compiled_step(bn_group_size=8, mixup_alpha=0.2, cutmix_alpha=1.0)
  assert _image_sized_collectives(grouped, image_elements) == []
  # Control: partners from the whole batch cross devices.
  whole_batch = _compiled_step(mixup_alpha=0.2, cutmix_alpha=1.0)
  assert _image_sized_collectives(whole_batch, image_elements)


@pytest.mark.parametrize('group_size', [0, 8])
def test_the_mixed_batch_does_not_depend_on_the_device_count(group_size):
  rng = np.random.RandomState(0)
  images = rng.normal(size=(64, 16, 16, 3)).astype(np.float32)
  labels = rng.randint(0, 10, size=64).astype(np.int32)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(devices)
    mix = jax.jit(lambda key, x, y: mixing.mix_batch(
        key, x, y, 10, mixup_alpha=0.2, cutmix_alpha=1.0, group_size=group_size),
        in_shardings=(None, sharding.batch_sharding(mesh), sharding.batch_sharding(mesh)))
    results.append([np.asarray(mix(jax.random.key(seed), images, labels)[0])
                    for seed in range(4)])
  for one, eight in zip(*results):
    np.testing.assert_array_equal(one, eight)
  assert not np.array_equal(results[0][0], images)


def test_metrics_accumulate_on_the_device_in_one_compile():
  """Totals over 3 steps, then (after a reset) over 2, equal the per-step figures."""
  config = small_config()
  mesh = sharding.make_mesh()
  info = sources.DatasetInfo(10, tuple('abcdefghij'), 1000, 100, (8, 8, 1))
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=2,
                                                   num_train_steps=100)
  step = train.make_train_step(config, learning_rate_fn, mesh)
  rng = np.random.RandomState(0)
  batches = [{'image': rng.randint(0, 255, (16, 8, 8, 1)).astype(np.uint8),
              'label': rng.randint(0, 10, 16).astype(np.int32)} for _ in range(5)]

  initial = train.create_state(config, info, mesh, learning_rate_fn)
  state = jax.tree.map(jnp.copy, initial)  # the step donates its input
  per_step = []
  for batch in batches:
    state, totals = step(state, sharding.to_global(batch, mesh),
                         metrics.empty(metrics.TrainMetrics, mesh))
    per_step.append(metrics.to_host(totals, 'train'))

  state = initial
  totals, intervals = metrics.empty(metrics.TrainMetrics, mesh), []
  for i, batch in enumerate(batches):
    state, totals = step(state, sharding.to_global(batch, mesh), totals)
    if i in (2, 4):
      intervals.append(metrics.to_host(totals, 'train'))
      totals = metrics.empty(metrics.TrainMetrics, mesh)
  assert step._cache_size() == 1  # fresh totals fit the same compile

  for interval, steps_in in zip(intervals, (per_step[:3], per_step[3:])):
    for name in ('train/loss', 'train/top1'):
      assert interval[name] == pytest.approx(np.mean([s[name] for s in steps_in]), rel=1e-5)
    assert interval['train/learning_rate'] == steps_in[-1]['train/learning_rate']
  assert per_step[0]['train/loss'] != per_step[1]['train/loss']
  assert [s['train/learning_rate'] for s in per_step] == pytest.approx(
      [float(learning_rate_fn(i)) for i in range(5)])


def test_an_evaluation_batch_is_summed_in_one_all_reduce_as_clu_would():
  """One collective per batch where clu's accumulate takes two; the totals are clu's
  own, masks honoured."""
  mesh = sharding.make_mesh()
  spec = sharding.batch_sharding(mesh)
  rng = np.random.RandomState(0)

  def batch():
    return jax.device_put({'loss': rng.rand(64).astype(np.float32) * 3,
                           'top1': (rng.rand(64) > 0.3).astype(np.float32),
                           'top5': (rng.rand(64) > 0.1).astype(np.float32),
                           'mask': (np.arange(64) < 50).astype(np.int32)}, spec)

  batches = [batch() for _ in range(3)]
  empty = metrics.empty(metrics.EvalMetrics, mesh)
  hlo = jax.jit(metrics.accumulate_eval).lower(empty, batches[0]).compile().as_text()
  assert len(re.findall(r'\sall-reduce(-start)?\(', hlo)) == 1
  clu_hlo = jax.jit(metrics.accumulate).lower(empty, batches[0]).compile().as_text()
  assert len(re.findall(r'\sall-reduce(-start)?\(', clu_hlo)) == 2
  ours, theirs = empty, metrics.empty(metrics.EvalMetrics, mesh)
  for one in batches:
    ours = jax.jit(metrics.accumulate_eval)(ours, one)
    theirs = jax.jit(metrics.accumulate)(theirs, one)
  ours, theirs = metrics.to_host(ours, 'eval'), metrics.to_host(theirs, 'eval')
  assert ours['eval/num_examples'] == theirs['eval/num_examples'] == 150
  assert ours == pytest.approx(theirs, rel=1e-6)
