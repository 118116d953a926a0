"""The order of the training stream: which record comes at (epoch, position), and where a
resumed run starts reading.

Every random draw comes from a key of (seed, epoch, purpose), folded with what it is for
(a file, an example), so no two draws share a key: seed s at epoch e+1 shares nothing
with seed s+1 at epoch e.

A split stored as TFRecord files (`interleaved_files`) is read `cycle_length` files at a
time: each epoch draws its own file order, each file's records are shuffled with a key of
(seed, epoch, file) in a buffer that never spans two files, and the open files are
interleaved one record at a time (tf.data's deterministic interleave, read by parallel
threads). The interleave depends only on the file lengths, so the state at any position
is computed (`resume_plan`) rather than replayed: a resume skips whole files unread and
reopens at most `cycle_length` files, each shuffled as before and cut where it stopped.
Lists held in memory (image-folder paths, cached splits: `fully_shuffled`) are shuffled
whole each epoch; skipping there costs nothing.
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging

# Epochs the stream runs for; far beyond any run (ImageNet at 1,000 epochs is 1,000).
MAX_EPOCHS = 1 << 15
# What a key of (seed, epoch) is folded with, so that each use draws from its own key.
FILE_ORDER, FILE_SHUFFLE, FULL_SHUFFLE, AUGMENT = range(4)


def epoch_key(seed, epoch, purpose: int) -> tf.Tensor:
  """An int32 [2] stateless key for one use (`purpose`) of (seed, epoch)."""
  base = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
  return tf.random.experimental.stateless_fold_in(base, purpose)


def _op_seed(key: tf.Tensor) -> tf.Tensor:
  """An int64 drawn from `key`: the seed of a tf.data shuffle (which takes one integer)."""
  return tf.random.stateless_uniform([], seed=key, minval=None, maxval=None, dtype=tf.int64)


def file_order(seed: int, epoch, num_files: int) -> tf.Tensor:
  """The order in which epoch `epoch` reads the files; the same op eagerly and in tf.data."""
  draws = tf.random.stateless_uniform([num_files], seed=epoch_key(seed, epoch, FILE_ORDER))
  return tf.cast(tf.argsort(draws), tf.int64)


@dataclasses.dataclass(frozen=True)
class ResumePlan:
  """Where a pass over files, interleaved `cycle_length` at a time, stands after `consumed`
  records: reopen `files` (indices into the pass's order) in this order, each from
  `offsets` (records of it already read), and the interleave continues as it would have."""
  files: tuple[int, ...]
  offsets: tuple[int, ...]


def resume_plan(lengths: np.ndarray, cycle_length: int, consumed: int) -> ResumePlan:
  """The state of tf.data's deterministic interleave (block_length 1) over files of
  `lengths`, in that order, after it has yielded `consumed` records.

  The interleave opens the first `cycle_length` files into slots, then visits the slots in
  turn, yielding one record from each; a slot whose file turns out to be exhausted is
  emptied (that visit yields nothing), and an empty slot takes the next file when next
  visited. After `consumed` records, reopening the slots' files in visiting order from the
  next slot (an empty slot given its next file, as the visit would) rebuilds that state.
  Whole rounds without a change are jumped over, so this costs O(files × cycle_length).
  """
  lengths = np.asarray(lengths, np.int64)
  if consumed > lengths.sum():
    raise ValueError(f'consumed {consumed} > the {lengths.sum()} records of the files')
  slots: list[list[int] | None] = [None] * cycle_length  # [file, records read]
  next_file = min(cycle_length, len(lengths))
  for slot in range(next_file):
    slots[slot] = [slot, 0]
  produced, cursor = 0, 0
  while produced < consumed:
    open_slots = [s for s in slots if s is not None]
    steady = all(s[1] < lengths[s[0]] for s in open_slots) and (
        next_file == len(lengths) or all(s is not None for s in slots))
    if cursor == 0 and steady and open_slots:
      rounds = min(min(int(lengths[f]) - read for f, read in open_slots),
                   (consumed - produced) // len(open_slots))
      if rounds > 0:
        for s in open_slots:
          s[1] += rounds
        produced += rounds * len(open_slots)
        continue
    slot = slots[cursor]
    if slot is None and next_file < len(lengths):
      slot = slots[cursor] = [next_file, 0]
      next_file += 1
    if slot is not None:
      if slot[1] < lengths[slot[0]]:
        slot[1] += 1
        produced += 1
      else:
        slots[cursor] = None
    cursor = (cursor + 1) % cycle_length
  files, offsets = [], []
  for step in range(cycle_length):
    slot = slots[(cursor + step) % cycle_length]
    if slot is None and next_file < len(lengths):
      slot = [next_file, 0]
      next_file += 1
    if slot is not None:
      files.append(slot[0])
      offsets.append(slot[1])
  files.extend(range(next_file, len(lengths)))
  offsets.extend([0] * (len(lengths) - next_file))
  return ResumePlan(tuple(files), tuple(offsets))


def interleaved_files(read_file: Callable[[tf.Tensor], tf.data.Dataset], lengths: np.ndarray,
                      *, seed: int, start_epoch: int, skip: int, cycle_length: int,
                      shuffle_buffer: int) -> tf.data.Dataset:
  """{'record': {'serialized', 'file', 'index'}, 'epoch', 'position'}: the records of the
  files of `lengths` (record counts), read `cycle_length` at a time in an order drawn per
  epoch, from stream position `skip` of `start_epoch` on. 'index' counts a record within
  its file, 'position' within all files (storage order): each record's number in the
  epoch, whatever the order.

  Args:
    read_file: file (an index into `lengths`) -> its serialized records in storage order.
  """
  num_files = len(lengths)
  cycle = max(1, min(cycle_length, num_files))
  lengths_tensor = tf.constant(np.asarray(lengths, np.int64))
  starts = tf.constant(np.cumsum(lengths) - lengths, tf.int64)

  def one_file(epoch, file, offset) -> tf.data.Dataset:
    # A file already read to its end is reopened but not read (its slot stays as it was).
    records = read_file(file).take(tf.where(offset < lengths_tensor[file], np.int64(-1),
                                            np.int64(0)))
    # Tagged here, in the file's own reader thread: a map after the interleave would be a
    # serial stage (measured: -10 % of the read + parse rate on 2 cores).
    records = records.enumerate().map(lambda index, serialized: {
        'record': {'serialized': serialized, 'file': file, 'index': index},
        'epoch': epoch, 'position': starts[file] + index})
    key = tf.random.experimental.stateless_fold_in(epoch_key(seed, epoch, FILE_SHUFFLE), file)
    buffer = tf.maximum(tf.minimum(lengths_tensor[file], shuffle_buffer), 1)
    return records.shuffle(buffer, seed=_op_seed(key), reshuffle_each_iteration=False).skip(offset)

  def one_epoch(epoch, files: tf.Tensor, offsets: tf.Tensor) -> tf.data.Dataset:
    opened = tf.data.Dataset.from_tensor_slices((files, offsets))
    return opened.interleave(lambda file, offset: one_file(epoch, file, offset),
                             cycle_length=cycle, block_length=1,
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  order = file_order(seed, start_epoch, num_files).numpy()
  plan = resume_plan(np.asarray(lengths)[order], cycle, skip)
  if skip:
    logging.info('Resuming the data at epoch %d, example %d: %d of %d files skipped unread, '
                 '%d reopened part-read', start_epoch, skip, num_files - len(plan.files),
                 num_files, sum(0 < offset for offset in plan.offsets))
  first = one_epoch(tf.constant(start_epoch, tf.int64),
                    tf.constant(order[list(plan.files)], tf.int64),
                    tf.constant(plan.offsets, tf.int64))
  # Epochs one after the other: the next epoch's first files fill their shuffle buffers
  # only once this one ends, a stall of ~cycle_length / files of an epoch's reading
  # (ImageNet: 16 / 1,024); within an epoch the interleave opens files ahead of need.
  rest = tf.data.Dataset.range(start_epoch + 1, MAX_EPOCHS).flat_map(
      lambda epoch: one_epoch(epoch, file_order(seed, epoch, num_files),
                              tf.zeros([num_files], tf.int64)))
  return first.concatenate(rest)


def fully_shuffled(records: tf.data.Dataset, *, seed: int, start_epoch: int, skip: int,
                   buffer: int) -> tf.data.Dataset:
  """{'record', 'epoch', 'position'}: `records` shuffled each epoch with a key of (seed,
  epoch), from stream position `skip` of `start_epoch` on (skipped before anything is
  read); 'position' is the stream position in the epoch."""
  def one_epoch(epoch):
    seed_of_epoch = _op_seed(epoch_key(seed, epoch, FULL_SHUFFLE))
    shuffled = records.shuffle(buffer, seed=seed_of_epoch, reshuffle_each_iteration=False)
    return shuffled.enumerate().map(
        lambda position, record: {'record': record, 'epoch': epoch, 'position': position})
  return tf.data.Dataset.range(start_epoch, MAX_EPOCHS).flat_map(one_epoch).skip(skip)


def interleaved_once(read_file: Callable[[tf.Tensor], tf.data.Dataset], num_files: int, *,
                     cycle_length: int) -> tf.data.Dataset:
  """{'serialized', 'file', 'index'}: the records of files 0..num_files-1, read
  `cycle_length` at a time and interleaved, once, in an order fixed by the files
  (evaluation)."""
  def one_file(file):
    return read_file(file).enumerate().map(
        lambda index, serialized: {'serialized': serialized, 'file': file, 'index': index})
  return tf.data.Dataset.range(num_files).interleave(
      one_file, cycle_length=max(1, min(cycle_length, num_files)), block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
