"""The GPU benchmark (bench.gpu_benchmark, its rows and report) and its bare config loader
(bench.bare_config):
on a tiny model where TensorFlow, TFDS, clu, ml_collections and jmp cannot be imported
(as on a bare CUDA JAX image); its analytic FLOP count, MFU, XLA-count rule and goals
on a GPU's figures."""

import json
import os
import subprocess
import sys

import pytest

from resnet_jax.tools import summary

from resnet_jax.bench import bare_config, flop_count, gpu_benchmark, gpu_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ('tensorflow', 'tensorflow_datasets', 'clu', 'ml_collections', 'jmp')


@pytest.fixture(scope='module')
def bare_env(tmp_path_factory):
  """An environment whose PYTHONPATH shadows each blocked package with one that raises."""
  shadow = tmp_path_factory.mktemp('bare_image')
  for name in BLOCKED:
    (shadow / name).mkdir()
    (shadow / name / '__init__.py').write_text(
        f'raise ImportError("{name} is not on a bare CUDA JAX image")\n')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'PYTHONPATH')}
  return env | {'PYTHONPATH': f'{shadow}{os.pathsep}{REPO}', 'JAX_PLATFORMS': 'cpu',
                'TF_CPP_MIN_LOG_LEVEL': '2'}


def test_the_blocked_packages_really_fail_to_import(bare_env):
  for name in BLOCKED:
    result = subprocess.run([sys.executable, '-c', f'import {name}'], env=bare_env,
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and 'not on a bare CUDA JAX image' in result.stderr


def test_configs_load_without_ml_collections(bare_env):
  script = '''
import json
from resnet_jax.bench import bare_config
nvidia = bare_config.load('configs/imagenet50.py', {'dataset.image_size': 160})
flax = bare_config.load('configs/imagenet50.py:flax')
folder = bare_config.load('configs/finetune_folder.py')
model, tx, lr, kwargs = bare_config.recipe_step(nvidia, 1000)
import ml_collections
print(json.dumps({'stand_in': 'stand-in' in ml_collections.__doc__,
                  'nvidia': [nvidia.model, nvidia.dtype, nvidia.bn_group_size,
                             nvidia.dataset.image_size, nvidia.weight_decay_skip],
                  'flax': [flax.batch_size, flax.nesterov], 'init': folder.init_checkpoint,
                  'smoothing': kwargs['options'].inputs.label_smoothing,
                  'group': model.bn_group_size,
                  'lr0': float(lr(0))}))
'''
  result = subprocess.run([sys.executable, '-c', script], env=bare_env, capture_output=True,
                          text=True, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  got = json.loads(result.stdout.strip().splitlines()[-1])
  assert got['stand_in']
  assert got['nvidia'] == ['resnet50', 'bfloat16', 256, 160, 'norm_except_shortcut']
  assert got['flax'] == [1024, True] and got['init'] is None
  assert got['smoothing'] == 0.1 and got['group'] == 256
  assert got['lr0'] == pytest.approx(0.256 * 2048 / 256 / 8)


@pytest.mark.parametrize('spec', ['configs/imagenet50.py', 'configs/imagenet50.py:nvidia250',
                                  'configs/imagenet50_rsb.py', 'configs/cifar10_resnet20.py',
                                  'configs/imagenet50_torchvision_v2.py'])
def test_the_step_arguments_are_the_trainers(spec):
  """bare_config (no data pipeline, no ml_collections) binds what train.bound_train_step
  binds, on a config file loaded either way."""
  from resnet_jax import train
  config = bare_config.load(os.path.join(REPO, spec))
  _, _, schedule, kwargs = bare_config.recipe_step(config, 1000, train_images=25_600)
  want = train.bound_train_step(config, schedule, steps_per_epoch=25_600 // config.batch_size)
  assert kwargs['options'] == want.keywords['options']
  assert kwargs['learning_rate_fn'] is want.keywords['learning_rate_fn']


def test_the_analytic_training_flops_of_resnet50():
  macs = summary.summarize('resnet50', image_size=224)['macs']
  assert macs == pytest.approx(4.09e9, rel=2e-3)  # torchvision's 4.09 GFLOPS (MACs)
  assert flop_count.training_flops(macs, 256) == 3 * 2 * macs * 256
  assert flop_count.training_flops(macs, 256) == pytest.approx(6.28e12, rel=2e-3)


def test_xla_count_is_shown_only_where_it_counts_convolutions():
  analytic = 6.28e12
  assert not flop_count.xla_count_shown(1.05e11, analytic)  # GPU: custom calls uncounted
  assert flop_count.xla_count_shown(0.972 * analytic, analytic)  # CPU: dots counted
  assert not flop_count.xla_count_shown(None, analytic)
  assert not flop_count.xla_count_shown(0.49 * analytic, analytic)


def _gpu_report(device='NVIDIA H200', images=8_000.0, compiled=7_000.0, fresh=25.0,
                cached=4.0):
  """The children's figures on a GPU (invented), through derive."""
  macs = 4_089_184_040
  plain = {'variant': 'plain', 'batch_size': 256, 'num_devices': 1, 'image_size': 224,
           'pipelined_step_seconds': 256 / images, 'pipelined_images_per_sec': images,
           'compile_seconds': 30.0, 'device_peak_bytes': 40 * 2**30, 'xla_flops_per_step': 1.05e11,
           'macs_per_image': macs, 'seconds_to_first_step': fresh,
           'compilation_cache_files': 3, 'model': 'resnet50', 'dtype': 'bfloat16',
           'bn_group_size': 256, 'loss': 'softmax', 'label_smoothing': 0.1, 'optimizer': 'sgd',
           'momentum': 0.875, 'weight_decay': 1 / 32768,
           'weight_decay_skip': 'norm_except_shortcut'}
  torch_compile = {'variant': 'torch_compile', 'batch_size': 256,
                   'torch_pipelined_step_seconds': 256 / compiled,
                   'torch_pipelined_images_per_sec': compiled, 'torch_compile_seconds': 80.0,
                   'torch_compile_backend': 'inductor'}
  report = {'matmul': {'device': device, 'num_devices': 1, 'backend': 'gpu',
                       'matmul_flops_per_sec': 700e12, 'size': 8192, 'jax_version': '0.10'},
            'cached_run': {'seconds_to_first_step': cached}}
  return gpu_report.derive(report, [plain, torch_compile,
                                       {'variant': 'torch_eager', 'error': 'exit 1: boom'}])


def test_mfu_comes_from_the_analytic_count_on_a_gpu(capsys):
  report = _gpu_report()
  plain = report['rows'][0]
  assert plain['analytic_flops_per_step'] == 3 * 2 * 4_089_184_040 * 256
  assert plain['mfu_spec'] == pytest.approx(
      plain['analytic_flops_per_step'] * 8_000 / 256 / 989e12)  # ~20 %, not 0.3 %
  assert 0.15 < plain['mfu_spec'] < 0.25 and not plain['xla_count_shown']
  assert report['ratio_vs_torch_compile'] == pytest.approx(8 / 7)
  assert 'ratio_vs_torch_eager' not in report
  report |= {'versions': {'torch': '2.x'}, 'config': 'configs/imagenet50.py', 'seconds': 1.0,
             'date': '2026-12-05'}
  gpu_report.print_report(report)
  out = capsys.readouterr().out
  assert 'not counted (custom calls)' in out
  assert '= 3 × 2 × 4.089 G × 256 = 6.281e+12' in out
  assert 'failed: exit 1: boom' in out.split('torchvision eager')[1].splitlines()[0]


def test_goals_met_not_met_and_unmeasured():
  status = [goal['status'] for goal in _gpu_report()['goals']]
  assert status == ['met', 'not met', 'not met', 'met']
  status = [goal['status'] for goal in _gpu_report(images=7_000.0, compiled=6_000.0,
                                                   fresh=15.0, cached=6.0)['goals']]
  assert status == ['not met', 'met', 'met', 'not met']
  goals = _gpu_report(device='NVIDIA H100 80GB HBM3')['goals']
  assert goals[0]['status'] == 'unmeasured' and 'not an H200' in goals[0]['why']
  assert [goal['status'] for goal in goals[1:]] == ['not met', 'not met', 'met']


def _fake_child(spec, timeout, env=None):
  """A child's figures on one H200 (invented); scan_blocks cut by the time budget."""
  if spec['kind'] == 'matmul':
    return {'device': 'NVIDIA H200', 'num_devices': 1, 'backend': 'gpu', 'size': 8192,
            'matmul_flops_per_sec': 700e12, 'jax_version': '0.10'}
  if spec['kind'] == 'torch':
    images = 7_500.0 if spec['torch_compile'] else 6_000.0
    return {'torch_pipelined_step_seconds': spec['batch_size'] / images,
            'torch_pipelined_images_per_sec': images, 'batch_size': spec['batch_size'],
            'torch_compile_seconds': 90.0 if spec['torch_compile'] else None,
            'torch_compile_backend': spec['compile_backend'] if spec['torch_compile'] else None,
            'torch_device_peak_bytes': 30 * 2**30}
  if spec['variant'] == 'scan_blocks':
    return {'error': 'timed out after 3 s (the time budget)', 'budget_cut': True}
  cached = spec['timed_steps'] == 1
  assert (env == {'JAX_ENABLE_COMPILATION_CACHE': 'true',
                  'JAX_COMPILATION_CACHE_DIR': spec.get('cache_dir')}) == (
      spec.get('cache_dir') is not None)
  return {'batch_size': spec['per_device_batch'], 'num_devices': 1, 'image_size': 224,
          'pipelined_step_seconds': 0.032, 'pipelined_images_per_sec': 8_000.0,
          'compile_seconds': 3.0 if cached else 30.0, 'device_peak_bytes': 40 * 2**30,
          'xla_flops_per_step': 1.05e11, 'macs_per_image': 4_089_184_040,
          'seconds_to_first_step': 4.0 if cached else 19.0, 'compilation_cache_files': 3,
          'model': 'resnet50', 'dtype': 'bfloat16', 'bn_group_size': 256, 'loss': 'softmax',
          'label_smoothing': 0.1, 'optimizer': 'sgd', 'momentum': 0.875, 'nesterov': False,
          'weight_decay': 1 / 32768, 'weight_decay_skip': 'norm_except_shortcut'}


def test_a_row_cut_by_the_time_budget_is_listed_not_failed(monkeypatch, capsys, tmp_path):
  monkeypatch.setattr(gpu_benchmark, '_run_child', _fake_child)
  path = tmp_path / 'report.json'
  assert gpu_benchmark.main(['--variants=plain,scan_blocks', '--cifar_config=none',
                             f'--json={path}']) == 0
  out = capsys.readouterr().out
  assert 'not measured within the time budget: scan_blocks' in out
  assert 'ours / torch.compile 1.07x, ours / eager 1.33x' in out
  assert 'fresh 19.0 s, cached 4.0 s' in out
  report = json.loads(path.read_text())
  assert [goal['status'] for goal in report['goals']] == ['met', 'not met', 'met', 'met']
  torch_rows = [row for row in report['rows'] if row['variant'].startswith('torch')]
  assert [row['mfu_spec'] for row in torch_rows] == pytest.approx(
      [6.281e12 / 256 * images / 989e12 for images in (6_000, 7_500)], rel=1e-3)
  # Rows the budget may not cut fail the run.
  assert gpu_benchmark.main(['--variants=plain,remat', '--cifar_config=none',
                             '--torch=eager', '--time_budget=0']) == 1
  out = capsys.readouterr().out
  assert 'not measured within the time budget: remat' in out
  assert 'gpu_benchmark: failed: plain, torch_eager, matmul, cached start' in out


@pytest.mark.slow
def test_the_benchmark_runs_without_them(bare_env, tmp_path):
  report_path = tmp_path / 'report.json'
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.bench.gpu_benchmark', '--model=resnet18',
       '--image_size=32', '--batch_size=4', '--cifar_batch_size=8', '--cifar_image_size=8',
       '--timed_steps=2', '--warmup_steps=1', '--matmul_size=256',
       '--torch_compile_backend=aot_eager', f'--json={report_path}'],
      env=bare_env, capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  report = json.loads(report_path.read_text())
  rows = {row['variant']: row for row in report['rows']}
  assert set(rows) == {'plain', 'remat', 'remat_conv_outputs', 'scan_blocks', 'torch_eager',
                       'torch_compile', 'cifar'}
  for name in ('plain', 'remat', 'remat_conv_outputs', 'scan_blocks', 'cifar'):
    assert 'error' not in rows[name], rows[name]
    assert rows[name]['pipelined_images_per_sec'] > 0 and rows[name]['compile_seconds'] > 0
  plain = rows['plain']
  # The recipe's step: configs/imagenet50.py (nvidia), BN groups capped at the 4 images.
  assert (plain['dtype'], plain['label_smoothing'], plain['bn_group_size']) == ('bfloat16', 0.1, 4)
  assert rows['remat_conv_outputs']['remat_policy'] == 'conv_outputs'
  macs = summary.summarize('resnet18', image_size=32)['macs']
  assert plain['macs_per_image'] == macs
  assert plain['analytic_flops_per_step'] == report['flops']['training_flops_per_step'] == (
      3 * 2 * macs * 4)
  assert plain['mfu_matmul'] > 0 and report['spec_peak_flops_per_sec'] is None
  assert plain['xla_count_shown']  # XLA:CPU counts the dot-form convolutions
  for mode in ('eager', 'compile'):
    assert rows[f'torch_{mode}']['torch_pipelined_images_per_sec'] > 0
    assert report[f'ratio_vs_torch_{mode}'] > 0
  assert rows['torch_compile']['torch_compile_seconds'] > 0
  first = report['seconds_to_first_step']
  assert first['fresh'] > 0 and first['cached'] > 0 and first['cache_files_after_fresh_run'] > 0
  assert [goal['status'] for goal in report['goals']] == ['unmeasured'] * 4
  assert report['versions']['jax'] and report['date'] and report['machine']['cpus']
  for text in ('recipe plain', 'recipe remat_conv_outputs', 'recipe scan_blocks',
               'torchvision eager', 'torchvision torch.compile (aot_eager)',
               'CIFAR resnet20 float32 b8 8²', 'training FLOPs per step = 3 × 2 × MACs',
               'ours / torch.compile', 'ours / eager', 'fresh', 'cached',
               'unmeasured (cpu backend'):
    assert text in result.stdout, result.stdout


def test_spec_peaks_by_device_kind():
  assert gpu_report.spec_peak('NVIDIA H100 80GB HBM3') == 989e12
  assert gpu_report.spec_peak('NVIDIA H100 PCIe') == 756e12
  assert gpu_report.spec_peak('NVIDIA H200') == 989e12
  assert gpu_report.spec_peak('TPU v5 lite') == 197e12
  assert gpu_report.spec_peak('cpu') is None


def test_an_unknown_variant_is_a_one_line_error():
  result = subprocess.run([sys.executable, '-m', 'resnet_jax.bench.gpu_benchmark',
                           '--variants=plain,fast'], capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 2
  assert ('unknown --variants fast; valid: plain,remat,remat_conv_outputs,scan_blocks'
          in result.stderr)
