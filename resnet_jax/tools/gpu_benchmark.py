"""The accelerator check: one run that measures the trainer's step where users train.

  python -m resnet_jax.tools.gpu_benchmark [--batch_size=256] [--json=PATH]
  launch/gpu_benchmark.sh [BATCH_SIZE]     (the same, under a time limit)

Prints, for one device: ResNet-50 bfloat16 training images/s at the batch size, compile
seconds, peak device memory, and MFU against the device's bfloat16 spec peak and against
a bfloat16 matmul timed in the same run; the same with `remat` and with `scan_blocks`;
torchvision's ResNet-50 (channels_last, bfloat16 autocast) on the same device, and our
ratio to it; and the CIFAR ResNet-20 step at batch 128 (float32, as its configs train).

Each measurement runs in a child process of its own, so each peak memory is that
workload's alone and torch never shares the device with JAX's allocator. Images/s come
from steps issued back to back (the host runs ahead, as in training); the median of
steps timed one at a time is in the JSON too. MFU takes XLA's FLOP count of the plain
step as the model's work for all three variants (remat recomputes; a scanned loop body
is counted once).

Needs only JAX for the device, flax, optax and numpy, plus torch and torchvision for the
comparison (reported missing otherwise): no TensorFlow, tensorflow-datasets, clu,
ml-collections or jmp, so it runs on bare CUDA JAX images (NVIDIA's JAX containers,
cloud images, clusters without a package registry).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any

_PROCESS_START = time.perf_counter()

# Dense bfloat16 tensor-core peaks in FLOP/s, from the vendors' datasheets (NVIDIA H100
# and H200 Tensor Core GPU, A100, L4, L40S, B200 datasheets: "BF16 Tensor Core",
# without sparsity; Google Cloud TPU system architecture pages). The first match wins.
BF16_SPEC_PEAKS = (
    ('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H100', 989e12), ('H200', 989e12),
    ('B200', 2250e12), ('A100', 312e12), ('L40S', 362e12), ('L4', 121e12),
    ('TPU v4', 275e12), ('TPU v5 lite', 197e12), ('TPU v5', 459e12), ('TPU v6 lite', 918e12),
)
VARIANTS = ('plain', 'remat', 'scan_blocks')


def spec_peak(device_kind: str) -> float | None:
  """The device's dense bfloat16 peak from BF16_SPEC_PEAKS, or None if not listed."""
  return next((peak for name, peak in BF16_SPEC_PEAKS if name in device_kind), None)


def _jax_child(spec: dict[str, Any]) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import optax

  from resnet_jax import models, optim
  from resnet_jax.tools import step_benchmark
  if spec['kind'] == 'matmul':
    size = spec['size'] or (2048 if jax.default_backend() == 'cpu' else 8192)
    return {'matmul_flops_per_sec': step_benchmark.matmul_peak_flops(jnp.bfloat16, size=size),
            'size': size, 'device': jax.devices()[0].device_kind,
            'backend': jax.default_backend(), 'jax_version': jax.__version__}
  model = models.create_model(spec['model'], num_classes=spec['num_classes'],
                              dtype=spec['dtype'], remat=spec['variant'] == 'remat',
                              scan_blocks=spec['variant'] == 'scan_blocks')
  schedule = optax.cosine_decay_schedule(0.1, 10_000)
  # The ImageNet recipes' optimizer (configs/recipes.py); its cost is the same for any values.
  tx = optim.sgd(schedule, momentum=0.9, nesterov=False, weight_decay=1e-4)
  return step_benchmark.measure_step(
      model, tx, mode='train', batch_size=spec['batch_size'], image_size=spec['image_size'],
      num_classes=spec['num_classes'], learning_rate_fn=schedule,
      warmup_steps=spec['warmup_steps'], timed_steps=spec['timed_steps'],
      process_start=_PROCESS_START)


def _torch_child(spec: dict[str, Any]) -> dict[str, Any]:
  from resnet_jax.tools import torch_reference
  problem = torch_reference.available()
  if problem:
    raise RuntimeError(problem)
  return torch_reference.measure(spec['model'], mode='train', batch_size=spec['batch_size'],
                                 image_size=spec['image_size'], dtype=spec['dtype'],
                                 num_classes=spec['num_classes'],
                                 warmup_steps=spec['warmup_steps'],
                                 timed_steps=spec['timed_steps'])


def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
  """One measurement in a fresh process: its figures, or {'error': ...}."""
  try:
    done = subprocess.run([sys.executable, '-m', 'resnet_jax.tools.gpu_benchmark',
                           f'--child={json.dumps(spec)}'], capture_output=True, text=True,
                          timeout=timeout)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout:.0f} s'}
  lines = done.stdout.strip().splitlines()
  if done.returncode or not lines:
    last = (done.stderr.strip().splitlines() or ['no output'])[-1]
    return {'error': f'exit {done.returncode}: {last[:300]}'}
  return json.loads(lines[-1])


def _fraction(flops: float | None, seconds: float | None, peak: float | None) -> float | None:
  return flops / seconds / peak if flops and seconds and peak else None


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Every measurement, in child processes; the report's figures."""
  deadline = time.monotonic() + args.time_budget
  common = {'num_classes': args.num_classes, 'warmup_steps': args.warmup_steps,
            'timed_steps': args.timed_steps}
  report: dict[str, Any] = {'date': datetime.date.today().isoformat()}

  def child(spec: dict[str, Any]) -> dict[str, Any]:
    return _run_child(spec, max(deadline - time.monotonic(), 1.0))

  report['matmul'] = child({'kind': 'matmul', 'size': args.matmul_size})
  rows = []
  for variant in args.variants:
    rows.append({'name': f'{args.model} {args.dtype} b{args.batch_size} {args.image_size}² '
                         f'{variant}', 'variant': variant, **child({
                             'kind': 'jax', 'model': args.model, 'dtype': args.dtype,
                             'batch_size': args.batch_size, 'image_size': args.image_size,
                             'variant': variant, **common})})
  if args.torch:
    rows.append({'name': f'torchvision {args.model} {args.dtype} (channels_last, autocast) '
                         f'b{args.batch_size}', 'variant': 'torch', **child({
                             'kind': 'torch', 'model': args.model, 'dtype': args.dtype,
                             'batch_size': args.batch_size, 'image_size': args.image_size,
                             **common})})
  rows.append({'name': f'{args.cifar_model} float32 b{args.cifar_batch_size} '
                       f'{args.cifar_image_size}² (CIFAR)', 'variant': 'cifar', **child({
                           'kind': 'jax', 'model': args.cifar_model, 'dtype': 'float32',
                           'batch_size': args.cifar_batch_size, 'variant': 'plain',
                           'image_size': args.cifar_image_size, **common, 'num_classes': 10})})
  plain = rows[0] if rows and rows[0].get('variant') == 'plain' else {}
  model_flops = plain.get('flops_per_step')
  device = report['matmul'].get('device', plain.get('device', 'unknown'))
  report.update(device=device, backend=report['matmul'].get('backend'),
                jax_version=report['matmul'].get('jax_version'),
                spec_peak_flops_per_sec=spec_peak(device),
                matmul_flops_per_sec=report['matmul'].get('matmul_flops_per_sec'))
  for row in rows:
    seconds = row.get('pipelined_step_seconds') or row.get('torch_pipelined_step_seconds')
    # The CIFAR step runs in float32: a bfloat16 utilisation would mean nothing.
    flops = None if row['variant'] == 'cifar' else model_flops
    row['mfu_spec'] = _fraction(flops, seconds, report['spec_peak_flops_per_sec'])
    row['mfu_matmul'] = _fraction(flops, seconds, report['matmul_flops_per_sec'])
  torch_row = next((r for r in rows if r['variant'] == 'torch'), {})
  if plain.get('pipelined_images_per_sec') and torch_row.get('torch_pipelined_images_per_sec'):
    report['ratio_vs_torch'] = (plain['pipelined_images_per_sec'] /
                                torch_row['torch_pipelined_images_per_sec'])
  report['rows'] = rows
  report['seconds'] = time.perf_counter() - _PROCESS_START
  return report


def _cell(value: float | None, template: str) -> str:
  return 'n/a' if value is None else template.format(value)


def print_report(report: dict[str, Any]) -> None:
  spec = report['spec_peak_flops_per_sec']
  print(f'resnet-jax accelerator check, {report["date"]}: {report["device"]} '
        f'({report["backend"]}), jax {report["jax_version"]}')
  if 'error' in report['matmul']:
    print(f'bf16 matmul: failed: {report["matmul"]["error"]}')
  size = report['matmul'].get('size')
  print(f'bf16 matmul {size}x{size}: '
        f'{_cell(report["matmul_flops_per_sec"] and report["matmul_flops_per_sec"] / 1e12, "{:.1f}")}'
        f' TFLOP/s measured; spec peak {_cell(spec and spec / 1e12, "{:.0f}")} TFLOP/s '
        '(dense bf16, datasheet)')
  header = (f'{"workload":58} {"img/s":>9} {"step ms":>8} {"compile s":>9} '
            f'{"peak GiB":>8} {"MFU spec":>8} {"MFU mm":>7}')
  print(header)
  for row in report['rows']:
    if 'error' in row:
      print(f'{row["name"]:58} failed: {row["error"]}')
      continue
    torch = row['variant'] == 'torch'
    images = row['torch_pipelined_images_per_sec' if torch else 'pipelined_images_per_sec']
    seconds = row['torch_pipelined_step_seconds' if torch else 'pipelined_step_seconds']
    peak = row.get('torch_device_peak_bytes' if torch else 'device_peak_bytes')
    compile_seconds = None if torch else row['compile_seconds']
    print(f'{row["name"]:58} {images:9,.1f} {seconds * 1e3:8.1f} '
          f'{_cell(compile_seconds, "{:.1f}"):>9} {_cell(peak and peak / 2**30, "{:.2f}"):>8} '
          f'{_cell(row["mfu_spec"] and 100 * row["mfu_spec"], "{:.1f} %"):>8} '
          f'{_cell(row["mfu_matmul"] and 100 * row["mfu_matmul"], "{:.1f} %"):>7}')
  if 'ratio_vs_torch' in report:
    print(f'ours / torchvision (images/s): {report["ratio_vs_torch"]:.2f}x')
  print(f'total {report["seconds"]:.0f} s')


def _parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m resnet_jax.tools.gpu_benchmark',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='resnet50')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float16', 'float32'))
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      type=lambda text: [v for v in text.split(',') if v],
                      help=f'comma-separated subset of {",".join(VARIANTS)}')
  parser.add_argument('--torch', action=argparse.BooleanOptionalAction, default=True,
                      help='also time torchvision in the same run')
  parser.add_argument('--cifar_model', default='resnet20')
  parser.add_argument('--cifar_batch_size', type=int, default=128)
  parser.add_argument('--cifar_image_size', type=int, default=32)
  parser.add_argument('--matmul_size', type=int, default=None, help='default: 8192 '
                      '(2048 on CPU)')
  parser.add_argument('--warmup_steps', type=int, default=2)
  parser.add_argument('--timed_steps', type=int, default=20)
  parser.add_argument('--time_budget', type=float, default=280.0,
                      help='seconds for all children together')
  parser.add_argument('--json', default=None, help='also write the report here')
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  bad = [v for v in args.variants if v not in VARIANTS]
  if bad:
    parser.error(f'unknown --variants {",".join(bad)}; valid: {",".join(VARIANTS)}')
  return args


def main(argv: list[str]) -> int:
  args = _parse(argv)
  if args.child:
    spec = json.loads(args.child)
    result = _torch_child(spec) if spec['kind'] == 'torch' else _jax_child(spec)
    print(json.dumps(result))
    return 0
  report = run(args)
  print_report(report)
  if args.json:
    with open(args.json, 'w') as file:
      json.dump(report, file, indent=2)
  return 0 if report['rows'] and 'error' not in report['rows'][0] else 1


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  sys.exit(main(sys.argv[1:]))
