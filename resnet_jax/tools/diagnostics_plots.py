"""Figures of the diagnostics (resnet_jax/diagnostics.py) and of the degradation experiment.

Each function takes what tools.report.read_scalars returns (tag → [(step, value)]) for
one or more runs and writes one PNG:

- plot_grad_norms: gradient norm against block depth, one line per logged step;
- plot_response_stds: each 3×3 layer's response std against its index (He et al.
  2015, Fig. 7), one line per run, plain dashed and residual solid;
- plot_degradation: training and test error against step for several nets (Fig. 6).
"""

import io
from typing import Iterable, Mapping, Sequence

from etils import epath
from matplotlib import colormaps
from matplotlib.figure import Figure

from resnet_jax import diagnostics

Scalars = Mapping[str, list[tuple[int, float]]]
_GRAD = f'{diagnostics.PREFIX}/grad_norm/'
_RESPONSE = f'{diagnostics.PREFIX}/response_std/'


def save_png(figure: Figure, path: epath.Path) -> None:
  """The figure as a PNG at `path` (local or gs://)."""
  buffer = io.BytesIO()  # via bytes, so gs:// workdirs work too
  figure.savefig(buffer, format='png', dpi=100, bbox_inches='tight')
  epath.Path(path).write_bytes(buffer.getvalue())


def line_style(label: str) -> str:
  """Plain nets dashed, residual nets solid (the paper's convention)."""
  return '--' if label.startswith('plain') else '-'


def layer_order(names: Iterable[str]) -> list[str]:
  """Response names '<block>/conv<i>' sorted input first."""
  return sorted(names, key=lambda name: (diagnostics.depth_key(name.split('/')[0]), name))


def response_layers(scalars: Scalars) -> list[str]:
  """The response names of a run's logged tags, input first: '<block>/conv<i>'."""
  return layer_order(tag.removeprefix(_RESPONSE) for tag in scalars if tag.startswith(_RESPONSE))


def last_responses(scalars: Scalars) -> list[float]:
  """The newest logged response std of each 3×3 layer, input first."""
  return [scalars[_RESPONSE + name][-1][1] for name in response_layers(scalars)]


def plot_grad_norms(scalars: Scalars, path: epath.Path, title: str = '') -> bool:
  """Gradient norm of each block against its depth, coloured by step; False if no data."""
  blocks = diagnostics.depth_order(tag.removeprefix(_GRAD) for tag in scalars
                                   if tag.startswith(_GRAD) and not tag.endswith('/total'))
  if not blocks:
    return False
  steps = sorted({step for block in blocks for step, _ in scalars[_GRAD + block]})
  figure = Figure(figsize=(8, 4.5))
  axes = figure.add_subplot()
  colours = colormaps['viridis']
  for index, step in enumerate(steps):
    values = [dict(scalars[_GRAD + block]).get(step) for block in blocks]
    axes.plot(range(len(blocks)), values, color=colours(index / max(len(steps) - 1, 1)),
              marker='.', label=f'step {step}' if index in (0, len(steps) - 1) else None)
  axes.set_xticks(range(len(blocks)), blocks, rotation=90, fontsize=7)
  axes.set_yscale('log')
  axes.set_xlabel('block (input → output)')
  axes.set_ylabel('gradient L2 norm')
  axes.set_title(title or 'gradient norm per block over training (dark: early, light: late)')
  axes.grid(alpha=0.3)
  axes.legend()
  save_png(figure, path)
  return True


def plot_response_stds(runs: Mapping[str, Sequence[float]], path: epath.Path,
                       subtitle: str = 'newest logged training step') -> bool:
  """Std of each 3×3 layer's response against layer index, one line per run (label →
  stds, input first). False if no run has responses."""
  present = {label: values for label, values in runs.items() if len(values)}
  if not present:
    return False
  figure = Figure(figsize=(8, 4.5))
  axes = figure.add_subplot()
  for index, (label, values) in enumerate(present.items()):
    axes.plot(range(1, len(values) + 1), values, line_style(label), label=label,
              color=f'C{index // 2 if len(present) > 2 else index}')
  axes.set_xlabel('3×3 layer index (input → output)')
  axes.set_ylabel('std of response (after BN, before ReLU / addition)')
  axes.set_title(f'layer responses, {subtitle} (He et al. 2015, Fig. 7)')
  axes.grid(alpha=0.3)
  axes.legend()
  save_png(figure, path)
  return True


def plot_degradation(curves: Mapping[str, Mapping[str, list[tuple[int, float]]]],
                     path: epath.Path) -> None:
  """Training (left) and test (right) error in % against step; curves: model name →
  {'train': [(step, error)], 'test': [(step, error)]}, plain dashed, residual solid,
  one colour per depth."""
  figure = Figure(figsize=(12, 4.5))
  depths = sorted({name.removeprefix('plain').removeprefix('resnet') for name in curves},
                  key=int)
  for column, (kind, title) in enumerate((('train', 'training error'),
                                          ('test', 'test error'))):
    axes = figure.add_subplot(1, 2, column + 1)
    for name, curve in curves.items():
      if not curve.get(kind):
        continue
      steps, errors = zip(*curve[kind])
      depth = name.removeprefix('plain').removeprefix('resnet')
      axes.plot(steps, [100 * e for e in errors], line_style(name), label=name,
                color=f'C{depths.index(depth)}', marker='.' if kind == 'test' else None)
    axes.set_xlabel('step')
    axes.set_ylabel(f'{title} (%)')
    axes.set_title(f'{title}: plain dashed, residual solid')
    axes.set_ylim(0, None)
    axes.grid(alpha=0.3)
    axes.legend()
  save_png(figure, path)
