"""The order of the training stream: which record comes at (epoch, position), and where a
resumed run starts reading.

Every random draw comes from a key of (seed, epoch, purpose), folded with what it is for
(a file, an example), so no two draws share a key: seed s at epoch e+1 shares nothing
with seed s+1 at epoch e.

A split stored as TFRecord files (`interleaved_files`) is read `cycle_length` files at a
time: each epoch draws its own file order, each file's records are shuffled with a key of
(seed, epoch, file) in a buffer that never spans two files, and the open files are
interleaved one record at a time (tf.data's deterministic interleave, read by parallel
threads), one epoch's files after the other's. The interleave depends only on the file
lengths, so the state at any position is computed (`resume_plan`) rather than replayed:
a resume skips whole files unread and reopens at most `cycle_length` files, each
shuffled as before and cut where it stopped.
Lists held in memory (image-folder paths, cached splits: `fully_shuffled`) are shuffled
whole each epoch; skipping there costs nothing.
"""

import dataclasses
import itertools
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
  """Where an interleave of files, `cycle_length` at a time, stands after some records:
  reopen `reopen`'s files ((item, records of it already read), in this order), then
  continue with items `next_item`, `next_item` + 1, ..., and the interleave goes on as it
  would have."""
  reopen: tuple[tuple[int, int], ...]
  next_item: int


def resume_plan(length: Callable[[int], int], cycle_length: int, consumed: int, *,
                count: int | None = None) -> ResumePlan:
  """The state of tf.data's deterministic interleave (block_length 1) over items 0, 1, 2,
  ... (files of length(i) records; `count` of them, or without end) after it has yielded
  `consumed` records.

  The interleave opens the first `cycle_length` items into slots, then visits the slots
  in turn, yielding one record from each; a slot whose file turns out to be exhausted is
  emptied (that visit yields nothing), and an empty slot takes the next item when next
  visited. Reopening the slots' files in visiting order from the next slot (an empty slot
  given its next item, as that visit would) rebuilds the state. Rounds without a change
  are jumped over: this costs O(items passed × cycle_length) steps.
  """
  if count is not None and consumed > sum(length(i) for i in range(count)):
    raise ValueError(f'consumed {consumed} > the records of the {count} files')
  items = itertools.count() if count is None else iter(range(count))

  def take_item() -> list[int] | None:  # a slot: [item, its length, records read]
    item = next(items, None)
    return None if item is None else [item, length(item), 0]

  slots = [take_item() for _ in range(cycle_length)]
  exhausted_input = any(slot is None for slot in slots)
  produced, cursor = 0, 0
  while produced < consumed:
    open_slots = [slot for slot in slots if slot is not None]
    steady = all(read < size for _, size, read in open_slots) and (
        exhausted_input or len(open_slots) == cycle_length)
    if cursor == 0 and steady:
      rounds = min(min(size - read for _, size, read in open_slots),
                   (consumed - produced) // len(open_slots))
      if rounds > 0:
        for slot in open_slots:
          slot[2] += rounds
        produced += rounds * len(open_slots)
        continue
    if slots[cursor] is None and not exhausted_input:
      slots[cursor] = take_item()
      exhausted_input = slots[cursor] is None
    slot = slots[cursor]
    if slot is not None:
      if slot[2] < slot[1]:
        slot[2] += 1
        produced += 1
      else:
        slots[cursor] = None
    cursor = (cursor + 1) % cycle_length
  reopen = []
  for step in range(cycle_length):
    slot = slots[(cursor + step) % cycle_length]
    if slot is None and not exhausted_input:
      slot = take_item()
      exhausted_input = slot is None
    if slot is not None:
      reopen.append((slot[0], slot[2]))
  next_item = next(items, None)
  return ResumePlan(tuple(reopen), next_item if next_item is not None else count)


def interleaved_files(read_file: Callable[[tf.Tensor], tf.data.Dataset], lengths: np.ndarray,
                      *, seed: int, start: int, cycle_length: int,
                      shuffle_buffer: int) -> tf.data.Dataset:
  """{'record': {'serialized', 'file', 'index'}, 'epoch'}: the records of the files of
  `lengths` (record counts), read `cycle_length` at a time, epoch after epoch in an order
  drawn per epoch, from stream position `start` (records since the first of epoch 0) on.
  'index' counts a record within its file; `record_position` numbers it within all files.

  One interleave runs across epochs, so the next epoch's first files fill their shuffle
  buffers while this epoch's last ones are read (separate epochs would stall at each
  boundary while the first `cycle_length` files fill: the whole epoch with few files).
  Near a boundary the two epochs' records therefore mix (each file is still read once
  per epoch), unless every slot's file ends in the same round.

  Args:
    read_file: file (an index into `lengths`) -> its serialized records in storage order.
  """
  num_files = len(lengths)
  cycle = max(1, min(cycle_length, num_files))
  lengths_tensor = tf.constant(np.asarray(lengths, np.int64))

  def one_file(epoch, file, offset) -> tf.data.Dataset:
    # A file already read to its end is reopened but not read (its slot stays as it was).
    records = read_file(file).take(tf.where(offset < lengths_tensor[file], np.int64(-1),
                                            np.int64(0)))
    # Tagged here, in the file's own reader thread: a map after the interleave would be a
    # serial stage (measured: -10 % of the read + parse rate on 2 cores). 'position' is
    # left to the parallel stage after it (record_position): computed here it cost 20 %.
    records = records.enumerate().map(lambda index, serialized: {
        'record': {'serialized': serialized, 'file': file, 'index': index}, 'epoch': epoch})
    key = tf.random.experimental.stateless_fold_in(epoch_key(seed, epoch, FILE_SHUFFLE), file)
    buffer = tf.maximum(tf.minimum(lengths_tensor[file], shuffle_buffer), 1)
    return records.shuffle(buffer, seed=_op_seed(key), reshuffle_each_iteration=False).skip(offset)

  orders: dict[int, np.ndarray] = {}

  def item(i: int) -> tuple[int, int]:  # (epoch, file) of the i-th file opened
    epoch, k = divmod(i, num_files)
    if epoch not in orders:
      orders[epoch] = file_order(seed, epoch, num_files).numpy()
    return epoch, int(orders[epoch][k])

  plan = resume_plan(lambda i: int(lengths[item(i)[1]]), cycle, start)
  if start:
    epoch = item(plan.next_item)[0]
    logging.info('Resuming the data at record %d (epoch %d): files read to their end skipped '
                 'unread, %d reopened part-read', start, epoch,
                 sum(0 < offset for _, offset in plan.reopen))
  reopened = np.array([item(i) for i, _ in plan.reopen], np.int64).reshape(-1, 2)
  inputs = tf.data.Dataset.from_tensor_slices(
      (reopened[:, 0], reopened[:, 1], np.array([o for _, o in plan.reopen], np.int64)))
  first_epoch, first_file = divmod(plan.next_item, num_files)

  def epoch_files(epoch):
    files = tf.data.Dataset.from_tensor_slices(file_order(seed, epoch, num_files)).map(
        lambda file: (epoch, file, tf.constant(0, tf.int64)))
    return files.skip(tf.where(epoch == first_epoch, np.int64(first_file), np.int64(0)))

  inputs = inputs.concatenate(
      tf.data.Dataset.range(first_epoch, MAX_EPOCHS).flat_map(epoch_files))
  return _interleave(inputs, one_file, cycle)


def record_position(lengths: np.ndarray) -> Callable[[dict], tf.Tensor]:
  """element of interleaved_files -> its record's number in storage order of all files:
  unique within an epoch, whatever the order (the augmentation key's 'position')."""
  starts = tf.constant(np.cumsum(lengths) - lengths, tf.int64)
  return lambda element: starts[element['record']['file']] + element['record']['index']


def _interleave(inputs: tf.data.Dataset, one_file: Callable[..., tf.data.Dataset],
                cycle: int) -> tf.data.Dataset:
  """inputs.interleave(one_file) (deterministic, parallel, block_length 1), opening
  `cycle` files ahead of need instead of tf.data's default 2 × cycle: each open file
  holds its shuffle buffer (ImageNet: ~137 MB), and 48 of them thrash the host's memory
  (measured, 16 files of 1,251 records: 5,500 records/s against 11,700 with 32 open).
  Only tf.data's internal class takes that number; without it, the public interleave,
  same order."""
  try:
    from tensorflow.python.data.ops import interleave_op  # noqa: PLC0415
    return interleave_op._ParallelInterleaveDataset(  # noqa: SLF001
        inputs, one_file, cycle, 1, tf.data.AUTOTUNE, prefetch_input_elements=cycle,
        deterministic=True)
  except (ImportError, AttributeError, TypeError):
    return inputs.interleave(one_file, cycle_length=cycle, block_length=1,
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
