"""The accelerator benchmark: the training step users train, timed where they train it.

  python -m resnet_jax.bench.gpu_benchmark [--config=configs/imagenet50.py] [--batch_size=256]
      [--json=PATH]
  launch/gpu_benchmark.sh [BATCH_SIZE]     (the same, under a time limit)
  launch/gpu_check.sh                       (this, then tools.gpu_numerics: PASS/FAIL)

Measures, on one machine, the step that --config trains (default configs/imagenet50.py,
the nvidia recipe: ResNet-50, bfloat16, BatchNorm over groups of 256, label smoothing,
SGD with its weight-decay mask; built by tools.bare_config as resnet_jax/train.py
builds it) at --batch_size images per device (default 256, the recipe's per-GPU batch):
plain, with remat (remat_policy full and conv_outputs) and with scan_blocks; torchvision's
model on the same device, eager and under torch.compile (channels_last, autocast,
cudnn.benchmark on); the CIFAR ResNet-20 recipe step (float32); a bfloat16 matmul on
random data. --config=none times the bare model instead (configs/default.py's SGD, no
BatchNorm groups, no label smoothing).

Per row: images/s, step and compile seconds, peak device memory, and MFU against the
device's dense bfloat16 datasheet peak and against the matmul. MFU counts the model's
training FLOPs analytically, 3 × 2 × MACs per image × batch (forward, then backward at
twice the forward; MACs from resnet_jax.tools.summary, every convolution tap and the
classifier), the same for every variant and for torchvision. XLA's cost_analysis() is
shown beside it only where it counts at least half of that: on GPUs it counts no FLOPs
in cuDNN convolutions and cuBLAS matmuls (custom calls), and a scanned loop body once.

Seconds to the first step: from the start of a child process to the end of its first
training step, with JAX's persistent compilation cache in a fresh temporary directory
(the plain row: "fresh"), then once more from that cache ("cached").

Then the same-run ratios (ours / torch.compile, ours / eager) and the goals, each met,
not met or unmeasured: >= 7,900 img/s per H200; >= 1.15x torch.compile; <= 20 s fresh
and <= 5 s cached to the first step (GPU goals: unmeasured on other backends).

Each measurement runs in a child process of its own, so each peak memory is that
workload's alone and torch never shares the device with JAX's allocator. The children
share --time_budget, the most telling first (plain, cached, torchvision); remat,
scan_blocks and CIFAR rows that it cuts are listed as not measured (exit 0), any other
failure exits 1. Images/s come from steps issued back to back (the host runs ahead, as
in training); the median of steps timed one at a time is in the JSON too, with every
figure, the machine, the date and the versions.

Needs only JAX, flax, optax and numpy, plus torch and torchvision for the comparison:
no TensorFlow, tensorflow-datasets, clu, ml-collections or jmp, so it runs on bare CUDA
JAX images (NVIDIA's JAX containers, cloud images, clusters without a package registry).
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from resnet_jax import config_files
from resnet_jax.bench.flop_count import XLA_COUNT_SHOWN_FROM, training_flops, xla_count_shown

# Dense bfloat16 tensor-core peaks in FLOP/s, from the vendors' datasheets (NVIDIA H100
# and H200 Tensor Core GPU, A100, L4, L40S, B200 datasheets: "BF16 Tensor Core",
# without sparsity; Google Cloud TPU system architecture pages). The first match wins.
BF16_SPEC_PEAKS = (
    ('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H100', 989e12), ('H200', 989e12),
    ('B200', 2250e12), ('A100', 312e12), ('L40S', 362e12), ('L4', 121e12),
    ('TPU v4', 275e12), ('TPU v5 lite', 197e12), ('TPU v5', 459e12), ('TPU v6 lite', 918e12),
)
# variant -> config overrides.
VARIANTS = {
    'plain': {},
    'remat': {'remat': True, 'remat_policy': 'full'},
    'remat_conv_outputs': {'remat': True, 'remat_policy': 'conv_outputs'},
    'scan_blocks': {'scan_blocks': True},
}
TORCH_MODES = ('eager', 'compile')
# Rows the time budget may cut (reported, not failed); run last, in this order.
OPTIONAL_ROWS = ('remat_conv_outputs', 'scan_blocks', 'remat', 'cifar')
MIN_CHILD_SECONDS = 15.0  # a child is not started with less of the budget left
GOALS = {'h200_images_per_sec': 7900.0, 'vs_torch_compile': 1.15,
         'fresh_seconds_to_first_step': 20.0, 'cached_seconds_to_first_step': 5.0}
VERSIONED = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'torch', 'torchvision',
             'jax-cuda12-plugin', 'jax-cuda13-plugin', 'ml_collections', 'tensorflow')


def spec_peak(device_kind: str) -> float | None:
  """The device's dense bfloat16 peak from BF16_SPEC_PEAKS, or None if not listed."""
  return next((peak for name, peak in BF16_SPEC_PEAKS if name in device_kind), None)


# ---------------------------------------------------------------- child processes


def _process_start(spec: dict[str, Any]) -> float:
  """time.perf_counter() at the moment the parent spawned this process."""
  return time.perf_counter() - (time.time() - spec['spawned_at'])


def _matmul_child(spec: dict[str, Any]) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp

  from resnet_jax.bench import step_benchmark
  size = spec['size'] or (2048 if jax.default_backend() == 'cpu' else 8192)
  return {'matmul_flops_per_sec': step_benchmark.matmul_peak_flops(jnp.bfloat16, size=size),
          'size': size, 'device': jax.devices()[0].device_kind,
          'num_devices': jax.device_count(), 'backend': jax.default_backend(),
          'jax_version': jax.__version__}


def recipe_config(spec: dict[str, Any]) -> Any:
  """The config a row measures: spec's config file (None: configs/default.py as the bare
  model), its overrides and variant, the global batch, BN groups no larger than a
  device's batch."""
  import jax

  from resnet_jax.bench import bare_config
  path = spec['config'] or config_files.checkout_config('default')
  config = bare_config.load(path, {key: value for key, value in spec['overrides'].items()
                                   if value is not None})
  for key, value in VARIANTS[spec['variant']].items():
    config[key] = value
  per_device = spec['per_device_batch']
  config.batch_size = spec['batch_size'] or per_device * jax.device_count()
  per_device = config.batch_size // jax.device_count()
  # Tiny rehearsals: no group larger than a device's batch.
  config.bn_group_size = min(config.bn_group_size, per_device)
  return config


def _jax_child(spec: dict[str, Any]) -> dict[str, Any]:
  process_start = _process_start(spec)
  from resnet_jax import compilation_cache
  cache = compilation_cache.enable(spec['cache_dir']) if spec.get('cache_dir') else None
  import jax

  from resnet_jax import steps
  from resnet_jax.tools import summary
  from resnet_jax.bench import bare_config, step_benchmark
  config = recipe_config(spec)
  model, tx, learning_rate_fn, step_kwargs = bare_config.recipe_step(
      config, spec['num_classes'], train_images=spec['train_images'])
  result = step_benchmark.measure_step(
      model, tx, mode='train', batch_size=config.batch_size,
      image_size=config.dataset.image_size, num_classes=spec['num_classes'],
      loss_scale=steps.create_loss_scale(config), learning_rate_fn=learning_rate_fn,
      warmup_steps=spec['warmup_steps'], timed_steps=spec['timed_steps'],
      process_start=process_start, step_kwargs=step_kwargs)
  macs = summary.summarize(config.model, image_size=config.dataset.image_size,
                           num_classes=spec['num_classes'])['macs']
  return result | {
      'model': config.model, 'dtype': config.dtype, 'bn_group_size': config.bn_group_size,
      'remat': config.remat, 'remat_policy': config.remat_policy,
      'scan_blocks': config.scan_blocks, 'label_smoothing': config.label_smoothing,
      'loss': config.loss, 'optimizer': config.optimizer, 'momentum': config.momentum,
      'nesterov': config.nesterov, 'weight_decay': config.weight_decay,
      'weight_decay_skip': config.weight_decay_skip, 'macs_per_image': macs,
      'compilation_cache_dir': cache,
      'compilation_cache_files': len(os.listdir(cache)) if cache else None,
      'jax_version': jax.__version__}


def _torch_child(spec: dict[str, Any]) -> dict[str, Any]:
  from resnet_jax.bench import torch_reference
  problem = torch_reference.available()
  if problem:
    raise RuntimeError(problem)
  if spec['torch_compile'] and spec['compile_backend'] != 'inductor':
    import torch
    compile_fn = torch.compile
    torch.compile = lambda model, **kw: compile_fn(model, backend=spec['compile_backend'], **kw)
  result = torch_reference.measure(
      spec['model'], mode='train', batch_size=spec['batch_size'],
      image_size=spec['image_size'], dtype=spec['dtype'], num_classes=spec['num_classes'],
      warmup_steps=spec['warmup_steps'], timed_steps=spec['timed_steps'],
      torch_compile=spec['torch_compile'], label_smoothing=spec['label_smoothing'],
      momentum=spec['momentum'], nesterov=spec['nesterov'],
      weight_decay=spec['weight_decay'])
  return result | {'model': spec['model'], 'batch_size': spec['batch_size'],
                   'image_size': spec['image_size'], 'dtype': spec['dtype'],
                   'torch_compile_backend': spec['compile_backend'] if spec['torch_compile']
                   else None}


def _run_child(spec: dict[str, Any], timeout: float, env: dict[str, str] | None = None
               ) -> dict[str, Any]:
  """One measurement in a fresh process: its figures, or {'error': ...}."""
  spec = spec | {'spawned_at': time.time()}
  # No compilation cache but the benchmark's own (`env`'s): a caller's warm one would
  # turn the fresh rows' compile times into load times.
  inherited = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  try:
    done = subprocess.run([sys.executable, '-m', 'resnet_jax.bench.gpu_benchmark',
                           f'--child={json.dumps(spec)}'], capture_output=True, text=True,
                          timeout=timeout, env=inherited | (env or {}))
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout:.0f} s (the time budget)', 'budget_cut': True}
  lines = done.stdout.strip().splitlines()
  if done.returncode or not lines:
    last = (done.stderr.strip().splitlines() or ['no output'])[-1]
    return {'error': f'exit {done.returncode}: {last[:300]}'}
  return json.loads(lines[-1])


# ---------------------------------------------------------------- the parent


def _fraction(flops: float | None, seconds: float | None, peak: float | None) -> float | None:
  return flops / seconds / peak if flops and seconds and peak else None


def _images_per_sec(row: dict[str, Any]) -> float | None:
  return row.get('pipelined_images_per_sec') or row.get('torch_pipelined_images_per_sec')


def _versions() -> dict[str, str | None]:
  versions = {'python': platform.python_version()}
  for name in VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def _machine() -> dict[str, Any]:
  gpus = None
  if shutil.which('nvidia-smi'):
    try:
      gpus = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
                             '--format=csv,noheader'], capture_output=True, text=True,
                            timeout=30).stdout.strip().splitlines() or None
    except (OSError, subprocess.SubprocessError):
      pass
  return {'hostname': platform.node(), 'platform': platform.platform(),
          'processor': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
          'nvidia_smi': gpus}


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


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Every measurement, in child processes; the report's figures."""
  started = time.perf_counter()
  deadline = time.monotonic() + args.time_budget
  common = {'num_classes': args.num_classes, 'warmup_steps': args.warmup_steps,
            'timed_steps': args.timed_steps}
  report: dict[str, Any] = {
      'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
      'machine': _machine(), 'versions': _versions(), 'argv': sys.argv[1:],
      'config': args.config or 'none (bare model)', 'per_device_batch': args.batch_size,
      'goals_targets': GOALS, 'xla_count_shown_from': XLA_COUNT_SHOWN_FROM}

  def child(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    left = deadline - time.monotonic()
    if left < MIN_CHILD_SECONDS:
      return {'error': f'not run: {left:.0f} s of the time budget left', 'budget_cut': True}
    return _run_child(spec, left, env)

  report['matmul'] = child({'kind': 'matmul', 'size': args.matmul_size})
  overrides = {'model': args.model, 'dtype': args.dtype,
               'dataset.image_size': args.image_size}
  if args.config is None:  # the bare model
    overrides |= {'model': args.model or 'resnet50', 'dtype': args.dtype or 'bfloat16',
                  'bn_group_size': 0}
  recipe = {'kind': 'jax', 'config': args.config, 'overrides': overrides,
            'per_device_batch': args.batch_size, 'batch_size': None,
            'train_images': 1_281_167, **common}
  cache_dir = tempfile.mkdtemp(prefix='gpu_benchmark_cache_')
  # The cache is this run's own directory, whatever JAX_ENABLE_COMPILATION_CACHE says.
  cache_env = {'JAX_ENABLE_COMPILATION_CACHE': 'true', 'JAX_COMPILATION_CACHE_DIR': cache_dir}
  rows: list[dict[str, Any]] = []
  try:
    # Most telling first, should the budget run out: plain (fresh), cached, torch, then
    # OPTIONAL_ROWS.
    variants = [v for v in VARIANTS if v in args.variants]
    if 'plain' in variants:
      rows.append({'variant': 'plain', **child(
          recipe | {'variant': 'plain', 'cache_dir': cache_dir}, cache_env)})
      if args.startup:
        report['cached_run'] = child(recipe | {'variant': 'plain', 'cache_dir': cache_dir,
                                               'warmup_steps': 0, 'timed_steps': 1}, cache_env)
    plain = next((row for row in rows if 'error' not in row), {})
    for mode in args.torch:
      rows.append({'variant': f'torch_{mode}', **child({
          'kind': 'torch', 'model': plain.get('model') or args.model or 'resnet50',
          'dtype': plain.get('dtype') or args.dtype or 'bfloat16',
          'batch_size': plain.get('batch_size', args.batch_size) // plain.get('num_devices', 1),
          'image_size': plain.get('image_size') or args.image_size or 224,
          'torch_compile': mode == 'compile', 'compile_backend': args.torch_compile_backend,
          'label_smoothing': plain.get('label_smoothing', 0.0),
          'momentum': plain.get('momentum', 0.9), 'nesterov': plain.get('nesterov', True),
          'weight_decay': plain.get('weight_decay', 1e-4), **common})})
    for variant in sorted((v for v in variants if v != 'plain'), key=OPTIONAL_ROWS.index):
      rows.append({'variant': variant, **child(recipe | {'variant': variant})})
    if args.cifar_config:
      rows.append({'variant': 'cifar', **child(
          recipe | {'variant': 'plain', 'config': args.cifar_config, 'num_classes': 10,
                    'batch_size': args.cifar_batch_size, 'train_images': 50_000,
                    'overrides': {'dataset.image_size': args.cifar_image_size}})})
  finally:
    shutil.rmtree(cache_dir, ignore_errors=True)
  derive(report, rows)
  report['seconds'] = time.perf_counter() - started
  return report


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


# ---------------------------------------------------------------- the table


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


def _parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m resnet_jax.bench.gpu_benchmark',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default=config_files.checkout_config('imagenet50'),
                      help='the recipe to time (a config file, PATH:argument); none: the '
                      'bare model (--model, --dtype)')
  parser.add_argument('--model', default=None, help="default: the config's (bare: resnet50)")
  parser.add_argument('--batch_size', type=int, default=256, help='images per device')
  parser.add_argument('--image_size', type=int, default=None, help="default: the config's")
  parser.add_argument('--dtype', default=None, choices=('bfloat16', 'float16', 'float32'),
                      help="default: the config's (bare: bfloat16)")
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      type=lambda text: [v for v in text.split(',') if v],
                      help=f'comma-separated subset of {",".join(VARIANTS)}')
  parser.add_argument('--torch', default=','.join(TORCH_MODES),
                      type=lambda text: [v for v in text.split(',') if v],
                      help='torchvision rows: comma-separated subset of eager,compile; '
                      'empty: none')
  parser.add_argument('--torch_compile_backend', default='inductor',
                      help='torch.compile backend (inductor; aot_eager for quick rehearsals)')
  parser.add_argument('--startup', action=argparse.BooleanOptionalAction, default=True,
                      help='time a second start from the compilation cache')
  parser.add_argument('--cifar_config', default=config_files.checkout_config('cifar10_resnet20'),
                      help="the CIFAR row's recipe; empty: no CIFAR row")
  parser.add_argument('--cifar_batch_size', type=int, default=128, help='global batch')
  parser.add_argument('--cifar_image_size', type=int, default=32)
  parser.add_argument('--matmul_size', type=int, default=None, help='default: 8192 '
                      '(2048 on CPU)')
  parser.add_argument('--warmup_steps', type=int, default=2)
  parser.add_argument('--timed_steps', type=int, default=20)
  parser.add_argument('--time_budget', type=float, default=330.0,
                      help='seconds for all children together')
  parser.add_argument('--json', default=None, help='also write the report here')
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.config in ('none', ''):
    args.config = None
  if args.cifar_config in ('none', ''):
    args.cifar_config = None
  bad = [v for v in args.variants if v not in VARIANTS]
  if bad:
    parser.error(f'unknown --variants {",".join(bad)}; valid: {",".join(VARIANTS)}')
  bad = [v for v in args.torch if v not in TORCH_MODES]
  if bad:
    parser.error(f'unknown --torch {",".join(bad)}; valid: {",".join(TORCH_MODES)}')
  return args


def main(argv: list[str]) -> int:
  args = _parse(argv)
  if args.child:
    spec = json.loads(args.child)
    result = {'matmul': _matmul_child, 'torch': _torch_child,
              'jax': _jax_child}[spec['kind']](spec)
    print(json.dumps(result))
    return 0
  report = run(args)
  print_report(report)
  if args.json:
    with open(args.json, 'w') as file:
      json.dump(report, file, indent=2)
  failed = [row['variant'] for row in report['rows'] if 'error' in row and not (
      row.get('budget_cut') and row['variant'] in OPTIONAL_ROWS)]
  cut = [row['variant'] for row in report['rows']
         if 'error' in row and row['variant'] not in failed]
  if cut:
    print(f'not measured within the time budget: {", ".join(cut)} (--time_budget)')
  if 'error' in report['matmul']:
    failed.append('matmul')
  cached = report['seconds_to_first_step']['cached']
  if args.startup and 'plain' in args.variants and cached is None:
    failed.append('cached start')
  if failed or not report['rows']:
    print(f'gpu_benchmark: failed: {", ".join(failed) or "nothing measured"}')
    return 1
  return 0


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  sys.exit(main(sys.argv[1:]))
