"""Embedded dataset, deterministic resumable training order, exact padded evaluation."""

import itertools

import jax
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from conftest import small_config
from resnet_jax import models, sharding, steps, train
from resnet_jax.data import pipeline


def test_digits_builder_splits(digits_dir):
  config = small_config(**{'dataset.data_dir': digits_dir})
  builder = pipeline.get_builder(config)
  info = pipeline.dataset_info(builder, config)
  assert (info.num_train_examples, info.num_eval_examples) == (1437, 360)
  assert info.num_classes == 10 and info.class_names[3] == '3'
  assert info.image_shape == (8, 8, 1)
  labels = [int(ex['label']) for ex in tfds.as_numpy(builder.as_dataset(split='test'))]
  assert np.bincount(labels, minlength=10).min() >= 25  # every class is held out


def _take(config, builder, info, start_step, count):
  batches = pipeline.train_batches(builder, config, info, start_step=start_step)
  return list(itertools.islice(batches, count))


def test_resumed_stream_equals_uninterrupted(digits_dir):
  """From step k, the pipeline yields exactly what an uninterrupted run yields from k."""
  config = small_config(**{'dataset.data_dir': digits_dir, 'batch_size': 128})
  builder = pipeline.get_builder(config)
  info = pipeline.dataset_info(builder, config)
  assert info.num_train_examples // 128 == 11
  uninterrupted = _take(config, builder, info, 0, 14)  # crosses the first epoch's end
  resumed = _take(config, builder, info, 9, 5)
  for expected, got in zip(uninterrupted[9:], resumed):
    np.testing.assert_array_equal(expected['label'], got['label'])
    np.testing.assert_array_equal(expected['image'], got['image'])  # same crops too
  assert uninterrupted[0]['image'].shape == (128, 8, 8, 1)
  assert uninterrupted[0]['image'].dtype == np.float32
  # Each epoch is a fresh permutation, and a new seed gives another order.
  assert not np.array_equal(uninterrupted[0]['label'], uninterrupted[11]['label'])
  other_seed = _take(small_config(**{'dataset.data_dir': digits_dir, 'batch_size': 128,
                                     'seed': 1}), builder, info, 0, 1)
  assert not np.array_equal(uninterrupted[0]['label'], other_seed[0]['label'])


def test_evaluation_counts_every_example_once():
  """37 examples, batch 8, 8 devices: 5 padded batches, each example counted once."""
  config = small_config(**{'dataset.name': 'cifar10', 'dataset.eval_split': 'test',
                           'batch_size': 8, 'dataset.mean': (127.0,) * 3,
                           'dataset.std': (64.0,) * 3})
  with tfds.testing.mock_data(num_examples=37):
    builder = pipeline.get_builder(config)
    info = pipeline.dataset_info(builder, config)
    assert info.num_eval_examples == 37
    batches = list(pipeline.eval_batches(builder, config, info))
    assert len(batches) == pipeline.num_eval_batches(config, info) == 5
    assert sum(int(b['mask'].sum()) for b in batches) == 37
    assert all(b['image'].shape == (8, 8, 8, 3) for b in batches)
    mesh = sharding.make_mesh()
    model = models.create_model('resnet20', num_classes=info.num_classes)
    state = steps.create_train_state(jax.random.key(0), model, optax.sgd(0.1),
                                     info.image_shape, use_ema=False, mesh=mesh)
    summary = train.evaluate(state, builder, config, info, mesh)
  images = np.concatenate([b['image'][b['mask'] == 1] for b in batches])
  labels = np.concatenate([b['label'][b['mask'] == 1] for b in batches])
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, images,
                          train=False)
  assert summary['eval/num_examples'] == 37
  assert summary['eval/top1'] == pytest.approx(np.mean(np.argmax(logits, -1) == labels))
