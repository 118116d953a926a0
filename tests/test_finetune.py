"""Fine-tuning: pre-train on digits 0-4, fine-tune on 5-9; eval-only; bad starts refused."""

import jax
import numpy as np
import pytest
import tensorflow as tf
from sklearn import datasets

from conftest import small_config
from resnet_jax import train
from resnet_jax.errors import ConfigError
from resnet_jax.storage import checkpointing, trained


def _write_digits_half(root, labels):
  """root/{train,validation}/<digit>/*.png: 3 of every 4 images of a digit train."""
  digits = datasets.load_digits()
  for label in labels:
    images = digits.images[digits.target == label]
    for index, image in enumerate(images):
      split = 'validation' if index % 4 == 3 else 'train'
      directory = root / split / str(label)
      directory.mkdir(parents=True, exist_ok=True)
      pixels = np.round(image * (255 / 16)).astype(np.uint8)[..., None]
      (directory / f'{index}.png').write_bytes(tf.io.encode_png(pixels).numpy())
  return str(root)


def _config(data_dir, **overrides):
  return small_config(**{
      'dataset.name': 'image_folder', 'dataset.data_dir': data_dir,
      'dataset.eval_split': 'validation', 'batch_size': 32,
      'base_lr': 0.8, 'eval_every_steps': 1000, 'checkpoint_every_steps': 1000,
      'log_every_steps': 1000, 'checkpoint_async': False, **overrides})


@pytest.fixture(scope='module')
def halves(tmp_path_factory):
  root = tmp_path_factory.mktemp('digit_halves')
  return (_write_digits_half(root / 'low', range(5)), _write_digits_half(root / 'high',
                                                                         range(5, 10)))


@pytest.fixture(scope='module')
def pretrained(halves, tmp_path_factory):
  """A workdir trained on digits 0-4 for 40 steps."""
  workdir = str(tmp_path_factory.mktemp('pretrained'))
  metrics = train.train_and_evaluate(_config(halves[0], num_train_steps=40), workdir)
  assert metrics['eval/top1'] > 0.8, metrics
  return workdir, metrics


@pytest.mark.slow
def test_fine_tuning_beats_training_from_scratch(halves, tmp_path):
  # ResNet-20, not the suite's ResNet-8: from scratch the shallow net reaches 67 % of the
  # second half in 8 steps, within 18 points of its fine-tuned twin (and its margin swings
  # with the budget: 22, 1 and 3 points at 3, 4 and 5 steps); ResNet-20 from scratch is at
  # 20 %, fine-tuned at 70 % (measured 2026-12-07).
  pretrained = str(tmp_path / 'pretrained')
  assert train.train_and_evaluate(_config(halves[0], model='resnet20', num_train_steps=40),
                                  pretrained)['eval/top1'] > 0.8
  budget = {'model': 'resnet20', 'num_train_steps': 8}
  scratch = train.train_and_evaluate(_config(halves[1], **budget), str(tmp_path / 'scratch'))
  tuned = train.train_and_evaluate(
      _config(halves[1], init_checkpoint=pretrained, reset_head=True, **budget),
      str(tmp_path / 'tuned'))
  assert tuned['eval/top1'] > scratch['eval/top1'] + 0.2, (tuned, scratch)


def test_a_frozen_backbone_and_statistics_stay_as_loaded(halves, pretrained, tmp_path):
  workdir = str(tmp_path / 'probe')
  train.train_and_evaluate(
      _config(halves[1], init_checkpoint=pretrained[0], reset_head=True, freeze_backbone=True,
              freeze_batch_stats=True, num_train_steps=3), workdir)
  start, _, _ = trained.load_variables(pretrained[0])
  state = checkpointing.load_arrays(workdir, 3)
  head = state['params'].pop('head')
  start_head = start['params'].pop('head')
  jax.tree.map(np.testing.assert_array_equal, state['params'], start['params'])
  jax.tree.map(np.testing.assert_array_equal, state['batch_stats'], start['batch_stats'])
  assert not np.allclose(head['kernel'], start_head['kernel'])


@pytest.fixture(scope='module')
def converted(pretrained, tmp_path_factory):
  """The pre-trained weights as `convert` writes them: variables/ and model_info.json,
  no checkpoints (convert itself only takes ImageNet models)."""
  directory = tmp_path_factory.mktemp('converted')
  variables, _, _ = trained.load_variables(pretrained[0])
  trained.save_variables(directory, variables)
  trained.write_model_info(directory, trained.read_model_info(pretrained[0]))
  return str(directory)


_FREEZES = ('none', 'batch_stats', 'backbone', 'both')
# Every EMA × freeze combination, each source with every EMA and every freeze setting
# (all pairs; the source only changes what is loaded, the others what the step does).
_COMBINATIONS = [(('workdir', 'converted')[(i + (ema > 0)) % 2], ema, freeze)
                 for i, freeze in enumerate(_FREEZES) for ema in (0.0, 0.99)]


# Two combinations (one per source, EMA on and off) in the fast tier, the rest slow.
_FAST = {('workdir', 0.99, 'batch_stats'), ('converted', 0.0, 'both')}
assert _FAST <= set(_COMBINATIONS)


@pytest.mark.parametrize('source,ema,freeze', [
    pytest.param(*case, marks=[] if case in _FAST else [pytest.mark.slow]) for case in _COMBINATIONS])
def test_every_fine_tuning_combination_trains(halves, pretrained, converted, tmp_path, source,
                                              ema, freeze):
  """With an EMA, params and ema shared buffers and the donating step failed at step 1
  (on the CPU a segmentation fault; on GPUs 'Attempt to donate the same buffer twice')."""
  start = {'workdir': pretrained[0], 'converted': converted}[source]
  config = _config(halves[1], init_checkpoint=start, reset_head=True, ema_decay=ema,
                   freeze_batch_stats=freeze in ('batch_stats', 'both'),
                   freeze_backbone=freeze in ('backbone', 'both'), num_train_steps=2,
                   checkpoint_every_steps=2)
  workdir = str(tmp_path / 'tuned')
  result = train.train_and_evaluate(config, workdir)
  assert np.isfinite(result['eval/loss']), result
  saved = checkpointing.load_arrays(workdir, 2)
  assert bool(saved.get('ema')) == (ema > 0)
  loaded, _, _ = trained.load_variables(start)
  backbone = {k: v for k, v in saved['params'].items() if k != 'head'}
  loaded_backbone = {k: v for k, v in loaded['params'].items() if k != 'head'}
  backbone_kept = all(jax.tree.leaves(jax.tree.map(np.array_equal, backbone, loaded_backbone)))
  stats_kept = all(jax.tree.leaves(jax.tree.map(np.array_equal, saved['batch_stats'],
                                                loaded['batch_stats'])))
  assert backbone_kept == (freeze in ('backbone', 'both'))
  assert stats_kept == (freeze in ('batch_stats', 'both'))


def test_eval_only_restores_and_evaluates_without_training(halves, pretrained, tmp_path):
  workdir, metrics = pretrained
  again = train.train_and_evaluate(_config(halves[0], num_train_steps=40, eval_only=True),
                                   workdir)
  assert again['eval/top1'] == pytest.approx(metrics['eval/top1'], abs=1e-6)
  assert checkpointing.saved_steps(workdir) == [40]
  # A fresh workdir with init_checkpoint evaluates the imported weights as they are.
  imported = train.train_and_evaluate(
      _config(halves[0], init_checkpoint=workdir, eval_only=True), str(tmp_path / 'fresh'))
  assert imported['eval/top1'] == pytest.approx(metrics['eval/top1'], abs=1e-6)
  assert not (tmp_path / 'fresh').exists()  # nothing written
  with pytest.raises(ConfigError, match='holds no checkpoint and init_checkpoint is empty'):
    train.train_and_evaluate(_config(halves[0], eval_only=True), str(tmp_path / 'empty'))
  assert not (tmp_path / 'empty').exists()


def test_bad_starting_points_are_named(halves, pretrained, digits_dir, tmp_path):
  workdir = pretrained[0]
  with pytest.raises(ConfigError, match="holds a resnet8, but config.model is 'resnet32'"):
    train.train_and_evaluate(_config(halves[1], init_checkpoint=workdir, model='resnet32'),
                             str(tmp_path / 'a'))
  with pytest.raises(ConfigError, match=r'params/head/bias is \(5,\) there, the model needs '
                     r'\(10,\) \(a new class count: set reset_head=True\)'):
    train.train_and_evaluate(  # the 10 digits in TFDS, from a 5-digit pre-training
        small_config(**{'dataset.data_dir': digits_dir, 'init_checkpoint': workdir}),
        str(tmp_path / 'b'))
  with pytest.raises(ConfigError, match='holds no model_info.json'):
    train.train_and_evaluate(_config(halves[1], init_checkpoint=str(tmp_path)),
                             str(tmp_path / 'c'))
