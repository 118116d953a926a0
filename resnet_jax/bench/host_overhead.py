"""Host time per training step: metrics accumulated on the device against merged eagerly.

  python -m resnet_jax.bench.host_overhead [--config=configs/digits.py] [--model=resnet20] \
      [--image_size=8] [--batch_size=16] [--steps=200] [--rounds=3]

Times the trainer's jitted step (train.make_train_step: each step's metrics merged into
running totals inside the step, read on log steps only) against the same bound step with
its metrics merged on the host after every step, as the loop did until 2026-12 (clu's
merge: about ten small eager dispatches). Both run in the same process on one device
batch, in alternating rounds; the best round counts. "host" is the time the Python loop
takes to issue the steps (JAX dispatches asynchronously, so on an accelerator this is
what keeps the host from running ahead); "wall" adds the wait for the last step.
"""

import sys
import time

from absl import app, flags
from ml_collections import config_flags

from resnet_jax import config_files
from resnet_jax.cpu import allocator
from resnet_jax.bench import timing_inputs

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = config_files.checkout_config('digits')
config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG,
                                'The config whose optimizer and loss the step uses.')
timing_inputs.define_flags(model='resnet20', image_size=8, batch_size=16, steps=200, rounds=3)


def main(argv: list[str]) -> None:
  del argv
  import jax
  import numpy as np

  from resnet_jax import metrics, optim, sharding, train
  from resnet_jax.data import sources
  config = FLAGS.config
  config.model, config.batch_size = FLAGS.model, FLAGS.batch_size
  config.dataset.image_size = FLAGS.image_size
  mesh = sharding.make_mesh(jax.devices()[:1])
  size = FLAGS.image_size
  info = sources.DatasetInfo(10, tuple('0123456789'), 10_000, 100, (size, size, 1))
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=100,
                                                   num_train_steps=100_000)
  rng = np.random.RandomState(0)
  batch = sharding.to_global({
      'image': rng.randint(0, 255, (FLAGS.batch_size, size, size, 1)).astype(np.uint8),
      'label': rng.randint(0, 10, FLAGS.batch_size).astype(np.int32)}, mesh)

  on_device = train.make_train_step(config, learning_rate_fn, mesh)
  bound = train.bound_train_step(config, learning_rate_fn)

  @jax.jit
  def step_and_metrics(state, batch):
    state, step_metrics = bound(state, batch)
    return state, metrics.TrainMetrics.single_from_model_output(**step_metrics)

  def device_round(state):
    totals = metrics.empty(metrics.TrainMetrics, mesh)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, totals = on_device(state, batch, totals)
    issued = time.perf_counter()
    metrics.to_host(totals, 'train')
    return state, issued - start, time.perf_counter() - start

  def host_round(state):
    totals = None
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, step_metrics = step_and_metrics(state, batch)
      totals = step_metrics if totals is None else totals.merge(step_metrics)
    issued = time.perf_counter()
    metrics.to_host(totals, 'train')
    return state, issued - start, time.perf_counter() - start

  state = train.create_state(config, info, mesh, learning_rate_fn)
  state = device_round(state)[0]  # compile and warm up both
  state = host_round(state)[0]
  best = {'device': (float('inf'),) * 2, 'host': (float('inf'),) * 2}
  for _ in range(FLAGS.rounds):
    for name, round_fn in (('device', device_round), ('host', host_round)):
      state, issued, wall = round_fn(state)
      best[name] = min(best[name], (issued, wall))
  print(f'{FLAGS.model} at {size}x{size}, batch {FLAGS.batch_size}, {FLAGS.steps} steps x '
        f'{FLAGS.rounds} rounds, {jax.devices()[0].device_kind}; best round, per step:')
  for name, label in (('host', 'metrics merged on the host (before)'),
                      ('device', 'metrics accumulated in the step (now)')):
    issued, wall = best[name]
    print(f'  {label:40} host {issued / FLAGS.steps * 1e3:7.3f} ms   '
          f'wall {wall / FLAGS.steps * 1e3:7.3f} ms')
  saved = (best['host'][0] - best['device'][0]) / FLAGS.steps
  print(f'  host time saved per step: {saved * 1e3:.3f} ms (on a CPU the step itself runs in '
        'the dispatching thread, so there host time includes it)')


if __name__ == '__main__':
  allocator.reexec_with_fast_allocator()
  config_files.make_importable([*sys.argv, f'--config={_DEFAULT_CONFIG}'])
  app.run(main)
