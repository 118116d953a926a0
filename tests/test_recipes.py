"""Each recipe config against a table of its source's values, key by key.

The tables are transcribed from the sources named in each config's docstring (paths in
those repositories); a config that drifts from its source fails here. `peak_lr` is the
learning rate the source uses at its batch (the trainer's base_lr × batch / 256).
"""

import importlib
import math

import pytest

from configs import recipes
from resnet_jax import optim

NVIDIA = {  # NVIDIA/DeepLearningExamples PyTorch/Classification/ConvNets: configs.yml
  #           (resnet50, DGXA100, resnet_params_2k), image_classification/optimizers.py
  'batch_size': 2048, 'peak_lr': 2.048, 'momentum': 0.875, 'nesterov': False,
  'weight_decay': 3.0517578125e-05, 'weight_decay_skip': 'norm_except_shortcut',
  'label_smoothing': 0.1, 'warmup_epochs': 8.0, 'schedule': 'cosine', 'final_lr': 0.0,
  'zero_init_residual': False, 'bn_group_size': 256, 'dataset.image_size': 224,
  'eval_size': 224, 'dataset.eval_crop_fraction': 224 / 256, 'ema_decay': 0.0,
  'optimizer': 'sgd', 'loss': 'softmax', 'cutmix_alpha': 0.0}
SOURCES = {
    ('imagenet50', None): NVIDIA | {'num_epochs': 90.0, 'mixup_alpha': 0.0},
    ('imagenet50', 'nvidia250'): NVIDIA | {'num_epochs': 250.0, 'mixup_alpha': 0.2},
    ('imagenet50', 'step'): {  # pytorch/vision references/classification README + train.py
        'batch_size': 256, 'peak_lr': 0.1, 'momentum': 0.9, 'nesterov': False,
        'weight_decay': 1e-4, 'weight_decay_skip': 'none', 'label_smoothing': 0.0,
        'warmup_epochs': 0.0, 'schedule': 'step', 'lr_boundaries_epochs': (30.0, 60.0),
        'lr_decay_factor': 0.1, 'num_epochs': 90.0, 'zero_init_residual': False,
        'bn_group_size': 32, 'dataset.image_size': 224, 'eval_size': 224,
        'dataset.eval_crop_fraction': 224 / 256, 'mixup_alpha': 0.0, 'ema_decay': 0.0},
    ('imagenet50', 'flax'): {  # google/flax examples/imagenet configs/default.py, tpu.py
        'batch_size': 1024, 'peak_lr': 0.4, 'momentum': 0.9, 'nesterov': True,
        'weight_decay': 1e-4, 'weight_decay_skip': 'norm_and_bias', 'label_smoothing': 0.0,
        'warmup_epochs': 5.0, 'schedule': 'cosine', 'final_lr': 0.0, 'num_epochs': 100.0,
        'zero_init_residual': True, 'bn_group_size': 0, 'dtype': 'bfloat16',
        'dataset.eval_crop_fraction': 0.875},
    ('imagenet50_torchvision_v2', None): {  # pytorch/vision#3995 (1013906621), train.py
        'batch_size': 1024, 'peak_lr': 0.5, 'momentum': 0.9, 'nesterov': False,
        'weight_decay': 2e-5, 'weight_decay_skip': 'norm', 'label_smoothing': 0.1,
        'warmup_epochs': 5.0, 'warmup_start_lr': 0.005, 'schedule': 'cosine', 'final_lr': 0.0,
        'num_epochs': 600.0, 'mixup_alpha': 0.2, 'cutmix_alpha': 1.0, 'mix_switch_prob': 0.5,
        'dataset.trivial_augment': True, 'random_erasing': 0.1, 'random_erasing_mode': 'const',
        'dataset.repeated_augmentation': 4, 'dataset.image_size': 176, 'eval_size': 224,
        'dataset.eval_crop_fraction': 224 / 232, 'ema_every_steps': 32,
        'ema_decay': 1 - 2e-5 * 8 * 128 * 32 / 600, 'ema_copy_during_warmup': True,
        'bn_group_size': 128, 'zero_init_residual': False, 'dtype': 'float32'},
}
RSB = {  # timm (optim/lamb.py, loss/binary_cross_entropy.py, train.py), mmpretrain's port
  'batch_size': 2048, 'optimizer': 'lamb', 'adam_b1': 0.9, 'adam_b2': 0.999, 'adam_eps': 1e-6,
  'grad_clip_norm': 1.0, 'weight_decay_skip': 'norm_and_bias', 'schedule': 'cosine',
  'warmup_epochs': 5.0, 'warmup_start_lr': 1e-4, 'final_lr': 1e-6, 'loss': 'bce',
  'bce_target_threshold': 0.2, 'cutmix_alpha': 1.0, 'dataset.randaugment_layers': 2,
  'eval_size': 224, 'dataset.eval_crop_fraction': 0.95, 'zero_init_residual': True}
SOURCES |= {
    ('imagenet50_rsb', 'a1'): RSB | {
        'num_epochs': 600.0, 'peak_lr': 5e-3, 'weight_decay': 0.01, 'mixup_alpha': 0.2,
        'dataset.randaugment_magnitude': 7.0, 'dataset.repeated_augmentation': 3,
        'drop_path_rate': 0.05, 'dataset.image_size': 224},
    ('imagenet50_rsb', 'a2'): RSB | {
        'num_epochs': 300.0, 'peak_lr': 5e-3, 'weight_decay': 0.02, 'mixup_alpha': 0.1,
        'dataset.randaugment_magnitude': 7.0, 'dataset.repeated_augmentation': 3,
        'drop_path_rate': 0.05, 'dataset.image_size': 224},
    ('imagenet50_rsb', 'a3'): RSB | {
        'num_epochs': 100.0, 'peak_lr': 8e-3, 'weight_decay': 0.02, 'mixup_alpha': 0.1,
        'dataset.randaugment_magnitude': 6.0, 'dataset.repeated_augmentation': 1,
        'drop_path_rate': 0.0, 'dataset.image_size': 160},
}
FFCV = {  # libffcv/ffcv-imagenet rn*_configs/*.yaml and train_imagenet.py
  'momentum': 0.9, 'nesterov': False, 'weight_decay_skip': 'norm_except_shortcut',
  'label_smoothing': 0.1, 'warmup_epochs': 2.0, 'schedule': 'polynomial', 'lr_poly_power': 1.0,
  'final_lr': 0.0, 'dataset.min_image_size': 160, 'dataset.image_size': 192,
  'dataset.resize_multiple': 32, 'eval_size': 256, 'dataset.eval_crop_fraction': 224 / 256,
  'eval_flip': True, 'blurpool': True, 'zero_init_residual': False}
RAMPS = {16: (11, 13), 24: (17, 20), 32: (23, 27), 40: (29, 34), 56: (41, 48), 88: (65, 76)}
for _epochs, (_start, _end) in RAMPS.items():
  _ramp = {'num_epochs': float(_epochs), 'dataset.resize_start_epoch': float(_start),
           'dataset.resize_end_epoch': float(_end)}
  SOURCES[('imagenet50_ffcv', str(_epochs))] = FFCV | _ramp | {
      'batch_size': 4096, 'peak_lr': 1.7, 'weight_decay': 1e-4, 'bn_group_size': 512,
      'warmup_start_lr': 1.7e-4}
  SOURCES[('imagenet18_ffcv', str(_epochs))] = FFCV | _ramp | {
      'batch_size': 1024, 'peak_lr': 0.5, 'weight_decay': 5e-5, 'bn_group_size': 0,
      'warmup_start_lr': 0.5e-4}


def _load(name, argument):
  module = importlib.import_module(f'configs.{name}')
  return module.get_config() if argument is None else module.get_config(argument)


def _value(config, key):
  peak = optim.scaled_learning_rate(config.base_lr, config.batch_size)
  derived = {'peak_lr': peak, 'warmup_start_lr': config.warmup_start_factor * peak,
             'final_lr': config.final_lr_factor * peak,
             'eval_size': config.dataset.eval_image_size or config.dataset.image_size}
  if key in derived:
    return derived[key]
  target = config
  for part in key.split('.'):
    target = target[part]
  return tuple(target) if isinstance(target, (list, tuple)) else target


@pytest.mark.parametrize('name,argument', sorted(SOURCES, key=str),
                         ids=[f'{n}:{a}' for n, a in sorted(SOURCES, key=str)])
def test_config_equals_its_source(name, argument):
  config = _load(name, argument)
  wrong = {key: (_value(config, key), expected) for key, expected in SOURCES[name, argument].items()
           if not (_value(config, key) == expected or (
               isinstance(expected, float) and math.isclose(_value(config, key), expected,
                                                            rel_tol=1e-9, abs_tol=1e-15)))}
  assert not wrong, f'(config, source): {wrong}'
  doc = ' '.join(importlib.import_module(f'configs.{name}').__doc__.split()).lower()
  assert 'expected' in doc and 'runtime' in doc and 'not yet run' in doc


def test_the_learning_rate_schedules_follow_their_sources():
  per_epoch = recipes.IMAGENET_TRAIN_IMAGES // 4096
  ffcv = _load('imagenet50_ffcv', '16')
  total = 16 * per_epoch
  lr = optim.create_learning_rate_fn(ffcv, steps_per_epoch=per_epoch, num_train_steps=total)
  # np.interp(epoch, [0, 2, 16], [1e-4 × 1.7, 1.7, 0]) at epochs 0, 1, 2, 9 and 16.
  for epoch, expected in ((0, 1.7e-4), (1, (1.7 + 1.7e-4) / 2), (2, 1.7), (9, 0.85), (16, 0.0)):
    assert float(lr(epoch * per_epoch)) == pytest.approx(expected, rel=2e-3, abs=1e-6), epoch
  nvidia = _load('imagenet50', None)
  per_epoch = recipes.IMAGENET_TRAIN_IMAGES // 2048
  lr = optim.create_learning_rate_fn(nvidia, steps_per_epoch=per_epoch,
                                     num_train_steps=90 * per_epoch)
  # lr_cosine_policy: warmup to 2.048 at epoch 8, then 0.5 (1 + cos(π (e − 8) / 82)) × 2.048.
  assert float(lr(8 * per_epoch)) == pytest.approx(2.048, rel=1e-3)
  assert float(lr(49 * per_epoch)) == pytest.approx(1.024, rel=1e-3)


def test_unknown_procedures_and_epochs_name_the_valid_ones():
  with pytest.raises(ValueError, match="unknown recipe 'cosine'; valid recipes: nvidia, "
                                       "nvidia250, step, flax"):
    _load('imagenet50', 'cosine')
  with pytest.raises(ValueError, match='FFCV epochs 20; valid: 16, 24, 32, 40, 56, 88'):
    _load('imagenet50_ffcv', '20')
  with pytest.raises(ValueError, match="unknown RSB procedure 'b1'; valid: a1, a2, a3"):
    _load('imagenet50_rsb', 'b1')
