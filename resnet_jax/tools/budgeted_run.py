"""A recipe trained within a wall-clock budget, then its final and best accuracy: what
launch/gpu_results.sh runs on a lent accelerator.

  python -m resnet_jax.tools.budgeted_run --config=configs/fashion_mnist.py:zhong \
      --workdir=DIR [--budget_s=540] [--config.key=value ...]

First a calibration: the config's step, compiled, timed over --calibration_steps steps on
its device input, and one evaluation pass. From them, the epochs that fit the budget after
what start-up already took; when fewer than the recipe's, one WARNING line says so and
the run trains that many epochs with the schedule's epochs (warmup, step boundaries)
scaled by the same factor. Checkpoints only at the end (the budget is for training), an
evaluation every epoch. Then the run itself (train.train_and_evaluate, which compiles
from JAX's compilation cache), and one line per figure: final and best top-1, wall time,
images/s. Needs no TensorFlow: dataset.pipeline must be 'device'.
"""

import logging as std_logging
import math
import sys
import time

_START = time.perf_counter()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from resnet_jax import config_files  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', config_files.checkout_config('fashion_mnist') + ':zhong',
                                'The recipe.', lock_config=False)
flags.DEFINE_string('workdir', None, 'Where the run writes (a new directory).')
flags.DEFINE_float('budget_s', 540.0, 'Seconds from this process\'s start to the end of '
                   'training and its last evaluation.')
flags.DEFINE_integer('calibration_steps', 60, 'Timed steps of the calibration.')
flags.DEFINE_float('reserve_s', 20.0, 'Seconds kept back for the final checkpoint, '
                   'compiling the run\'s step again and the teardown.')
flags.mark_flag_as_required('workdir')


def calibrate(config, steps: int) -> dict[str, float]:
  """{'step_s', 'eval_s', 'steps_per_epoch', 'num_train_examples'} of `config` here."""
  import jax  # noqa: PLC0415

  from resnet_jax import metrics, schedule, sharding, train  # noqa: PLC0415
  from resnet_jax.data import inputs  # noqa: PLC0415
  mesh = sharding.make_mesh()
  data = inputs.create(config, mesh)
  rate = schedule.learning_rate_fn(config, data.info.num_train_examples)
  state = train.create_state(config, data.info, mesh, rate)
  step = train.make_train_step(config, rate, mesh)
  batches = data.train_batches()
  totals = metrics.empty(metrics.TrainMetrics, mesh)
  for _ in range(3):  # compile, then settle
    state, totals = step(state, next(batches), totals)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, totals = step(state, next(batches), totals)
  jax.block_until_ready(state)
  step_s = (time.perf_counter() - start) / steps
  train.evaluate(state, data, config, mesh)  # compile
  start = time.perf_counter()
  train.evaluate(state, data, config, mesh)
  eval_s = time.perf_counter() - start
  length = schedule.run_length(config, data.info.num_train_examples)
  return {'step_s': step_s, 'eval_s': eval_s, 'steps_per_epoch': length.steps_per_epoch,
          'num_train_examples': data.info.num_train_examples}


def fit_epochs(config, figures: dict[str, float], seconds_left: float) -> float:
  """The recipe's epochs, or fewer: as many whole epochs (each with its evaluation) as
  fit `seconds_left`, at least 1."""
  epoch_s = figures['steps_per_epoch'] * figures['step_s'] + figures['eval_s']
  return min(config.num_epochs, max(1.0, math.floor(seconds_left / epoch_s)))


def scaled(config, epochs: float):
  """`config` trained for `epochs` with every epoch-valued schedule point scaled alike."""
  factor = epochs / config.num_epochs
  config.num_epochs = epochs
  config.warmup_epochs *= factor
  config.lr_boundaries_epochs = tuple(e * factor for e in config.lr_boundaries_epochs)
  return config


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Orbax logs dozens of INFO lines per checkpoint; keep its warnings and errors.
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname)
  from resnet_jax import train  # noqa: PLC0415
  from resnet_jax.tools import results  # noqa: PLC0415
  config = FLAGS.config
  if config.dataset.pipeline != 'device' or config.num_train_steps > 0:
    print(f'error: budgeted_run needs dataset.pipeline=device and num_epochs (got pipeline '
          f'{config.dataset.pipeline!r}, num_train_steps {config.num_train_steps})',
          file=sys.stderr)
    return 2
  figures = calibrate(config, FLAGS.calibration_steps)
  images_per_sec = config.batch_size / figures['step_s']
  seconds_left = FLAGS.budget_s - (time.perf_counter() - _START) - FLAGS.reserve_s
  epochs = fit_epochs(config, figures, seconds_left)
  print(f'calibration: {1e3 * figures["step_s"]:.2f} ms/step ({images_per_sec:,.0f} img/s), '
        f'{figures["eval_s"]:.2f} s/evaluation; {seconds_left:.0f} s left for training',
        flush=True)
  if seconds_left < figures['steps_per_epoch'] * figures['step_s'] + figures['eval_s']:
    print(f'WARNING: start-up and calibration left {seconds_left:.0f} s, less than one epoch: '
          'training one epoch anyway, past the budget', flush=True)
  if epochs < config.num_epochs:
    print(f'WARNING: {epochs:g} of the recipe\'s {config.num_epochs:g} epochs fit the '
          f'{FLAGS.budget_s:g} s budget here: training {epochs:g} epochs, the schedule\'s '
          f'epochs scaled by {epochs / config.num_epochs:.3f}', flush=True)
    config = scaled(config, epochs)
  steps = math.ceil(epochs * figures['steps_per_epoch'])
  config.checkpoint_every_steps = steps  # only the end: the budget is for training
  config.eval_every_steps = -1
  start = time.perf_counter()
  train.train_and_evaluate(config, FLAGS.workdir)
  wall = time.perf_counter() - start
  result = results.run_result(FLAGS.workdir)
  spe = figures['steps_per_epoch']
  print(f'{config.model}, {epochs:g} epochs ({steps} steps of {config.batch_size}): final '
        f'top-1 {100 * result["final"]:.2f} % (epoch {result["final_step"] / spe:g}), best '
        f'{100 * result["best"]:.2f} % (epoch {result["best_step"] / spe:g}); training '
        f'{wall:.0f} s, {time.perf_counter() - _START:.0f} s in all; '
        f'{result["images_per_sec"]:,.0f} img/s while training')
  logging.flush()
  return 0


if __name__ == '__main__':
  app.run(main)
