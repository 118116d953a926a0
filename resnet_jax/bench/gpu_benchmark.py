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

Each measurement runs in a child process of its own (bench/gpu_jax_rows.py,
bench/gpu_torch_rows.py; the figures and the table: bench/gpu_report.py), so each peak
memory is that workload's alone and torch never shares the device with JAX's allocator. The children
share --time_budget, the most telling first (plain, cached, torchvision); remat,
scan_blocks and CIFAR rows that it cuts are listed as not measured (exit 0), any other
failure exits 1. Images/s come from steps issued back to back (the host runs ahead, as
in training); the median of steps timed one at a time is in the JSON too, with every
figure, the machine, the date and the versions.

Needs only JAX, flax, optax and numpy, plus torch and torchvision for the comparison:
no TensorFlow, tensorflow-datasets, clu, ml-collections or jmp, so it runs on bare CUDA
JAX images (NVIDIA's JAX containers, cloud images, clusters without a package registry).
"""

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

from absl import flags

from resnet_jax import config_files
from resnet_jax.bench import command_flags, gpu_jax_rows, gpu_report, gpu_torch_rows
from resnet_jax.bench.flop_count import XLA_COUNT_SHOWN_FROM
from resnet_jax.bench.gpu_jax_rows import VARIANTS
from resnet_jax.bench.gpu_torch_rows import TORCH_MODES

PROG = 'python -m resnet_jax.bench.gpu_benchmark'
# Rows the time budget may cut (reported, not failed); run last, in this order.
OPTIONAL_ROWS = ('remat_conv_outputs', 'scan_blocks', 'remat', 'cifar')
MIN_CHILD_SECONDS = 15.0  # a child is not started with less of the budget left
VERSIONED = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'torch', 'torchvision',
             'jax-cuda12-plugin', 'jax-cuda13-plugin', 'ml_collections', 'tensorflow')
CHILDREN = {'matmul': gpu_jax_rows.matmul_row, 'jax': gpu_jax_rows.recipe_row,
            'torch': gpu_torch_rows.torch_row}


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


def run(args: flags.FlagValues) -> dict[str, Any]:
  """Every measurement, in child processes; the report's figures."""
  started = time.perf_counter()
  deadline = time.monotonic() + args.time_budget
  common = {'num_classes': args.num_classes, 'warmup_steps': args.warmup_steps,
            'timed_steps': args.timed_steps}
  report: dict[str, Any] = {
      'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
      'machine': _machine(), 'versions': _versions(), 'argv': sys.argv[1:],
      'config': args.config or 'none (bare model)', 'per_device_batch': args.batch_size,
      'goals_targets': gpu_report.GOALS, 'xla_count_shown_from': XLA_COUNT_SHOWN_FROM}

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
  gpu_report.derive(report, rows)
  report['seconds'] = time.perf_counter() - started
  return report


_FLAGS = flags.FlagValues()  # its own: see command_flags.py
flags.DEFINE_string('config', config_files.checkout_config('imagenet50'),
                    'the recipe to time (a config file, PATH:argument); none: the bare model '
                    '(--model, --dtype)', flag_values=_FLAGS)
flags.DEFINE_string('model', None, "default: the config's (bare: resnet50)", flag_values=_FLAGS)
flags.DEFINE_integer('batch_size', 256, 'images per device', flag_values=_FLAGS)
flags.DEFINE_integer('image_size', None, "default: the config's", flag_values=_FLAGS)
flags.DEFINE_enum('dtype', None, ('bfloat16', 'float16', 'float32'),
                  "default: the config's (bare: bfloat16)", flag_values=_FLAGS)
flags.DEFINE_integer('num_classes', 1000, 'classifier width', flag_values=_FLAGS)
command_flags.define_subset('variants', VARIANTS, 'the recipe rows', flag_values=_FLAGS)
command_flags.define_subset('torch', TORCH_MODES, 'the torchvision rows (empty: none)',
                            flag_values=_FLAGS)
flags.DEFINE_string('torch_compile_backend', 'inductor',
                    'torch.compile backend (inductor; aot_eager for quick rehearsals)',
                    flag_values=_FLAGS)
flags.DEFINE_bool('startup', True, 'time a second start from the compilation cache',
                  flag_values=_FLAGS)
flags.DEFINE_string('cifar_config', config_files.checkout_config('cifar10_resnet20'),
                    "the CIFAR row's recipe; none or empty: no CIFAR row", flag_values=_FLAGS)
flags.DEFINE_integer('cifar_batch_size', 128, 'the CIFAR row\'s global batch',
                     flag_values=_FLAGS)
flags.DEFINE_integer('cifar_image_size', 32, 'the CIFAR row\'s image side', flag_values=_FLAGS)
flags.DEFINE_integer('matmul_size', None, 'default: 8192 (2048 on CPU)', flag_values=_FLAGS)
flags.DEFINE_integer('warmup_steps', 2, 'untimed steps per row', flag_values=_FLAGS)
flags.DEFINE_integer('timed_steps', 20, 'timed steps per row', flag_values=_FLAGS)
flags.DEFINE_float('time_budget', 330.0, 'seconds for all children together',
                   flag_values=_FLAGS)
flags.DEFINE_string('json', None, 'also write the report here', flag_values=_FLAGS)
flags.DEFINE_string('child', None, 'internal: one row, as the parent\'s JSON spec',
                    flag_values=_FLAGS)


def _parse(argv: list[str]) -> flags.FlagValues:
  args = command_flags.parse(_FLAGS, argv, prog=PROG, doc=__doc__)
  for name in ('config', 'cifar_config'):
    if args[name].value in ('none', ''):
      args[name].value = None
  return args


def main(argv: list[str]) -> int:
  """The benchmark (or, with --child, one row); exit status 1 if a row that the time
  budget may not cut failed."""
  args = _parse(argv)
  if args.child:
    spec = json.loads(args.child)
    print(json.dumps(CHILDREN[spec['kind']](spec)))
    return 0
  report = run(args)
  gpu_report.print_report(report)
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
