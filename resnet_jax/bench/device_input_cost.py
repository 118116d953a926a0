"""What the device input (dataset.pipeline=device) costs next to the training step, in
one run.

  python -m resnet_jax.bench.device_input_cost [--config=configs/fashion_mnist.py:cpu] \
      [--steps=20] [--rounds=3] [--input_batches=200]

On the config's data (synthetic uint8 splits of Fashion-MNIST's shape when its files are
absent), in alternating rounds (bench/timing.py), best round each: the input alone
(gather, pad-crop and flip of --input_batches batches, each waited for), the compiled
train step alone on one batch, and the two together as the trainer runs them; then, in
rounds of its own, the input's host side alone (indices and dispatch, not waited for:
what a GPU's host does per step). Prints each per step, the input's share of the step,
and the input's images/s: the headroom over an accelerator's step rate (ResNet-20 at
28²: ~40-50k img/s on an H100, the issue's figure).
"""

import sys
import time

from absl import app, flags
from ml_collections import config_flags

from resnet_jax import config_files
from resnet_jax.bench import timing

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', config_files.checkout_config('fashion_mnist') + ':cpu',
                                'The recipe whose input and step are timed.')
flags.DEFINE_integer('steps', 20, 'Train steps per timed round.')
flags.DEFINE_integer('rounds', 3, 'Alternating rounds of each measurement.')
flags.DEFINE_integer('input_batches', 200, 'Batches per timed round of the input alone.')
flags.DEFINE_float('accelerator_rate', 45_000.0, 'Images/s an accelerator steps at, for '
                   'the headroom line.')


def _splits(config):
  import numpy as np  # noqa: PLC0415

  from resnet_jax.data import fashion_mnist, in_memory  # noqa: PLC0415
  from resnet_jax.errors import ConfigError  # noqa: PLC0415
  try:
    return in_memory.load(config), 'the config\'s data'
  except ConfigError as error:
    if config.dataset.name != fashion_mnist.NAME:
      raise
    rng = np.random.default_rng(0)
    split = lambda n: in_memory.Split(rng.integers(0, 256, (n, 28, 28, 1), np.uint8),
                                      rng.integers(0, 10, n).astype(np.int32))
    return (in_memory.Splits(split(60_000), split(10_000), fashion_mnist.CLASS_NAMES),
            f'synthetic Fashion-MNIST-shaped data ({error})')


def measure(config, *, steps: int, rounds: int, input_batches: int) -> dict[str, float]:
  """Seconds per batch: 'input', 'input_host', 'step', 'together' (best round each)."""
  import jax  # noqa: PLC0415

  from resnet_jax import metrics, schedule, sharding, train  # noqa: PLC0415
  from resnet_jax.data import device_input  # noqa: PLC0415
  mesh = sharding.make_mesh()
  splits, _ = _splits(config)
  data = device_input.DeviceInput(config, mesh, splits)
  rate = schedule.learning_rate_fn(config, data.info.num_train_examples)
  state = train.create_state(config, data.info, mesh, rate)
  step = train.make_train_step(config, rate, mesh)
  batches = data.train_batches()
  fixed = next(batches)
  totals = metrics.empty(metrics.TrainMetrics, mesh)
  state, totals = step(state, fixed, totals)  # compile
  jax.block_until_ready(state)
  carried = {'state': state, 'totals': totals}

  def train_on(next_batch):
    def call():
      carried['state'], carried['totals'] = step(carried['state'], next_batch(),
                                                 carried['totals'])
      return carried['state']
    return call

  times = timing.seconds_per_call(
      {'input': lambda: jax.block_until_ready(next(batches)),
       'step': train_on(lambda: fixed), 'together': train_on(lambda: next(batches))},
      calls={'input': input_batches, 'step': steps, 'together': steps}, rounds=rounds)
  best = {name: min(seconds) for name, seconds in times.items()}
  # The host side is timed without waiting (what a GPU's host does per step), which the
  # shared helper, waiting on each round's last call, cannot express.
  host = []
  for _ in range(rounds):
    start = time.perf_counter()
    pending = [next(batches) for _ in range(input_batches)]
    host.append((time.perf_counter() - start) / input_batches)
    jax.block_until_ready(pending)
    del pending
  return best | {'input_host': min(host)}


def main(argv: list[str]) -> int:
  del argv
  import jax  # noqa: PLC0415
  config = FLAGS.config
  _, source = _splits(config)
  seconds = measure(config, steps=FLAGS.steps, rounds=FLAGS.rounds,
                    input_batches=FLAGS.input_batches)
  batch = config.batch_size
  print(f'device input vs train step: {config.model}, batch {batch}, '
        f'{config.dataset.image_size}², augment {config.dataset.augment} + flip '
        f'{config.dataset.random_flip}; {jax.device_count()}× {jax.devices()[0].platform}; '
        f'{source}; best of {FLAGS.rounds} rounds')
  for name, label in (('input', 'input alone (waited for)'),
                      ('input_host', 'input, host side (dispatch)'),
                      ('step', 'train step alone'), ('together', 'input + step')):
    print(f'  {label:30s} {1e3 * seconds[name]:8.2f} ms/batch  '
          f'{batch / seconds[name]:10,.0f} img/s')
  print(f'  input / step: {100 * seconds["input"] / seconds["step"]:.1f} %; '
        f'(input + step) / step: {100 * seconds["together"] / seconds["step"]:.1f} %')
  print(f'  input alone: {batch / seconds["input"] / FLAGS.accelerator_rate:.1f}× an '
        f'accelerator stepping at {FLAGS.accelerator_rate:,.0f} img/s (host side alone: '
        f'{batch / seconds["input_host"] / FLAGS.accelerator_rate:.1f}×)')
  return 0


if __name__ == '__main__':
  sys.exit(app.run(main))
