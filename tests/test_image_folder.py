"""Image folders: class discovery, corrupt files skipped and counted, clear errors."""

import os
import shutil

import pytest
from absl import logging

from conftest import make_image_folder, small_config
from resnet_jax.data import sources
from resnet_jax.errors import ConfigError

COUNTS = {'train': {'b_class': 3, 'a_class': 4}, 'validation': {'a_class': 2, 'b_class': 2}}


def _config(data_dir):
  return small_config(**{'dataset.name': 'image_folder', 'dataset.data_dir': str(data_dir),
                         'dataset.eval_split': 'validation'})


def test_classes_are_sorted_folder_names(tmp_path):
  source = sources.create_source(_config(make_image_folder(tmp_path, COUNTS)))
  info = sources.dataset_info(source, _config(tmp_path))
  assert info.class_names == ('a_class', 'b_class')
  assert (info.num_train_examples, info.num_eval_examples) == (7, 4)
  assert list(source.splits['train'].labels) == [0, 0, 0, 0, 1, 1, 1]


def test_corrupt_and_unreadable_images_are_skipped_counted_and_logged(tmp_path, monkeypatch):
  make_image_folder(tmp_path, COUNTS)
  truncated = tmp_path / 'train' / 'a_class' / '0.jpg'
  truncated.write_bytes(truncated.read_bytes()[:200])
  (tmp_path / 'train' / 'b_class' / 'junk.png').write_bytes(b'not an image at all')
  (tmp_path / 'train' / 'b_class' / 'notes.txt').write_text('ignored: not an image name')
  warnings = []
  monkeypatch.setattr(logging, 'warning', lambda msg, *args: warnings.append(msg % args))
  source = sources.create_source(_config(tmp_path))
  assert sorted(source.splits['train'].skipped) == sorted([str(truncated),
                                                           str(tmp_path / 'train/b_class/junk.png')])
  assert len(source.splits['train'].paths) == 6  # 8 image files, 2 skipped
  assert any(str(truncated) in w for w in warnings)
  assert any('skipped 2 of 8 images' in w for w in warnings)


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


def test_a_class_with_only_corrupt_images_is_an_error(tmp_path):
  make_image_folder(tmp_path, COUNTS)
  for image in (tmp_path / 'validation' / 'b_class').iterdir():
    image.write_bytes(b'garbage')
  with pytest.raises(ConfigError, match=r"class folder '.*validation/b_class' holds no readable"):
    sources.create_source(_config(tmp_path))


def test_missing_data_dir_setting(tmp_path):
  with pytest.raises(ConfigError, match="dataset.data_dir '' is not a directory"):
    sources.create_source(_config(''))
