"""resnet_jax.tools.predict on the small trained digits run: probabilities, batching,
errors, CLI."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image  # matplotlib, a requirement, depends on pillow

from resnet_jax import steps
from resnet_jax.data import preprocess
from resnet_jax.storage import trained
from resnet_jax.tools import predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = tuple(str(i) for i in range(10))


@pytest.fixture(scope='module')
def image_files(tmp_path_factory):
  """PNG and JPEG files of sizes other than the model's 8×8, one RGB; a GIF copy of the first."""
  root = tmp_path_factory.mktemp('images')
  rng = np.random.RandomState(0)
  files = []
  for name, shape in [('a.png', (12, 10, 1)), ('b.jpg', (16, 20, 1)), ('c.png', (11, 13, 3)),
                      ('d.jpg', (9, 9, 1)), ('e.png', (24, 30, 1))]:
    pixels = rng.randint(0, 256, shape).astype(np.uint8)
    encode = tf.io.encode_png if name.endswith('.png') else tf.io.encode_jpeg
    (root / name).write_bytes(encode(pixels).numpy())
    files.append(str(root / name))
  # decode_image cannot give a grayscale model's one channel from a GIF: predict converts it.
  Image.open(files[0]).save(root / 'a.gif')
  return files + [str(root / 'a.gif')]


@pytest.fixture(scope='module')
def results(trained_workdir, image_files):
  return predict.predict_files(trained_workdir, image_files, batch_size=2, top_k=10)


def _reference(workdir, files):
  """Softmax of the model's apply on eval_image of each file, computed without predict."""
  restored = trained.restore(workdir)
  info = restored.info
  size, _, channels = info.image_shape
  images = np.stack([preprocess.eval_image(tf.io.read_file(f), augment=info.augment,
                                           image_size=size, channels=channels).numpy()
                     for f in files])
  # Jitted: op-by-op dispatch of the whole ResNet is slower than one compile here.
  logits = jax.jit(restored.create_model().apply, static_argnames='train')(
      restored.variables, steps.normalize_images(images, info.mean, info.std), train=False)
  return np.asarray(jax.nn.softmax(logits))


def test_probabilities_match_eval_preprocessing_and_model(trained_workdir, image_files, results):
  assert [path for path, _ in results] == image_files
  for _, predictions in results:
    probabilities = [p for _, _, p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert abs(sum(probabilities) - 1) < 1e-5  # all 10 classes
    assert sorted(index for _, index, _ in predictions) == list(range(10))
    assert all(name == NAMES[index] for name, index, _ in predictions)
  expected = _reference(trained_workdir, image_files[:-1])
  got = np.zeros((len(results), 10))
  for row, (_, predictions) in enumerate(results):
    for _, index, p in predictions:
      got[row, index] = p
  np.testing.assert_allclose(got[:-1], expected, atol=1e-5)
  np.testing.assert_allclose(got[-1], expected[0], atol=1e-5)  # the GIF of a.png's pixels


def test_batch_size_and_top_k(trained_workdir, image_files, results):
  other = predict.predict_files(trained_workdir, image_files, batch_size=8, top_k=3)
  for (path, full), (other_path, top3) in zip(results, other):
    assert other_path == path
    assert [(n, i) for n, i, _ in top3] == [(n, i) for n, i, _ in full[:3]]
    np.testing.assert_allclose([p for *_, p in top3], [p for *_, p in full[:3]], atol=1e-6)
  parsed = json.loads(predict.format_results(other, 'json'))
  assert parsed[0]['file'] == image_files[0]
  assert parsed[0]['predictions'][0] == {'class': other[0][1][0][0],
                                         'index': other[0][1][0][1],
                                         'probability': other[0][1][0][2]}


def test_bad_files_are_named(trained_workdir, image_files, tmp_path):
  missing = str(tmp_path / 'missing.png')
  with pytest.raises(predict.PredictError, match='missing.png'):
    predict.predict_files(trained_workdir, [image_files[0], missing])
  (tmp_path / 'notes.png').write_text('not an image')
  with pytest.raises(predict.PredictError, match='notes.png.* is not a JPEG'):
    predict.predict_files(trained_workdir, [str(tmp_path / 'notes.png')])
  # A valid header but a cut-off body passes the up-front check and fails in decoding.
  (tmp_path / 'cut.png').write_bytes(open(image_files[4], 'rb').read()[:60])
  with pytest.raises(predict.PredictError, match='cannot decode .*cut.png'):
    predict.predict_files(trained_workdir, [str(tmp_path / 'cut.png'), image_files[0]],
                          batch_size=1)


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.tools.predict', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_cli(trained_workdir, image_files, results, tmp_path):
  result = _cli(f'--workdir={trained_workdir}', '--top_k=3', *image_files[:2])
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0] == image_files[0] and lines[4] == image_files[1], result.stdout
  for header, (_, predictions) in zip((0, 4), results):
    for rank in range(3):
      name, _, p = predictions[rank]
      line = lines[header + 1 + rank]
      assert line.startswith(f'  {rank + 1}. {name}  '), result.stdout
      assert abs(float(line.split()[-1]) - p) <= 1e-4

  missing = str(tmp_path / 'missing.jpg')
  result = _cli(f'--workdir={trained_workdir}', image_files[0], missing)
  assert result.returncode != 0
  assert result.stdout == ''
  assert result.stderr.strip().splitlines() == [f'error: cannot read {missing!r}: '
                                                'No such file or directory'], result.stderr


def test_a_folder_stands_for_the_images_below_it(tmp_path):
  (tmp_path / 'a' / 'b').mkdir(parents=True)
  for name in ('a/2.png', 'a/b/1.JPG', 'a/x.webp', 'a/notes.txt'):
    (tmp_path / name).write_bytes(b'')
  (tmp_path / 'empty').mkdir()
  single = str(tmp_path / 'single.png')
  assert predict.expand_folders([str(tmp_path / 'a'), single]) == [
      str(tmp_path / 'a' / '2.png'), str(tmp_path / 'a' / 'b' / '1.JPG'),
      str(tmp_path / 'a' / 'x.webp'), single]
  with pytest.raises(predict.PredictError, match=r"folder '.*empty' holds no image files"):
    predict.expand_folders([str(tmp_path / 'empty')])


def test_the_runs_evaluation_crop_is_the_one_predict_takes(tmp_path):
  """A run evaluated with another crop (torchvision V2's 224/232, timm's 0.95): predict and
  export's `preprocessing` follow model_info's eval_crop_fraction, not a fixed 0.875."""
  pixels = np.random.RandomState(0).randint(0, 256, (40, 60, 3)).astype(np.uint8)
  path = tmp_path / 'image.png'
  path.write_bytes(tf.io.encode_png(pixels).numpy())
  info = trained.ModelInfo(model='resnet18', num_classes=2, class_names=('a', 'b'),
                           image_shape=(16, 16, 3), mean=(0.0,), std=(1.0,), augment='imagenet',
                           eval_crop_fraction=0.5)
  prepared = predict._prepare(str(path), info).numpy()
  encoded = tf.io.encode_png(pixels)
  assert np.array_equal(prepared, preprocess.eval_image(
      encoded, augment='imagenet', image_size=16, channels=3, crop_fraction=0.5).numpy())
  assert not np.array_equal(prepared, preprocess.eval_image(
      encoded, augment='imagenet', image_size=16, channels=3).numpy())
  assert 'floor(0.5 × the shorter side)' in info.eval_preprocessing()
