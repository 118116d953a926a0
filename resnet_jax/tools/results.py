"""Final and best evaluation accuracy of runs, over seeds: the figures the README reports.

  python -m resnet_jax.tools.results WORKDIR [WORKDIR ...] [--format=text|json]

Per run, from its TensorBoard events: the last evaluation's top-1 (the final epoch's,
reported first) and the best one with its epoch beside it (how Zhong et al.'s script
reports: the best test epoch), the epochs trained and the median training images/s.
Over several runs: mean ± sample standard deviation of both. A resumed run's repeated
steps count once (the later point wins, as in TensorBoard).
"""

import json
import math
import statistics
import sys
from typing import Any


def read_scalars(workdir: Any) -> dict[str, list[tuple[int, float]]]:
  """Every scalar tag of the run's TensorBoard events: tag → [(step, value)] by step.

  Read by TensorBoard's own event reader. A resumed run logs some steps again (those
  after its last checkpoint): as in TensorBoard, the later run's points replace them.
  """
  # Imported here: TensorBoard's reader costs ~1 s of imports.
  from tensorboard.backend.event_processing import plugin_event_accumulator  # noqa: PLC0415
  from tensorboard.util import tensor_util  # noqa: PLC0415
  accumulator = plugin_event_accumulator.EventAccumulator(
      str(workdir), size_guidance={plugin_event_accumulator.TENSORS: 0})  # 0: keep every point
  accumulator.Reload()
  scalars = {}
  for tag in accumulator.Tags()[plugin_event_accumulator.TENSORS]:
    if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != 'scalars':
      continue  # text, images, histograms
    points = {event.step: float(tensor_util.make_ndarray(event.tensor_proto).reshape(()))
              for event in accumulator.Tensors(tag)}
    scalars[tag] = sorted(points.items())
  return scalars


def run_result(workdir: str, metric: str = 'eval/top1') -> dict[str, Any]:
  """{'workdir', 'final', 'final_step', 'best', 'best_step', 'evaluations',
  'images_per_sec'} of one run; ValueError if it has no `metric`."""
  tags = read_scalars(workdir)
  points = tags.get(metric, [])
  if not points:
    raise ValueError(f'{workdir}: no {metric} in its TensorBoard events (not evaluated yet?)')
  best_step, best = max(points, key=lambda point: (point[1], -point[0]))
  rates = [value for _, value in tags.get('train/images_per_sec', [])]
  return {'workdir': str(workdir), 'final': points[-1][1], 'final_step': points[-1][0],
          'best': best, 'best_step': best_step, 'evaluations': len(points),
          'images_per_sec': statistics.median(rates) if rates else math.nan}


def over_runs(results: list[dict[str, Any]]) -> dict[str, float]:
  """Mean and sample standard deviation (0 for one run) of 'final' and 'best'."""
  summary = {}
  for key in ('final', 'best'):
    values = [result[key] for result in results]
    summary[f'{key}_mean'] = statistics.fmean(values)
    summary[f'{key}_std'] = statistics.stdev(values) if len(values) > 1 else 0.0
  summary['runs'] = len(results)
  return summary


def describe(results: list[dict[str, Any]]) -> str:
  """Lines: one per run, then the mean ± std over runs."""
  lines = [f'{r["workdir"]}: final {100 * r["final"]:.2f} % (step {r["final_step"]}), best '
           f'{100 * r["best"]:.2f} % (step {r["best_step"]}), {r["evaluations"]} evaluations, '
           f'{r["images_per_sec"]:,.0f} img/s' for r in results]
  if len(results) > 1:
    s = over_runs(results)
    lines.append(f'{s["runs"]} runs: final {100 * s["final_mean"]:.2f} ± '
                 f'{100 * s["final_std"]:.2f} %, best {100 * s["best_mean"]:.2f} ± '
                 f'{100 * s["best_std"]:.2f} %')
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  formats = [a for a in argv if a.startswith('--format=')]
  workdirs = [a for a in argv if not a.startswith('--')]
  fmt = formats[-1].split('=', 1)[1] if formats else 'text'
  if fmt not in ('text', 'json') or not workdirs or len(formats) + len(workdirs) != len(argv):
    print('usage: python -m resnet_jax.tools.results WORKDIR [WORKDIR ...] '
          '[--format=text|json]', file=sys.stderr)
    return 2
  try:
    results = [run_result(workdir) for workdir in workdirs]
  except ValueError as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  if fmt == 'json':
    print(json.dumps({'runs': results, **over_runs(results)}, indent=1))
  else:
    print(describe(results))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
