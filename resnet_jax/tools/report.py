"""A trained run's report: per-class metrics, a confusion matrix and its training curves.

  python -m resnet_jax.tools.report --workdir=/tmp/digits [--step=N] [--weights=auto|ema|live]

evaluates a checkpoint of the run (the newest by default) on the run's evaluation split
and writes into `<workdir>/report/step<N>_<weights>/`:

- classification_report.txt: per-class precision / recall / F1 / support, accuracy and
  macro / weighted averages (scikit-learn's layout);
- metrics.json: the same per class and averaged, with step, weights, num_examples, top1
  and the confusion matrix (rows: true class, columns: predicted);
- confusion_matrix.png: row-normalised colours, counts written in when there are few classes;
- curves_loss.png, curves_top1.png, curves_learning_rate.png: train (and eval) scalars vs
  step, read from the run's TensorBoard event files;
- with diagnostics logged (config.diagnostics_every_steps): diagnostics_grad_norm.png
  (gradient norm against block depth, one line per logged step) and
  diagnostics_response_std.png (each 3×3 layer's response std against its index; with
  --compare=OTHER_WORKDIR, e.g. the plain twin, both runs side by side).

The same as a function: `write_report(workdir, step=None, weights='auto', compare=None)`.
"""

import functools
import json
import re
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from matplotlib.figure import Figure
from sklearn import metrics as sk_metrics

from resnet_jax import sharding
from resnet_jax.errors import ConfigError
from resnet_jax.storage import trained
from resnet_jax.storage import workdir as workdir_lib
from resnet_jax.tools import diagnostics_plots
from resnet_jax.tools.results import read_scalars

REPORT_DIR = 'report'
# Each plot and the tags it shows; eval tags are drawn with markers (they are sparse).
CURVES = {'loss': ('train/loss', 'eval/loss', 'eval_ema/loss'),
          'top1': ('train/top1', 'eval/top1', 'eval_ema/top1'),
          'learning_rate': ('train/learning_rate',)}
_ANNOTATE_MAX_CLASSES = 30  # beyond this, numbers in the cells are unreadable
_TICK_LABELS_MAX_CLASSES = 60


def _eval_batches(config: ml_collections.ConfigDict) -> Any:
  """Host batches {'image', 'label', 'mask'} of the evaluation split, padded to the batch
  size: read as the run's pipeline reads them (the device input's data without TF)."""
  if config.dataset.pipeline == 'device':
    from resnet_jax.data import inputs  # noqa: PLC0415
    images, labels = inputs.host_examples(config, config.dataset.eval_split)
    yield from inputs.padded_batches(images, labels, config.batch_size)
    return
  # TensorFlow prints two lines to stderr when imported, whatever TF_CPP_MIN_LOG_LEVEL says:
  # importing it only here keeps an error about the workdir or the flags the only line.
  from resnet_jax import console  # noqa: PLC0415
  console.import_tensorflow_quietly()
  from resnet_jax.data import pipeline, sources  # noqa: PLC0415
  source = sources.create_source(config)
  info = sources.dataset_info(source, config)
  yield from pipeline.eval_batches(source, config, info, process_index=0, process_count=1)


def predict_split(restored: trained.Restored,
                  config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """(labels, predictions) of every example of the config's evaluation split, in order.

  Runs in this process only (a report is a one-host job); the batch is sharded over the
  local devices when they divide it, else it runs on one device.
  """
  devices = jax.local_devices()
  mesh = sharding.make_mesh(devices if config.batch_size % len(devices) == 0 else devices[:1])
  logits = restored.logits_fn()

  @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
  def forward(variables: dict[str, Any], images: jax.Array) -> jax.Array:
    return logits(variables, images).argmax(axis=-1)

  variables = jax.device_put(restored.variables, sharding.replicated(mesh))
  labels, predictions = [], []
  for batch in _eval_batches(config):
    keep = batch['mask'].astype(bool)  # padding of the last batch counts for nothing
    predicted = np.asarray(forward(variables, sharding.to_global(batch['image'], mesh)))
    labels.append(batch['label'][keep])
    predictions.append(predicted[keep])
  if not labels:
    raise ConfigError(f'the evaluation split {config.dataset.eval_split!r} is empty')
  return np.concatenate(labels), np.concatenate(predictions)


def plot_confusion_matrix(matrix: np.ndarray, class_names: tuple[str, ...],
                          path: epath.Path) -> None:
  """Rows: true class; colour: the row's fraction (so rare classes show); text: counts."""
  n = len(class_names)
  rows = matrix.sum(axis=1, keepdims=True)
  fractions = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
  side = min(max(5.0, 0.45 * n + 2), 40.0)
  figure = Figure(figsize=(side + 1, side))
  axes = figure.add_subplot()
  image = axes.imshow(fractions, cmap='Blues', vmin=0.0, vmax=1.0)
  figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label='fraction of true class')
  if n <= _TICK_LABELS_MAX_CLASSES:
    axes.set_xticks(range(n), class_names, rotation=90)
    axes.set_yticks(range(n), class_names)
  if n <= _ANNOTATE_MAX_CLASSES:
    for (i, j), count in np.ndenumerate(matrix):
      if count:
        axes.text(j, i, str(count), ha='center', va='center', fontsize=8,
                  color='white' if fractions[i, j] > 0.5 else 'black')
  axes.set_xlabel('predicted')
  axes.set_ylabel('true')
  axes.set_title(f'confusion matrix ({int(matrix.sum())} examples)')
  diagnostics_plots.save_png(figure, path)


def plot_curves(scalars: dict[str, list[tuple[int, float]]],
                directory: epath.Path) -> dict[str, epath.Path]:
  """One PNG per entry of CURVES that has data; returns {name: path}."""
  written = {}
  for name, tags in CURVES.items():
    present = [tag for tag in tags if scalars.get(tag)]
    if not present:
      continue
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for tag in present:
      x, y = zip(*scalars[tag])
      axes.plot(x, y, label=tag, marker=None if tag.startswith('train/') else 'o')
    axes.set_xlabel('step')
    axes.set_ylabel(name)
    axes.grid(alpha=0.3)
    axes.legend()
    written[f'curves_{name}'] = directory / f'curves_{name}.png'
    diagnostics_plots.save_png(figure, written[f'curves_{name}'])
  return written


def class_metrics(labels: np.ndarray, predictions: np.ndarray,
                  class_names: tuple[str, ...]) -> dict[str, Any]:
  """Per-class and averaged precision / recall / F1 / support, top1, confusion matrix."""
  classes = list(range(len(class_names)))  # absent classes still get a (zero) row
  per_class = sk_metrics.precision_recall_fscore_support(labels, predictions, labels=classes,
                                                         zero_division=0)
  record: dict[str, Any] = {'classes': [
      {'name': name, 'precision': float(p), 'recall': float(r), 'f1': float(f),
       'support': int(s)} for name, p, r, f, s in zip(class_names, *per_class)]}
  for average in ('macro', 'weighted'):
    p, r, f, _ = sk_metrics.precision_recall_fscore_support(
        labels, predictions, labels=classes, average=average, zero_division=0)
    record[f'{average}_avg'] = {'precision': float(p), 'recall': float(r), 'f1': float(f),
                                'support': int(len(labels))}
  record['top1'] = float(np.mean(labels == predictions))
  record['confusion_matrix'] = sk_metrics.confusion_matrix(labels, predictions,
                                                           labels=classes).tolist()
  return record


def plot_diagnostics(workdir: str, scalars: dict[str, list[tuple[int, float]]],
                     directory: epath.Path, compare: str | None = None) -> dict[str, epath.Path]:
  """The diagnostics figures of a run (and of `compare`'s responses); {} without data."""
  written = {}
  path = directory / 'diagnostics_grad_norm.png'
  if diagnostics_plots.plot_grad_norms(scalars, path):
    written['diagnostics_grad_norm'] = path
  runs = {workdir_lib.read_config(workdir).model: diagnostics_plots.last_responses(scalars)}
  if compare is not None:
    runs[f'{workdir_lib.read_config(compare).model} ({compare})'] = (
        diagnostics_plots.last_responses(read_scalars(compare)))
  path = directory / 'diagnostics_response_std.png'
  if diagnostics_plots.plot_response_stds(runs, path):
    written['diagnostics_response_std'] = path
  return written


def write_report(workdir: str, *, step: int | None = None, weights: str = 'auto',
                 compare: str | None = None, split: str | None = None) -> dict[str, Any]:
  """Evaluates a checkpoint of `workdir` and writes the report files into it.

  Args:
    workdir: a run's workdir (config.json, model_info.json, checkpoints/).
    step: the checkpoint; None for the newest.
    weights: 'auto' (the EMA if the run kept one), 'ema' or 'live'.
    compare: another run's workdir whose response stds are drawn beside this one's.
    split: the split to evaluate (a split spec of the run's dataset, e.g. 'train[:1000]',
      or an image folder's split folder); None for the run's evaluation split.

  Returns:
    {'paths': {name: path written}, 'metrics': what metrics.json holds}.

  Raises:
    ConfigError: no config.json / model_info.json / checkpoint there, an unknown step or
      weights, or the run's dataset cannot be read.
  """
  config = workdir_lib.read_config(workdir)
  if split is not None:
    config.dataset.eval_split = split
  restored = trained.restore(workdir, step=step, weights=weights)
  used = restored.weights
  labels, predictions = predict_split(restored, config)
  class_names = restored.info.class_names
  record = {'workdir': str(workdir_lib.path(workdir)), 'step': restored.step, 'weights': used,
            'split': config.dataset.eval_split, 'num_examples': int(len(labels)),
            **class_metrics(labels, predictions, class_names)}

  name = f'step{restored.step}_{used}'
  if split is not None:  # 'train[:1000]' -> '_train_to1000', 'train[1000:]' -> '_train_1000to'
    readable = split.replace('[', '_').replace(']', '').replace(':', 'to')
    name += '_' + re.sub(r'[^A-Za-z0-9%.+_-]', '_', readable)
  directory = workdir_lib.path(workdir) / REPORT_DIR / name
  directory.mkdir(parents=True, exist_ok=True)
  paths = {'report': directory / 'classification_report.txt',
           'metrics': directory / 'metrics.json',
           'confusion_matrix': directory / 'confusion_matrix.png'}
  table = sk_metrics.classification_report(labels, predictions, labels=range(len(class_names)),
                                           target_names=class_names, digits=4, zero_division=0)
  paths['report'].write_text(
      f'{workdir}: step {restored.step}, {used} weights, split {record["split"]!r} '
      f'({record["num_examples"]} examples), top1 {record["top1"]:.4f}\n\n{table}')
  paths['metrics'].write_text(json.dumps(record, indent=2))
  plot_confusion_matrix(np.asarray(record['confusion_matrix']), class_names,
                        paths['confusion_matrix'])
  scalars = read_scalars(workdir)
  paths |= plot_curves(scalars, directory)
  paths |= plot_diagnostics(workdir, scalars, directory, compare)
  return {'paths': {name: str(path) for name, path in paths.items()}, 'metrics': record}


def main(argv: list[str]) -> None:
  from absl import flags  # noqa: PLC0415

  from resnet_jax import console  # noqa: PLC0415
  del argv
  console.quiet_libraries()  # orbax logs a dozen INFO lines per restore
  values = flags.FLAGS
  try:
    result = write_report(values.workdir, step=values.step, weights=values.weights,
                          compare=values.compare, split=values.split)
  except ConfigError as error:
    sys.exit(f'error: {error}')
  record = result['metrics']
  print(f'step {record["step"]}, {record["weights"]} weights: top1 {record["top1"]:.4f} on '
        f'{record["num_examples"]} examples of {record["split"]!r}')
  for path in result['paths'].values():
    print(f'wrote {path}')


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_string('workdir', None, 'The run to report on (resnet_jax.main --workdir).')
  flags.DEFINE_integer('step', None, 'The checkpoint step; default: the newest.')
  flags.DEFINE_string('weights', 'auto', f'Which weights: {", ".join(trained.WEIGHTS)}.')
  flags.DEFINE_string('compare', None, 'Another run (e.g. the plain twin) whose layer '
                      'responses are drawn beside this one\'s.')
  flags.DEFINE_string('split', None, "The split to evaluate, e.g. train[:1000] or a folder's "
                      "split name; default: the run's dataset.eval_split.")
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
