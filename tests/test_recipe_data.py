"""Issue 16's data side on the embedded digits: repeated augmentation, FFCV's resolution
schedule, progressive resizing (one compile per resolution, resumed mid-ramp bitwise),
FixRes evaluation, and every new component training at once."""

import importlib
import logging
import math

import jax
import numpy as np
import pytest

from conftest import small_config
from resnet_jax import train
from resnet_jax.data import pipeline, resolution, sources
from resnet_jax.tools import report


def _ffcv_get_resolution(epoch, min_res, max_res, end_ramp, start_ramp):
  """libffcv/ffcv-imagenet train_imagenet.py, ImageNetTrainer.get_resolution."""
  assert min_res <= max_res
  if epoch <= start_ramp:
    return min_res
  if epoch >= end_ramp:
    return max_res
  interp = np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])
  return int(np.round(interp[0] / 32)) * 32


@pytest.mark.parametrize('epochs', [16, 24, 32, 40, 56, 88])
def test_the_resolution_schedule_is_ffcvs(epochs):
  config = importlib.import_module('configs.imagenet50_ffcv').get_config(str(epochs))
  data = config.dataset
  expected = [_ffcv_get_resolution(e, 160, 192, data.resize_end_epoch, data.resize_start_epoch)
              for e in range(epochs)]
  assert [resolution.train_image_size(config, e) for e in range(epochs)] == expected
  assert expected[0] == 160 and expected[-1] == 192
  # The schedule: 160 from batch 0, 192 from the first epoch FFCV trains at 192.
  assert resolution.schedule(config, 100) == [(0, 160), (expected.index(192) * 100, 192)]


def _source(config):
  source = sources.create_source(config)
  return source, sources.dataset_info(source, config)


def _batches(config, count, start_step=0, **kwargs):
  source, info = _source(config)
  stream = pipeline.train_batches(source, config, info, with_ids=True, start_step=start_step,
                                  **kwargs)
  return [next(stream) for _ in range(count)]


def test_repeated_augmentation_copies_sit_on_different_devices_and_cover_the_split(digits_dir):
  config = small_config(**{'dataset.data_dir': digits_dir, 'dataset.repeated_augmentation': 4,
                           'dataset.image_size': 12, 'dataset.crop_padding': 2})
  _, info = _source(config)
  steps_per_epoch = info.num_train_examples // config.batch_size
  batches = _batches(config, 4 * steps_per_epoch)
  devices = 8  # conftest's fake devices: 2 examples each
  differing = 0
  for batch in batches:
    ids = batch['id'].reshape(4, 4)  # copy-major: copy j of image u at j × 4 + u
    assert (ids == ids[0]).all()
    device_of = np.arange(16).reshape(4, 4) // (16 // devices)
    assert all(len(set(device_of[:, u])) == 4 for u in range(4))
    images = batch['image'].reshape(4, 4, *batch['image'].shape[1:])
    differing += sum(len({images[j, u].tobytes() for j in range(4)}) > 1 for u in range(4))
  assert differing > 0.9 * 4 * len(batches)  # each copy draws its own crop and flip
  # Four epochs of steps read one pass over the split: every image once, 4 copies each.
  ids = np.concatenate([b['id'].reshape(4, 4)[0] for b in batches])
  assert len(set(ids.tolist())) == len(ids) == steps_per_epoch * 4 * 4
  assert len(ids) > 0.95 * info.num_train_examples
  # Resuming at step 7 reads on exactly.
  resumed = _batches(config, 3, start_step=7)
  for a, b in zip(batches[7:10], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['id'], b['id'])
  # Two processes sharing the stream hold the two halves of the same global batch.
  halves = [_batches(config, 2, process_index=p, process_count=2) for p in (0, 1)]
  for step in range(2):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][step]['image'], halves[1][step]['image']]),
        batches[step]['image'])


def _ramp_config(digits_dir, **overrides):
  return small_config(**{
      'dataset.data_dir': digits_dir, 'dataset.train_split': 'train[:256]',
      'dataset.eval_split': 'test[:64]', 'batch_size': 32, 'dataset.image_size': 16,
      'dataset.min_image_size': 8, 'dataset.resize_start_epoch': 0.0,
      'dataset.resize_end_epoch': 2.0, 'dataset.resize_multiple': 4, 'num_train_steps': 20,
      'log_every_steps': 4, 'eval_every_steps': 20, 'checkpoint_every_steps': 4, **overrides})


def test_progressive_resizing_batches_follow_the_schedule(digits_dir):
  config = _ramp_config(digits_dir)  # 8 steps per epoch: 8 px, then 12, then 16
  batches = _batches(config, 20)
  sizes = [b['image'].shape[1] for b in batches]
  assert sizes == [8] * 8 + [12] * 8 + [16] * 4
  resumed = _batches(config, 6, start_step=6)  # mid-ramp, across a change of resolution
  for a, b in zip(batches[6:12], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])


def _compiles(caplog):
  return sum('Compiling jit(step_and_accumulate)' in r.getMessage() for r in caplog.records)


class _Killed(Exception):
  pass


@pytest.mark.slow
def test_progressive_digits_run_compiles_once_per_resolution_and_resumes_bitwise(
    tmp_path, digits_dir, monkeypatch, caplog):
  from resnet_jax.storage import checkpointing
  config = _ramp_config(digits_dir, **{'dataset.eval_image_size': 16})
  caplog.set_level(logging.WARNING)
  with jax.log_compiles():
    straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  assert _compiles(caplog) == 3  # 8, 12 and 16 pixels

  real_save = checkpointing.Checkpointer.save

  def save_then_die(self, step, state):
    real_save(self, step, state)
    if step == 12:  # mid-ramp: epoch 1, at 12 pixels
      self.close()
      raise _Killed()

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save_then_die)
  with pytest.raises(_Killed):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', real_save)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert resumed == straight
  final = lambda d: checkpointing.load_arrays(str(d), 20)  # noqa: E731
  jax.tree.map(np.testing.assert_array_equal, final(tmp_path / 'straight'),
               final(tmp_path / 'resumed'))


@pytest.mark.slow
def test_every_new_component_at_once_trains(tmp_path, digits_dir):
  """LAMB + BCE + stochastic depth + BlurPool + repeated augmentation + TrivialAugment-wide
  + random erasing + a periodic EMA, tested at a larger size with flip TTA: the loss falls."""
  config = small_config(**{
      'dataset.data_dir': digits_dir, 'dataset.image_size': 12, 'dataset.crop_padding': 1,
      'dataset.eval_image_size': 16, 'batch_size': 32, 'num_train_steps': 40,
      'log_every_steps': 10, 'eval_every_steps': 40, 'checkpoint_every_steps': 40,
      'optimizer': 'lamb', 'base_lr': 0.02, 'weight_decay': 0.01, 'grad_clip_norm': 1.0,
      'loss': 'bce', 'bce_target_threshold': 0.2, 'mixup_alpha': 0.1, 'cutmix_alpha': 1.0,
      'drop_path_rate': 0.1, 'blurpool': True, 'dataset.repeated_augmentation': 2,
      'dataset.trivial_augment': True, 'random_erasing': 0.25, 'random_erasing_mode': 'pixel',
      'ema_decay': 0.9, 'ema_every_steps': 2, 'eval_flip': True})
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  losses = [value for _, value in report.read_scalars(str(tmp_path / 'run'))['train/loss']]
  assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
  assert losses[-1] < 0.8 * losses[0], losses
  assert summary['eval/top1'] > 0.12 and 'eval_ema/top1' in summary  # chance: 0.1


def test_repeats_that_do_not_divide_the_batch_cut_the_last_copy_short(digits_dir):
  config = small_config(**{'dataset.data_dir': digits_dir, 'dataset.repeated_augmentation': 3})
  batches = _batches(config, 6)  # 16 = 6 + 6 + 4: images 0-5, 0-5, 0-3
  for batch in batches:
    ids = batch['id']
    assert (ids[:6] == ids[6:12]).all() and (ids[12:] == ids[:4]).all()
    assert len(set(ids.tolist())) == 6
  all_ids = np.concatenate([b['id'][:6] for b in batches])
  assert len(set(all_ids.tolist())) == 36  # 6 new images a step
  for a, b in zip(batches[4:], _batches(config, 2, start_step=4)):
    np.testing.assert_array_equal(a['image'], b['image'])
