"""Command line: python -m resnet_jax.main --config=configs/NAME.py --workdir=DIR.

Override any config key with --config.key=value; a key that does not exist is an error.
A run's workdir alone resumes it: python -m resnet_jax.main --workdir=DIR (its recorded
config; overrides still apply). --print_config shows the resolved config and exits.
"""

import os
import sys

from resnet_jax.cpu import allocator

if __name__ == '__main__':
  allocator.reexec_with_fast_allocator()  # jemalloc/tcmalloc if installed: see allocator.py

# Before TensorFlow is first imported (by the tf.data input): its C++ INFO lines are noise.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from resnet_jax import config_files, console, distributed  # noqa: E402
from resnet_jax.cpu import devices as cpu_devices  # noqa: E402
from resnet_jax.errors import ConfigError  # noqa: E402
from resnet_jax.storage import checkpointing  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for config.json, summaries and checkpoints.')
config_flags.DEFINE_config_file('config', None, 'A config file, e.g. configs/digits.py, or a '
                                "run's WORKDIR/config.json; without it, the --workdir's "
                                'config.json (a resume from the workdir alone).',
                                lock_config=True)
flags.DEFINE_enum('distributed', 'auto', list(distributed.MODES),
                  'Start jax.distributed: auto (given a coordinator, or on a detected TPU pod, '
                  'SLURM or Open MPI job), yes, no.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (clusters JAX cannot '
                    'detect; launch/local.sh sets it).')
flags.DEFINE_integer('num_processes', None, 'Processes in the run, with --coordinator_address.')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
flags.DEFINE_list('allow_changes', [], 'Config keys a resumed run may change besides durations, '
                  'cadences, logging and evaluation (e.g. base_lr,batch_size); each change is '
                  'recorded in WORKDIR/config_history.jsonl. Also train_data (the training '
                  'split changed size or files) and process_count (a per_process order on '
                  'another process count).')
flags.DEFINE_integer('heartbeat_timeout', 30, 'Seconds without a heartbeat from a process '
                     'before the others of a multi-process run abort.')
flags.DEFINE_bool('print_config', False, 'Print the resolved config (overrides applied; for a '
                  'workdir alone, its recorded one) and exit without training.')
flags.mark_flags_as_required(['config', 'workdir'])  # --config: see parse_flags


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad --config override reported in one line; a run's
  config.json (or its workdir alone) stands for a config file."""
  if any(arg in ('-h', '--help', '-?', '--helpshort') for arg in argv[1:]):  # not --helpfull
    print(f'{__doc__.strip()}\n\nConfigs (--config=PATH[:recipe]):\n'
          f'{config_files.describe_configs(config_files.configs_directory())}\n\nFlags:\n'
          f'{FLAGS.module_help(sys.modules[__name__])}\n\n--helpfull: every flag (absl\'s too, '
          'e.g. --verbosity=1 for the library output kept off the console).')
    sys.exit(0)
  argv = config_files.with_recorded_config(argv)
  config_files.make_importable(argv)
  try:
    remaining = FLAGS(argv)
    FLAGS.config.get('model')  # A --config file that failed to load raises only when used.
    return remaining
  except flags.Error as error:
    # A config file's get_config() that raised arrives with its traceback in the message:
    # keep the flag and the exception's own line.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    sys.exit(f'error: {lines[0]} {lines[-1]}' if len(lines) > 1 else f'error: {error}')
  except OSError as error:
    sys.exit(f'error: cannot load --config: {" ".join(str(error).split())}')
  except (AttributeError, KeyError, TypeError, ValueError) as error:  # From ml_collections.
    # An unknown key arrives as AttributeError(KeyError("'key'\nDid you mean ...")).
    cause = error.__context__ if isinstance(error.__context__, KeyError) else error
    message = ' '.join(str(cause.args[0] if cause.args else cause).split())
    sys.exit(f'error: bad --config override, unknown or invalid key: {message}')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.print_config:
    print(FLAGS.config)
    return
  console.quiet_libraries()
  try:
    cpu_devices.request(FLAGS.config.cpu_devices)  # before anything starts JAX's backends
  except ConfigError as error:
    sys.exit(f'error: {error}')
  distributed.run(_train_and_evaluate,
                  one_line_errors=(ConfigError, checkpointing.CheckpointError),
                  mode=FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                  heartbeat_timeout=FLAGS.heartbeat_timeout)


def _train_and_evaluate() -> None:
  # The trainer is imported only now (and TensorFlow only by the tf.data input), so a
  # mistyped flag, override or launch setting is reported before that.
  from resnet_jax.data import inputs
  if inputs.needs_tensorflow(FLAGS.config):
    try:
      console.import_tensorflow_quietly()
    except ImportError:
      pass  # the config check names it in one line, with what to install

  from resnet_jax import train
  logging.info('JAX process %d of %d, local devices: %s; host allocator: %s',
               jax.process_index(), jax.process_count(), jax.local_devices(),
               allocator.active())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir, allow_changes=FLAGS.allow_changes)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
