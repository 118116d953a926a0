"""Lesion study and path lengths of plain and residual nets (Veit et al. 2016, "Residual
Networks Behave Like Ensembles of Relatively Shallow Networks", arXiv:1605.06431).

  python -m resnet_jax.studies.lesion --workdir=DIR [--config=configs/degradation_digits.py]
      [--models=plain56,resnet56] [--config.study.lesion_draws=10 ...]

DIR is a degradation workdir. For each plainN / resnetN run under it, on the config's
evaluation split (the first `study.lesion_examples`; 0: all), in evaluation mode:

- single deletions (the paper's Fig. 3): the test error after deleting each unit alone.
  A residual unit loses its branch and keeps its shortcut (downsampling units included:
  their shortcut subsamples); a plain unit is replaced by the identity, possible only
  where it keeps the shape (not the downsampling units);
- random deletions (Fig. 5): the error after deleting k random units, k = 1..m, over
  `study.lesion_draws` draws, from the units both families can lose (the m units that
  keep the shape), so plain and residual nets are compared on the same deletions;
- path lengths (Fig. 6) of the residual nets: how many of the 2^n paths have each
  length, the gradient magnitude that paths of each length carry to the first unit's
  input (`study.path_draws` sampled paths per length, each on its own batch of
  `study.path_examples` training examples), and that times the number of paths (the
  total per length).

Writes DIR/lesion.json, DIR/lesion_single.png, DIR/lesion_random.png and
DIR/path_lengths.png, and prints the table.
"""

import json
import time
from typing import Any, Sequence

import numpy as np

from resnet_jax.studies import command

RESULTS_FILE = 'lesion.json'
SINGLE_FILE = 'lesion_single.png'
RANDOM_FILE = 'lesion_random.png'
PATHS_FILE = 'path_lengths.png'


def net_lesions(net: Any, images: np.ndarray, labels: np.ndarray, study: Any
                ) -> dict[str, Any]:
  """One net's errors with no unit, each single unit and k random units deleted."""
  import jax.numpy as jnp  # noqa: PLC0415

  from resnet_jax.studies import nets, paths  # noqa: PLC0415
  variables = net.restored.variables
  names = paths.unit_names(variables['params'])
  reshaping = paths.reshaping_units(net.model, variables, net.restored.info.image_shape)
  deletable = [n for n in names if net.family == 'resnet' or n not in reshaping]
  shared = [n for n in names if n not in reshaping]
  evaluate = nets.evaluator(
      net, images, labels, batch_size=study.eval_batch_size,
      transform=lambda v, keep: paths.with_paths(v, deletable, keep))

  def error_without(deleted: Sequence[str]) -> float:
    keep = jnp.asarray([0.0 if n in deleted else 1.0 for n in deletable], jnp.float32)
    return evaluate(keep)[1]

  rng = np.random.default_rng(study.seed)
  random = []
  for k in range(1, len(shared) + 1):
    subsets = paths.random_subsets(shared, k, study.lesion_draws, rng)
    errors = [error_without(subset) for subset in subsets]
    random.append({'k': k, 'mean': float(np.mean(errors)), 'std': float(np.std(errors)),
                   'errors': errors, 'deleted': subsets})
  return {'model': net.name, 'family': net.family, 'depth': net.depth, 'units': names,
          'downsampling': sorted(reshaping, key=names.index),
          'error': error_without([]),
          'single': {n: error_without([n]) for n in deletable},
          'random': random}


def run_lesion(config: Any, root: str, names: Sequence[str] | None = None
               ) -> list[dict[str, Any]]:
  """Every net's lesions and the residual nets' path lengths; writes the JSON and the
  figures; returns the rows."""
  from etils import epath  # noqa: PLC0415

  from resnet_jax.studies import nets, paths  # noqa: PLC0415
  from resnet_jax.studies import plots  # noqa: PLC0415
  study = config.study
  names = nets.find_nets(root, names)
  loaded = [nets.load_net(root, name, config) for name in names]
  images, labels = nets.read_examples(config, config.dataset.eval_split,
                                      study.lesion_examples)
  path_images = path_labels = None
  if any(net.family == 'resnet' for net in loaded):
    # A batch of its own for each sampled path (the paper measures on random batches).
    path_images, path_labels = nets.read_examples(config, config.dataset.train_split,
                                                  study.path_examples * study.path_draws)
  results = []
  for net in loaded:
    start = time.perf_counter()
    row = net_lesions(net, images, labels, study)
    row['examples'] = len(labels)
    if net.family == 'resnet':
      units = len(row['units'])
      norms = paths.gradient_by_path_length(net, path_images, path_labels,
                                            study.path_draws, study.seed)
      counts = paths.path_length_counts(units)
      row['paths'] = {'counts': counts, 'draws': study.path_draws,
                      **paths.path_gradient_summary(norms, counts, seed=study.seed)}
    row['seconds'] = round(time.perf_counter() - start, 1)
    results.append(row)
  out = epath.Path(root)
  (out / RESULTS_FILE).write_text(json.dumps(results, indent=1))
  plots.plot_single_lesions(results, out / SINGLE_FILE)
  plots.plot_random_lesions(results, out / RANDOM_FILE)
  if any('paths' in row for row in results):
    plots.plot_path_lengths([r for r in results if 'paths' in r], out / PATHS_FILE)
  return results


def effective_lengths(total: Sequence[float], share: float = 0.9) -> tuple[int, int]:
  """The shortest window of path lengths [lo, hi] that carries `share` of the total
  gradient (the paper's "effective paths")."""
  total = np.asarray(total)
  need = share * total.sum()
  best = (0, len(total) - 1)
  for lo in range(len(total)):
    reach = np.cumsum(total[lo:])
    hi = lo + int(np.searchsorted(reach, need))
    if hi < len(total) and hi - lo < best[1] - best[0]:
      best = (lo, hi)
  return best


def format_table(results: Sequence[dict[str, Any]]) -> str:
  """Per net: its error, single deletions (median and worst, downsampling units apart),
  k random deletions, the residual nets' effective path lengths."""
  lines = [('| model | error | one unit deleted: median / worst (downsampling) | '
            'k random deleted (k=1 / 3 / 5 / 10) | effective paths (90 % of gradient) | '
            'seconds |'), '|---|---:|---|---|---|---:|']
  for r in results:
    same_shape = [e for n, e in r['single'].items() if n not in r['downsampling']]
    down = [e for n, e in r['single'].items() if n in r['downsampling']]
    single = (f'{100 * np.median(same_shape):.1f} % / {100 * max(same_shape):.1f} %' +
              (f' ({", ".join(f"{100 * e:.1f} %" for e in down)})' if down else ''))
    by_k = {row['k']: row['mean'] for row in r['random']}
    randoms = ' / '.join(f'{100 * by_k[k]:.1f}' if k in by_k else '–' for k in (1, 3, 5, 10))
    paths_text = '–'
    if 'paths' in r:
      lo, hi = effective_lengths(r['paths']['total_gradient'])
      share = r['paths'].get('peak_share')
      peak = (f'; peak at {int(np.argmax(share))} in {100 * max(share):.0f} % of resamples'
              if share else '')
      paths_text = f'lengths {lo}–{hi} of {len(r["units"])}{peak}'
    lines.append(f'| {r["model"]} | {100 * r["error"]:.1f} % | {single} | {randoms} % | '
                 f'{paths_text} | {r["seconds"]:.0f} |')
  return '\n'.join(lines)


def written_files(rows: Sequence[dict[str, Any]]) -> list[str]:
  """The files run_lesion wrote: the path-length figure only with a residual net."""
  return [RESULTS_FILE, SINGLE_FILE, RANDOM_FILE] + (
      [PATHS_FILE] if any('paths' in row for row in rows) else [])


main = command.main_for(run_lesion, format_table, written_files)


if __name__ == '__main__':
  command.start(main)
