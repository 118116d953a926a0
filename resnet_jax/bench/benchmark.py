"""Benchmarks that print figures; never part of the test suite.

  python -m resnet_jax.bench.benchmark --mode=train --model=resnet50 --batch_size=16 \
      --image_size=224 [--dtype=bfloat16] [--compare_torch] [--format=json]
  python -m resnet_jax.bench.benchmark --mode=input --config=configs/imagenet50.py

--mode=train|eval times the jitted training (or evaluation) step on synthetic device
data: compile time, time to the first step, median step time and images/s, XLA's FLOP
count and the fraction of the device's measured matmul peak, peak memory.
--compare_torch runs torchvision's model on the same workload in the same run.
--mode=input times the config's training input pipeline against bare tf.data loops over
the same files, in the same run (input_benchmark.py): on a TFDS dataset of
--input_files × --records_per_file ImageNet-size JPEGs and a folder of --num_images of
them (generated into --work_dir, or a temporary directory, unless --tfds_dir/--image_dir
name existing ones), the host cost of each augmentation and recipe, and the start-up of
a folder of --startup_files files.
"""

import time

_PROCESS_START = time.perf_counter()

from resnet_jax.cpu import allocator  # noqa: E402

if __name__ == '__main__':
  allocator.reexec_with_fast_allocator()  # jemalloc/tcmalloc if installed: see allocator.py

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from resnet_jax import config_files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'input'], 'What to measure.')
_DEFAULT_CONFIG = config_files.checkout_config('imagenet50')
config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'A config file; the flags '
                                'below override its keys.', lock_config=True)
flags.DEFINE_string('model', None, 'train/eval: model name (default: the config\'s).')
flags.DEFINE_integer('batch_size', None, 'Global batch size (train/eval default 16; '
                     'input default 128).')
flags.DEFINE_integer('image_size', None, 'Image side (default: the config\'s).')
flags.DEFINE_string('dtype', 'float32', 'train/eval: float32, bfloat16 or float16.')
flags.DEFINE_string('conv_impl', None, 'train/eval: auto, xla or dot.')
flags.DEFINE_bool('scan_blocks', None, 'train/eval: nn.scan over identical blocks.')
flags.DEFINE_bool('remat', None, 'train/eval: rematerialise each block.')
flags.DEFINE_integer('cpu_devices', None, 'train/eval: JAX devices on a CPU-only host (default: '
                     "the config's; 0: JAX's default, one); bench/cpu_devices compares counts.")
flags.DEFINE_integer('bn_group_size', 0, 'train/eval: BatchNorm statistics over groups of N '
                     'examples (0: the whole batch; a recipe\'s per-GPU groups would not fit '
                     'the small default batch).')
flags.DEFINE_integer('num_classes', 1000, 'train/eval: classifier width.')
flags.DEFINE_integer('warmup_steps', 2, 'train/eval: untimed steps after the first.')
flags.DEFINE_integer('timed_steps', 10, 'train/eval: timed steps (median reported).')
flags.DEFINE_bool('compare_torch', False, 'train/eval: also time torchvision, same run.')
flags.DEFINE_multi_enum('input_sections', ['throughput', 'costs', 'startup'],
                        ['throughput', 'costs', 'startup'], 'input: what to measure.')
flags.DEFINE_string('work_dir', None, 'input: where generated data goes (kept, and reused '
                    'by the next run); default: a temporary directory.')
flags.DEFINE_string('tfds_dir', None, 'input: a data_dir holding synthetic_jpegs (default: '
                    'generate one).')
flags.DEFINE_integer('input_files', 64, 'input: TFRecord files to generate (ImageNet: 1,024).')
flags.DEFINE_integer('records_per_file', 1251, 'input: JPEGs of ~500×375 (~110 KB) per file '
                     '(ImageNet: ~1,251; the default set is ~8.4 GB).')
flags.DEFINE_string('image_dir', None, 'input: a folder with train/<class>/*.jpg; '
                    'default: generate.')
flags.DEFINE_integer('num_images', 512, 'input: JPEGs of the generated folder.')
flags.DEFINE_integer('startup_files', 100_000, 'input: files of the start-up folder.')
flags.DEFINE_integer('warmup_batches', 5, 'input: batches before timing starts.')
flags.DEFINE_float('timed_seconds', 4.0, 'input: seconds timed per pipeline and round.')
flags.DEFINE_integer('rounds', 2, 'input: alternating rounds of the pipelines; best counts.')
flags.DEFINE_enum('format', 'text', ['text', 'json'], 'Output format.')


def _step_benchmark() -> dict:
  from resnet_jax import models
  from resnet_jax.cpu import conv
  from resnet_jax.bench import step_benchmark, torch_reference
  from resnet_jax.cpu import devices as cpu_devices
  config = FLAGS.config
  overrides = {'model': FLAGS.model, 'dtype': FLAGS.dtype, 'conv_impl': FLAGS.conv_impl,
               'scan_blocks': FLAGS.scan_blocks, 'remat': FLAGS.remat,
               'bn_group_size': FLAGS.bn_group_size, 'cpu_devices': FLAGS.cpu_devices}
  for key, value in overrides.items():
    if value is not None:
      config[key] = value
  config.batch_size = FLAGS.batch_size or 16
  if FLAGS.image_size:
    config.dataset.image_size = FLAGS.image_size
  try:
    cpu_devices.request(config.cpu_devices)  # as the trainer's command: before JAX starts
    models.check_image_size(config.model, config.dataset.image_size)
    models.compute_dtype(config.dtype)
    conv.check_conv_impl(config.conv_impl)
    if FLAGS.compare_torch and config.model not in torch_reference.TORCHVISION_MODELS:
      raise ValueError(f'--compare_torch supports {", ".join(torch_reference.TORCHVISION_MODELS)}'
                       f', not {config.model!r}')
    if FLAGS.compare_torch and (problem := torch_reference.available()):
      raise ValueError(problem)
    result = step_benchmark.measure(config, mode=FLAGS.mode, num_classes=FLAGS.num_classes,
                                    warmup_steps=FLAGS.warmup_steps,
                                    timed_steps=FLAGS.timed_steps,
                                    process_start=_PROCESS_START)
  except ValueError as error:
    sys.exit(f'benchmark: {error}')
  if FLAGS.compare_torch:
    result |= torch_reference.measure(
        config.model, mode=FLAGS.mode, batch_size=config.batch_size,
        image_size=config.dataset.image_size, dtype=config.dtype,
        num_classes=FLAGS.num_classes, warmup_steps=FLAGS.warmup_steps,
        timed_steps=FLAGS.timed_steps)
    result['ratio_vs_torch'] = result['images_per_sec'] / result['torch_images_per_sec']
  return result


def _print_step_result(r: dict) -> None:
  def gib(n):
    return 'n/a' if n is None else f'{n / 2**30:.2f} GiB'
  print(f'{r["mode"]}: {r["model"]}, batch {r["batch_size"]}, {r["image_size"]}², {r["dtype"]},'
        f' conv_impl={r["conv_impl"]}, scan_blocks={r["scan_blocks"]}, remat={r["remat"]};'
        f' {r["num_devices"]}× {r["device"]} ({r["backend"]}); allocator {r["allocator"]}')
  print(f'init {r["init_seconds"]:.1f} s, compile {r["compile_seconds"]:.1f} s, first step '
        f'{r["first_step_seconds"]:.2f} s; process start to end of first step '
        f'{r["seconds_to_first_step"]:.1f} s')
  print(f'step {r["step_seconds"] * 1e3:.1f} ms (median): {r["images_per_sec"]:.1f} img/s; '
        f'back to back {r["pipelined_step_seconds"] * 1e3:.1f} ms: '
        f'{r["pipelined_images_per_sec"]:.1f} img/s')
  if r['achieved_flops_per_sec']:
    xla = r.get('xla_flops_per_step')
    print(f'{r["flops_per_step"] / 1e9:.1f} GFLOP/step (analytic: '
          f'{"3 × " if r["mode"] == "train" else ""}2 × MACs × batch; XLA counts '
          f'{f"{xla / 1e9:.1f}" if xla else "no convolutions (custom calls)"}), '
          f'{r["achieved_flops_per_sec"] / 1e9:.1f}'
          f' GFLOP/s = {r["fraction_of_matmul_peak"]:.0%} of the measured matmul peak '
          f'({r["matmul_peak_flops_per_sec"] / 1e9:.0f} GFLOP/s)')
  print(f'memory: XLA estimate {gib(r["xla_memory_bytes"])}, device peak '
        f'{gib(r["device_peak_bytes"])}, host max RSS {gib(r["host_max_rss_bytes"])}')
  if 'torch_images_per_sec' in r:
    print(f'torch {r["torch_version"]} ({r["torch_device"]}, {r["torch_threads"]} threads): '
          f'{r["torch_images_per_sec"]:.1f} img/s; ratio {r["ratio_vs_torch"]:.2f}x torch')


def _input_benchmark() -> tuple[dict, list[str]]:
  import tensorflow as tf  # Benchmark the host: keep TF off any accelerator.

  from resnet_jax.bench import input_benchmark as throughput
  tf.config.set_visible_devices([], 'GPU')
  config = FLAGS.config
  config.batch_size = FLAGS.batch_size or 128
  if FLAGS.image_size:
    config.dataset.image_size = FLAGS.image_size
  timing = dict(rounds=FLAGS.rounds, warmup=FLAGS.warmup_batches, seconds=FLAGS.timed_seconds)
  sections = set(FLAGS.input_sections)
  with tempfile.TemporaryDirectory() as scratch:
    work = FLAGS.work_dir or scratch
    tfds_dir = FLAGS.tfds_dir or throughput.generated_tfds(
        os.path.join(work, 'tfds'), num_files=FLAGS.input_files,
        per_file=FLAGS.records_per_file)
    speed = costs = startup = None
    if 'throughput' in sections:
      folder = FLAGS.image_dir or throughput.generated_folder(os.path.join(work, 'folder'),
                                                              FLAGS.num_images)
      speed = throughput.measure_throughput(config, tfds_dir, folder, **timing)
    if 'costs' in sections:
      costs = throughput.measure_host_costs(config, tfds_dir, **timing)
    if 'startup' in sections and FLAGS.startup_files:
      folder = os.path.join(work, f'startup_{FLAGS.startup_files}')
      if not os.path.isdir(folder):
        throughput.write_startup_folder(folder, FLAGS.startup_files)
      startup = throughput.measure_startup(config, folder)
  result = {'batch_size': config.batch_size, 'image_size': config.dataset.image_size,
            'augment': config.dataset.augment, 'cycle_length': config.dataset.cycle_length,
            'throughput': throughput.np_summary(speed), 'costs': throughput.np_summary(costs),
            'startup': startup or {}}
  return result, throughput.report(speed, costs, startup)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # figures only, not JAX's INFO lines
  if FLAGS.mode == 'input':
    result, lines = _input_benchmark()
    print(json.dumps(result) if FLAGS.format == 'json' else '\n'.join(lines))
  else:
    result = _step_benchmark()
    print(json.dumps(result)) if FLAGS.format == 'json' else _print_step_result(result)
  sys.stdout.flush()


if __name__ == '__main__':
  config_files.make_importable([*sys.argv, f'--config={_DEFAULT_CONFIG}'])
  app.run(main)
