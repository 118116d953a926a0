"""Command line: python -m resnet_jax.main --config=configs/NAME.py --workdir=DIR.

Override any config key with --config.key=value; a key that does not exist is an error.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from resnet_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for config.json, summaries and checkpoints.')
config_flags.DEFINE_config_file('config', None, 'A config file, e.g. configs/digits.py.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  import tensorflow as tf  # Only the input pipeline uses TF: keep it off the accelerators.
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX process %d of %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train.ConfigError as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(main)
