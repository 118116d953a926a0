"""The command line both studies share (python -m resnet_jax.studies.landscape / .lesion): the
flags, the settings' check before TensorFlow's import, one-line errors, the table and
the files written."""

import os
import sys
import time
from typing import Any, Callable, Sequence

from absl import app, flags

from resnet_jax import config_files

FLAGS = flags.FLAGS
Rows = list[dict[str, Any]]


def main_for(run_study: Callable[[Any, str, Sequence[str]], Rows],
             format_table: Callable[[Rows], str],
             written: Callable[[Rows], Sequence[str]]) -> Callable[[list[str]], None]:
  """An absl main that runs `run_study(config, workdir, models)` and prints its table and
  the files `written(rows)` names."""

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    from resnet_jax import console, studies  # noqa: PLC0415
    console.quiet_libraries()
    from resnet_jax.errors import ConfigError  # noqa: PLC0415
    try:
      studies.check_study(FLAGS.config.get('study'))
    except ConfigError as error:
      sys.exit(f'error: {error}')
    from resnet_jax.data import inputs  # noqa: PLC0415
    if inputs.needs_tensorflow(FLAGS.config):
      from resnet_jax.data import pipeline  # noqa: PLC0415  (TensorFlow, kept off the GPUs)
      pipeline.configure_tensorflow()
    from resnet_jax.storage import checkpointing  # noqa: PLC0415
    start = time.perf_counter()
    try:
      rows = run_study(FLAGS.config, FLAGS.workdir, FLAGS.models)
    except (ConfigError, checkpointing.CheckpointError) as error:
      sys.exit(f'error: {error}')
    print(format_table(rows))
    print(f'{len(rows)} nets in {time.perf_counter() - start:.0f} s; wrote '
          f'{FLAGS.workdir}/{", ".join(written(rows))}')

  return main


def start(main: Callable[[list[str]], None]) -> None:
  """Defines the flags and runs `main` (the commands' `if __name__ == '__main__'`)."""
  from ml_collections import config_flags  # noqa: PLC0415

  from resnet_jax.cpu import allocator  # noqa: PLC0415
  allocator.reexec_with_fast_allocator()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  default_config = config_files.checkout_config('degradation_digits')
  flags.DEFINE_string('workdir', None, 'A degradation workdir: its plainN/resnetN runs.')
  config_flags.DEFINE_config_file('config', default_config, 'The recipe the nets were '
                                  'trained with; its `study` settings.', lock_config=True)
  flags.DEFINE_list('models', [], 'Runs under --workdir to study (default: every plainN '
                    'and resnetN).')
  flags.mark_flags_as_required(['workdir'])
  config_files.make_importable([*sys.argv, f'--config={default_config}'])
  app.run(main)
