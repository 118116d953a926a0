"""Benchmarks that print figures; never part of the test suite.

  python -m resnet_jax.benchmark --mode=input --config=configs/imagenet50.py

--mode=input times the config's training input pipeline on a folder of ~500×375 JPEGs
(generated into a temporary directory unless --image_dir is given) against a bare
tf.data decode-and-resize loop over the same files, in the same run.
"""

import json
import os
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from resnet_jax.data import throughput  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum('mode', 'input', ['input'], 'What to measure.')
config_flags.DEFINE_config_file('config', 'configs/imagenet50.py', 'A config file.',
                                lock_config=True)
flags.DEFINE_string('image_dir', None, 'A folder with train/<class>/*.jpg; default: generate.')
flags.DEFINE_integer('num_images', 256, 'JPEGs to generate when --image_dir is not given.')
flags.DEFINE_integer('batch_size', 64, 'Batch size (overrides the config: input speed per '
                     'image hardly depends on it, and a small batch fits a small machine).')
flags.DEFINE_integer('warmup_batches', 10, 'Batches before timing starts.')
flags.DEFINE_integer('timed_batches', 40, 'Batches timed per round.')
flags.DEFINE_integer('rounds', 2, 'Alternating rounds of both pipelines; the best counts.')
flags.DEFINE_enum('format', 'text', ['text', 'json'], 'Output format.')


def main(argv: list[str]) -> None:
  del argv
  import tensorflow as tf  # Benchmark the host: keep TF off any accelerator.
  tf.config.set_visible_devices([], 'GPU')
  config = FLAGS.config
  config.batch_size = FLAGS.batch_size
  with tempfile.TemporaryDirectory() as scratch:
    image_dir = FLAGS.image_dir or throughput.write_jpegs(scratch, FLAGS.num_images)
    result = throughput.measure(config, image_dir, warmup_batches=FLAGS.warmup_batches,
                                timed_batches=FLAGS.timed_batches, rounds=FLAGS.rounds)
  if FLAGS.format == 'json':
    print(json.dumps(result))
    return
  print(f'{result["images"]} JPEGs, batch {result["batch_size"]}, {result["image_size"]}², '
        f'augment={result["augment"]}, uint8 out, {result["cores"]} cores')
  print(f'training pipeline: {result["images_per_sec"]:8.1f} img/s '
        f'({result["images_per_sec_per_core"]:.1f} per core)')
  print(f'bare decode+resize: {result["bare_images_per_sec"]:7.1f} img/s '
        f'({result["bare_images_per_sec_per_core"]:.1f} per core)')
  print(f'ratio: {result["ratio_vs_bare"]:.2f}x the bare loop')


if __name__ == '__main__':
  app.run(main)
