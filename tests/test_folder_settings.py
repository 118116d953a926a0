"""configs/folder.py: the values an image folder's images decide (data/folder_settings.py)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from configs import folder as folder_recipe
from conftest import make_image_folder, small_config, with_overrides
from resnet_jax import train
from resnet_jax.data import folder_settings, image_folder
from resnet_jax.errors import ConfigError
from resnet_jax.storage import trained
from resnet_jax.storage import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _folder_config(data_dir, **overrides):
  config = folder_recipe.get_config()
  config.dataset.data_dir = str(data_dir)
  return with_overrides(config, overrides)


def _pixels(root, split='train'):
  return np.concatenate([
      tf.io.decode_image(tf.io.read_file(os.path.join(d, f)), expand_animations=False)
      .numpy().reshape(-1, 1)
      for d, _, files in os.walk(os.path.join(root, split)) for f in files]).astype(np.float64)


def test_grayscale_small_images_get_one_channel_their_size_and_a_cifar_network(tmp_path):
  root = make_image_folder(tmp_path, {'train': {'a': 30, 'b': 30}, 'validation': {'a': 4, 'b': 4}},
                           size=(20, 22), channels=1, formats=('png', 'jpg'))
  config = folder_settings.resolved(_folder_config(root), str(tmp_path / 'run'), num_devices=8)
  assert (config.model, config.dataset.image_size, config.dataset.channels) == ('resnet20', 20, 1)
  assert (config.dataset.augment, config.dataset.crop_padding) == ('cifar', 2)
  pixels = _pixels(root)  # all 60 images are in the 512-image sample
  assert config.dataset.mean == pytest.approx((pixels.mean(),), abs=0.01)
  assert config.dataset.std == pytest.approx((pixels.std(),), abs=0.01)
  assert config.batch_size == 16  # 60 images: halved from 128 to the floor, 8 devices
  assert folder_settings.left_to_data(config) == []


def test_large_colour_images_get_an_imagenet_network(tmp_path):
  root = make_image_folder(tmp_path, {'train': {'a': 3, 'b': 3}, 'validation': {'a': 1, 'b': 1}},
                           size=(150, 200))
  config = folder_settings.resolved(_folder_config(root), str(tmp_path / 'run'), num_devices=1)
  assert (config.model, config.dataset.image_size, config.dataset.channels) == (
      'resnet18', 128, 3)
  assert config.dataset.augment == 'imagenet' and len(config.dataset.mean) == 3


def test_given_values_win_and_pretrained_weights_keep_three_channels(tmp_path):
  root = make_image_folder(tmp_path, {'train': {'a': 4, 'b': 4}, 'validation': {'a': 1, 'b': 1}},
                           size=(20, 20), channels=1)
  config = folder_settings.resolved(
      _folder_config(root, **{'dataset.image_size': 32, 'model': 'resnet32',
                              'init_checkpoint': '/weights', 'batch_size': 4}),
      str(tmp_path / 'run'), num_devices=1)
  assert (config.model, config.dataset.image_size, config.batch_size) == ('resnet32', 32, 4)
  assert config.dataset.channels == 3 and len(config.dataset.mean) == 3
  assert config.dataset.crop_padding == 4  # 32 // 8


def test_a_resume_takes_the_recorded_values_without_measuring(tmp_path, monkeypatch):
  root = make_image_folder(tmp_path, {'train': {'a': 4, 'b': 4}, 'validation': {'a': 1, 'b': 1}},
                           size=(20, 20), channels=1)
  workdir = tmp_path / 'run'
  workdir.mkdir()
  recorded = folder_settings.resolved(_folder_config(root), str(workdir), num_devices=1)
  recorded.dataset.mean = (1.5,)  # as if measured from other images
  (workdir / 'config.json').write_text(recorded.to_json())
  monkeypatch.setattr(folder_settings, 'measure', lambda *args: pytest.fail('measured again'))
  config = folder_settings.resolved(_folder_config(root), str(workdir), num_devices=1)
  assert config.dataset.mean == (1.5,) and config.to_json() == recorded.to_json()


@pytest.mark.parametrize('devices,examples,batch', [(8, 1_600, 128), (8, 300, 32), (8, 100, 16),
                                                   (3, 100, 15), (1, 5, 5), (2, 1, 2)])
def test_the_batch_fits_the_folder_and_the_devices(devices, examples, batch):
  assert folder_settings._batch_size(examples, devices) == batch


def test_values_left_to_other_data_or_bad_channels_are_one_line_errors(tmp_path):
  with pytest.raises(ConfigError, match=r"^dataset.image_size=0, dataset.mean=\(\): left to the "
                     r"images, .*dataset 'sklearn_digits' needs a value for each"):
    folder_settings.resolved(small_config(**{'dataset.image_size': 0, 'dataset.mean': ()}),
                             str(tmp_path), num_devices=1)
  with pytest.raises(ConfigError, match=r'dataset.channels 2 must be 1 \(grayscale\), 3'):
    folder_settings.resolved(_folder_config(tmp_path, **{'dataset.channels': 2}), str(tmp_path),
                             num_devices=1)


def test_grayscale_files_decode_to_one_channel_in_the_pipeline(tmp_path):
  from resnet_jax.data import pipeline, sources  # noqa: PLC0415
  root = make_image_folder(tmp_path, {'train': {'a': 2, 'b': 2}, 'validation': {'a': 2, 'b': 2}},
                           size=(12, 12), channels=1)
  config = small_config(**{'dataset.name': 'image_folder', 'dataset.data_dir': root,
                           'dataset.eval_split': 'validation', 'dataset.channels': 1,
                           'dataset.image_size': 12, 'batch_size': 4})
  source = sources.create_source(config)
  info = sources.dataset_info(source, config)
  assert info.image_shape == (12, 12, 1)
  batch = next(iter(pipeline.eval_batches(source, config, info)))
  assert batch['image'].shape == (4, 12, 12, 1)


def test_the_recipe_trains_a_grayscale_folder_and_records_what_it_measured(tmp_path,
                                                                             monkeypatch):
  root = make_image_folder(tmp_path / 'images', {'train': {'a': 24, 'b': 24},
                                                 'validation': {'a': 4, 'b': 4}},
                           size=(12, 12), channels=1)
  listings = []
  list_files = image_folder._list_files
  monkeypatch.setattr(image_folder, '_list_files',
                      lambda *args: listings.append(args) or list_files(*args))
  workdir = tmp_path / 'run'
  summary = train.train_and_evaluate(_folder_config(root, num_train_steps=2), str(workdir))
  assert summary['eval/num_examples'] == 8
  assert len(listings) == 1  # measured and read from one listing
  splits = image_folder.config_splits(_folder_config(root))
  image_folder.list_splits(str(root), *splits)
  image_folder.list_splits(str(root), *splits)
  assert len(listings) == 3  # outside a run, each call lists anew (images may be added)
  recorded = workdir_lib.read_config(str(workdir))
  assert (recorded.model, recorded.dataset.image_size, recorded.dataset.channels,
          recorded.batch_size, recorded.dataset.augment) == ('resnet20', 12, 1, 16, 'cifar')
  info = json.loads((workdir / trained.MODEL_INFO_FILE).read_text())
  assert info['image_shape'] == [12, 12, 1]


def _readme_command(path, marker):
  """The command of `path` (a markdown file) whose first line holds `marker`, joined."""
  lines = (pathlib.Path(REPO) / path).read_text().splitlines()
  first = next(i for i, line in enumerate(lines) if marker in line and 'python -m' in line)
  command = []
  for line in lines[first:]:
    command.append(line.split('python -m', 1)[-1] if not command else line)
    if not line.rstrip().endswith('\\'):
      break
  return ' '.join(part.rstrip('\\ ').strip() for part in command).split()


@pytest.mark.slow
def test_the_documented_command_trains_a_2000_image_grayscale_folder(tmp_path):
  root = make_image_folder(tmp_path / 'images', {
      'train': {f'class{c}': 160 for c in range(10)},
      'validation': {f'class{c}': 40 for c in range(10)}}, size=(28, 28), channels=1,
      formats=('png',))
  words = _readme_command('README.md', 'configs/folder.py')
  assert _readme_command('docs/data.md', 'configs/folder.py') == words  # one command, run once
  workdir = tmp_path / 'mine'
  argv = [word.replace('DATA_DIR', str(root)).replace('/tmp/mine', str(workdir))
          for word in words]
  assert argv[:3] == ['resnet_jax.main', '--config=configs/folder.py', f'--workdir={workdir}']
  # The documented command as it stands, with the training cut to 6 steps.
  result = subprocess.run([sys.executable, '-m', *argv, '--config.num_train_steps=6'],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Measured from the images of' in result.stderr
  assert 'Done: step 6 of 6' in result.stderr.strip().splitlines()[-1]
  recorded = workdir_lib.read_config(str(workdir))
  assert (recorded.model, recorded.dataset.image_size, recorded.dataset.channels,
          recorded.batch_size) == ('resnet20', 28, 1, 128)
  # Run again, the same command: the recorded values, no change, nothing to do.
  again = subprocess.run([sys.executable, '-m', *argv, '--config.num_train_steps=6'],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Recorded by the run' in again.stderr and 'changed config keys' not in again.stderr
  assert 'nothing to do' in again.stderr


def test_every_format_decodes_to_one_channel(tmp_path):
  """decode_image reads GIF, BMP and WebP only as colour: converted, they train as gray."""
  from PIL import Image  # noqa: PLC0415  (matplotlib, a requirement, depends on pillow)

  from resnet_jax.data import preprocess  # noqa: PLC0415
  gray = np.random.RandomState(0).randint(0, 256, (9, 11)).astype(np.uint8)
  for extension, options in (('png', {}), ('bmp', {}), ('gif', {}), ('webp', {'lossless': True})):
    path = tmp_path / f'image.{extension}'
    Image.fromarray(gray, 'L').save(path, **options)
    decoded = preprocess.eval_image(tf.io.read_file(str(path)), augment='cifar', image_size=9,
                                    channels=1).numpy()
    assert decoded.shape == (9, 9, 1), extension
    resized = preprocess.eval_image(tf.io.encode_png(gray[..., None]), augment='cifar',
                                    image_size=9, channels=1).numpy()
    # The luma weights sum to 0.9999: a gray value may come back one lower.
    assert np.abs(decoded.astype(int) - resized).max() <= 1, extension
