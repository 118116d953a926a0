"""resnet_jax.tools.export: the served artifact computes the model's eval logits at any
batch size."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from sklearn import datasets

from resnet_jax import steps
from resnet_jax.errors import ConfigError
from resnet_jax.storage import trained
from resnet_jax.tools import export, predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def exported(tmp_path_factory, trained_workdir):
  """The trained run exported for the default platforms: (directory, returned signature)."""
  output = str(tmp_path_factory.mktemp('exported') / 'served')
  return output, export.export(trained_workdir, output)


def test_served_outputs_match_the_model_at_two_batch_sizes(exported, trained_workdir):
  call, signature = export.load(exported[0])
  restored = trained.restore(trained_workdir)
  info = restored.info
  images = np.random.RandomState(0).randint(0, 256, (8, *info.image_shape)).astype(np.uint8)
  # conv_impl 'auto' (the CPU dot forms) against the artifact's 'xla': same weights, same
  # logits. One jitted batch of 8 serves as the reference for both sizes: eval mode treats
  # every example alone (and eager apply takes seconds).
  model = restored.create_model()
  expected = jax.jit(lambda x: model.apply(
      restored.variables, steps.normalize_images(x, info.mean, info.std), train=False))(images)
  for batch in (3, 8):  # one artifact, two batch sizes: the batch is symbolic
    served = call(images[:batch])
    assert set(served) == set(export.OUTPUTS)
    assert served['logits'].shape == (batch, info.num_classes)
    assert served['logits'].dtype == np.float32
    np.testing.assert_allclose(served['logits'], expected[:batch], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(served['probabilities'], jax.nn.softmax(expected[:batch]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(served['probabilities'], axis=-1), 1.0, atol=1e-5)
  assert signature['input']['shape'] == [export.BATCH, *info.image_shape]


def test_signature_describes_the_artifact(exported, trained_workdir):
  output, returned = exported
  assert sorted(os.listdir(output)) == [export.EXPORTED_FILE, export.SIGNATURE_FILE]
  with open(os.path.join(output, export.SIGNATURE_FILE)) as f:
    signature = json.load(f)
  assert signature == returned
  info = trained.read_model_info(trained_workdir)
  assert signature['input'] == {'name': 'images', 'shape': ['batch', 8, 8, 1],
                                'dtype': 'uint8', 'note': signature['input']['note']}
  assert signature['outputs'] == {name: {'shape': ['batch', 10], 'dtype': 'float32'}
                                  for name in ('logits', 'probabilities')}
  assert signature['class_names'] == list(info.class_names)
  assert signature['image_shape'] == [8, 8, 1]
  assert signature['mean'] == list(info.mean) and signature['std'] == list(info.std)
  assert (signature['model'], signature['step'], signature['weights']) == ('resnet8', 6, 'ema')
  assert signature['augment'] == 'cifar' and signature['eval_crop_fraction'] == 0.875
  assert signature['preprocessing'] == info.eval_preprocessing()
  assert 'resize to 8×8, bilinear with antialiasing' in signature['preprocessing']
  assert signature['platforms'] == list(export.DEFAULT_PLATFORMS)
  assert signature['jax_version'] == jax.__version__


def test_unknown_platform_is_a_config_error_naming_the_valid_ones(tmp_path, trained_workdir):
  with pytest.raises(ConfigError, match=r"unknown platforms 'gpu'; valid: cpu, cuda, rocm, tpu"):
    export.export(trained_workdir, str(tmp_path / 'out'), platforms=('cpu', 'gpu'))
  assert not (tmp_path / 'out').exists()


def test_cli_refuses_to_overwrite_a_non_empty_output(tmp_path, trained_workdir):
  output = tmp_path / 'out'
  output.mkdir()
  (output / 'keep.txt').write_text('mine')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.tools.export', f'--workdir={trained_workdir}',
       f'--output={output}'], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
  assert 'already exists' in lines[0]
  assert os.listdir(output) == ['keep.txt']


# Everything this package trains with; a server has none of it.
_NOT_ON_A_SERVER = ('resnet_jax', 'flax', 'optax', 'orbax', 'tensorflow', 'tensorflow_datasets',
                    'ml_collections', 'clu', 'jmp', 'torch', 'etils')
# A script's first lines: importing any of them fails, as on a server without them.
_BLOCKED = f"""import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in {_NOT_ON_A_SERVER!r}:
      raise ImportError('not on a server: ' + name)
sys.meta_path.insert(0, Blocked())"""


def test_serving_needs_only_jax_and_flatbuffers(exported, tmp_path):
  """The module docstring's serving lines, in a process where this package and every
  training library fail to import, give the artifact's logits."""
  call, signature = export.load(exported[0])
  images = np.random.RandomState(1).randint(0, 256, (5, 8, 8, 1)).astype(np.uint8)
  np.save(tmp_path / 'images.npy', images)
  script = f"""
{_BLOCKED}
import json
import jax, numpy as np
with open({os.path.join(exported[0], export.EXPORTED_FILE)!r}, 'rb') as f:
  served = jax.export.deserialize(bytearray(f.read()))
with open({os.path.join(exported[0], export.SIGNATURE_FILE)!r}) as f:
  signature = json.load(f)
logits = served.call(np.load({str(tmp_path / 'images.npy')!r}))['logits']
np.save({str(tmp_path / 'logits.npy')!r}, np.asarray(logits))
print(signature['class_names'][int(np.argmax(logits[0]))])
"""
  result = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  expected = np.asarray(call(images)['logits'])
  np.testing.assert_allclose(np.load(tmp_path / 'logits.npy'), expected, rtol=1e-6, atol=1e-6)
  assert result.stdout.strip() == signature['class_names'][int(np.argmax(expected[0]))]


def _serving_block():
  """docs/tools.md's serving code (the python block that defines classify)."""
  page = open(os.path.join(REPO, 'docs', 'tools.md')).read()
  (code,) = [block for block in re.findall(r'```python\n(.*?)```', page, re.S)
             if 'def classify' in block]
  return code


def test_the_documented_serving_code_gives_predicts_classes(exported, trained_workdir, tmp_path):
  from PIL import Image  # noqa: PLC0415  (matplotlib, a requirement, depends on pillow)
  digits = datasets.load_digits().images[:12]  # 8×8, the model's size: no resampling
  files = []
  for i, digit in enumerate(digits):
    pixels = (digit * 15).astype(np.uint8)
    files.append(str(tmp_path / f'digit{i}.png'))
    Image.fromarray(pixels, 'L').save(files[-1])
  # Resampled, one of them RGB (PNG: JPEG decoders differ among themselves by a few levels).
  resized = [str(tmp_path / 'big.png'), str(tmp_path / 'colour.png')]
  Image.fromarray((digits[0] * 15).astype(np.uint8), 'L').resize((24, 20)).save(resized[0])
  Image.fromarray((digits[1] * 15).astype(np.uint8), 'L').resize((30, 30)).convert(
      'RGB').save(resized[1])
  script = f"""
{_BLOCKED}
{_serving_block()}
import json
print(json.dumps(classify({files + resized!r}, {exported[0]!r})))
"""
  result = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  predicted = predict.predict_files(trained_workdir, files + resized, top_k=1)
  for (name, probability), (file, ((predicted_name, _, predicted_probability),)) in zip(
      served[:len(files)], predicted):
    assert name == predicted_name, file  # the same pixels: the same classes
    assert probability == pytest.approx(predicted_probability, abs=1e-5)
  # Resampled: Pillow's bilinear against TensorFlow's, within two levels of predict's pixels.
  namespace = {}
  exec(_serving_block(), namespace)  # noqa: S102  (the page's own code)
  signature = json.load(open(os.path.join(exported[0], export.SIGNATURE_FILE)))
  info = trained.read_model_info(trained_workdir)
  for file in resized:
    difference = (namespace['prepare'](file, signature).astype(int)
                  - predict._prepare(file, info).numpy())
    assert np.abs(difference).max() <= 2, (file, np.abs(difference).max())
