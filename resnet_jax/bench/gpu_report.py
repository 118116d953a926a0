"""The GPU benchmark's report (bench/gpu_benchmark.py): from the children's figures, the
analytic FLOPs, MFU against the datasheet and the measured matmul, XLA's count where it
counts, the same-run ratios against torchvision, the goals, and the printed table."""

from typing import Any

from resnet_jax.bench.flop_count import XLA_COUNT_SHOWN_FROM, training_flops, xla_count_shown
from resnet_jax.bench.gpu_torch_rows import TORCH_MODES

# Dense bfloat16 tensor-core peaks in FLOP/s, from the vendors' datasheets (NVIDIA H100
# and H200 Tensor Core GPU, A100, L4, L40S, B200 datasheets: "BF16 Tensor Core",
# without sparsity; Google Cloud TPU system architecture pages). The first match wins.
BF16_SPEC_PEAKS = (
    ('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H100', 989e12), ('H200', 989e12),
    ('B200', 2250e12), ('A100', 312e12), ('L40S', 362e12), ('L4', 121e12),
    ('TPU v4', 275e12), ('TPU v5 lite', 197e12), ('TPU v5', 459e12), ('TPU v6 lite', 918e12),
)
GOALS = {'h200_images_per_sec': 7900.0, 'vs_torch_compile': 1.15,
         'fresh_seconds_to_first_step': 20.0, 'cached_seconds_to_first_step': 5.0}


def spec_peak(device_kind: str) -> float | None:
  """The device's dense bfloat16 peak from BF16_SPEC_PEAKS, or None if not listed."""
  return next((peak for name, peak in BF16_SPEC_PEAKS if name in device_kind), None)


def _fraction(flops: float | None, seconds: float | None, peak: float | None) -> float | None:
  return flops / seconds / peak if flops and seconds and peak else None


def _images_per_sec(row: dict[str, Any]) -> float | None:
  return row.get('pipelined_images_per_sec') or row.get('torch_pipelined_images_per_sec')


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
  """The goals, each {'goal', 'status': met | not met | unmeasured, 'value', 'why'}."""
  gpu = report.get('backend') == 'gpu'
  rows = {row['variant']: row for row in report.get('rows', []) if 'error' not in row}
  plain = rows.get('plain', {})
  device = report.get('device') or 'unknown'

  def judge(goal: str, value: float | None, target: float, higher: bool, unit: str,
            why_unmeasured: str | None) -> dict[str, Any]:
    if not gpu:
      why_unmeasured = f'{report.get("backend")} backend: the goals are for a GPU'
    if why_unmeasured or value is None:
      return {'goal': goal, 'status': 'unmeasured', 'value': value,
              'why': why_unmeasured or 'no measurement'}
    met = value >= target if higher else value <= target
    return {'goal': goal, 'status': 'met' if met else 'not met', 'value': value,
            'why': unit.format(value)}

  per_device = plain.get('images_per_sec_per_device')
  return [
      judge(f'>= {GOALS["h200_images_per_sec"]:,.0f} img/s per H200 (plain recipe step)',
            per_device, GOALS['h200_images_per_sec'], True, '{:,.0f} img/s per device',
            None if 'H200' in device else f'device is {device}, not an H200'),
      judge(f'>= {GOALS["vs_torch_compile"]:.2f}x torch.compile (images/s)',
            report.get('ratio_vs_torch_compile'), GOALS['vs_torch_compile'], True, '{:.2f}x',
            None),
      judge(f'<= {GOALS["fresh_seconds_to_first_step"]:.0f} s to the first step, fresh',
            report.get('seconds_to_first_step', {}).get('fresh'),
            GOALS['fresh_seconds_to_first_step'], False, '{:.1f} s', None),
      judge(f'<= {GOALS["cached_seconds_to_first_step"]:.0f} s to the first step, cached',
            report.get('seconds_to_first_step', {}).get('cached'),
            GOALS['cached_seconds_to_first_step'], False, '{:.1f} s', None),
  ]


def derive(report: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Fills `report` from the children's figures (report['matmul'], report['cached_run']
  and `rows`): device, analytic FLOPs, MFU, XLA's count where it counts, ratios, goals."""
  matmul = report['matmul']
  plain = next((row for row in rows if row['variant'] == 'plain'), {})
  # The model's MACs, from the first recipe row measured.
  reference = next((row for row in rows if 'macs_per_image' in row and
                    row['variant'] != 'cifar'), {})
  device = matmul.get('device', reference.get('device', 'unknown'))
  num_devices = matmul.get('num_devices', reference.get('num_devices', 1))
  report.update(device=device, num_devices=num_devices, backend=matmul.get('backend'),
                jax_version=matmul.get('jax_version'), spec_peak_flops_per_sec=spec_peak(device),
                matmul_flops_per_sec=matmul.get('matmul_flops_per_sec'))
  macs = reference.get('macs_per_image')
  batch = reference.get('batch_size')
  report['flops'] = {'formula': '3 × 2 × MACs per image × batch', 'macs_per_image': macs,
                     'batch_size': batch, 'source': 'resnet_jax.tools.summary.summarize',
                     'training_flops_per_step': training_flops(macs, batch) if macs else None}
  for row in rows:
    if 'error' in row:
      continue
    torch = row['variant'].startswith('torch_')
    devices = 1 if torch else row['num_devices']
    row_macs = row['macs_per_image'] if row['variant'] == 'cifar' else macs
    row_flops = training_flops(row_macs, row['batch_size']) if row_macs else None
    seconds = row['torch_pipelined_step_seconds' if torch else 'pipelined_step_seconds']
    row['images_per_sec_per_device'] = row['batch_size'] / seconds / devices
    row['analytic_flops_per_step'] = row_flops
    # The CIFAR step runs in float32: a bfloat16 utilisation would mean nothing.
    bf16 = row['variant'] != 'cifar'
    spec = report['spec_peak_flops_per_sec']
    mm = report['matmul_flops_per_sec']
    row['mfu_spec'] = _fraction(row_flops, seconds, spec and bf16 and spec * devices)
    row['mfu_matmul'] = _fraction(row_flops, seconds, mm and bf16 and mm * devices)
    xla = None if torch else row.get('xla_flops_per_step')
    row['xla_flops_per_step'] = xla
    row['xla_fraction_of_analytic'] = xla / row_flops if xla and row_flops else None
    row['xla_count_shown'] = xla_count_shown(xla, row_flops)
  by_variant = {row['variant']: row for row in rows if 'error' not in row}
  ours = by_variant.get('plain', {}).get('images_per_sec_per_device')
  for mode in TORCH_MODES:
    theirs = by_variant.get(f'torch_{mode}', {}).get('images_per_sec_per_device')
    if ours and theirs:
      report[f'ratio_vs_torch_{mode}'] = ours / theirs
  cached = report.get('cached_run', {})
  report['seconds_to_first_step'] = {
      'fresh': plain.get('seconds_to_first_step'),
      'cached': cached.get('seconds_to_first_step'),
      'cached_error': cached.get('error'),
      'cache_files_after_fresh_run': plain.get('compilation_cache_files')}
  report['rows'] = rows
  report['goals'] = goals(report)
  return report


def _cell(value: float | None, template: str) -> str:
  return 'n/a' if value is None else template.format(value)


def _row_name(row: dict[str, Any], report: dict[str, Any]) -> str:
  variant = row['variant']
  if variant.startswith('torch_'):
    mode = 'eager' if variant == 'torch_eager' else 'torch.compile'
    backend = row.get('torch_compile_backend')
    if backend and backend != 'inductor':
      mode += f' ({backend})'
    return f'torchvision {mode}'
  if variant == 'cifar':
    return (f'CIFAR {row.get("model", "")} {row.get("dtype", "")} b{row.get("batch_size", "")} '
            f'{row.get("image_size", "")}²')
  return f'recipe {variant}'


def print_report(report: dict[str, Any]) -> None:
  """The report as a table, its formulas, ratios and goals, on stdout."""
  plain = next((r for r in report['rows'] if r['variant'] == 'plain' and 'error' not in r), {})
  print(f'resnet-jax GPU benchmark, {report["date"]}: {report["num_devices"]}× '
        f'{report["device"]} ({report["backend"]}), jax {report["jax_version"]}, '
        f'torch {report["versions"].get("torch")}')
  if plain:
    print(f'recipe {report["config"]}: {plain["model"]} {plain["dtype"]}, '
          f'{plain["batch_size"] // report["num_devices"]} images per device '
          f'(batch {plain["batch_size"]}), {plain["image_size"]}², BN groups of '
          f'{plain["bn_group_size"] or "the whole batch"}, {plain["loss"]} loss with label '
          f'smoothing {plain["label_smoothing"]}, {plain["optimizer"]} momentum '
          f'{plain["momentum"]} weight decay {plain["weight_decay"]:.3g} '
          f'(skipping {plain["weight_decay_skip"]})')
  matmul = report['matmul']
  if 'error' in matmul:
    print(f'bf16 matmul: failed: {matmul["error"]}')
  spec = report['spec_peak_flops_per_sec']
  mm = report['matmul_flops_per_sec']
  print(f'bf16 matmul {matmul.get("size")}² (random normal operands): '
        f'{_cell(mm and mm / 1e12, "{:.1f}")} TFLOP/s measured; spec peak '
        f'{_cell(spec and spec / 1e12, "{:.0f}")} TFLOP/s (dense bf16, datasheet)')
  flops = report['flops']
  if flops['training_flops_per_step']:
    print(f'training FLOPs per step = 3 × 2 × MACs per image × batch = 3 × 2 × '
          f'{flops["macs_per_image"] / 1e9:.3f} G × {flops["batch_size"]} = '
          f'{flops["training_flops_per_step"]:.3e} (MACs: resnet_jax.tools.summary; the '
          'same count for every variant and for torchvision)')
  header = (f'{"workload":40} {"img/s":>9} {"step ms":>8} {"compile s":>9} {"peak GiB":>8} '
            f'{"MFU spec":>8} {"MFU mm":>7}  XLA FLOPs/analytic')
  print(header)
  for row in report['rows']:
    name = _row_name(row, report)
    if 'error' in row:
      print(f'{name:40} failed: {row["error"]}')
      continue
    torch = row['variant'].startswith('torch_')
    seconds = row['torch_pipelined_step_seconds' if torch else 'pipelined_step_seconds']
    peak = row.get('torch_device_peak_bytes' if torch else 'device_peak_bytes')
    compile_seconds = row.get('torch_compile_seconds') if torch else row['compile_seconds']
    if torch:
      xla = '-'
    elif row['xla_count_shown']:
      xla = f'{row["xla_fraction_of_analytic"]:.2f}'
    else:
      xla = 'not counted (custom calls)'
    print(f'{name:40} {_images_per_sec(row):9,.1f} {seconds * 1e3:8.1f} '
          f'{_cell(compile_seconds, "{:.1f}"):>9} {_cell(peak and peak / 2**30, "{:.2f}"):>8} '
          f'{_cell(row["mfu_spec"] and 100 * row["mfu_spec"], "{:.1f} %"):>8} '
          f'{_cell(row["mfu_matmul"] and 100 * row["mfu_matmul"], "{:.1f} %"):>7}  {xla}')
  print(f'MFU = analytic training FLOPs per step / back-to-back step seconds / peak; XLA\'s '
        f'cost_analysis() count is shown only where it reaches '
        f'{XLA_COUNT_SHOWN_FROM:.0%} of the analytic count')
  first = report['seconds_to_first_step']
  cached = (f'{first["cached"]:.1f} s' if first['cached'] is not None
            else f'n/a ({first["cached_error"] or "not run"})')
  print(f'seconds to the first step (child start → end of step 1; persistent compilation '
        f'cache in a temporary directory): fresh {_cell(first["fresh"], "{:.1f} s")}, '
        f'cached {cached}')
  ratios = [f'ours / torch.compile {report["ratio_vs_torch_compile"]:.2f}x'
            if 'ratio_vs_torch_compile' in report else 'ours / torch.compile n/a',
            f'ours / eager {report["ratio_vs_torch_eager"]:.2f}x'
            if 'ratio_vs_torch_eager' in report else 'ours / eager n/a']
  print('same-run ratios (images/s per device, plain recipe step): ' + ', '.join(ratios))
  print('goals:')
  for goal in report['goals']:
    print(f'  {goal["goal"]}: {goal["status"]} ({goal["why"]})')
  print(f'total {report["seconds"]:.0f} s')

