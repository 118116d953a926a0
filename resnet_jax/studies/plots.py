"""Figures of the residual-network studies (resnet_jax.studies.landscape, resnet_jax.studies.lesion).

Each function takes the rows a study writes to its JSON and writes one PNG; plain nets
are dashed, residual nets solid, one colour per depth (as the degradation figures).
"""

from typing import Any, Sequence

import numpy as np
from etils import epath
from matplotlib import colors
from matplotlib.figure import Figure

from resnet_jax.tools.diagnostics_plots import line_style, save_png

Rows = Sequence[dict[str, Any]]
_LOSS_CLIP = 10.0  # Li et al. plot losses up to 10 (plot_2D.py's vmax)


def _colour(row: dict[str, Any], rows: Rows) -> str:
  depths = sorted({r['depth'] for r in rows})
  return f'C{depths.index(row["depth"])}'


def plot_landscapes(rows: Rows, path: epath.Path) -> None:
  """One row per net (plain first): the loss as filled contours and as a surface, both on
  a log scale shared by the nets and clipped at 10 (Li et al.'s plots stop there too)."""
  rows = sorted(rows, key=lambda r: r['family'] != 'plain')
  figure = Figure(figsize=(11, 4.6 * len(rows)))
  grids = [np.minimum(np.asarray(r['grid_loss']), _LOSS_CLIP) for r in rows]
  low = max(min(float(g.min()) for g in grids), 1e-3)
  levels = np.geomspace(low, _LOSS_CLIP, 22)
  decades = [10.0**e for e in range(int(np.floor(np.log10(low))), 2)
             if low <= 10.0**e <= _LOSS_CLIP]
  for index, (row, loss) in enumerate(zip(rows, grids)):
    coords = np.asarray(row['coordinates'])
    alpha, beta = np.meshgrid(coords, coords, indexing='ij')
    contour = figure.add_subplot(len(rows), 2, 2 * index + 1)
    # A norm per panel: a shared one would let each colour bar reset the others' labels.
    filled = contour.contourf(alpha, beta, loss, levels=levels,
                              norm=colors.LogNorm(low, _LOSS_CLIP), cmap='viridis')
    contour.contour(alpha, beta, loss, levels=levels, colors='white', linewidths=0.3)
    contour.plot([0], [0], 'r+', markersize=12)
    contour.set_aspect('equal')
    contour.set_xlabel('α (direction δ)')
    contour.set_ylabel('β (direction η)')
    contour.set_title(f'{row["model"]}: training loss (+: trained weights)')
    bar = figure.colorbar(filled, ax=contour, shrink=0.8)
    bar.set_ticks(decades, labels=[f'{d:g}' for d in decades])
    bar.minorticks_off()
    surface = figure.add_subplot(len(rows), 2, 2 * index + 2, projection='3d')
    surface.plot_surface(alpha, beta, np.log10(loss), cmap='viridis', norm=colors.Normalize(
        np.log10(low), np.log10(_LOSS_CLIP)), linewidth=0.2, edgecolor='0.3',
        rcount=loss.shape[0], ccount=loss.shape[1])
    surface.set_zlim(np.log10(low), np.log10(_LOSS_CLIP))
    surface.set_zticks(np.log10(decades))
    surface.set_zticklabels([f'{d:g}' for d in decades])
    surface.set_xlabel('α')
    surface.set_ylabel('β')
    surface.set_zlabel('loss (log scale)')
    surface.set_title(f'{row["model"]}: surface, clipped at {_LOSS_CLIP:g}')
  save_png(figure, path)


def plot_interpolation(rows: Rows, path: epath.Path) -> None:
  """Loss (log scale) and error along the first direction δ, every net."""
  figure = Figure(figsize=(12, 4.5))
  for column, (key, label) in enumerate((('line_loss', 'training loss'),
                                         ('line_error', 'training error (%)'))):
    axes = figure.add_subplot(1, 2, column + 1)
    for row in rows:
      values = np.asarray(row[key]) * (100 if key == 'line_error' else 1)
      axes.plot(row['coordinates'], values, line_style(row['model']), label=row['model'],
                color=_colour(row, rows))
    if key == 'line_loss':
      axes.set_yscale('log')
    axes.set_xlabel('α: θ + α δ (filter-normalised δ)')
    axes.set_ylabel(label)
    axes.set_title(f'{label} along one random direction')
    axes.grid(alpha=0.3)
    axes.legend()
  save_png(figure, path)


def plot_single_lesions(rows: Rows, path: epath.Path) -> None:
  """Veit et al.'s Fig. 3: test error after deleting each single unit, per depth, with
  each net's error intact (dotted) and the downsampling units marked."""
  depths = sorted({r['depth'] for r in rows})
  figure = Figure(figsize=(6.5 * len(depths), 4.5))
  for column, depth in enumerate(depths):
    axes = figure.add_subplot(1, len(depths), column + 1)
    for row in (r for r in rows if r['depth'] == depth):
      colour = 'C3' if row['family'] == 'plain' else 'C0'
      index = {name: i + 1 for i, name in enumerate(row['units'])}
      xs = [index[n] for n in row['single']]
      axes.plot(xs, [100 * e for e in row['single'].values()], line_style(row['model']),
                marker='.', color=colour, label=f'{row["model"]}, one unit deleted')
      axes.axhline(100 * row['error'], linestyle=':', color=colour,
                   label=f'{row["model"]} intact')
      for name in row['downsampling']:
        axes.axvline(index[name], color='0.6', linewidth=0.8)
    axes.set_xlabel('deleted unit (grey: downsampling units)')
    axes.set_ylabel('test error (%)')
    axes.set_ylim(0, 100)
    axes.set_title(f'depth {depth}: deleting one unit at test time')
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
  save_png(figure, path)


def plot_random_lesions(rows: Rows, path: epath.Path) -> None:
  """Veit et al.'s Fig. 5: test error against the number of units deleted at random
  (mean ± std over the draws), every net."""
  figure = Figure(figsize=(7, 4.5))
  axes = figure.add_subplot(1, 1, 1)
  for row in rows:
    ks = [0] + [r['k'] for r in row['random']]
    mean = np.array([row['error']] + [r['mean'] for r in row['random']]) * 100
    std = np.array([0.0] + [r['std'] for r in row['random']]) * 100
    colour = _colour(row, rows)
    axes.plot(ks, mean, line_style(row['model']), marker='.', color=colour, label=row['model'])
    axes.fill_between(ks, mean - std, mean + std, color=colour, alpha=0.15)
  axes.set_xlabel('units deleted at random (k)')
  axes.set_ylabel('test error (%)')
  axes.set_ylim(0, 100)
  axes.set_title('deleting k random units: plain dashed, residual solid')
  axes.grid(alpha=0.3)
  axes.legend()
  save_png(figure, path)


def plot_path_lengths(rows: Rows, path: epath.Path) -> None:
  """Veit et al.'s Fig. 6: (a) paths per length, (b) gradient magnitude at the input per
  path length, (c) the two multiplied: the total gradient per length; (b) and (c) with the
  10th-90th percentile band of the sampled paths' measurements."""
  figure = Figure(figsize=(16, 4.3))
  panels = (('counts', 'share of the 2^n paths (%)', '(a) path length distribution'),
            ('gradient', 'gradient magnitude at the input', '(b) gradient per path'),
            ('total_gradient', 'total gradient magnitude', '(c) total gradient per length'))
  for column, (key, label, title) in enumerate(panels):
    axes = figure.add_subplot(1, 3, column + 1)
    for row in rows:
      values = np.asarray(row['paths'][key], dtype=float)
      if key == 'counts':
        values = 100 * values / values.sum()
      axes.plot(range(len(values)), values, marker='.', color=_colour(row, rows),
                label=f'{row["model"]} ({len(row["units"])} units)')
      if key != 'counts' and 'gradient_p10' in row['paths']:
        # The spread of the measurements: 10th to 90th percentile over the sampled paths.
        scale = (np.asarray(row['paths']['counts'], dtype=float) if key == 'total_gradient'
                 else 1.0)
        axes.fill_between(range(len(values)),
                          scale * np.asarray(row['paths']['gradient_p10'], dtype=float),
                          scale * np.asarray(row['paths']['gradient_p90'], dtype=float),
                          color=_colour(row, rows), alpha=0.2, linewidth=0)
    if key == 'gradient':
      axes.set_yscale('log')
    axes.set_xlabel('path length (branches passed)')
    axes.set_ylabel(label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
  save_png(figure, path)
