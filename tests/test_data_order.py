"""Data order at scale: a TFDS split in several TFRecord files is read file by file, in a
new order each epoch; resuming skips whole files unread and reads at most one."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import small_config
from resnet_jax.data import pipeline, sources

NUM_FILES = 6


@pytest.fixture(scope='module')
def sharded_dir(tmp_path_factory):
  """The embedded digits prepared into 6 TFRecord files per split (~240 records each)."""
  data_dir = str(tmp_path_factory.mktemp('sharded'))
  builder = tfds.builder('sklearn_digits', data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      num_shards=NUM_FILES))
  assert len(builder.info.splits['train'].shard_lengths) == NUM_FILES
  return data_dir


def _source(data_dir, **overrides):
  config = small_config(**{'dataset.data_dir': data_dir, 'batch_size': 64,
                           'dataset.cache': False, **overrides})
  source = sources.create_source(config)
  return config, source, sources.dataset_info(source, config)


def _ids(source, config, info, steps, **kwargs):
  batches = pipeline.train_batches(source, config, info, with_ids=True, **kwargs)
  return [b['id'] for b in itertools.islice(batches, steps)]


def _file_of(example_id):
  return example_id.decode().split('__')[0]


def _counting_reads(source):
  """Wraps source.read_piece so that every record read from a file is noted."""
  reads, real = [], source.read_piece

  def counting(filename, skip, take):
    def note(record):
      tf.py_function(lambda i: reads.append(i.numpy()), [record['id']], [])
      return record
    return real(filename, skip, take).map(note)

  source.read_piece = counting
  return reads


def test_the_file_order_changes_every_epoch_and_each_epoch_is_the_split(sharded_dir):
  config, source, info = _source(sharded_dir)
  assert source.file_pieces('train')
  per_epoch = info.num_train_examples  # 1437
  ids = np.concatenate(_ids(source, config, info, 3 * per_epoch // 64, start_step=0))
  epochs = [ids[e * per_epoch:(e + 1) * per_epoch] for e in range(2)]
  for epoch in epochs:
    assert len(set(epoch)) == per_epoch  # every example once
  file_orders = [list(dict.fromkeys(_file_of(i) for i in epoch)) for epoch in epochs]
  assert sorted(file_orders[0]) == sorted(file_orders[1]) and len(file_orders[0]) == NUM_FILES
  assert file_orders[0] != file_orders[1]
  # Within an epoch the files come one after another, each shuffled.
  runs = [len(list(group)) for _, group in itertools.groupby(_file_of(i) for i in epochs[0])]
  assert len(runs) == NUM_FILES
  storage_order = [int(i.decode().split('__')[1]) for i in epochs[0][:runs[0]]]
  assert storage_order != sorted(storage_order)
  config, source, info = _source(sharded_dir, seed=1)
  assert not np.array_equal(_ids(source, config, info, 1, start_step=0)[0], ids[:64])


@pytest.mark.parametrize('order', ['global', 'per_process'])
def test_resumed_batches_equal_uninterrupted_ones(sharded_dir, order):
  config, source, info = _source(sharded_dir, **{'dataset.order': order})
  count = 2 if order == 'per_process' else 1
  kwargs = dict(process_index=0, process_count=count)
  uninterrupted = _ids(source, config, info, 30, start_step=0, **kwargs)  # crosses epochs
  for k in (3, 7, 22, 23):  # mid-file, and in the second epoch
    resumed = _ids(source, config, info, 30 - k, start_step=k, **kwargs)
    for expected, got in zip(uninterrupted[k:], resumed, strict=True):
      np.testing.assert_array_equal(expected, got)


def test_resuming_reads_at_most_one_file_before_its_first_example(sharded_dir):
  config, source, info = _source(sharded_dir)
  pieces = source.file_pieces('train')
  longest = max(piece.take for piece in pieces)
  reads = _counting_reads(source)
  for skip in (0, 100, 700, 1400):
    reads.clear()
    stream = pipeline._file_ordered(source, pieces, start_epoch=1, skip=skip, seed=0,
                                    buffer=config.dataset.shuffle_buffer)
    record, epoch, position = next(iter(stream))
    assert (int(epoch), int(position)) == (1, skip)
    assert 0 < len(reads) <= longest, (skip, len(reads))
    assert len({_file_of(i) for i in reads}) == 1  # one file opened; earlier ones skipped
    # What the first example is: the same as in an unresumed pass over that epoch.
    whole = pipeline._file_ordered(source, pieces, start_epoch=1, skip=0, seed=0,
                                   buffer=config.dataset.shuffle_buffer)
    expected = next(itertools.islice(iter(whole), skip, None))
    assert expected[0]['id'].numpy() == record['id'].numpy()
