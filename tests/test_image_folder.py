"""Image folders: start-up lists files without opening one, clear errors for bad folders,
unreadable images replaced and counted in training, left out of evaluation."""

import itertools
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from absl import logging

from conftest import make_image_folder, small_config
from resnet_jax import sharding, train
from resnet_jax.data import inputs, pipeline, sources
from resnet_jax.errors import ConfigError
from resnet_jax.tools import report

COUNTS = {'train': {'b_class': 3, 'a_class': 4}, 'validation': {'a_class': 2, 'b_class': 2}}


def _config(data_dir, **overrides):
  return small_config(**{'dataset.name': 'image_folder', 'dataset.data_dir': str(data_dir),
                         'dataset.eval_split': 'validation', 'dataset.mean': (127.0,) * 3,
                         'dataset.std': (64.0,) * 3, **overrides})


def test_classes_are_sorted_folder_names(tmp_path):
  source = sources.create_source(_config(make_image_folder(tmp_path, COUNTS)))
  info = sources.dataset_info(source, _config(tmp_path))
  assert info.class_names == ('a_class', 'b_class')
  assert (info.num_train_examples, info.num_eval_examples) == (7, 4)
  assert list(source.splits['train'].labels) == [0, 0, 0, 0, 1, 1, 1]


def test_start_up_lists_the_files_and_opens_none(tmp_path, monkeypatch):
  make_image_folder(tmp_path, COUNTS)
  (tmp_path / 'train' / 'b_class' / 'junk.png').write_bytes(b'not an image at all')
  (tmp_path / 'train' / 'b_class' / 'notes.txt').write_text('ignored: not an image name')
  touched = []
  for module, name in [(tf.io, 'read_file'), (tf.io, 'decode_image'), (tf.io, 'decode_jpeg'),
                       (tf.io, 'decode_png'), (tf.io, 'extract_jpeg_shape'),
                       (tf.data.Dataset, 'from_tensor_slices')]:
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, real=real, name=name, **k: (
        touched.append(name), real(*a, **k))[1])
  real_open = open
  monkeypatch.setattr('builtins.open', lambda path, *a, **k: (
      touched.append(str(path)) if str(path).startswith(str(tmp_path)) else None,
      real_open(path, *a, **k))[1])
  source = sources.create_source(_config(tmp_path))
  info = sources.dataset_info(source, _config(tmp_path))
  assert touched == []  # no image read, decoded or even opened
  assert info.num_train_examples == 8  # the junk file is listed; training will skip it


def _folder_run(tmp_path, broken):
  """A 16-image folder whose `broken` training files break after start-up."""
  make_image_folder(tmp_path, {'train': {'a': 8, 'b': 8}, 'validation': {'a': 5, 'b': 5}})
  config = _config(tmp_path, batch_size=8, **{'dataset.image_size': 8,
                                              'dataset.augment': 'imagenet'})
  source = sources.create_source(config)
  info = sources.dataset_info(source, config)
  paths = [str(p) for p in source.splits['train'].paths]
  for path, how in zip((paths[2], paths[9], paths[13]), broken):
    if how == 'truncated':
      with open(path, 'rb') as f:
        head = f.read(120)
      with open(path, 'wb') as f:
        f.write(head)
    elif how == 'deleted':
      os.remove(path)
    else:
      with open(path, 'wb') as f:
        f.write(b'<html>an error page saved as an image</html>')
  return config, source, info, [paths[2], paths[9], paths[13]][:len(broken)]


def test_unreadable_training_images_are_replaced_counted_and_logged(tmp_path, monkeypatch):
  config, source, info, bad = _folder_run(tmp_path, ('truncated', 'deleted', 'junk'))
  warnings = []
  monkeypatch.setattr(logging, 'warning', lambda msg, *args: warnings.append(msg % args))
  batches = list(itertools.islice(pipeline.train_batches(source, config, info, start_step=0,
                                                         with_ids=True), 6))  # 3 epochs
  assert all(b['image'].shape == (8, 8, 8, 3) for b in batches)  # full batches
  assert sum(int(b['unreadable'].sum()) for b in batches) == 3 * len(bad)
  for batch in batches:
    for row in np.flatnonzero(batch['unreadable']):
      assert batch['id'][row].decode() not in bad  # the next readable image took its place
      twin = batch['id'] == batch['id'][row]
      np.testing.assert_array_equal(batch['image'][twin][0], batch['image'][row])
  for path in bad:
    assert sum(path in w for w in warnings) == 3, path  # logged each time it is met
  # Replacements are a function of the batch: a resume still yields the same batches.
  resumed = list(itertools.islice(pipeline.train_batches(source, config, info, start_step=3,
                                                         with_ids=True), 3))
  for expected, got in zip(batches[3:], resumed, strict=True):
    for key in ('id', 'image', 'unreadable'):
      np.testing.assert_array_equal(expected[key], got[key])


@pytest.mark.slow
def test_the_trainer_counts_unreadable_images_in_its_metrics(tmp_path):
  config, *_ = _folder_run(tmp_path / 'data', ('junk',))
  config.num_train_steps, config.log_every_steps, config.eval_every_steps = 4, 2, 4
  config.checkpoint_every_steps = 4
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  counts = report.read_scalars(tmp_path / 'run')['train/unreadable_images']
  assert sum(value for _, value in counts) == 2  # 4 steps of 8: two passes over 16 images


def test_unreadable_images_are_left_out_of_evaluation(tmp_path):
  make_image_folder(tmp_path, {'train': {'a': 4, 'b': 4}, 'validation': {'a': 6, 'b': 5}})
  config = _config(tmp_path, batch_size=8)
  source = sources.create_source(config)
  info = sources.dataset_info(source, config)
  validation = [str(p) for p in source.splits['validation'].paths]
  os.remove(validation[1])
  with open(validation[7], 'wb') as f:
    f.write(b'garbage')
  masked = [i for b in pipeline.eval_batches(source, config, info, with_ids=True)
            for i, m in zip(b['id'], b['mask']) if m]
  assert sorted(i.decode() for i in masked) == sorted(set(validation) - {validation[1],
                                                                          validation[7]})
  mesh = sharding.make_mesh()
  state = train.create_state(config, info, mesh, lambda step: 0.1)
  summary = train.evaluate(state, inputs.TfDataInput(config, mesh, source), config, mesh)
  assert summary['eval/num_examples'] == 9


def test_a_batch_with_no_readable_image_stops_training(tmp_path):
  config, source, info, _ = _folder_run(tmp_path, ())
  for path in source.splits['train'].paths:
    os.remove(path)
  with pytest.raises(ConfigError, match='every image of a training batch failed to load'):
    next(pipeline.train_batches(source, config, info, start_step=0))


@pytest.mark.parametrize('break_it,pattern', [
    (lambda root: shutil.rmtree(root), r"data_dir '.*' is not a directory"),
    (lambda root: shutil.rmtree(root / 'validation'), r"split folder '.*validation' does not"),
    (lambda root: [os.remove(p) for p in (root / 'train' / 'a_class').iterdir()],
     r"class folder '.*a_class' holds no images"),
    (lambda root: (root / 'validation' / 'c_class').mkdir() or make_image_folder(
        root, {'validation': {'c_class': 1}}),
     r"classes differ between splits 'train' and 'validation'.*only in 'validation': \['c_class'\]"),
])
def test_bad_folders_fail_with_one_clear_line(tmp_path, break_it, pattern):
  make_image_folder(tmp_path, COUNTS)
  break_it(tmp_path)
  with pytest.raises(ConfigError, match=pattern) as error:
    sources.create_source(_config(tmp_path))
  assert '\n' not in str(error.value)


def test_hidden_folders_are_not_classes(tmp_path):
  make_image_folder(tmp_path, COUNTS)
  (tmp_path / 'train' / '.ipynb_checkpoints').mkdir()
  source = sources.create_source(_config(tmp_path))
  assert source.class_names == ('a_class', 'b_class')


def test_webp_is_read_and_other_files_are_counted_in_one_line(tmp_path, monkeypatch):
  make_image_folder(tmp_path, COUNTS)
  pixels = np.full((24, 32, 3), 90, np.uint8)
  webp = tf.io.encode_png(pixels).numpy()  # replaced by a real WebP below
  from PIL import Image  # noqa: PLC0415  (Pillow comes with matplotlib)
  Image.fromarray(pixels).save(tmp_path / 'train' / 'a_class' / 'extra.webp', 'WEBP')
  for name in ('scan.tif', 'scan2.TIF', 'notes.txt', '.DS_Store'):
    (tmp_path / 'train' / 'b_class' / name).write_bytes(webp)
  warnings = []
  monkeypatch.setattr(logging, 'warning', lambda fmt, *args: warnings.append(fmt % args))
  source = sources.create_source(_config(tmp_path))
  assert source.splits['train'].paths[4].endswith('extra.webp')
  assert len(source.splits['train'].paths) == 8
  assert warnings == [f'{tmp_path}/train: left out 3 files that are not images (.tif 2, .txt 1); '
                      'read: .jpg, .jpeg, .png, .bmp, .gif, .webp']
  image = tf.io.decode_image((tmp_path / 'train' / 'a_class' / 'extra.webp').read_bytes(),
                             channels=3, expand_animations=False)
  assert image.shape == (24, 32, 3)  # what the pipeline's decode reads


def test_missing_data_dir_setting(tmp_path):
  with pytest.raises(ConfigError, match="dataset.data_dir is empty: give --config.dataset.data_dir="):
    sources.create_source(_config(''))


def test_per_process_parts_sample_every_class(tmp_path):
  """A folder's listing is class-sorted; with dataset.order=per_process each process
  reads its part. Before 2026-12-06 the parts were contiguous blocks: process 0 of 4 read
  classes a and b only, so its BN group saw two of eight classes. Now each part is drawn
  from the whole listing (a fixed key: the same parts on every run), sizes unchanged."""
  counts = {'train': {c: 10 for c in 'abcdefgh'}, 'validation': {c: 1 for c in 'abcdefgh'}}
  source = sources.create_source(_config(make_image_folder(tmp_path, counts, size=(4, 4))))
  parts = [source._part('train', index, 4) for index in range(4)]  # noqa: SLF001
  assert [len(p) for p in parts] == [20] * 4
  assert sorted(np.concatenate(parts)) == list(range(80))
  for part in parts:
    assert len(set(source.splits['train'].labels[part])) >= 6
  assert [list(p) for p in parts] == [
      list(source._part('train', i, 4)) for i in range(4)]  # noqa: SLF001  (deterministic)
  np.testing.assert_array_equal(source._part('train', 0, 1), np.arange(80))  # noqa: SLF001


def test_the_fingerprint_is_the_file_list_not_where_it_lies(tmp_path):
  make_image_folder(tmp_path / 'a', COUNTS, size=(4, 4))
  shutil.copytree(tmp_path / 'a', tmp_path / 'b')
  fingerprint = lambda folder: sources.create_source(_config(tmp_path / folder)).fingerprint(  # noqa: E731
      'train')
  assert fingerprint('a') == fingerprint('b')
  os.rename(tmp_path / 'b' / 'train' / 'a_class' / '0.jpg',
            tmp_path / 'b' / 'train' / 'a_class' / 'renamed.jpg')
  assert fingerprint('a') != fingerprint('b')
