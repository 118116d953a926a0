"""What each recipe component costs on this machine: the trainer's step, and the input
pipeline, with and without it, in one run.

  python -m resnet_jax.bench.component_cost [--config=configs/digits.py] [--model=resnet20] \
      [--image_size=32] \
      [--batch_size=128] [--steps=10] [--rounds=3] [--input_batches=40]

Device side: train.make_train_step compiled for the digits config plus one component at
a time (stochastic depth, BlurPool, BCE, LAMB, random erasing, mixup/cutmix, a periodic
EMA), timed in alternating rounds on one synthetic batch, best round each; prints each
step time, its ratio to the plain step and its compile time. Host side: the tf.data
pipeline on the embedded digits with TrivialAugment-wide, repeated augmentation or a
resize ramp, images per second over --input_batches batches each.
"""

import sys
import time

from absl import app, flags
from ml_collections import config_flags

from resnet_jax import config_files
from resnet_jax.bench import timing, timing_inputs

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = config_files.checkout_config('digits')
config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'The recipe the components join.')
timing_inputs.define_flags(model='resnet20', image_size=32, batch_size=128, steps=10, rounds=3)
flags.DEFINE_integer('input_batches', 40, 'Batches read per input-pipeline variant.')

STEP_VARIANTS = {
    'plain': {},
    'drop_path 0.05': {'drop_path_rate': 0.05},
    'blurpool': {'blurpool': True},
    'bce (threshold 0.2)': {'loss': 'bce', 'bce_target_threshold': 0.2},
    'lamb + clip 1.0': {'optimizer': 'lamb', 'grad_clip_norm': 1.0},
    'random erasing const': {'random_erasing': 0.25},
    'random erasing pixel': {'random_erasing': 0.25, 'random_erasing_mode': 'pixel'},
    'mixup 0.2 + cutmix 1.0': {'mixup_alpha': 0.2, 'cutmix_alpha': 1.0},
    'ema every 32': {'ema_decay': 0.999, 'ema_every_steps': 32},
}
INPUT_VARIANTS = {
    'plain': {},
    'trivial_augment': {'dataset.trivial_augment': True},
    'repeated_augmentation 4': {'dataset.repeated_augmentation': 4},
    'resize ramp': {'dataset.min_image_size': 16, 'dataset.resize_end_epoch': 1.0,
                    'dataset.resize_multiple': 8},
}


def _with(config, overrides):
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    config_files.set_override(config, key, value)
  return config


def main(argv: list[str]) -> None:
  del argv
  import jax
  import optax

  from resnet_jax import metrics, sharding, train
  from resnet_jax.data import pipeline, sources

  base = FLAGS.config
  base.model, base.batch_size = FLAGS.model, FLAGS.batch_size
  base.dataset.image_size = FLAGS.image_size
  mesh = sharding.make_mesh()
  info, batch = timing_inputs.synthetic_batch(base.batch_size, FLAGS.image_size, 1, mesh)
  learning_rate_fn = optax.constant_schedule(0.01)
  compiled, compile_seconds, carried = {}, {}, {}
  for name, overrides in STEP_VARIANTS.items():
    config = _with(base, overrides)
    state = train.create_state(config, info, mesh, learning_rate_fn)
    totals = metrics.empty(metrics.TrainMetrics, mesh)
    compiled[name], compile_seconds[name] = timing.compiled_and_seconds(
        lambda: train.make_train_step(config, learning_rate_fn, mesh).lower(state, batch,
                                                                            totals))
    carried[name] = (state, totals)

  def candidate(name):
    def call():
      state, totals = carried[name]
      carried[name] = compiled[name](state, batch, totals)
      return carried[name]
    return call

  times = timing.seconds_per_call({name: candidate(name) for name in compiled},
                                  calls=FLAGS.steps, rounds=FLAGS.rounds)
  best = {name: min(seconds) for name, seconds in times.items()}
  print(f'{base.model}, batch {base.batch_size} at {FLAGS.image_size}², '
        f'{jax.device_count()} {jax.devices()[0].device_kind} device(s); train step:')
  for name in compiled:
    print(f'  {name:24s} {1e3 * best[name]:8.1f} ms  {best[name] / best["plain"]:5.2f}x   '
          f'compile {compile_seconds[name]:5.1f} s')

  print(f'input pipeline, embedded digits at {FLAGS.image_size}², batch {base.batch_size}:')
  data_config = base.copy_and_resolve_references()
  source = sources.create_source(data_config)
  data_info = sources.dataset_info(source, data_config)
  for name, overrides in INPUT_VARIANTS.items():
    config = _with(data_config, overrides)
    batches = pipeline.train_batches(source, config, data_info, start_step=0,
                                     process_index=0, process_count=1)
    next(batches)
    start = time.perf_counter()
    sizes = {next(batches)['image'].shape[1] for _ in range(FLAGS.input_batches)}
    rate = FLAGS.input_batches * config.batch_size / (time.perf_counter() - start)
    print(f'  {name:24s} {rate:8.0f} img/s   sizes {sorted(sizes)}')


if __name__ == '__main__':
  config_files.make_importable([*sys.argv, f'--config={_DEFAULT_CONFIG}'])
  app.run(main)
