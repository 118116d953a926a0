"""The degradation experiment (He et al. 2015, Fig. 1, 6 and 7) as one command.

  python -m resnet_jax.studies.degradation --workdir=DIR [--config=configs/degradation_digits.py]
      [--depths=20,56] [--config.key=value ...]

Trains plainN and resnetN for each depth N with one recipe (the config's; its `model`
is replaced), each in DIR/<model>/ (a normal workdir: run the command again and
finished nets are only evaluated, interrupted ones resume). Then writes

- DIR/degradation.json: one object per net: model, family, depth, train_error (the
  final weights on the whole training split, evaluation mode), test_error (the
  config's evaluation split), num_train_steps, seconds (the net's wall time: training,
  its evaluations, these figures), response_stds (as responses.png);
- DIR/degradation.png: training error (the running training top-1, with augmentation)
  and test error against step, plain dashed, residual solid (the paper's Fig. 6);
- DIR/responses.png: each 3×3 layer's response std in the trained nets, evaluation mode,
  on the first batch of the evaluation split (Fig. 7; evaluate_trained);

and prints the table. The default (configs/degradation_digits.py: digits at 14×14,
plain/ResNet-20 and -56) took 9.6 minutes on a 2-core CPU VM (README);
--config=configs/cifar10_degradation.py --depths=20,32,44,56 is the paper's.
"""

import copy
import json
import os
import sys
import time
from typing import Any, Sequence

from absl import app, flags
from ml_collections import config_flags

from resnet_jax import config_files, console

FAMILIES = ('plain', 'resnet')
RESULTS_FILE = 'degradation.json'
FIGURE_FILE = 'degradation.png'
RESPONSES_FILE = 'responses.png'

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = config_files.checkout_config('degradation_digits')


def valid_depths(stem: str) -> list[int]:
  """Depths with both a plain and a residual model of the given stem."""
  from resnet_jax import models  # noqa: PLC0415
  names = {name for name, (variant, preact) in models.VARIANTS.items()
           if variant.stem == stem and not preact}
  return sorted(int(name[5:]) for name in names
                if name.startswith('plain') and f'resnet{name[5:]}' in names)


def check_depths(depths: Sequence[int], model: str) -> None:
  """ValueError naming a depth with no plainN/resnetN of the config model's kind."""
  from resnet_jax import models  # noqa: PLC0415
  models.check_model_name(model)
  stem = models.VARIANTS[model][0].stem
  valid = valid_depths(stem)
  for depth in depths:
    if depth not in valid:
      raise ValueError(f'depth {depth} has no plain{depth}/resnet{depth} ({stem} nets); valid '
                       f'depths: {", ".join(map(str, valid))}')
  if not depths:
    raise ValueError('--depths is empty; give at least one, e.g. --depths=20,56')


def _errors(scalars: dict[str, list[tuple[int, float]]], tag: str) -> list[tuple[int, float]]:
  return [(step, 1.0 - value) for step, value in scalars.get(tag, [])]


def evaluate_trained(run_dir: str, config: Any) -> tuple[float, list[float]]:
  """(training error, response stds) of the run's newest checkpoint, in evaluation mode.

  The error is 1 − top-1 on the whole training split (the evaluation pipeline: no
  augmentation). The stds are each 3×3 layer's, input first, with running BN statistics,
  on the evaluation split's first batch: the paper's Fig. 7 measures the trained net
  (inside a training step, BN's batch statistics make the std of a BN output a function
  of its scale and offset alone). One compiled forward pass serves both.
  """
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from resnet_jax import diagnostics, steps  # noqa: PLC0415
  from resnet_jax.data import inputs  # noqa: PLC0415
  from resnet_jax.models.blocks import DIAGNOSTICS  # noqa: PLC0415
  from resnet_jax.storage import trained  # noqa: PLC0415
  from resnet_jax.tools import diagnostics_plots  # noqa: PLC0415
  restored = trained.restore(run_dir, weights='live')
  model = restored.create_model()

  @jax.jit
  def forward(variables: Any, images: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    images = steps.normalize_images(images, restored.info.mean, restored.info.std)
    logits, sown = model.apply(variables, images, train=False, mutable=[DIAGNOSTICS])
    return logits.argmax(axis=-1), diagnostics.response_stds(sown[DIAGNOSTICS])

  images, labels = inputs.host_examples(config, config.dataset.train_split)
  wrong = 0
  for batch in inputs.padded_batches(images, labels, config.batch_size):
    keep = batch['mask'].astype(bool)
    predicted = np.asarray(forward(restored.variables, batch['image'])[0])
    wrong += int((predicted[keep] != batch['label'][keep]).sum())
  first, _ = inputs.host_examples(config, config.dataset.eval_split, config.batch_size)
  stds = forward(restored.variables, first)[1]
  return wrong / len(labels), [float(stds[name]) for name in diagnostics_plots.layer_order(stds)]


def run_experiment(config: Any, workdir: str, depths: Sequence[int]) -> list[dict[str, Any]]:
  """Trains and evaluates every net; writes the JSON and both figures; returns the rows."""
  from etils import epath  # noqa: PLC0415

  from resnet_jax import train  # noqa: PLC0415
  from resnet_jax.tools import diagnostics_plots, report  # noqa: PLC0415
  check_depths(depths, config.model)
  root = epath.Path(workdir)
  results, curves, responses = [], {}, {}
  for depth in depths:
    for family in FAMILIES:
      model = f'{family}{depth}'
      run_config = copy.deepcopy(config)
      with run_config.unlocked():
        run_config.model = model
      run_dir = str(root / model)
      start = time.perf_counter()
      summary = train.train_and_evaluate(run_config, run_dir)
      scalars = report.read_scalars(run_dir)
      error, responses[model] = evaluate_trained(run_dir, run_config)
      seconds = time.perf_counter() - start
      curves[model] = {'train': _errors(scalars, 'train/top1'),
                       'test': _errors(scalars, 'eval/top1')}
      results.append({'model': model, 'family': family, 'depth': depth,
                      'train_error': error,
                      'test_error': 1.0 - summary['eval/top1'],
                      'num_train_steps': int(scalars['train/top1'][-1][0]),
                      'seconds': round(seconds, 1),
                      'response_stds': [round(v, 4) for v in responses[model]]})
  (root / RESULTS_FILE).write_text(json.dumps(results, indent=2))
  diagnostics_plots.plot_degradation(curves, root / FIGURE_FILE)
  diagnostics_plots.plot_response_stds(
      responses, root / RESPONSES_FILE,
      subtitle=f'trained, evaluation mode, {config.dataset.eval_split!r} split')
  return results


def format_table(results: Sequence[dict[str, Any]]) -> str:
  """The results as a Markdown table."""
  lines = ['| model | train error | test error | steps | seconds |', '|---|---:|---:|---:|---:|']
  lines += [f'| {r["model"]} | {100 * r["train_error"]:.1f} % | {100 * r["test_error"]:.1f} % '
            f'| {r["num_train_steps"]} | {r["seconds"]:.0f} |' for r in results]
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  console.quiet_libraries()
  try:
    depths = [int(depth) for depth in FLAGS.depths]
  except ValueError:
    sys.exit(f'error: --depths {",".join(FLAGS.depths)} must be integers, e.g. 20,56')
  try:  # Before TensorFlow's import (~7 s): a bad depth is reported at once.
    check_depths(depths, FLAGS.config.model)
  except ValueError as error:
    sys.exit(f'error: {error}')
  from resnet_jax.data import inputs  # noqa: PLC0415
  if inputs.needs_tensorflow(FLAGS.config):
    from resnet_jax.data import pipeline  # noqa: PLC0415  (TensorFlow, kept off the GPUs)
    pipeline.configure_tensorflow()
  from resnet_jax import stopping  # noqa: PLC0415
  from resnet_jax.errors import ConfigError  # noqa: PLC0415
  from resnet_jax.storage import checkpointing  # noqa: PLC0415
  try:
    start = time.perf_counter()
    results = run_experiment(FLAGS.config, FLAGS.workdir, depths)
  except stopping.RunStopped as stop:  # the same command resumes the net it stopped in
    print(stop, file=sys.stderr)
    sys.exit(stopping.EXIT_STOPPED)
  except (ConfigError, checkpointing.CheckpointError, ValueError) as error:
    sys.exit(f'error: {error}')
  print(format_table(results))
  print(f'{len(results)} nets in {time.perf_counter() - start:.0f} s; wrote '
        f'{FLAGS.workdir}/{RESULTS_FILE}, {FIGURE_FILE}, {RESPONSES_FILE}')


if __name__ == '__main__':
  from resnet_jax.cpu import allocator
  allocator.reexec_with_fast_allocator()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  flags.DEFINE_string('workdir', None, 'Directory for the runs, the JSON and the figures.')
  config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'The recipe (its model is '
                                  'replaced by plainN and resnetN).', lock_config=True)
  flags.DEFINE_list('depths', ['20', '56'], 'Depths N of the plainN / resnetN pairs.')
  flags.mark_flags_as_required(['workdir'])
  config_files.make_importable([*sys.argv, f'--config={_DEFAULT_CONFIG}'])
  app.run(main)
