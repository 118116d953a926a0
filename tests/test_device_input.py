"""The device input (dataset.pipeline=device): the epoch order, bitwise resumes, batches
independent of the device count, the augmentation's geometry, exact evaluation, a local
gather in the compiled HLO, batches waited for on several CPU devices, and the trainer
with TensorFlow's import blocked."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import small_config
from resnet_jax import sharding
from resnet_jax.data import device_input, in_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _splits(n_train=50, n_eval=21, size=8, channels=1, seed=0):
  rng = np.random.RandomState(seed)
  return in_memory.Splits(
      train=in_memory.Split(rng.randint(0, 256, (n_train, size, size, channels)).astype(np.uint8),
                            np.arange(n_train, dtype=np.int32) % 10),
      eval=in_memory.Split(rng.randint(0, 256, (n_eval, size, size, channels)).astype(np.uint8),
                           np.arange(n_eval, dtype=np.int32) % 10),
      class_names=tuple(map(str, range(10))))


def _config(**overrides):
  config = small_config(**{'dataset.pipeline': 'device', 'dataset.image_size': 8,
                           'dataset.crop_padding': 2, 'dataset.random_flip': True,
                           'batch_size': 16, **overrides})
  return config


def _take(batches, count):
  return [jax.device_get(next(batches)) for _ in range(count)]


def test_every_epoch_is_a_permutation_and_epochs_follow_without_a_gap():
  order = device_input.StreamOrder(seed=3, size=50)
  stream = order.indices(0, 150)  # three epochs
  for epoch in range(3):
    assert sorted(stream[50 * epoch:50 * (epoch + 1)]) == list(range(50))
  assert not np.array_equal(stream[:50], stream[50:100])  # a new order each epoch
  # Any window, read alone (a resume), is the same part of the stream.
  np.testing.assert_array_equal(device_input.StreamOrder(3, 50).indices(37, 40), stream[37:77])
  assert not np.array_equal(device_input.StreamOrder(4, 50).indices(0, 50), stream[:50])


def test_a_resume_gets_bitwise_the_batches_of_an_uninterrupted_run():
  mesh = sharding.make_mesh()
  data = device_input.DeviceInput(_config(), mesh, _splits())
  uninterrupted = _take(data.train_batches(start_step=0), 9)  # crosses two epoch ends
  resumed = _take(data.train_batches(start_step=5), 4)
  for a, b in zip(uninterrupted[5:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  # examples_before (a batch-size change) places the stream by examples, not steps.
  by_examples = _take(data.train_batches(start_step=1, examples_before=5 * 16), 1)
  np.testing.assert_array_equal(by_examples[0]['image'], uninterrupted[5]['image'])


def test_batches_do_not_depend_on_the_device_count():
  splits, config = _splits(), _config()
  on_eight = _take(device_input.DeviceInput(config, sharding.make_mesh(), splits)
                   .train_batches(), 4)
  on_one = _take(device_input.DeviceInput(config, sharding.make_mesh(jax.devices()[:1]), splits)
                 .train_batches(), 4)
  assert len(jax.devices()) == 8
  for a, b in zip(on_eight, on_one):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_without_augmentation_a_batch_is_the_split_in_the_epoch_order():
  splits = _splits()
  config = _config(**{'dataset.augment': 'none', 'dataset.random_flip': False})
  batch = _take(device_input.DeviceInput(config, sharding.make_mesh(), splits).train_batches(), 1)[0]
  order = device_input.epoch_order(config.seed, 0, 50)[:16]
  np.testing.assert_array_equal(batch['image'], splits.train.images[order])
  np.testing.assert_array_equal(batch['label'], splits.train.labels[order])


def test_crops_are_shifts_within_the_padding_and_flips_mirror():
  splits = _splits(n_train=64, channels=3)
  config = _config(**{'batch_size': 64})
  batch = _take(device_input.DeviceInput(config, sharding.make_mesh(), splits).train_batches(), 1)[0]
  order = device_input.epoch_order(config.seed, 0, 64)
  pad = config.dataset.crop_padding
  shifts, flips = set(), 0
  for image, index in zip(batch['image'], order):
    padded = np.pad(splits.train.images[index], ((pad, pad), (pad, pad), (0, 0)))
    matches = [(dy, dx, flip) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
               for flip in (False, True)
               if np.array_equal(image, (padded[dy:dy + 8, dx:dx + 8][:, ::-1] if flip
                                         else padded[dy:dy + 8, dx:dx + 8]))]
    assert matches, 'not a shifted (and maybe mirrored) window of the padded image'
    shifts.add(matches[0][:2])
    flips += matches[0][2]
  # 25 possible shifts and a fair coin: 64 examples see many of both.
  assert len(shifts) >= 12 and 16 <= flips <= 48, (shifts, flips)


def test_evaluation_counts_every_example_once():
  splits = _splits(n_eval=21)
  data = device_input.DeviceInput(_config(), sharding.make_mesh(), splits)
  batches = [jax.device_get(batch) for batch in data.eval_batches()]
  assert len(batches) == data.num_eval_batches() == 2
  mask = np.concatenate([b['mask'] for b in batches]).astype(bool)
  assert mask.sum() == 21
  np.testing.assert_array_equal(np.concatenate([b['image'] for b in batches])[mask],
                                splits.eval.images)
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches])[mask],
                                splits.eval.labels)


def test_batches_on_several_cpu_devices_are_computed_before_their_step(monkeypatch):
  # Two CPU devices deadlocked in XLA's collectives on a busy host until each batch was
  # waited for (resnet_jax/cpu/devices.py): on several CPU devices every batch is; on one
  # device (or an accelerator) the input stays asynchronous.
  waited = []
  real_wait = jax.block_until_ready
  monkeypatch.setattr(jax, 'block_until_ready', lambda x: waited.append(x) or real_wait(x))
  splits, config = _splits(), _config()
  several = device_input.DeviceInput(config, sharding.make_mesh(), splits)
  train = _take(several.train_batches(), 3)
  evaluation = list(several.eval_batches())
  assert len(waited) == 3 + len(evaluation) == 5
  assert all(leaf.is_ready() for leaf in jax.tree.leaves(evaluation))
  np.testing.assert_array_equal(train[0]['image'], jax.device_get(waited[0]['image']))
  waited.clear()
  one = device_input.DeviceInput(config, sharding.make_mesh(jax.devices()[:1]), splits)
  _take(one.train_batches(), 3)
  list(one.eval_batches())
  assert not waited


def test_the_gather_is_local_to_each_device():
  # A replicated split and batch-sharded indices: no collective in the compiled batch.
  mesh = sharding.make_mesh()
  data = device_input.DeviceInput(_config(), mesh, _splits())
  indices = sharding.to_global({'i': np.arange(16, dtype=np.int32),
                                'p': np.arange(16, dtype=np.uint32)}, mesh)
  hlo = data._augmented.lower(*data._train, indices['i'], indices['p']).compile().as_text()
  for collective in ('all-gather', 'all-to-all', 'all-reduce', 'collective-permute'):
    assert collective not in hlo, collective


@pytest.mark.parametrize('overrides,message', [
    ({'dataset.augment': 'imagenet'}, 'dataset.augment (with dataset.pipeline=device)'),
    ({'dataset.randaugment_layers': 2}, 'needs dataset.pipeline=tf_data'),
    ({'dataset.order': 'per_process'}, 'needs dataset.pipeline=tf_data'),
    ({'dataset.pipeline': 'gpu'}, "unknown dataset.pipeline 'gpu'; valid: tf_data, device"),
])
def test_settings_the_device_input_cannot_do_are_refused(overrides, message):
  from resnet_jax import config_checks  # noqa: PLC0415
  from resnet_jax.errors import ConfigError  # noqa: PLC0415
  with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
    config_checks.check_config(_config(**overrides), sharding.make_mesh())


def test_digits_arrays_are_the_tfds_builders_split(digits_dir):
  import tensorflow_datasets as tfds  # noqa: PLC0415
  config = small_config(**{'dataset.data_dir': digits_dir, 'dataset.pipeline': 'device'})
  assert config.dataset.image_size == 8  # the stored size: no resize on either side
  splits = in_memory.load(config)
  builder = tfds.builder('sklearn_digits', data_dir=digits_dir)

  def pairs(images, labels):  # the split as a multiset of (image, label)
    return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels))

  for split, ours in (('train', splits.train), ('test', splits.eval)):
    theirs = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    assert pairs(ours.images, ours.labels) == pairs(theirs['image'], theirs['label'])


def test_the_trainer_runs_with_tensorflow_and_tfds_blocked(tmp_path):
  # As on a bare CUDA JAX image: both packages shadowed by ones that raise on import.
  shadow = tmp_path / 'shadow'
  for name in ('tensorflow', 'tensorflow_datasets'):
    (shadow / name).mkdir(parents=True)
    (shadow / name / '__init__.py').write_text(f'raise ImportError("{name} is blocked")\n')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'PYTHONPATH')}
  env |= {'PYTHONPATH': f'{shadow}{os.pathsep}{REPO}', 'JAX_PLATFORMS': 'cpu'}
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.main', '--config=configs/digits.py',
       f'--workdir={workdir}', '--config.dataset.pipeline=device', '--config.num_train_steps=4',
       '--config.log_every_steps=2', '--config.eval_every_steps=4',
       '--config.checkpoint_every_steps=4', '--config.batch_size=32',
       '--config.dataset.image_size=8', '--config.dataset.crop_padding=1'],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'eval/top1' in result.stderr
  assert (workdir / 'checkpoints' / '4').is_dir()
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))


def test_the_trainer_imports_no_tensorflow_where_it_is_installed(tmp_path):
  # Installed, but never imported on the device input's path (TensorBoard's own event
  # writer would import it for tf.io.gfile: the summaries write without it).
  # A finished run ends in os._exit (distributed._exit_finished): the check runs there.
  code = ('import os, sys\nfrom absl import app\nfrom resnet_jax import main\n'
          'exit_now = os._exit\n'
          'def checked_exit(status):\n'
          '  print("TENSORFLOW IMPORTED" if "tensorflow" in sys.modules else "NO TENSORFLOW",\n'
          '        flush=True)\n'
          '  exit_now(status)\n'
          'os._exit = checked_exit\n'
          'app.run(main.main, flags_parser=main.parse_flags)\n')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'} | {'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run(
      [sys.executable, '-c', code, '--config=configs/digits.py', f'--workdir={tmp_path}',
       '--config.dataset.pipeline=device', '--config.num_train_steps=2',
       '--config.log_every_steps=2', '--config.eval_every_steps=2',
       '--config.checkpoint_every_steps=2', '--config.batch_size=16',
       '--config.dataset.image_size=8', '--config.dataset.crop_padding=1'],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'NO TENSORFLOW' in result.stdout, result.stdout[-2000:]
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(tmp_path))
