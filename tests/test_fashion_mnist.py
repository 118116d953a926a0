"""Fashion-MNIST offline: the IDX format, the files' verification, the one-line errors for a
missing or damaged file, split slicing, and a training run on small IDX files."""

import gzip
import hashlib
import os
import sys

import numpy as np
import pytest

from configs import fashion_mnist as fashion_mnist_config
from resnet_jax.data import fashion_mnist, idx, in_memory
from resnet_jax.errors import ConfigError


def _write_split(folder, split, images, labels, gz=True):
  image_spec, label_spec = fashion_mnist.FILES[split]
  suffix = '.gz' if gz else ''
  idx.write(os.path.join(folder, image_spec.name + suffix), images)
  idx.write(os.path.join(folder, label_spec.name + suffix), labels)


def _spec_of(path):
  content = gzip.open(path).read() if path.endswith('.gz') else open(path, 'rb').read()
  return len(content), hashlib.sha256(content).hexdigest()


@pytest.fixture
def small_fashion(tmp_path, monkeypatch):
  """A folder of the four IDX files with 96 training and 40 test images of 28×28 (each
  class its own brightness), FILES pointed at their checksums, Debian's folder hidden."""
  rng = np.random.RandomState(0)
  folder = str(tmp_path / 'fashion')
  arrays = {}
  for split, n in (('train', 96), ('test', 40)):
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.clip(labels[:, None, None] * 25 + rng.randint(0, 20, (n, 28, 28)), 0,
                     255).astype(np.uint8)
    _write_split(folder, split, images, labels)
    arrays[split] = images, labels
  files = {}
  for split, specs in fashion_mnist.FILES.items():
    files[split] = tuple(fashion_mnist.FileSpec(spec.name, *_spec_of(
        os.path.join(folder, spec.name + '.gz'))) for spec in specs)
  monkeypatch.setattr(fashion_mnist, 'FILES', files)
  monkeypatch.setattr(fashion_mnist, 'DEBIAN_DIR', str(tmp_path / 'no_debian_package'))
  return folder, arrays


@pytest.mark.parametrize('dtype', [np.uint8, np.int32, np.float32])
@pytest.mark.parametrize('name', ['a.idx', 'a.idx.gz'])
def test_idx_round_trip(tmp_path, dtype, name):
  array = (np.arange(2 * 3 * 5) * 7 % 251).astype(dtype).reshape(2, 3, 5)
  path = str(tmp_path / name)
  idx.write(path, array)
  read = idx.read(path)
  assert read.dtype == np.dtype(dtype) and read.shape == (2, 3, 5)
  np.testing.assert_array_equal(read, array)


def test_idx_reads_the_published_header_layout(tmp_path):
  # The format as LeCun's page defines it: 0x00000801, then the count, big-endian.
  path = tmp_path / 'labels'
  path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
  np.testing.assert_array_equal(idx.read(str(path)), [7, 8, 9])


@pytest.mark.parametrize('content,message', [
    (b'\x00\x00\x07\x01\x00\x00\x00\x01\x05', 'not an IDX file'),
    (b'\x00\x00\x08\x02\x00\x00\x00\x02', 'truncated header'),
    (b'\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02', 'needs 11'),
])
def test_malformed_idx_files_are_refused(tmp_path, content, message):
  path = tmp_path / 'bad'
  path.write_bytes(content)
  with pytest.raises(idx.IdxError, match=message):
    idx.read(str(path))


def test_the_recorded_checksums_are_of_the_debian_files():
  # Each figure is checked against the files where Debian's package is installed; the
  # sizes always hold: 16-byte image headers + 28×28 pixels, 8-byte label headers.
  for split, count in (('train', 60_000), ('test', 10_000)):
    images, labels = fashion_mnist.FILES[split]
    assert images.size == 16 + count * 784 and labels.size == 8 + count
  folder = fashion_mnist.find_folder()
  if folder is not None:
    for split in fashion_mnist.SPLITS:
      for spec in fashion_mnist.FILES[split]:
        assert _spec_of(os.path.join(folder, spec.name + '.gz')) == (spec.size, spec.sha256)


def test_small_files_load_verified(small_fashion):
  folder, arrays = small_fashion
  for split in ('train', 'test'):
    images, labels = fashion_mnist.load_split(folder, split)
    assert images.shape == (len(arrays[split][0]), 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(images[..., 0], arrays[split][0])
    np.testing.assert_array_equal(labels, arrays[split][1])


def test_uncompressed_files_are_read_too(small_fashion, tmp_path):
  folder, arrays = small_fashion
  plain = str(tmp_path / 'plain')
  for split in ('train', 'test'):
    _write_split(plain, split, *arrays[split], gz=False)
  assert fashion_mnist.find_folder(plain) == plain
  np.testing.assert_array_equal(fashion_mnist.load_split(plain, 'test')[1], arrays['test'][1])


def test_a_damaged_file_stops_in_one_line_naming_it(small_fashion):
  folder, _ = small_fashion
  path = os.path.join(folder, 't10k-images-idx3-ubyte.gz')
  content = bytearray(gzip.open(path).read())
  content[500] ^= 1
  with gzip.open(path, 'wb') as file:
    file.write(bytes(content))
  with pytest.raises(ConfigError) as error:
    fashion_mnist.load_split(folder, 'test')
  message = str(error.value)
  assert '\n' not in message and path in message and 'damaged' in message
  assert 'apt-get install --reinstall dataset-fashion-mnist' in message


def test_a_missing_file_names_it_and_the_package(small_fashion, tmp_path):
  folder, _ = small_fashion
  os.remove(os.path.join(folder, 'train-labels-idx1-ubyte.gz'))
  assert fashion_mnist.find_folder(folder) is None
  message = fashion_mnist.missing_files_message(folder)
  assert 'train-labels-idx1-ubyte.gz' in message and folder in message
  assert 'apt-get install dataset-fashion-mnist' in message and '\n' not in message


def test_without_files_and_without_tfds_download_one_line(small_fashion, tmp_path,
                                                          monkeypatch):
  def offline(config, key):
    raise OSError('Failed to resolve fashion-mnist.s3-website.eu-central-1.amazonaws.com')
  monkeypatch.setattr(in_memory, '_tf_split', offline)
  config = fashion_mnist_config.get_config('cpu')
  config.dataset.data_dir = str(tmp_path / 'empty')
  with pytest.raises(ConfigError) as error:
    in_memory.load(config)
  message = str(error.value)
  assert 'train-images-idx3-ubyte.gz' in message and 'apt-get install dataset-fashion-mnist' in message
  assert 'TFDS could not get it either' in message and '\n' not in message


def test_without_the_idx_files_tfds_fashion_mnist_is_used(small_fashion, tmp_path,
                                                          monkeypatch):
  asked = []

  def from_tfds(config, key):
    asked.append((config.dataset.name, config.dataset[key]))
    split = in_memory.Split(np.zeros((4, 28, 28, 1), np.uint8), np.arange(4, dtype=np.int32))
    return split, fashion_mnist.CLASS_NAMES, f'tfds {config.dataset[key]}'
  monkeypatch.setattr(in_memory, '_tf_split', from_tfds)
  config = fashion_mnist_config.get_config('cpu')
  config.dataset.data_dir = str(tmp_path / 'empty')
  splits = in_memory.load(config)
  assert asked == [('fashion_mnist', 'train'), ('fashion_mnist', 'test')]
  assert splits.info().num_train_examples == 4 and splits.class_names == fashion_mnist.CLASS_NAMES
  assert splits.info().train_fingerprint == 'tfds train'


@pytest.mark.parametrize('spec,expected', [
    ('train', slice(0, 96)), ('train[:10]', slice(0, 10)), ('train[10:]', slice(10, 96)),
    ('train[:25%]', slice(0, 24)), ('train[:10%]', slice(0, 10)),  # 9.6 rounds to 10
    ('train[-6:]', slice(90, 96))])
def test_split_slices(small_fashion, spec, expected):
  folder, arrays = small_fashion
  config = fashion_mnist_config.get_config('cpu')
  config.dataset.data_dir = folder
  config.dataset.train_split = spec
  splits = in_memory.load(config)
  np.testing.assert_array_equal(splits.train.labels, arrays['train'][1][expected])
  assert splits.info().num_eval_examples == 40


@pytest.mark.parametrize('spec,message', [
    ('validation', "names no split of this dataset; valid: train, test"),
    ('train[a:]', 'is not a split spec')])
def test_bad_split_specs_in_one_line(small_fashion, spec, message):
  config = fashion_mnist_config.get_config('cpu')
  config.dataset.data_dir = small_fashion[0]
  config.dataset.eval_split = spec
  with pytest.raises(ConfigError, match=message):
    in_memory.load(config)


def test_recipes_follow_the_paper_and_refuse_unknown_ones():
  zhong = fashion_mnist_config.get_config('zhong')
  assert (zhong.num_epochs, zhong.batch_size, zhong.base_lr * zhong.batch_size / 256,
          zhong.lr_boundaries_epochs, zhong.weight_decay, zhong.nesterov) == (
              300, 128, 0.1, (150.0, 225.0), 5e-4, False)
  assert zhong.random_erasing == 0 and zhong.dataset.pipeline == 'device'
  erasing = fashion_mnist_config.get_config('zhong_re')
  assert (erasing.random_erasing, erasing.random_erasing_box) == (0.5, 'zhong')
  with pytest.raises(ValueError, match='valid recipes: cpu, zhong, zhong_re'):
    fashion_mnist_config.get_config('fast')


def test_training_on_small_idx_files_learns(small_fashion, tmp_path):
  from resnet_jax import train  # noqa: PLC0415
  folder, _ = small_fashion
  config = fashion_mnist_config.get_config('cpu')
  config.dataset.data_dir = folder
  config.dataset.image_size = 14  # resized once at load: seconds, not minutes
  config.dataset.crop_padding = 2
  config.batch_size = 32
  config.num_train_steps = 24
  config.eval_every_steps = 12
  config.checkpoint_every_steps = 12
  config.log_every_steps = 6
  config.eval_flip = False
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['eval/num_examples'] == 40
  # Ten brightness levels 25 apart under noise of 20: images and labels that did not pair
  # up would stay near chance (10 %); 24 steps reach 40 %.
  assert summary['eval/top1'] >= 0.3, summary


def test_without_tensorflow_the_missing_files_are_named_in_one_line(small_fashion, tmp_path,
                                                                   monkeypatch):
  from resnet_jax.data import inputs  # noqa: PLC0415
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)  # import fails, as uninstalled
  config = fashion_mnist_config.get_config('cpu')
  config.dataset.data_dir = str(tmp_path / 'empty')
  assert inputs.needs_tensorflow(config)
  with pytest.raises(ConfigError) as error:
    inputs.check_tensorflow_available(config)
  assert 'apt-get install dataset-fashion-mnist' in str(error.value)
  config.dataset.name = 'cifar10'
  with pytest.raises(ConfigError, match="dataset 'cifar10' with dataset.pipeline=device is read "
                                        'through TensorFlow and TFDS, which cannot be imported'):
    inputs.check_tensorflow_available(config)
