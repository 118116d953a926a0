"""resnet_jax.tools.report: metrics that agree with the trainer's evaluation, files, curves,
errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.tools import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def run_copy(tmp_path_factory, trained_workdir):
  """A copy of the trained run that reports may write into."""
  copy = tmp_path_factory.mktemp('report') / 'run'
  shutil.copytree(trained_workdir, copy)
  return str(copy)


def _value_at(scalars, tag, step):
  return dict(scalars[tag])[step]


def test_report_files_and_metrics_match_the_trainers_evaluation(run_copy):
  result = report.write_report(run_copy)
  paths, record = result['paths'], result['metrics']
  assert set(paths) == {'report', 'metrics', 'confusion_matrix', 'curves_loss', 'curves_top1',
                        'curves_learning_rate'}
  for name, path in paths.items():
    assert path.startswith(os.path.join(run_copy, 'report', 'step6_ema') + os.sep)
    if path.endswith('.png'):
      with open(path, 'rb') as f:
        assert f.read(8) == PNG_MAGIC, name
      assert os.path.getsize(path) > 1000, name
  with open(paths['metrics']) as f:
    assert json.load(f) == record

  # The newest checkpoint with its EMA ('auto'), on all 360 test examples.
  assert (record['step'], record['weights'], record['num_examples']) == (6, 'ema', 360)
  classes = record['classes']
  assert [c['name'] for c in classes] == [str(i) for i in range(10)]
  supports = np.array([c['support'] for c in classes])
  assert supports.sum() == 360

  # Same accuracy as the trainer's own evaluation of that state (in its event files).
  scalars = report.read_scalars(run_copy)
  assert abs(record['top1'] - _value_at(scalars, 'eval_ema/top1', 6)) < 1e-6

  # Per-class metrics recomputed from the confusion matrix (rows true, columns predicted).
  matrix = np.array(record['confusion_matrix'])
  assert matrix.shape == (10, 10) and matrix.sum() == 360
  np.testing.assert_array_equal(matrix.sum(axis=1), supports)
  assert abs(np.trace(matrix) / 360 - record['top1']) < 1e-12
  correct, predicted = np.diag(matrix), matrix.sum(axis=0)
  precision = np.divide(correct, predicted, out=np.zeros(10), where=predicted > 0)
  recall = np.divide(correct, supports, out=np.zeros(10), where=supports > 0)
  np.testing.assert_allclose([c['precision'] for c in classes], precision, atol=1e-12)
  np.testing.assert_allclose([c['recall'] for c in classes], recall, atol=1e-12)
  assert abs(record['macro_avg']['recall'] - recall.mean()) < 1e-12
  # Weighted recall is accuracy.
  assert abs(record['weighted_avg']['recall'] - record['top1']) < 1e-12

  with open(paths['report']) as f:
    text = f.read()
  for needle in ('step 6, ema weights', 'precision', 'macro avg', 'weighted avg', 'accuracy'):
    assert needle in text


def test_report_of_an_earlier_checkpoint_with_live_weights(run_copy):
  record = report.write_report(run_copy, step=3, weights='live')['metrics']
  assert (record['step'], record['weights']) == (3, 'live')
  scalars = report.read_scalars(run_copy)
  assert abs(record['top1'] - _value_at(scalars, 'eval/top1', 3)) < 1e-6


def test_report_on_another_split(run_copy):
  record = report.write_report(run_copy, split='train[:40]')['metrics']
  assert (record['split'], record['num_examples']) == ('train[:40]', 40)
  assert os.path.isfile(os.path.join(run_copy, 'report', 'step6_ema_train_to40', 'metrics.json'))


@pytest.mark.slow
def test_the_cli_prints_its_result_and_nothing_else(run_copy):
  result = subprocess.run([sys.executable, '-m', 'resnet_jax.tools.report',
                           f'--workdir={run_copy}', '--split=train[:40]'], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stderr == ''  # no TensorFlow banner, orbax, TFDS or TensorBoard lines
  lines = result.stdout.splitlines()
  assert lines[0].startswith('step 6, ema weights: top1 ') and "of 'train[:40]'" in lines[0]
  assert all(line.startswith(f'wrote {run_copy}/report/step6_ema_train_to40/') for line in lines[1:])


def test_read_scalars_returns_the_logged_steps(trained_workdir):
  scalars = report.read_scalars(trained_workdir)
  assert [step for step, _ in scalars['train/loss']] == [2, 4, 6]  # log_every_steps 2
  assert [step for step, _ in scalars['eval_ema/top1']] == [3, 6]  # eval_every_steps 3
  assert all(np.isfinite(value) for _, value in scalars['train/learning_rate'])


@pytest.mark.parametrize('kwargs, named', [({'weights': 'bogus'}, 'bogus'),
                                           ({'step': 5}, '5')])
def test_bad_step_or_weights_is_a_config_error(trained_workdir, kwargs, named):
  with pytest.raises(ConfigError, match=named):
    report.write_report(trained_workdir, **kwargs)


def test_cli_on_an_empty_dir_fails_with_one_line(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'resnet_jax.tools.report',
                           f'--workdir={tmp_path}'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error:'), result.stderr
  assert str(tmp_path) in lines[0] and 'config.json' in lines[0]
  assert not os.listdir(tmp_path)  # nothing written


def test_read_scalars_after_a_resume_keeps_the_later_points(tmp_path):
  import time

  import tensorflow as tf
  for first, last, value in ((1, 5, 1.0), (4, 6, 2.0)):  # the second run resumed at step 3
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
      for step in range(first, last + 1):
        tf.summary.scalar('train/loss', value, step=step)
      tf.summary.text('config', 'not a scalar', step=0)
    writer.close()
    time.sleep(1.1)  # event file names carry the second they were made in
  scalars = report.read_scalars(tmp_path)
  assert scalars == {'train/loss': [(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 2.0),
                                    (6, 2.0)]}
