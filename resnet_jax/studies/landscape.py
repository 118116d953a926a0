"""Loss landscapes of plain and residual nets (Li et al. 2018, "Visualizing the Loss
Landscape of Neural Nets", arXiv:1712.09913) as one command.

  python -m resnet_jax.studies.landscape --workdir=DIR [--config=configs/degradation_digits.py]
      [--models=plain56,resnet56] [--config.study.landscape_points=21 ...]

DIR is a degradation workdir (python -m resnet_jax.studies.degradation --workdir=DIR): each
plainN / resnetN run under it is evaluated at θ + αδ + βη for two filter-normalised random
directions δ, η (studies/directions.py), α, β on a grid of `study.landscape_points` over
[−range, range], on the first `study.landscape_examples` of the training split, in
evaluation mode; and along δ alone (the 1-D interpolation, the same α). Writes

- DIR/landscape.json: per net: the grid (loss, error), the 1-D curve, the loss at the
  centre (θ itself), and the surface's shape figures (surface_shape);
- DIR/landscape_<depth>.png: contour and surface of plainN and resnetN side by side
  (the paper's Fig. 5);
- DIR/interpolation.png: the 1-D curves of every net;

and prints the table. --config=configs/cifar10_degradation.py has the paper's settings.
"""

import json
import time
from typing import Any, Sequence

import numpy as np

from resnet_jax.studies import command

RESULTS_FILE = 'landscape.json'
INTERPOLATION_FILE = 'interpolation.png'


def surface_figure(depth: int) -> str:
  return f'landscape_{depth}.png'


def surface_shape(loss: np.ndarray, span: float) -> dict[str, float]:
  """Figures of a loss grid's shape (square, odd side, centre = the trained weights).

  rise_r: the mean loss over the grid points within radius r × span of the centre,
  minus the centre's (how fast the loss leaves the minimum); local_minima: strict
  minima among each interior point's 8 neighbours (1 for a single basin);
  negative_curvature: the share of interior points whose finite-difference Hessian of
  the 2-D surface has an eigenvalue below −1 % of its largest in size (0 for a convex
  surface; the 2-D stand-in for the paper's |λ_min / λ_max| map).
  """
  side = loss.shape[0]
  coords = np.linspace(-1.0, 1.0, side)
  radius = np.hypot(*np.meshgrid(coords, coords, indexing='ij'))
  centre = loss[side // 2, side // 2]
  shape = {f'rise_{r:g}': float(loss[radius <= r + 1e-9].mean() - centre)
           for r in (0.25, 0.5, 1.0)}
  inner = loss[1:-1, 1:-1]
  neighbours = np.stack([loss[1 + di:side - 1 + di, 1 + dj:side - 1 + dj]
                         for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)])
  shape['local_minima'] = int((inner < neighbours.min(axis=0)).sum())
  step = 2 * span / (side - 1)
  d_aa = (loss[2:, 1:-1] - 2 * inner + loss[:-2, 1:-1]) / step**2
  d_bb = (loss[1:-1, 2:] - 2 * inner + loss[1:-1, :-2]) / step**2
  d_ab = (loss[2:, 2:] - loss[2:, :-2] - loss[:-2, 2:] + loss[:-2, :-2]) / (4 * step**2)
  mean, gap = (d_aa + d_bb) / 2, np.sqrt(((d_aa - d_bb) / 2)**2 + d_ab**2)
  low, high = mean - gap, mean + gap
  size = np.maximum(np.abs(low), np.abs(high))
  shape['negative_curvature'] = float((low < -0.01 * size).mean())
  return shape


def net_landscape(net: Any, images: np.ndarray, labels: np.ndarray,
                  study: Any) -> dict[str, Any]:
  """One net's 1-D curve and 2-D grid, and the surface's shape."""
  import jax  # noqa: PLC0415

  from resnet_jax.studies import directions, nets  # noqa: PLC0415
  params = net.restored.variables['params']
  key = jax.random.key(study.seed)
  first = directions.random_direction(params, jax.random.fold_in(key, 0))
  second = directions.random_direction(params, jax.random.fold_in(key, 1))

  def at(variables: Any, d1: Any, d2: Any, alpha: Any, beta: Any) -> Any:
    return variables | {'params': directions.moved(variables['params'],
                                                   ((alpha, d1), (beta, d2)))}

  evaluate = nets.evaluator(net, images, labels, batch_size=study.eval_batch_size,
                            transform=at)
  span = study.landscape_range
  coords = np.linspace(-span, span, study.landscape_points)
  grid = [[evaluate(first, second, np.float32(a), np.float32(b)) for b in coords]
          for a in coords]
  loss = np.array([[point[0] for point in row] for row in grid])
  error = np.array([[point[1] for point in row] for row in grid])
  centre = study.landscape_points // 2
  line = list(zip(loss[:, centre], error[:, centre]))  # β = 0: the 1-D interpolation
  return {'model': net.name, 'family': net.family, 'depth': net.depth,
          'coordinates': coords.tolist(),
          'centre_loss': float(loss[centre, centre]), 'centre_error': float(error[centre, centre]),
          'line_loss': [float(p[0]) for p in line], 'line_error': [float(p[1]) for p in line],
          'grid_loss': loss.tolist(), 'grid_error': error.tolist(),
          'surface_shape': surface_shape(loss, span)}


def run_landscape(config: Any, root: str, names: Sequence[str] | None = None
                  ) -> list[dict[str, Any]]:
  """Every net's landscape; writes the JSON and the figures; returns the rows."""
  from etils import epath  # noqa: PLC0415

  from resnet_jax.studies import nets  # noqa: PLC0415
  from resnet_jax.studies import plots  # noqa: PLC0415
  study = config.study
  names = nets.find_nets(root, names)
  loaded = [nets.load_net(root, name, config) for name in names]
  images, labels = nets.read_examples(config, config.dataset.train_split,
                                      study.landscape_examples)
  results = []
  for net in loaded:
    start = time.perf_counter()
    row = net_landscape(net, images, labels, study)
    row['examples'] = len(labels)
    row['seconds'] = round(time.perf_counter() - start, 1)
    results.append(row)
  out = epath.Path(root)
  (out / RESULTS_FILE).write_text(json.dumps(results))
  for depth in sorted({row['depth'] for row in results}):
    plots.plot_landscapes([r for r in results if r['depth'] == depth],
                                out / surface_figure(depth))
  plots.plot_interpolation(results, out / INTERPOLATION_FILE)
  return results


def format_table(results: Sequence[dict[str, Any]]) -> str:
  """The nets' centres and surface shapes as a Markdown table."""
  lines = [('| model | loss at θ | rise ≤ 0.25 | rise ≤ 0.5 | rise ≤ 1 | local minima | '
            'negative curvature | seconds |'), '|---|---:|---:|---:|---:|---:|---:|---:|']
  for r in results:
    s = r['surface_shape']
    lines.append(f'| {r["model"]} | {r["centre_loss"]:.3f} | {s["rise_0.25"]:.3f} | '
                 f'{s["rise_0.5"]:.3f} | {s["rise_1"]:.3f} | {s["local_minima"]} | '
                 f'{100 * s["negative_curvature"]:.0f} % | {r["seconds"]:.0f} |')
  return '\n'.join(lines)


main = command.main_for(run_landscape, format_table,
                        lambda rows: [RESULTS_FILE, 'landscape_<depth>.png', INTERPOLATION_FILE])


if __name__ == '__main__':
  command.start(main)
