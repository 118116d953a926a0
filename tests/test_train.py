"""The trainer end to end: resume equals uninterrupted, CLI runs, bad input refused."""

import json
import logging
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import make_image_folder, small_config
from resnet_jax import train
from resnet_jax.cpu import devices as cpu_devices
from resnet_jax.storage import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _final_state(workdir):
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  return checkpointing.load_arrays(workdir, steps[-1])


class _Killed(Exception):
  pass


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted(tmp_path, digits_dir, monkeypatch):
  config = small_config(**{'dataset.data_dir': digits_dir, 'ema_decay': 0.9})
  straight = _interrupted_at_step_3_then_resumed(config, tmp_path, monkeypatch)
  assert set(straight) >= {'eval/top1', 'eval/top5', 'eval/loss', 'eval/num_examples',
                           'eval_ema/top1'}
  assert straight['eval/num_examples'] == 360


@pytest.mark.slow
def test_resume_with_gradient_accumulation_equals_uninterrupted(tmp_path, digits_dir,
                                                                 monkeypatch):
  """Each step is one update of 2 micro-batches: checkpoints fall between updates."""
  config = small_config(**{'dataset.data_dir': digits_dir, 'grad_accum_steps': 2,
                           'batch_size': 32})
  _interrupted_at_step_3_then_resumed(config, tmp_path, monkeypatch)


def _interrupted_at_step_3_then_resumed(config, tmp_path, monkeypatch):
  """A run killed after its step-3 checkpoint and resumed ends bitwise as one that was
  not; returns the uninterrupted run's final metrics."""
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))

  real_save = checkpointing.Checkpointer.save

  def save_then_die(self, step, state):
    real_save(self, step, state)
    if step == 3:  # Like a kill right after the checkpoint of step 3 is written.
      self.close()
      raise _Killed()

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save_then_die)
  with pytest.raises(_Killed):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', real_save)
  assert sorted(os.listdir(tmp_path / 'resumed' / 'checkpoints')) == ['3']
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))

  assert resumed == straight
  a, b = _final_state(str(tmp_path / 'straight')), _final_state(str(tmp_path / 'resumed'))
  assert int(a['step']) == int(b['step']) == 6
  jax.tree.map(np.testing.assert_array_equal, a, b)
  return straight


@pytest.mark.parametrize('policy', ['halt', 'skip'])
def test_non_finite_steps_halt_or_skip_and_never_reach_a_checkpoint(tmp_path, digits_dir,
                                                                     policy):
  # A huge learning rate: the first update is finite but enormous, the next loss is not.
  config = small_config(**{'dataset.data_dir': digits_dir, 'base_lr': 1e30,
                           'nonfinite_policy': policy, 'log_every_steps': 3})
  if policy == 'halt':
    with pytest.raises(FloatingPointError, match=r'non-finite loss or gradients at step 2'):
      train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / 'checkpoints').exists() or not os.listdir(tmp_path / 'checkpoints')
    return
  train.train_and_evaluate(config, str(tmp_path))
  state = _final_state(str(tmp_path))
  assert int(state['step']) == 6 and int(state['skipped_steps']) == 5
  for leaf in jax.tree.leaves((state['params'], state['batch_stats'], state['opt_state'])):
    assert np.all(np.isfinite(leaf))


def _run_cli(*args, prelude=''):
  """python -m resnet_jax.main ARGS, optionally after `prelude` (e.g. entering mock data)."""
  code = (f'{prelude}\nfrom absl import app\nfrom resnet_jax import main\n'
          'app.run(main.main, flags_parser=main.parse_flags)')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-c', code, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_on_mock_cifar10(tmp_path):
  workdir = tmp_path / 'run'
  result = _run_cli(
      '--config=configs/cifar10_resnet20.py', f'--workdir={workdir}',
      '--config.num_train_steps=4', '--config.batch_size=8', '--config.dataset.image_size=8',
      '--config.eval_every_steps=2', '--config.checkpoint_every_steps=2',
      '--config.log_every_steps=2', '--config.dataset.shuffle_buffer=16',
      # Synchronous saves: mock_data patches file access for the whole process, and an
      # async save still finishing in a background thread when the next one starts
      # (steps are fast here) writes through the patched functions into a mock path.
      '--config.checkpoint_async=False',
      prelude='import tensorflow_datasets as tfds\n'
              'mocked = tfds.testing.mock_data(num_examples=20)\n'
              'mocked.__enter__()  # kept referenced: the mock lasts while `mocked` lives')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'eval/num_examples=20' in result.stderr
  for name in ('train/loss', 'train/top1', 'train/learning_rate', 'train/images_per_sec',
               'train/grad_norm', 'train/grad_norm_max', 'train/update_norm',
               'train/param_norm', 'eval/loss', 'eval/top1', 'eval/top5'):
    assert name in result.stderr, name
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['model'] == 'resnet20' and saved['batch_size'] == 8
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))


@pytest.mark.slow
def test_cli_embedded_digits(tmp_path, digits_dir):
  result = _run_cli('--config=configs/digits.py', f'--workdir={tmp_path}',
                    f'--config.dataset.data_dir={digits_dir}', '--config.num_train_steps=3',
                    '--config.log_every_steps=1')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'eval/num_examples=360' in result.stderr
  assert re.search(r'\[3\] train/.*train/images_per_sec=', result.stderr), result.stderr[-3000:]


@pytest.mark.slow
def test_cli_trains_on_an_image_folder(tmp_path):
  folder = make_image_folder(tmp_path / 'images', {
      'train': {'red': 12, 'blue': 12}, 'validation': {'red': 5, 'blue': 6}}, size=(40, 30))
  (tmp_path / 'images' / 'train' / 'red' / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
  result = _run_cli('--config=configs/digits.py', f'--workdir={tmp_path / "run"}',
                    '--config.dataset.name=image_folder', f'--config.dataset.data_dir={folder}',
                    '--config.dataset.eval_split=validation', '--config.dataset.augment=imagenet',
                    '--config.dataset.mean=(127.,127.,127.)', '--config.dataset.std=(64.,64.,64.)',
                    '--config.batch_size=8', '--config.num_train_steps=4')
  assert result.returncode == 0, result.stderr[-3000:]
  # Listed at start-up (no image opened), met in training: replaced, logged and counted.
  assert 'broken.jpg replaced by the next image of its batch' in result.stderr
  assert 'train/unreadable_images=' in result.stderr
  assert 'eval/num_examples=11' in result.stderr


def test_cpu_devices_asked_for_once_jax_runs_keep_its_devices_and_the_trainer_says_so(caplog):
  # resnet_jax.main asks before JAX starts (test_device_input's blocked-TF run); a library
  # caller that computed first keeps its devices and is told why.
  jax.devices()
  assert not cpu_devices.request(2)
  assert not cpu_devices.request(0)
  assert jax.local_device_count() == 8
  with caplog.at_level(logging.WARNING):
    cpu_devices.warn_if_not_in_effect(2)
    assert 'cpu_devices=2 is not in effect: this process started JAX with 8 CPU' in caplog.text
    caplog.clear()
    cpu_devices.warn_if_not_in_effect(8)
    cpu_devices.warn_if_not_in_effect(0)
    assert not caplog.text


def test_the_command_splits_the_cpu_as_cpu_devices_asks_before_jax_starts(tmp_path):
  # No XLA_FLAGS; digits' batch of 128 does not split over 3 devices, so the run stops at
  # the config check, after the devices are listed and before any step: no collective on
  # several CPU devices in a fresh process while the suite loads the machine (cpu/devices.py).
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'} | {'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.main', '--config=configs/digits.py',
       f'--workdir={tmp_path}/run', '--config.cpu_devices=3'],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-2000:]
  assert ('local devices: [CpuDevice(id=0), CpuDevice(id=1), CpuDevice(id=2)]'
          in result.stderr), result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: batch_size 128 is not a positive multiple of the 3 devices')
