"""Test setup: 8 fake CPU devices, fast compiles, small configs and a prepared digits set."""

import atexit
import os
import pathlib
import shutil
import tempfile

# Must precede the first `import jax` of the session.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One persistent compilation cache for the session, in a temporary directory shared by the
# xdist workers (they inherit the controller's environment) and the CLI subprocesses
# (compilation_cache.enable takes JAX_COMPILATION_CACHE_DIR over the config's directory, so
# ~/.cache stays untouched): the suite compiles the same small programs in many tests.
# Every program that took 0.2 s is written, as the trainer does.
if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='resnet_jax_tests_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ['JAX_ENABLE_COMPILATION_CACHE'] = 'true'
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.2'
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
# XLA's cheap compile, here (below) and in every CLI subprocess: the suite's models are tiny,
# so compiling them with full optimisation costs more than it saves (a digits run through
# the CLI, 3 steps: 37 s with it, 23 s without, on the 2-core VM).
os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'true'
# `import tensorflow` loads Keras eagerly (keras.src.optimizers, for SavedModel
# registrations) unless TF_USE_LEGACY_KERAS names tf_keras, which is not installed: then
# TF skips it (its ImportError is caught). Nothing here uses Keras, and every CLI subprocess
# imports TF for tf.data: 11.2 s → 7.4 s per import on the 2-core VM.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import jax  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

jax.config.update('jax_disable_most_optimizations', True)
tf.config.set_visible_devices([], 'GPU')

import numpy as np  # noqa: E402

from configs import digits as digits_config  # noqa: E402
from resnet_jax import config_files  # noqa: E402
from resnet_jax.data import sources  # noqa: E402


@pytest.fixture
def no_compilation_cache():
  """The session's persistent cache off: each program compiled here, so its text carries
  this test's metadata (a cache hit keeps that of the test that compiled it first)."""
  from resnet_jax import compilation_cache
  compilation_cache.enable('')
  yield
  compilation_cache.enable(os.environ['JAX_COMPILATION_CACHE_DIR'])


def small_config(**overrides):
  """The digits config shrunk to seconds: ResNet-8 (one unit per stage: every kind of unit
  and shortcut, compiled in ~60 % of ResNet-20's time) at 8×8, batch 16, a few steps."""
  config = digits_config.get_config()
  config.model = 'resnet8'
  config.dataset.image_size = 8
  config.dataset.crop_padding = 1
  config.batch_size = 16
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.warmup_epochs = 0.0
  return with_overrides(config, overrides)


def with_overrides(config, overrides):
  """`config` with dotted keys set ({'dataset.image_size': 8}), as --config.key=value."""
  for key, value in overrides.items():
    config_files.set_override(config, key, value)
  return config


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  """A TFDS data_dir holding the prepared embedded digits dataset."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  sources.create_source(small_config(**{'dataset.data_dir': data_dir}))
  return data_dir


def make_image_folder(root, counts, size=(24, 32), seed=0, channels=3, formats=('jpg', 'png')):
  """Writes root/<split>/<class>/<i>.jpg|png; counts: {split: {class: n}}.

  Images cycle through `formats`; each class has its own mean colour (or gray level, with
  channels=1), so a model can learn them.
  """
  rng = np.random.RandomState(seed)
  root = pathlib.Path(root)
  for split, per_class in counts.items():
    for label, (name, n) in enumerate(sorted(per_class.items())):
      (root / split / name).mkdir(parents=True, exist_ok=True)
      for i in range(n):
        colour = np.array([60 + 60 * (label % 3), 80 + 40 * (label % 2), 200 - 50 * label])
        pixels = np.clip(colour[:channels] + rng.normal(0, 30, (*size, channels)), 0, 255)
        pixels = pixels.astype(np.uint8)
        extension = formats[i % len(formats)]
        encode = tf.io.encode_png if extension == 'png' else tf.io.encode_jpeg
        (root / split / name / f'{i}.{extension}').write_bytes(encode(pixels).numpy())
  return str(root)


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory, digits_dir):
  """A finished small digits run (ResNet-8 at 8×8, 6 steps, with a weight EMA): its
  workdir holds config.json, model_info.json, summaries and checkpoints 3 and 6.
  Read it; don't write into it."""
  from resnet_jax import train  # noqa: PLC0415
  workdir = str(tmp_path_factory.mktemp('trained'))
  config = small_config(**{'dataset.data_dir': digits_dir, 'ema_decay': 0.5,
                           'checkpoint_async': False})
  train.train_and_evaluate(config, workdir)
  return workdir


# PyTorch parity checks are the slow tier, whose install (requirements-slow.txt) brings
# torch and torchvision: there they run, and fail if torch is missing; never skipped.
needs_torch = pytest.mark.slow
