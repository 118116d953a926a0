"""The bad-input catalogue: each case is a one-line error, a non-zero exit, nothing written.

One case per line: the command-line arguments that break it, then the text the error must
contain. FOLDER is an empty directory, FILE a regular file, DEVICES the device count.
CLI_CASES run the command itself, one per way a mistake reaches it (a config value, the
dataset, the workdir, flag and override parsing, the config file, fine-tuning); the
VALUE_CASES, config values that train_and_evaluate checks, go through the same flag parser
in this process and must raise ConfigError, which main turns into its one-line `error:` as
the CLI cases show (a subprocess each would add minutes to the suite).
"""

import os
import subprocess
import sys

import jax
import pytest
from absl import flags
from ml_collections import config_flags

from conftest import small_config
from resnet_jax import config_checks, train
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLI_CASES = [
    ('--config.model=resnet19', "unknown model 'resnet19'; valid models: resnet18"),
    ('--config.dataset.name=image_folder --config.dataset.data_dir=FOLDER',
     "split folder 'FOLDER/train' does not exist (dataset.train_split='train'); found: "
     "[]: set --config.dataset.train_split to one of them"),
    ('--workdir=FILE/run', "workdir 'FILE/run' cannot be created or written"),
    ('--config.modle=resnet20', 'unknown or invalid key: \'modle\' Did you mean "model"'),
    ('--config.batch_size=abc', "--config.batch_size=abc: invalid literal for int()"),
    ('--config.lr_boundaries_steps=(1,2', 'Error while parsing string: (1,2 as tuple'),
    ('--config=configs/no_such_config.py', 'cannot load --config: '),
    ('--config=configs/imagenet50.py:fast',
     "ValueError: unknown recipe 'fast'; valid recipes: nvidia, nvidia250, step, flax"),
    ('--distributed=maybe', "value should be one of <auto|yes|no>"),
    ('--heartbeat_timeout=0', '--heartbeat_timeout 0 must be a positive number of seconds'),
    ('--allow_changes=bse_lr', "unknown key 'bse_lr' in --allow_changes; did you mean base_lr"),
    ('--config.init_checkpoint=FOLDER/none', "init_checkpoint 'FOLDER/none' is not a directory"),
    ('--config.cpu_devices=-2', 'cpu_devices -2 must be an integer >= 0 (0: JAX'),
]

VALUE_CASES = [
    ('--config.dataset.name=no_such_set', "unknown dataset 'no_such_set'; valid datasets"),
    ('--config.optimizer=adagrad', "unknown optimizer 'adagrad'; valid optimizers: sgd"),
    ('--config.schedule=linear', "unknown schedule 'linear'; valid schedules: cosine"),
    ('--config.dtype=float8', "unknown dtype 'float8'; valid dtypes: float32"),
    ('--config.dataset.augment=heavy', "unknown dataset.augment 'heavy'; valid: none"),
    ('--config.dataset.order=random', "unknown dataset.order 'random'; valid: global"),
    ('--config.nonfinite_policy=ignore', "unknown nonfinite_policy 'ignore'; valid: auto"),
    ('--config.conv_impl=cudnn', "unknown conv_impl 'cudnn'"),
    ('--config.cpu_devices=-1', 'cpu_devices -1 must be an integer >= 0 (0: JAX'),
    ('--config.loss_scale=static', "unknown loss_scale 'static'; valid: auto, dynamic, none"),
    ('--config.batch_size=0', "batch_size=0: left to the images, which only an image folder "
     "(dataset.name=image_folder) has measured; dataset 'sklearn_digits' needs a value"),
    ('--config.batch_size=-8', 'batch_size -8 is not a positive multiple of the DEVICES devices'),
    ('--config.batch_size=7', 'batch_size 7 is not a positive multiple of the DEVICES devices'),
    ('--config.batch_size=4096', 'batch_size 4096 exceeds the 1437 examples'),
    ('--config.bn_group_size=3', 'bn_group_size 3 does not tile the devices: the per-device'),
    # Divides the batch, but 32-image groups straddle the 12-image shares of 8 devices.
    ('--config.batch_size=96 --config.bn_group_size=32',
     'bn_group_size 32 does not tile the devices: the per-device batch is 12 (batch_size 96 '
     'over 8 devices); valid sizes: 0, 1, 2, 3, 4, 6, 12, 24, 48, 96 (0: whole batch)'),
    ('--config.grad_accum_steps=3', 'grad_accum_steps 3 must be >= 1 and split batch_size 128'),
    ('--config.grad_accum_steps=4 --config.bn_group_size=12',
     'bn_group_size 12 does not tile the devices: the per-device batch is 4 (micro-batch 32 = '
     'batch_size 128 / grad_accum_steps 4 over 8 devices)'),
    ('--config.grad_accum_steps=2 --config.diagnostics_every_steps=5',
     'diagnostics_every_steps 5 needs grad_accum_steps 1 (is 2)'),
    ('--config.remat_policy=dots', "unknown remat_policy 'dots'; valid: full, conv_outputs"),
    ('--config.profile_steps=15-10', "profile_steps '15-10' must be '' (off) or 'FIRST-LAST'"),
    ('--config.num_train_steps=-1 --config.num_epochs=0', 'one of them must be positive'),
    ('--config.dataset.image_size=4', 'dataset.image_size 4 is too small for resnet20'),
    ('--config.model=resnet18 --config.dataset.image_size=16', 'too small for resnet18'),
    ('--config.dataset.name=image_folder --config.dataset.data_dir=',
     "dataset.data_dir is empty: give --config.dataset.data_dir=DATA_DIR"),
    ('--config.dataset.data_dir=FOLDER/missing', "dataset.data_dir 'FOLDER/missing' does not"),
    ('--config.init_weights=best', "unknown init_weights 'best'; valid: auto, ema, live"),
    ('--config.backbone_lr_multiplier=-1', 'backbone_lr_multiplier -1.0 must be >= 0'),
    ('--config.init_checkpoint=FOLDER', "'FOLDER' holds no model_info.json"),
    ('--config.mixup_alpha=-0.2', 'mixup_alpha -0.2 must be >= 0 (0: off)'),
    ('--config.dataset.randaugment_magnitude=11', 'randaugment_magnitude 11.0 must be in'),
    ('--config.optimizer=lion',
     "unknown optimizer 'lion'; valid optimizers: sgd, adamw, lamb, lars"),
    ('--config.dataset.eval_split=validation',
     "dataset.eval_split 'validation' is not a split of sklearn_digits: Unknown split"),
    ('--config.dataset.eval_split=test[:0]', "dataset.eval_split 'test[:0]' holds no examples"),
    ('--config.dataset.train_split=train[5:5]', "dataset.train_split 'train[5:5]' holds no"),
    ('--config.mix_group_size=5', 'mix_group_size 5 does not tile the devices'),
    ('--config.base_lr=0', 'base_lr 0.0 must be > 0'),
    ('--config.base_lr=-0.1', 'base_lr -0.1 must be > 0'),
    ('--config.weight_decay=-1e-4', 'weight_decay -0.0001 must be >= 0'),
    # The digits are grey: 1 value, or 1 per channel; the run stops before writing.
    ('--config.dataset.mean=(120.0,115.0,100.0)',
     "dataset.mean (120.0, 115.0, 100.0) has 3 values, but the images of 'sklearn_digits' "
     'have 1 channel(s)'),
    ('--config.dataset.std=(0.0,)', 'dataset.std (0.0,) must be > 0 in every channel'),
    ('--config.model=auto', "model='auto': left to the images, which only an image folder "),
]


def _substitute(text, tmp_path):
  folder = tmp_path / 'folder'
  folder.mkdir(exist_ok=True)
  file = tmp_path / 'file'
  file.write_text('not a directory')
  return (text.replace('FOLDER', str(folder)).replace('FILE', str(file))
          .replace('DEVICES', str(jax.device_count())))


@pytest.fixture(scope='module')
def digits_data(digits_dir):
  return digits_dir


# A subprocess each. The fast tier runs the flag-parsing cases (no TensorFlow import before
# they fail) and one config value through the trainer; the rest are the slow tier.
_FAST_CLI = ('--config.model=resnet19', '--config.modle=resnet20', '--config.batch_size=abc',
             '--config=configs/no_such_config.py', '--distributed=maybe', '--heartbeat_timeout=0',
             '--config.cpu_devices=-2')


@pytest.mark.parametrize('arguments,message', [
    pytest.param(*case, id=case[0], marks=[] if case[0] in _FAST_CLI else [pytest.mark.slow])
    for case in CLI_CASES])
def test_bad_input_on_the_command_line(tmp_path, digits_data, arguments, message):
  workdir = tmp_path / 'workdir'
  arguments, message = _substitute(arguments, tmp_path), _substitute(message, tmp_path)
  message = message.replace('DEVICES', '2')
  argv = ['--config=configs/digits.py', f'--workdir={workdir}',
          f'--config.dataset.data_dir={digits_data}', *arguments.split()]
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-m', 'resnet_jax.main', *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  last_line = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0
  assert message in last_line, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert not workdir.exists()
  assert sorted(os.listdir(tmp_path / 'folder')) == []


@pytest.mark.parametrize('arguments,message', VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_config_values(tmp_path, digits_data, arguments, message):
  workdir = tmp_path / 'workdir'
  arguments, message = _substitute(arguments, tmp_path), _substitute(message, tmp_path)
  argv = ['main', f'--config={REPO}/configs/digits.py',
          f'--config.dataset.data_dir={digits_data}', *arguments.split()]
  flag_values = flags.FlagValues()  # main's --config flag, in a registry of its own
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(flag_values.config, str(workdir))
  assert message in str(error.value)
  assert '\n' not in str(error.value)
  assert not workdir.exists()
  assert sorted(os.listdir(tmp_path / 'folder')) == []


def test_a_tilde_workdir_is_the_home_folder_not_a_folder_named_tilde(tmp_path, digits_data,
                                                                     monkeypatch):
  home = tmp_path / 'home'
  home.write_text('a file where the home folder should be: the run must stop')
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.chdir(tmp_path)
  config = small_config(**{'dataset.data_dir': digits_data})
  with pytest.raises(ConfigError, match=f"workdir '{home}/run' cannot be created"):
    train.train_and_evaluate(config, '~/run')
  assert sorted(os.listdir(tmp_path)) == ['home']  # no './~'


def test_a_tilde_in_a_config_path_is_expanded(monkeypatch):
  monkeypatch.setenv('HOME', '/home/someone')
  config = small_config(**{'dataset.data_dir': '~/digits', 'init_checkpoint': '~/runs/a'})
  expanded = config_checks.with_user_paths_expanded(config)
  assert expanded.dataset.data_dir == '/home/someone/digits'
  assert expanded.init_checkpoint == '/home/someone/runs/a'
  assert config.dataset.data_dir == '~/digits'  # the caller's config is left as it was
  untouched = small_config(**{'dataset.data_dir': '/data', 'init_checkpoint': None,
                              'dataset.manual_dir': 'gs://bucket/imagenet'})
  assert config_checks.with_user_paths_expanded(untouched) is untouched
  relative = small_config(**{'dataset.data_dir': 'data/digits', 'init_checkpoint': ''})
  assert config_checks.with_user_paths_expanded(relative).dataset.data_dir == os.path.join(
      os.getcwd(), 'data', 'digits')
