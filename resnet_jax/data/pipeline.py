"""tf.data pipelines: deterministic resumable order, parallel reading, exact evaluation.

Training order is a function of (seed, epoch) (order.py), epochs follow each other
without a gap, and every example gets a stateless augmentation key from its epoch and
its record, so a run resumed at step k yields bitwise the batches an uninterrupted run
yields from k on. `train_dataset` runs five named stages:

1. records (`_records`): a TFDS split in TFRecord files is read `dataset.cycle_length`
   files at a time, interleaved, each file shuffled within itself, a new file order each
   epoch; image-folder paths and cached splits are shuffled whole each epoch;
2. copies (`_with_copies`): repeated augmentation's copies of each record;
3. this process's share (`_numbered`): every element numbered, (n, element), in the
   stream of all processes; with 'global' order a process keeps its slice of each global
   batch here, before any record is parsed or image read;
4. load (`_load`): parse or read, decode and augment (train_images.py), in parallel; for image folders an
   unreadable or corrupt file yields a flagged blank instead of an error;
5. batches (`_batched`): fixed-size batches; a flagged image is replaced by the next
   readable one of its batch and counted, so batch positions (and resumes) never shift.

Two ways to split the work over P processes (`dataset.order`):

- 'global': every process walks the same stream of the whole split and keeps its slice
  of each global batch, so the global batches, and hence the trained parameters, do not
  depend on P. Every process reads every record (for an image folder: every path; the
  images themselves are read only by their process).
- 'per_process': process p reads only examples [p·N/P, (p+1)·N/P) and shuffles them:
  each host reads 1/P of the data, and an epoch is still the whole split.

With one process the two are the same. Evaluation always reads per process, pads the
last batch and masks the padding, so every example counts exactly once; an unreadable
image there is masked out and logged.
"""

import dataclasses
import math
import os
from typing import Callable, Iterator, NamedTuple

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from clu import deterministic_data

from resnet_jax.data import ORDERS  # noqa: F401  (re-exported: global, per_process)
from resnet_jax.data import order, preprocess, resolution, sources, train_images, unreadable


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def host_cpus() -> int:
  """CPUs this process may use: its affinity mask (taskset, srun --cpu-bind, cgroups
  cpusets), capped by SLURM_CPUS_PER_TASK; not the node's count, which every process
  of a multi-process node would otherwise claim for itself."""
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  slurm = os.environ.get('SLURM_CPUS_PER_TASK', '')
  if slurm.isdigit() and int(slurm) > 0:
    cpus = min(cpus or 1, int(slurm))
  return max(cpus or 1, 1)


def configure_tensorflow() -> None:
  """TensorFlow on the host only, its pools sized to the CPUs this process may use (as
  tf.data's are, not the node's). Call before TensorFlow runs anything."""
  try:
    tf.config.set_visible_devices([], 'GPU')  # only the input pipeline uses TF
    tf.config.threading.set_intra_op_parallelism_threads(host_cpus())
    tf.config.threading.set_inter_op_parallelism_threads(host_cpus())
  except RuntimeError:  # TensorFlow already ran something (a notebook, a test): keep it so
    pass


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = True
  cpus = host_cpus()
  options.autotune.cpu_budget = cpus
  options.threading.private_threadpool_size = cpus
  # Parallelism comes from the maps' parallel calls on that pool; ops that also split
  # themselves across threads would oversubscribe it (TF's tf.data performance guide).
  options.threading.max_intra_op_parallelism = 1
  return options


@dataclasses.dataclass(frozen=True)
class _Layout:
  """How the training stream is cut into this process's batches."""
  index: int  # this process
  count: int  # all processes
  batch_size: int  # global
  shared: bool  # 'global' order: every process walks the stream of the whole split
  repeats: int  # repeated augmentation: copies of each record

  @property
  def local_batch(self) -> int:
    return self.batch_size // self.count

  @property
  def part(self) -> tuple[int, int]:
    """The (index, count) part of the split this process's stream holds."""
    return (0, 1) if self.shared else (self.index, self.count)

  @property
  def group(self) -> int:
    """Elements one step takes from the stream this process walks."""
    return self.batch_size if self.shared else self.local_batch

  @property
  def per_group(self) -> int:
    """Distinct records in a group: ceil(group / repeats)."""
    return -(-self.group // self.repeats)

  def start(self, consumed: int) -> int:
    """The stream position (records since the first of epoch 0) where the stream resumes
    after the run consumed `consumed` training examples (every process's and copy)."""
    examples = consumed if self.shared else consumed // self.count
    return examples * self.per_group // self.group


class _Records(NamedTuple):
  """Stage 1's output: the stream and how to read its elements."""
  stream: tf.data.Dataset  # {'record', 'epoch', ...} from the start position on
  read: Callable[[dict], dict]  # record -> {'image': encoded bytes, 'label', 'id'}
  position: Callable[[dict], tf.Tensor]  # element -> its record's number in the epoch


def _records(source: sources.TfdsSource | sources.FolderSource,
             config: ml_collections.ConfigDict, layout: _Layout, start: int) -> _Records:
  """Stage 1: this process's stream from stream position `start` on."""
  split, data = config.dataset.train_split, config.dataset
  pieces = (source.file_pieces(split, *layout.part)
            if isinstance(source, sources.TfdsSource) and not data.cache else None)
  if pieces:
    lengths = np.array([piece.take for piece in pieces])
    stream = order.interleaved_files(
        source.file_reader(pieces), lengths, seed=config.seed, start=start,
        cycle_length=data.cycle_length, shuffle_buffer=data.shuffle_buffer)
    return _Records(stream, source.parser(pieces), order.record_position(lengths))
  records, read = source.records(split, *layout.part), source.read
  folder = isinstance(source, sources.FolderSource)
  # An image folder's files are read where a failure is caught (stage 4), never cached.
  if data.cache and not folder:
    records = records.map(source.read, num_parallel_calls=tf.data.AUTOTUNE).cache()
    read = lambda record: record
  # Paths and cached records are cheap to hold: shuffle whole epochs.
  whole = folder or data.cache
  epoch_length = source.part_size(split, *layout.part)
  start_epoch, skip = divmod(start, epoch_length)
  stream = order.fully_shuffled(records, seed=config.seed, start_epoch=start_epoch, skip=skip,
                                buffer=epoch_length if whole else data.shuffle_buffer)
  return _Records(stream, read, lambda element: element['position'])


def _with_copies(stream: tf.data.Dataset, layout: _Layout) -> tf.data.Dataset:
  """Stage 2: adds 'copy'. Repeated augmentation: each group (a global batch, or this
  process's share of it with per_process reading) holds `repeats` copies of
  ceil(group / repeats) records, copy after copy (the last copy cut short where repeats
  does not divide the group, as timm's RepeatAugSampler pads), so the copies of a record
  lie ceil(group / repeats) apart: on different devices as long as repeats <= the
  devices the group spans."""
  if layout.repeats == 1:
    return stream

  def copies(window):
    tiled = tf.nest.map_structure(
        lambda x: tf.tile(x, [layout.repeats] + [1] * (x.shape.rank - 1))[:layout.group], window)
    return tiled | {'copy': tf.range(layout.group, dtype=tf.int64) // layout.per_group}

  return stream.batch(layout.per_group, drop_remainder=True).map(copies).unbatch()


def _numbered(stream: tf.data.Dataset, layout: _Layout) -> tf.data.Dataset:
  """Stage 3: (n, element), n counting the elements of all processes' batches; with
  'global' order over several processes only this process's slice of each global batch
  is kept. Numbered whether or not n is read (one element schema from here on, training
  and evaluation alike): the serial count costs a few % of the read + parse rate, which
  never limits the pipeline (decoding does)."""
  stream = stream.enumerate()
  if layout.shared and layout.count > 1:
    stream = stream.filter(
        lambda n, element: (n % layout.batch_size) // layout.local_batch == layout.index)
  return stream


def _load(stream: tf.data.Dataset, record_of: Callable[[dict], dict],
          image: Callable[..., tf.Tensor], guarded: bool, channels: int,
          with_ids: bool) -> tf.data.Dataset:
  """Stage 4: {'image', 'label'} (+ 'id' with `with_ids` or `guarded`, + 'unreadable'
  when `guarded`) from each (n, element); record_of(element) reads the record,
  image(encoded image, n, element) makes the image."""
  def load(n, element):
    record = record_of(element)
    example = {'image': image(record['image'], n, element), 'label': record['label']}
    # An id unasked for is never built (its string ops cost ~4 % of the read rate).
    return (example | {'id': record['id']}) if with_ids or guarded else example

  if not guarded:
    return stream.map(load, num_parallel_calls=tf.data.AUTOTUNE)
  blank = unreadable.blank_image(channels)

  def load_blank(n, element):  # the record unread: its path, label and id
    record = element['record'] if 'record' in element else element
    return {'image': image(blank, n, element), 'label': record['label'],
            'id': record['id']}
  return unreadable.guarded_load(stream, load, load_blank, cycle_length=host_cpus())


def _batched(stream: tf.data.Dataset, local_batch: int, guarded: bool,
             with_ids: bool) -> tf.data.Dataset:
  """Stage 5: batches of `local_batch`. With `guarded`, each unreadable image (and its
  label and id) is replaced by the next readable one of its batch, 'unreadable' (int32
  [local_batch]) says which rows were, and 'skipped' holds their ids for the log."""
  stream = stream.batch(local_batch, drop_remainder=True)
  if guarded:
    stream = stream.map(unreadable.replace_unreadable)
  return stream if with_ids or not guarded else stream.map(_without_ids)


def _without_ids(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {key: value for key, value in batch.items() if key != 'id'}


def train_dataset(source: sources.TfdsSource | sources.FolderSource,
                  config: ml_collections.ConfigDict, info: sources.DatasetInfo, *,
                  start_step: int, examples_before: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  with_ids: bool = False, decode: bool = True) -> tf.data.Dataset:
  """This process's training batches as a tf.data.Dataset (see train_batches); for image
  folders with 'skipped' too (the unreadable files' ids). `decode=False` replaces
  decoding and augmentation with a constant image (the input benchmark's read + parse
  figure)."""
  index, count = _processes(process_index, process_count)
  layout = _Layout(index=index, count=count, batch_size=config.batch_size,
                   shared=config.dataset.order == 'global',
                   repeats=config.dataset.repeated_augmentation)
  consumed = start_step * config.batch_size if examples_before is None else examples_before
  records = _records(source, config, layout, layout.start(consumed))
  changes = resolution.schedule(config, info.num_train_examples // config.batch_size)
  stream = _numbered(_with_copies(records.stream, layout), layout)
  guarded = isinstance(source, sources.FolderSource)
  image = train_images.augmenter(
      config, info, stream_id=0 if layout.shared else layout.index, group=layout.group,
      start_step=start_step, changes=changes, position=records.position, decode=decode)
  stream = _load(stream, lambda element: records.read(element['record']), image, guarded,
                 info.image_shape[-1], with_ids)
  stream = _batched(stream, layout.local_batch, guarded, with_ids)
  return stream.prefetch(tf.data.AUTOTUNE).with_options(_options())


def train_batches(source: sources.TfdsSource | sources.FolderSource,
                  config: ml_collections.ConfigDict, info: sources.DatasetInfo, *,
                  start_step: int, examples_before: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  with_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """This process's training batches for global steps start_step, start_step + 1, ...

  Args:
    source: from sources.create_source().
    config: the run config (dataset.*, batch_size, seed).
    info: from sources.dataset_info().
    start_step: the first step the batches are for (0, or the restored step).
    examples_before: training examples the run consumed before start_step (default:
      start_step × batch_size; workdir.examples_trained after a batch-size change).
    process_index: this process (default: jax.process_index()).
    process_count: all processes (default: jax.process_count()).
    with_ids: also yield each example's id (TFDS id or file path).

  Yields:
    {'image': uint8 [local_batch, H, W, C], 'label': int32 [local_batch]} (+ 'id'); for
    image folders also 'unreadable' (int32 [local_batch]: 1 where an unreadable file's
    place was taken by the next readable image of the batch).
  """
  dataset = train_dataset(source, config, info, start_step=start_step,
                          examples_before=examples_before, process_index=process_index,
                          process_count=process_count, with_ids=with_ids)
  return unreadable.log_unreadable(iter(tfds.as_numpy(dataset)), training=True)


def num_eval_batches(source: sources.TfdsSource | sources.FolderSource,
                     config: ml_collections.ConfigDict, process_count: int | None = None) -> int:
  """Evaluation steps that cover the largest process's part of the split."""
  count = jax.process_count() if process_count is None else process_count
  largest_part = max(source.part_size(config.dataset.eval_split, index, count)
                     for index in range(count))
  return math.ceil(largest_part / (config.batch_size // count))


def _eval_records(source: sources.TfdsSource | sources.FolderSource,
                  config: ml_collections.ConfigDict, index: int, count: int
                  ) -> tuple[tf.data.Dataset, Callable[[dict], dict]]:
  """This process's part of the evaluation split in a fixed order, and its reader."""
  split = config.dataset.eval_split
  pieces = (source.file_pieces(split, index, count)
            if isinstance(source, sources.TfdsSource) else None)
  if pieces:
    return order.interleaved_once(source.file_reader(pieces), len(pieces),
                                  cycle_length=config.dataset.cycle_length), source.parser(pieces)
  return source.records(split, index, count), source.read


def eval_batches(source: sources.TfdsSource | sources.FolderSource,
                 config: ml_collections.ConfigDict, info: sources.DatasetInfo, *,
                 process_index: int | None = None, process_count: int | None = None,
                 with_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """This process's evaluation batches, padded to full size, with a 0/1 int32 `mask`.

  Every process yields num_eval_batches() batches; each example of the split is in
  exactly one of them with mask 1 (an unreadable image of an image folder: mask 0, and
  logged), so masked metrics count every readable example once.
  """
  index, count = _processes(process_index, process_count)
  local_batch = config.batch_size // count
  records, read = _eval_records(source, config, index, count)

  def image(encoded, n, element):
    del n, element
    return preprocess.eval_image(encoded, augment=config.dataset.augment,
                                 image_size=resolution.eval_image_size(config),
                                 channels=info.image_shape[-1],
                                 crop_fraction=config.dataset.eval_crop_fraction)

  guarded = isinstance(source, sources.FolderSource)
  dataset = _load(records.enumerate(), read, image, guarded, info.image_shape[-1], with_ids)
  # Every process pads its part up to the same number of batches, with mask 0.
  dataset = deterministic_data.pad_dataset(
      dataset, batch_dims=[local_batch], pad_up_to_batches=num_eval_batches(source, config, count),
      cardinality=source.part_size(config.dataset.eval_split, index, count))

  def masked(example):
    mask = example.pop('mask')
    if guarded:
      failed = example.pop('unreadable')
      example['skipped'] = tf.where(failed, example['id'], '')
      mask = mask & tf.logical_not(failed)
    return example | {'mask': tf.cast(mask, tf.int32)}

  dataset = dataset.map(masked).batch(local_batch, drop_remainder=True)
  if guarded:
    dataset = dataset.map(lambda batch: batch | {
        'skipped': tf.boolean_mask(batch['skipped'], batch['skipped'] != '')})
  if guarded and not with_ids:
    dataset = dataset.map(_without_ids)
  dataset = dataset.prefetch(tf.data.AUTOTUNE).with_options(_options())
  yield from unreadable.log_unreadable(iter(tfds.as_numpy(dataset)), training=False)
