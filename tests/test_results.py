"""The figures a run reports: TensorBoard scalars written without TensorFlow, final and
best accuracy over seeds (tools/results.py), a recipe fitted to a time budget
(tools/budgeted_run.py) and its launcher rehearsed with TensorFlow blocked."""

import logging
import os
import subprocess
import sys

import pytest
from etils import epath

from configs import fashion_mnist as fashion_mnist_config
from conftest import small_config
from resnet_jax import progress, summaries
from resnet_jax.storage import workdir as workdir_lib
from resnet_jax.tools import budgeted_run, results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, top1_by_step, rate=100.0):
  writer = summaries.SummaryWriter(str(workdir))
  for step, top1 in top1_by_step:
    writer.write_scalars(step, {'eval/top1': top1, 'train/images_per_sec': rate})
  writer.close()
  return str(workdir)


def test_scalars_are_tensorboard_scalars(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # noqa: PLC0415
  _run(tmp_path, [(10, 0.5), (20, 0.75)])
  accumulator = event_accumulator.EventAccumulator(str(tmp_path))
  accumulator.Reload()
  assert 'eval/top1' in accumulator.Tags()['scalars']
  assert [(e.step, e.value) for e in accumulator.Scalars('eval/top1')] == [(10, 0.5), (20, 0.75)]


def test_the_config_is_written_as_tensorboard_hparams(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # noqa: PLC0415
  from tensorboard.plugins.hparams import metadata  # noqa: PLC0415
  writer = summaries.SummaryWriter(str(tmp_path))
  writer.write_hparams(workdir_lib.flat_config(small_config(base_lr=0.3)))
  writer.close()
  accumulator = event_accumulator.EventAccumulator(str(tmp_path))
  accumulator.Reload()
  content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
  hparams = metadata.parse_session_start_info_plugin_data(content).hparams
  assert hparams['base_lr'].number_value == 0.3
  assert hparams['model'].string_value == 'resnet8'
  assert hparams['dataset.image_size'].number_value == 8
  assert hparams['dataset.mean'].string_value == '[77.85]'


def test_final_comes_first_and_best_beside_it(tmp_path):
  result = results.run_result(_run(tmp_path, [(1, 0.80), (2, 0.93), (3, 0.91)]))
  assert (result['final'], result['final_step']) == pytest.approx((0.91, 3))
  assert (result['best'], result['best_step']) == pytest.approx((0.93, 2))
  assert result['evaluations'] == 3


def test_a_resumed_runs_repeated_steps_count_once(tmp_path):
  _run(tmp_path, [(1, 0.5), (2, 0.6)])
  _run(tmp_path, [(2, 0.7), (3, 0.8)])  # the resume re-evaluates step 2
  result = results.run_result(str(tmp_path))
  assert result['evaluations'] == 3 and result['best_step'] == 3


def test_mean_and_sample_std_over_seeds(tmp_path):
  runs = [results.run_result(_run(tmp_path / str(i), [(1, top1)])) for i, top1 in
          enumerate((0.94, 0.95, 0.96))]
  summary = results.over_runs(runs)
  assert summary['final_mean'] == pytest.approx(0.95)
  assert summary['final_std'] == pytest.approx(0.01)  # sample std (n - 1)
  assert '3 runs: final 95.00 ± 1.00 %' in results.describe(runs)


def test_a_run_without_evaluations_is_one_line(tmp_path, capsys):
  _run(tmp_path, [])
  assert results.main([str(tmp_path)]) == 1
  assert 'no eval/top1' in capsys.readouterr().err


@pytest.mark.parametrize('seconds,text', [(5.4, '5s'), (754, '12m34s'), (3720, '1h02m')])
def test_durations_read_as_minutes_and_seconds(seconds, text):
  assert progress.duration(seconds) == text


def test_the_best_evaluation_is_kept_across_resumes(tmp_path):
  workdir = epath.Path(tmp_path)
  for step, top1 in ((3, 0.5), (6, 0.7), (9, 0.6)):
    workdir_lib.record_evaluation(workdir, step, {'eval/top1': top1, 'eval/loss': 1.0})
  assert workdir_lib.last_evaluation(workdir) == (9, {'eval/top1': 0.6, 'eval/loss': 1.0})
  assert workdir_lib.best_evaluation(workdir)[0] == 6
  # Resumed from step 3's checkpoint (a later one unreadable): step 6 is not this run's past.
  workdir_lib.record_evaluation(workdir, 4, {'eval/top1': 0.55, 'eval/loss': 1.0})
  assert workdir_lib.best_evaluation(workdir)[0] == 4


def test_the_closing_line_names_final_best_time_and_files():
  line = progress.closing_line(
      step=4680, last_step=4680, seconds=2345.0,
      final={'eval/top1': 0.93781, 'eval/loss': 0.25312},
      best=(4212, {'eval/top1': 0.9391, 'eval/loss': 0.2498}), workdir='/tmp/fmnist')
  assert line == ('Done: step 4680 of 4680 in 39m05s; final: eval/top1 93.78 %, eval/loss '
                  '0.2531; best at step 4212: eval/top1 93.91 %, eval/loss 0.2498. In '
                  '/tmp/fmnist: config.json, checkpoints/, TensorBoard events, '
                  'last_evaluation.json')
  assert '; best' not in progress.closing_line(step=9, last_step=9, seconds=1.0,
                                               final={'eval/top1': 0.5}, best=(9, {}),
                                               workdir='w')


def test_a_slow_machine_fits_fewer_epochs_with_the_schedule_scaled():
  config = fashion_mnist_config.get_config('zhong')
  figures = {'step_s': 0.01, 'eval_s': 1.0, 'steps_per_epoch': 468}  # 5.68 s an epoch
  assert budgeted_run.fit_epochs(config, figures, 10_000) == 300
  epochs = budgeted_run.fit_epochs(config, figures, 568.0)
  assert epochs == 100
  config = budgeted_run.scaled(config, epochs)
  assert config.num_epochs == 100 and config.lr_boundaries_epochs == pytest.approx((50, 75))
  assert budgeted_run.fit_epochs(config, figures, 1.0) == 1  # never none


@pytest.mark.slow
def test_gpu_results_rehearses_on_a_cpu_without_tensorflow(tmp_path):
  # The launcher as on a bare CUDA JAX image: TensorFlow and TFDS cannot be imported;
  # the real files (their checksums are written in the code), a few thousand images.
  from resnet_jax.data import fashion_mnist  # noqa: PLC0415
  assert fashion_mnist.find_folder(), ("the slow tier needs Debian's dataset-fashion-mnist "
                                       '(.ci/run installs it)')
  shadow = tmp_path / 'shadow'
  for name in ('tensorflow', 'tensorflow_datasets'):
    (shadow / name).mkdir(parents=True)
    (shadow / name / '__init__.py').write_text(f'raise ImportError("{name} is blocked")\n')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env |= {'PYTHONPATH': str(shadow), 'PYTHON': sys.executable, 'ALLOW_CPU': '1',
          'BUDGET': '60', 'WORKDIR': str(tmp_path / 'run'), 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run(
      ['launch/gpu_results.sh', 'zhong', "--config.dataset.train_split=train[:640]",
       "--config.dataset.eval_split=test[:256]", '--calibration_steps=3'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "WARNING:" in result.stdout and "of the recipe's 300 epochs fit" in result.stdout
  assert 'final top-1' in result.stdout and 'best' in result.stdout


def test_progress_lines_count_training_time_and_end_with_the_whole_runs_rate(monkeypatch,
                                                                             caplog):
  caplog.set_level(logging.INFO, logger='absl')
  monkeypatch.setattr(progress.sys.stderr, 'isatty', lambda: False, raising=False)  # no bar
  clock = [100.0]
  monkeypatch.setattr(progress.time, 'perf_counter', lambda: clock[0])
  report = progress.Progress(first_step=0, last_step=20, steps_per_epoch=10, batch_size=8,
                             every_secs=30.0)
  for step in range(1, 11):  # 10 steps of 4 s: 2 img/s
    clock[0] += 4.0
    report(step)
  with report.timed('eval'):
    clock[0] += 20.0  # not training time
  for step in range(11, 21):  # dispatched in no time, as the last steps are
    clock[0] += 0.001
    report(step)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('step ')]
  assert lines[0].startswith('step 8/20 (epoch 0.80): 2 img/s, 32s elapsed, 48s left')
  assert lines[-1].startswith('step 20/20 (epoch 2.00): 4 img/s, 1m00s elapsed')  # 160 / 40 s
  assert lines[-1].endswith('(eval 33% of the time)')


def test_a_terminal_gets_a_progress_bar(monkeypatch, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  monkeypatch.setattr(progress.sys.stderr, 'isatty', lambda: True, raising=False)
  report = progress.Progress(first_step=0, last_step=16, steps_per_epoch=4, batch_size=2,
                             every_secs=0.0)
  report(9)
  (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith('step ')]
  assert line.startswith('step 9/16 |█████████████▌          |  56% (epoch 2.25): ')
  assert progress._bar(1.0) == ' |████████████████████████| 100%'
