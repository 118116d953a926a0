"""Sources, deterministic resumable order, process-count independence, exact evaluation."""

import itertools

import jax
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from conftest import make_image_folder, small_config
from resnet_jax import models, sharding, steps, train, train_state
from resnet_jax.data import inputs, pipeline, sources


def _source(config):
  source = sources.create_source(config)
  return source, sources.dataset_info(source, config)


def _take(source, config, info, count, **kwargs):
  batches = pipeline.train_batches(source, config, info, with_ids=True, **kwargs)
  return list(itertools.islice(batches, count))


def test_digits_builder_splits(digits_dir):
  config = small_config(**{'dataset.data_dir': digits_dir})
  source, info = _source(config)
  assert (info.num_train_examples, info.num_eval_examples) == (1437, 360)
  assert info.num_classes == 10 and info.class_names[3] == '3'
  assert info.image_shape == (8, 8, 1)
  labels = [int(ex['label']) for ex in tfds.as_numpy(source.builder.as_dataset(split='test'))]
  assert np.bincount(labels, minlength=10).min() >= 25  # every class is held out
  assert source.split_size('train[:1000]+test') == 1360
  assert source.split_size('test[:0]+train[:5]') == 5


def test_more_processes_than_eval_examples(digits_dir):
  config = small_config(**{'dataset.data_dir': digits_dir, 'dataset.eval_split': 'test[:3]',
                           'batch_size': 8})
  source, info = _source(config)
  ids = []
  for index in range(4):
    batches = list(pipeline.eval_batches(source, config, info, process_index=index,
                                         process_count=4, with_ids=True))
    assert len(batches) == 1
    ids.extend(i for i, m in zip(batches[0]['id'], batches[0]['mask']) if m)
  assert len(ids) == len(set(ids)) == 3


@pytest.mark.parametrize('split', ['test[:5]+train[:3]', 'train[:7]'])
def test_tfds_evaluation_is_exact_across_processes(digits_dir, split):
  """Parts by tfds.even_splits: a compound split is divided split by split."""
  config = small_config(**{'dataset.data_dir': digits_dir, 'dataset.eval_split': split,
                           'batch_size': 8})
  source, info = _source(config)
  ids, lengths = [], set()
  for index in range(4):
    batches = list(pipeline.eval_batches(source, config, info, process_index=index,
                                         process_count=4, with_ids=True))
    lengths.add(len(batches))
    ids.extend(i for b in batches for i, m in zip(b['id'], b['mask']) if m)
  assert lengths == {pipeline.num_eval_batches(source, config, 4)}
  assert len(ids) == len(set(ids)) == source.split_size(split)


def test_resumed_stream_equals_uninterrupted(digits_dir):
  """From step k, the pipeline yields exactly what an uninterrupted run yields from k."""
  config = small_config(**{'dataset.data_dir': digits_dir, 'batch_size': 128})
  source, info = _source(config)
  uninterrupted = _take(source, config, info, 14, start_step=0)  # crosses an epoch end
  for k in (9, 11, 12):
    resumed = _take(source, config, info, 14 - k, start_step=k)
    for expected, got in zip(uninterrupted[k:], resumed, strict=True):
      np.testing.assert_array_equal(expected['id'], got['id'])
      np.testing.assert_array_equal(expected['image'], got['image'])  # same crops too
  assert uninterrupted[0]['image'].shape == (128, 8, 8, 1)
  assert uninterrupted[0]['image'].dtype == np.uint8
  # The first epoch holds every example once; the second is another permutation.
  ids = np.concatenate([b['id'] for b in uninterrupted])
  assert len(set(ids[:1437])) == 1437
  assert not np.array_equal(ids[:128], ids[1437:1437 + 128])
  other_seed = _take(source, small_config(**{'dataset.data_dir': digits_dir,
                                             'batch_size': 128, 'seed': 1}), info, 1,
                     start_step=0)
  assert not np.array_equal(ids[:128], other_seed[0]['id'])


@pytest.mark.parametrize('process_count', [2, 3])
def test_global_order_batches_do_not_depend_on_process_count(digits_dir, process_count):
  config = small_config(**{'dataset.data_dir': digits_dir, 'batch_size': 48})
  source, info = _source(config)
  single = _take(source, config, info, 32, start_step=0)  # crosses an epoch end
  parts = [_take(source, config, info, 32, start_step=0, process_index=i,
                 process_count=process_count) for i in range(process_count)]
  for step, expected in enumerate(single):
    for key in ('id', 'image', 'label'):
      np.testing.assert_array_equal(
          np.concatenate([part[step][key] for part in parts]), expected[key])


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_an_epoch_is_the_whole_split_for_any_process_count(digits_dir, process_count):
  config = small_config(**{'dataset.data_dir': digits_dir, 'batch_size': 48,
                           'dataset.order': 'per_process'})
  source, info = _source(config)
  local = 48 // process_count
  seen = []
  for index in range(process_count):
    size = source.part_size(config.dataset.train_split, index, process_count)
    batches = _take(source, config, info, -(-size // local), start_step=0,
                    process_index=index, process_count=process_count)
    seen.extend(np.concatenate([b['id'] for b in batches])[:size])
  assert len(seen) == len(set(seen)) == 1437


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """37 validation images over 3 classes (JPEG and PNG), 30 training images."""
  return make_image_folder(tmp_path_factory.mktemp('folder'), {
      'train': {'cat': 10, 'dog': 10, 'emu': 10},
      'validation': {'cat': 13, 'dog': 12, 'emu': 12}})


def _folder_config(folder, **overrides):
  return small_config(**{'dataset.name': 'image_folder', 'dataset.data_dir': folder,
                         'dataset.eval_split': 'validation', 'dataset.image_size': 16,
                         'dataset.augment': 'imagenet', 'dataset.random_flip': True,
                         'dataset.mean': (127.0,) * 3, 'dataset.std': (64.0,) * 3,
                         **overrides})


def test_evaluation_counts_every_example_once(folder):
  """37 examples, batch 8, 8 devices: 5 padded batches, each example counted once."""
  config = _folder_config(folder, batch_size=8)
  source, info = _source(config)
  assert info.class_names == ('cat', 'dog', 'emu') and info.num_eval_examples == 37
  batches = list(pipeline.eval_batches(source, config, info, with_ids=True))
  assert len(batches) == pipeline.num_eval_batches(source, config) == 5
  assert sum(int(b['mask'].sum()) for b in batches) == 37
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 8
  model = models.create_model('resnet20', num_classes=info.num_classes)
  state = train_state.create_train_state(jax.random.key(0), model, optax.sgd(0.1), info.image_shape,
                                         use_ema=False, mesh=mesh)
  summary = train.evaluate(state, inputs.TfDataInput(config, mesh, source), config, mesh)
  images = np.concatenate([b['image'][b['mask'] == 1] for b in batches])
  labels = np.concatenate([b['label'][b['mask'] == 1] for b in batches])
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          steps.normalize_images(images, config.dataset.mean, config.dataset.std),
                          train=False)
  assert summary['eval/num_examples'] == 37
  assert summary['eval/top1'] == pytest.approx(np.mean(np.argmax(logits, -1) == labels))


@pytest.mark.parametrize('process_count,batch_size', [(2, 8), (4, 8), (3, 24), (8, 64)])
def test_evaluation_is_exact_across_processes(folder, process_count, batch_size):
  config = _folder_config(folder, batch_size=batch_size)
  source, info = _source(config)
  ids, lengths = [], set()
  for index in range(process_count):
    batches = list(pipeline.eval_batches(source, config, info, process_index=index,
                                         process_count=process_count, with_ids=True))
    lengths.add(len(batches))
    ids.extend(i for b in batches for i, m in zip(b['id'], b['mask']) if m)
  assert lengths == {pipeline.num_eval_batches(source, config, process_count)}
  assert len(ids) == len(set(ids)) == 37


def test_images_cross_to_devices_as_uint8(folder):
  config = _folder_config(folder, dtype='bfloat16', batch_size=8)
  source, info = _source(config)
  batch = _take(source, config, info, 1, start_step=0)[0]
  assert batch['image'].dtype == np.uint8 and batch['image'].shape == (8, 16, 16, 3)
  assert batch['image'].max() > 100  # not all padding
  assert next(pipeline.eval_batches(source, config, info))['image'].dtype == np.uint8


def test_input_threads_fit_the_cpus_this_process_may_use(monkeypatch):
  monkeypatch.setattr(pipeline.os, 'sched_getaffinity', lambda pid: {0, 1, 2, 5, 6, 7},
                      raising=False)
  monkeypatch.delenv('SLURM_CPUS_PER_TASK', raising=False)
  assert pipeline.host_cpus() == 6
  monkeypatch.setenv('SLURM_CPUS_PER_TASK', '4')
  assert pipeline.host_cpus() == 4
  options = pipeline._options()
  assert options.threading.private_threadpool_size == 4
  assert options.autotune.cpu_budget == 4
  assert options.threading.max_intra_op_parallelism == 1
  monkeypatch.setenv('SLURM_CPUS_PER_TASK', '64')  # never more than the affinity allows
  assert pipeline.host_cpus() == 6
