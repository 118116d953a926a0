"""Input-pipeline throughput at ImageNet's size, against bare loops over the same files.

Every ratio compares two pipelines timed in the same process, alternating round by round
(the best round of each counts), so it holds on a busy machine even when the absolute
figures do not:

- TFRecords (a TFDS dataset of N files × M ImageNet-size JPEGs): read + parse with
  decoding off, ours against a bare parallel reader (interleave + parallel parse); the
  whole training pipeline against a bare decode loop (the same reader, then
  decode_jpeg and a bilinear resize);
- an image folder of the same JPEGs: our pipeline against read_file + decode + resize;
- the host cost per image of each host-side augmentation at 224², and the cores per GPU
  each recipe's host-side augmentation needs at 7,000 img/s;
- folder start-up: the time until the source is ready against a bare listing.
"""

import dataclasses
import importlib
import os
import time
from typing import Callable

import ml_collections
import numpy as np
import tensorflow as tf

from resnet_jax import config_files
from resnet_jax.data import pipeline, sources
from resnet_jax.bench import synthetic_data

GPU_IMAGES_PER_SEC = 7_000  # ResNet-50 bf16 on one H100/H200-class GPU (performance.md)
# The recipes' host-side work (their other regularisers run on the device), by config.
RECIPES = {
    'nvidia, nvidia250, step, flax, lars': 'imagenet50.py',
    'rsb a1, a2': 'imagenet50_rsb.py:a1',
    'rsb a3': 'imagenet50_rsb.py:a3',
    'torchvision v2': 'imagenet50_torchvision_v2.py',
    'ffcv (at its final 192²)': 'imagenet50_ffcv.py',
}
AUGMENTATIONS = {  # at 224², over the plain crop + flip
    'crop + flip (plain)': {},
    'RandAugment 2×9': {'randaugment_layers': 2, 'randaugment_magnitude': 9.0},
    'TrivialAugment-wide': {'trivial_augment': True},
    'repeated augmentation ×3': {'repeated_augmentation': 3},
}


def usable_cores() -> int:
  """CPU cores this process may run on."""
  return pipeline.host_cpus()


def _rate(make: Callable[[], tf.data.Dataset], *, warmup: int, seconds: float) -> float:
  """Images (or records) per second over at least `seconds`, after `warmup` batches."""
  batches = iter(make())
  for _ in range(warmup):
    next(batches)
  start, count = time.perf_counter(), 0
  while time.perf_counter() - start < seconds:
    count += len(next(batches)['label'])
  return count / (time.perf_counter() - start)


def _best_of(pipelines: dict[str, Callable[[], tf.data.Dataset]], *, rounds: int,
             **timing) -> dict[str, float]:
  """The best rate of each pipeline over `rounds`, the pipelines alternating."""
  best = dict.fromkeys(pipelines, 0.0)
  for _ in range(rounds):
    for name, make in pipelines.items():
      best[name] = max(best[name], _rate(make, **timing))
  return best


def _tfrecords(source: sources.TfdsSource, split: str):
  pieces = source.file_pieces(split)
  return pieces, source.file_reader(pieces), source.parser(pieces)


def bare_reader(source: sources.TfdsSource, split: str, *, batch_size: int,
                cycle_length: int, decode_to: int = 0) -> tf.data.Dataset:
  """The TFRecord files read `cycle_length` at a time (tf.data's parallel interleave, any
  order), parsed in parallel; decoded and resized to `decode_to`² if it is set, else a
  1×1 image stands in (as in our pipeline with decoding off). Repeated forever."""
  pieces, read, parse = _tfrecords(source, split)

  def one_file(file):
    return read(file).enumerate().map(
        lambda index, serialized: {'serialized': serialized, 'file': file, 'index': index})

  def load(record):
    example = parse(record)
    if decode_to:
      image = tf.io.decode_jpeg(example['image'], channels=3)
      image = tf.cast(tf.image.resize(image, (decode_to, decode_to)), tf.uint8)
    else:
      image = tf.fill([1, 1, 3], tf.cast(tf.strings.length(example['image']) % 2, tf.uint8))
    return {'image': image, 'label': example['label']}

  files = tf.data.Dataset.range(len(pieces)).repeat()
  records = files.interleave(one_file, cycle_length=cycle_length, deterministic=False,
                             num_parallel_calls=tf.data.AUTOTUNE)
  return records.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(
      tf.data.AUTOTUNE)


def bare_folder_loop(paths: list[str], *, image_size: int, batch_size: int) -> tf.data.Dataset:
  """read_file → decode_jpeg → bilinear resize → batch, repeated: the floor of any pipeline."""
  def load(path):
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    return {'image': tf.cast(tf.image.resize(image, (image_size, image_size)), tf.uint8),
            'label': tf.strings.length(path)}

  dataset = tf.data.Dataset.from_tensor_slices(paths).repeat()
  return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(
      batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _dataset_config(config: ml_collections.ConfigDict, name: str, data_dir: str,
                    **dataset) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.dataset.name, config.dataset.data_dir = name, data_dir
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'train' if name == sources.IMAGE_FOLDER else 'validation'
  config.dataset.cache = False
  config.dataset.update(dataset)
  return config


def _ours(config: ml_collections.ConfigDict, *, decode: bool = True
          ) -> Callable[[], tf.data.Dataset]:
  source = sources.create_source(config)
  info = sources.dataset_info(source, config)
  return lambda: pipeline.train_dataset(source, config, info, start_step=0, process_index=0,
                                        process_count=1, decode=decode)


@dataclasses.dataclass
class Figures:
  """img/s of each pipeline, by section, and the cores they ran on."""
  cores: int
  sections: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  notes: dict[str, object] = dataclasses.field(default_factory=dict)


def measure_throughput(config: ml_collections.ConfigDict, tfds_dir: str, folder: str, *,
                       rounds: int, **timing) -> Figures:
  """Ours against the bare loops on the same TFRecords and the same folder."""
  figures = Figures(cores=usable_cores())
  tfds_config = _dataset_config(config, synthetic_data.TFDS_NAME, tfds_dir)
  source = sources.create_source(tfds_config)
  size, batch = config.dataset.image_size, config.batch_size
  cycle = config.dataset.cycle_length
  figures.notes['tfrecord_files'] = len(source.file_pieces('train'))
  figures.notes['records'] = source.split_size('train')
  figures.sections['read + parse, decoding off (records/s)'] = _best_of({
      'bare parallel reader': lambda: bare_reader(source, 'train', batch_size=batch,
                                                  cycle_length=cycle),
      'ours': _ours(tfds_config, decode=False)}, rounds=rounds, **timing)
  figures.sections['TFRecords, decoded (img/s)'] = _best_of({
      'bare decode loop': lambda: bare_reader(source, 'train', batch_size=batch,
                                              cycle_length=cycle, decode_to=size),
      'ours': _ours(tfds_config)}, rounds=rounds, **timing)
  folder_config = _dataset_config(config, sources.IMAGE_FOLDER, folder)
  paths = [str(p) for p in sources.create_source(folder_config).splits['train'].paths]
  figures.notes['folder_files'] = len(paths)
  figures.sections['image folder, decoded (img/s)'] = _best_of({
      'bare decode loop': lambda: bare_folder_loop(paths, image_size=size, batch_size=batch),
      'ours': _ours(folder_config)}, rounds=rounds, **timing)
  return figures


def recipe_config(spec: str) -> ml_collections.ConfigDict:
  """configs/<file>.py[:argument] of the checkout, as the trainer would load it."""
  path = config_files.checkout_config(spec.split('.py')[0])
  config_files.make_importable([f'--config={path}'])
  module = importlib.import_module(f'configs.{os.path.basename(path)[:-3]}')
  argument = spec.split(':', 1)[1] if ':' in spec else None
  return module.get_config(argument) if argument else module.get_config()


def measure_host_costs(config: ml_collections.ConfigDict, tfds_dir: str, *, rounds: int,
                       **timing) -> Figures:
  """img/s of our pipeline with each augmentation at 224², and with each recipe's
  host-side settings, on the same TFRecords."""
  figures = Figures(cores=usable_cores())
  base = _dataset_config(config, synthetic_data.TFDS_NAME, tfds_dir, image_size=224,
                         augment='imagenet', random_flip=True, randaugment_layers=0,
                         trivial_augment=False, repeated_augmentation=1, min_image_size=0)
  figures.sections['augmentations at 224² (img/s)'] = _best_of(
      {name: _ours(_dataset_config(base, synthetic_data.TFDS_NAME, tfds_dir, **settings))
       for name, settings in AUGMENTATIONS.items()}, rounds=rounds, **timing)
  recipes = {}
  for name, spec in RECIPES.items():
    recipe = recipe_config(spec).dataset
    settings = {key: recipe[key] for key in (
        'image_size', 'augment', 'random_flip', 'randaugment_layers', 'randaugment_magnitude',
        'trivial_augment', 'repeated_augmentation')}
    recipes[f'{name}: {settings["image_size"]}²'] = _ours(
        _dataset_config(base, synthetic_data.TFDS_NAME, tfds_dir, **settings))
  figures.sections['recipes (img/s)'] = _best_of(recipes, rounds=rounds, **timing)
  return figures


def measure_startup(config: ml_collections.ConfigDict, folder: str) -> dict[str, float]:
  """Seconds to list `folder` bare (os.walk) and until our source is ready."""
  start = time.perf_counter()
  files = sum(len(names) for _, _, names in os.walk(folder))
  listing = time.perf_counter() - start
  start = time.perf_counter()
  folder_config = _dataset_config(config, sources.IMAGE_FOLDER, folder)
  folder_config.dataset.eval_split = 'validation'
  source = sources.create_source(folder_config)
  sources.dataset_info(source, folder_config)
  ready = time.perf_counter() - start
  return {'files': files, 'listing_seconds': listing, 'ready_seconds': ready,
          'goal_seconds': 2 + 2 * listing}


def write_startup_folder(directory: str, count: int) -> str:
  """`count` tiny JPEGs in 100 class folders of train/, 100 in validation/."""
  pool = synthetic_data.jpeg_pool(8, height=32, width=32)
  for split, files in (('train', count), ('validation', 100)):
    for k in range(100):
      os.makedirs(os.path.join(directory, split, f'class_{k:03d}'), exist_ok=True)
    for i in range(files):
      with open(os.path.join(directory, split, f'class_{i % 100:03d}', f'{i}.jpg'), 'wb') as f:
        f.write(pool[i % len(pool)])
  return directory


def cores_per_gpu(images_per_sec: float, cores: int) -> float:
  """Host cores that feed GPU_IMAGES_PER_SEC at this pipeline's rate per core."""
  return GPU_IMAGES_PER_SEC / (images_per_sec / cores)


def report(throughput: Figures | None, costs: Figures | None,
           startup: dict[str, float] | None) -> list[str]:
  """The printed table."""
  lines = []
  if throughput:
    notes = throughput.notes
    lines.append(f'{notes["tfrecord_files"]} TFRecord files, {notes["records"]} records; '
                 f'folder of {notes["folder_files"]} files; {throughput.cores} cores')
    for section, rates in throughput.sections.items():
      lines.append(section)
      bare, ours = rates.values()
      for name, rate in rates.items():
        lines.append(f'  {name:<28} {rate:9,.0f}  ({rate / throughput.cores:,.0f} per core)')
      lines.append(f'  ratio ours / bare: {ours / bare:.2f}x')
  if costs:
    rates = costs.sections['augmentations at 224² (img/s)']
    plain = next(iter(rates.values()))
    lines.append(f'host cost per image at 224² (ms of one core; {costs.cores} cores)')
    for name, rate in rates.items():
      cost = 1e3 * costs.cores / rate
      extra = cost - 1e3 * costs.cores / plain
      lines.append(f'  {name:<28} {cost:6.2f} ms  ({extra:+.2f} ms)  {rate:7,.0f} img/s')
    lines.append(f'cores per GPU at {GPU_IMAGES_PER_SEC:,} img/s, by recipe')
    for name, rate in costs.sections['recipes (img/s)'].items():
      lines.append(f'  {name:<40} {rate / costs.cores:7,.0f} img/s per core -> '
                   f'{cores_per_gpu(rate, costs.cores):5.1f} cores')
  if startup:
    verdict = 'met' if startup['ready_seconds'] <= startup['goal_seconds'] else 'NOT met'
    lines.append(f'folder start-up, {startup["files"]:,} files: bare listing '
                 f'{startup["listing_seconds"]:.2f} s, source ready {startup["ready_seconds"]:.2f} s'
                 f' (goal <= 2 s + 2 x listing = {startup["goal_seconds"]:.2f} s: {verdict})')
  return lines


def generated_tfds(directory: str, *, num_files: int, per_file: int) -> str:
  """The synthetic TFDS dataset in `directory`, written there unless it is already."""
  if not os.path.isdir(os.path.join(directory, synthetic_data.TFDS_NAME)):
    synthetic_data.write_tfds(directory, num_files=num_files, per_file=per_file,
                              eval_examples=num_files)
  return directory


def generated_folder(directory: str, count: int) -> str:
  if not os.path.isdir(os.path.join(directory, 'train')):
    synthetic_data.write_folder(directory, count)
  return directory


def np_summary(figures: Figures | None) -> dict:
  """A JSON-ready copy."""
  return {} if figures is None else {'cores': figures.cores, **figures.notes,
                                     **{k: {n: float(np.round(v, 1)) for n, v in r.items()}
                                        for k, r in figures.sections.items()}}
