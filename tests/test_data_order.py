"""Data order at scale: a TFDS split in several TFRecord files is read `cycle_length` files
at a time, interleaved, in a new order each epoch; a resume computes where the interleave
stood, skips whole files unread and yields bitwise what an uninterrupted run yields."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from conftest import small_config
from resnet_jax.data import order, pipeline, sources
from resnet_jax.bench import synthetic_data

NUM_FILES = 7  # train: 7 files of 9 (one of 8, one of 10); validation: 7 of 3 or 4


@pytest.fixture(scope='module')
def sharded_dir(tmp_path_factory):
  """synthetic_jpegs: 62 tiny JPEG records in 7 TFRecord files, 24 for validation."""
  data_dir = str(tmp_path_factory.mktemp('sharded'))
  synthetic_data.write_tfds(data_dir, num_files=NUM_FILES, per_file=9, eval_examples=24,
                            height=12, width=12, pool_size=8)
  source = sources.create_source(_config(data_dir))
  # Files of unequal length, as TFDS writes them, exercise the interleave's refills.
  assert len(source.file_pieces('train')) == NUM_FILES
  return data_dir


def _config(data_dir, **overrides):
  return small_config(**{'dataset.name': synthetic_data.TFDS_NAME, 'dataset.data_dir': data_dir,
                         'dataset.eval_split': 'validation', 'dataset.augment': 'imagenet',
                         'dataset.image_size': 8, 'dataset.mean': (127.0,) * 3,
                         'dataset.std': (64.0,) * 3, 'batch_size': 8, 'dataset.cycle_length': 3,
                         'dataset.cache': False,
                         **overrides})


def _source(data_dir, **overrides):
  config = _config(data_dir, **overrides)
  source = sources.create_source(config)
  return config, source, sources.dataset_info(source, config)


def _batches(source, config, info, steps, **kwargs):
  return list(itertools.islice(
      pipeline.train_batches(source, config, info, with_ids=True, **kwargs), steps))


def _file_of(example_id):
  return example_id.decode().split('__')[0]


def _reference_interleave(lengths, cycle):
  """tf.data's documented interleave (block_length 1), as (file, record) pairs."""
  pending, slots = list(range(len(lengths))), [None] * cycle
  for slot in range(min(cycle, len(lengths))):
    slots[slot] = [pending.pop(0), 0]
  while any(slots) or pending:
    for slot in range(cycle):
      if slots[slot] is None:
        if not pending:
          continue
        slots[slot] = [pending.pop(0), 0]
      file, read = slots[slot]
      if read < lengths[file]:
        slots[slot][1] += 1
        yield file, read
      else:
        slots[slot] = None


def _continued(lengths, cycle, plan):
  """The reference interleave restarted from `plan`, as (item, record) pairs."""
  items = [item for item, _ in plan.reopen] + list(range(plan.next_item, len(lengths)))
  offsets = [offset for _, offset in plan.reopen] + [0] * (len(items) - len(plan.reopen))
  return [(items[k], offsets[k] + read) for k, read in _reference_interleave(
      [lengths[item] - offset for item, offset in zip(items, offsets)], cycle)]


def test_resume_plan_continues_the_interleave_exactly():
  rng = np.random.RandomState(0)
  for _ in range(150):
    lengths = rng.randint(0, 7, size=rng.randint(1, 10))
    cycle = rng.randint(1, 6)
    whole = list(_reference_interleave(lengths, cycle))
    for consumed in range(len(whole) + 1):
      plan = order.resume_plan(lambda i: lengths[i], cycle, consumed, count=len(lengths))
      assert _continued(lengths, cycle, plan) == whole[consumed:], (lengths, cycle, consumed)
      done = [item for item, _ in whole[:consumed]]
      for item in set(range(plan.next_item)) - {i for i, _ in plan.reopen}:
        assert done.count(item) == lengths[item]  # left out: read to its end


def test_resume_plan_runs_across_epochs_without_end():
  """Epochs are one interleave: items without end (here 5 files of 4–9 records a pass)."""
  per_epoch = np.array([4, 9, 6, 6, 5])
  lengths = np.tile(per_epoch, 12)
  whole = list(_reference_interleave(lengths, 3))
  for consumed in (0, 1, 29, 30, 31, 85, 200, 331):
    plan = order.resume_plan(lambda i: per_epoch[i % 5], 3, consumed)
    assert _continued(lengths, 3, plan)[:100] == whole[consumed:consumed + 100], consumed


def test_tf_data_interleaves_as_the_plan_assumes():
  lengths = np.array([3, 0, 5, 1, 4, 4, 2])
  files = tf.data.Dataset.from_tensor_slices(lengths).enumerate()
  for cycle in (1, 3, 4):
    got = files.interleave(
        lambda file, n: tf.data.Dataset.range(n).map(lambda read: (file, read)),
        cycle_length=cycle, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    assert [tuple(map(int, x)) for x in got.as_numpy_iterator()] == list(
        _reference_interleave(lengths, cycle))


def test_files_interleave_in_a_new_order_every_epoch_and_each_epoch_is_the_split(sharded_dir):
  _, source, info = _source(sharded_dir)
  pieces = source.file_pieces('train')
  lengths = np.array([piece.take for piece in pieces])
  stream = order.interleaved_files(source.file_reader(pieces), lengths, seed=0, start=0,
                                   cycle_length=3, shuffle_buffer=64)
  elements = list(itertools.islice(stream.as_numpy_iterator(), 3 * info.num_train_examples))
  position = order.record_position(lengths)
  for epoch in (0, 1):  # every record once per epoch (near a boundary the epochs mix)
    mine = [int(position(e)) for e in elements if e['epoch'] == epoch]
    assert sorted(mine) == list(range(info.num_train_examples))
  file_orders = [list(dict.fromkeys(int(e['record']['file']) for e in elements
                                    if e['epoch'] == epoch)) for epoch in (0, 1)]
  assert file_orders[0] != file_orders[1] and sorted(file_orders[0]) == list(range(NUM_FILES))
  # cycle_length 3: the first records come from three files in turn, each shuffled.
  first = [int(e['record']['file']) for e in elements[:6]]
  assert len(set(first[:3])) == 3 and first[3:] == first[:3]
  in_file = [int(e['record']['index']) for e in elements
             if e['epoch'] == 0 and e['record']['file'] == first[0]]
  assert sorted(in_file) == list(range(lengths[first[0]])) and in_file != sorted(in_file)


def test_the_same_seed_gives_the_same_stream_another_seed_another(sharded_dir):
  config, source, info = _source(sharded_dir)
  first = _batches(source, config, info, 9, start_step=0)
  again = _batches(source, config, info, 9, start_step=0)
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['id'], b['id'])
  config, source, info = _source(sharded_dir, seed=1)
  other = _batches(source, config, info, 9, start_step=0)
  assert not np.array_equal(np.concatenate([b['id'] for b in first]),
                            np.concatenate([b['id'] for b in other]))


def test_epoch_and_seed_are_combined_not_added():
  """Before: seed s at epoch e+1 shuffled within files as seed s+1 at epoch e."""
  for purpose in (order.FILE_ORDER, order.FILE_SHUFFLE, order.FULL_SHUFFLE, order.AUGMENT):
    assert not np.array_equal(order.epoch_key(5, 3, purpose), order.epoch_key(6, 2, purpose))
  assert not np.array_equal(order.file_order(5, 3, 50), order.file_order(6, 2, 50))


@pytest.mark.parametrize('data_order,count,repeats', [
    ('global', 1, 1), ('global', 2, 1), ('per_process', 2, 1), ('global', 2, 3)])
def test_resumed_batches_equal_uninterrupted_ones_bitwise(sharded_dir, data_order, count,
                                                          repeats):
  config, source, info = _source(sharded_dir, **{'dataset.order': data_order,
                                                 'dataset.repeated_augmentation': repeats})
  steps = 18  # about 2.3 epochs: resumes mid-file, at and after an epoch boundary
  for index in range(count):
    kwargs = dict(process_index=index, process_count=count)
    uninterrupted = _batches(source, config, info, steps, start_step=0, **kwargs)
    for k in (1, 4, 7, 8, 13):
      resumed = _batches(source, config, info, steps - k, start_step=k, **kwargs)
      for expected, got in zip(uninterrupted[k:], resumed, strict=True):
        np.testing.assert_array_equal(expected['id'], got['id'])
        np.testing.assert_array_equal(expected['image'], got['image'])


@pytest.mark.parametrize('count', [2, 3])
def test_per_process_parts_cover_the_split_exactly_once_per_epoch(sharded_dir, count):
  config, source, info = _source(sharded_dir, **{'dataset.order': 'per_process',
                                                 'batch_size': 6})
  seen = {0: [], 1: []}
  for index in range(count):
    layout = pipeline._Layout(index=index, count=count, batch_size=6, shared=False, repeats=1)
    stream = pipeline._records(source, config, layout, start=0).stream
    pieces = source.file_pieces('train', index, count)
    part = source.part_size('train', index, count)
    for element in itertools.islice(stream.as_numpy_iterator(), 3 * part):
      piece = pieces[element['record']['file']]
      if element['epoch'] in seen:
        seen[element['epoch']].append((piece.filename, piece.skip + element['record']['index']))
  for epoch in seen.values():
    assert len(epoch) == len(set(epoch)) == info.num_train_examples


def test_a_resume_skips_whole_files_unread():
  lengths = np.full(40, 5)
  files_read = set()

  def counting(file):
    def note(record):
      tf.py_function(lambda f: files_read.add(int(f)), [file], [])
      return record
    return tf.data.Dataset.range(5).map(lambda i: tf.strings.as_string(file * 100 + i)).map(note)

  def stream(start):
    return iter(order.interleaved_files(counting, lengths, seed=0, start=start, cycle_length=3,
                                        shuffle_buffer=64))

  whole = list(itertools.islice(stream(0), 200))
  for start in (0, 12, 61, 133):
    files_read.clear()
    element = next(stream(start))
    assert element['record']['serialized'].numpy() == whole[start]['record']['serialized'].numpy()
    assert int(element['epoch']) == int(whole[start]['epoch'])
    passed = [int(e['record']['file']) for e in whole[:start]]
    finished = {f for f in set(passed) if passed.count(f) == 5}
    assert len(finished) >= start // 5 - 3
    assert not files_read & finished, (start, files_read & finished)


def test_evaluation_reads_in_parallel_and_counts_every_example_once(sharded_dir):
  config, source, info = _source(sharded_dir, batch_size=8)
  for count in (1, 2, 3):
    ids = []
    for index in range(count):
      batches = list(pipeline.eval_batches(source, config, info, process_index=index,
                                           process_count=count, with_ids=True))
      assert len(batches) == pipeline.num_eval_batches(source, config, count)
      ids.extend(i for b in batches for i, m in zip(b['id'], b['mask']) if m)
    assert len(ids) == len(set(ids)) == info.num_eval_examples == 24
  single = list(pipeline.eval_batches(source, config, info, process_index=0, process_count=1,
                                      with_ids=True))
  files = [_file_of(i) for i in single[0]['id'][:3]]
  assert len(set(files)) == 3  # three files read at once
