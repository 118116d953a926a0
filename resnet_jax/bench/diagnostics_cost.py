"""What the training diagnostics cost: the trainer's step with and without them, one run.

  python -m resnet_jax.bench.diagnostics_cost [--config=configs/degradation_digits.py] \
      [--model=resnet56] [--image_size=16] [--batch_size=128] [--steps=20] [--rounds=3]

Compiles train.make_train_step twice for the same config, the ordinary step and the one
that also returns resnet_jax.diagnostics' tags (config.diagnostics_every_steps runs
the latter every N steps), and times them in alternating rounds on one synthetic batch
(the best round of each counts). Prints both step times, their ratio, both compile
times, and what diagnostics every N steps add to a run's step time on average.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from resnet_jax import config_files
from resnet_jax.bench import timing, timing_inputs

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = config_files.checkout_config('degradation_digits')
config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'The recipe whose step is timed.')
timing_inputs.define_flags(model='resnet56', image_size=16, batch_size=128, steps=20, rounds=3)
flags.DEFINE_integer('channels', 1, 'Image channels.')
flags.DEFINE_integer('every', 33, 'The diagnostics_every_steps to report the average cost of.')


def main(argv: list[str]) -> None:
  del argv
  import jax
  import optax

  from resnet_jax import metrics, sharding, train

  config = FLAGS.config
  with config.unlocked():
    config.model, config.batch_size = FLAGS.model, FLAGS.batch_size
    config.dataset.image_size = FLAGS.image_size
  mesh = sharding.make_mesh()
  info, batch = timing_inputs.synthetic_batch(config.batch_size, FLAGS.image_size,
                                              FLAGS.channels, mesh)
  learning_rate_fn = optax.constant_schedule(0.1)
  state = train.create_state(config, info, mesh, learning_rate_fn)
  totals = metrics.empty(metrics.TrainMetrics, mesh)
  compiled, compile_seconds = {}, {}
  for name, diagnostics in (('ordinary', False), ('diagnostics', True)):
    compiled[name], compile_seconds[name] = timing.compiled_and_seconds(
        lambda: train.make_train_step(config, learning_rate_fn, mesh,
                                      diagnostics=diagnostics).lower(state, batch, totals))
  carried = {'state': state, 'totals': totals}

  def candidate(step):
    def call():
      outputs = step(carried['state'], batch, carried['totals'])
      carried['state'], carried['totals'] = outputs[0], outputs[1]
      return outputs
    return call

  times = timing.seconds_per_call({name: candidate(step) for name, step in compiled.items()},
                                  calls=FLAGS.steps, rounds=FLAGS.rounds)
  best = {name: min(seconds) for name, seconds in times.items()}
  ratio = best['diagnostics'] / best['ordinary']
  print(f'{config.model}, batch {config.batch_size} at {FLAGS.image_size}², '
        f'{jax.device_count()} {jax.devices()[0].device_kind} device(s):')
  for name in compiled:
    print(f'  {name:11s} step {1e3 * best[name]:8.1f} ms   compile {compile_seconds[name]:5.1f} s')
  print(f'  a diagnostics step costs {ratio:.3f}x an ordinary one; every {FLAGS.every} steps '
        f'that adds {100 * (ratio - 1) / FLAGS.every:.2f} % to the average step time')


if __name__ == '__main__':
  config_files.make_importable([*sys.argv, f'--config={_DEFAULT_CONFIG}'])
  app.run(main)
