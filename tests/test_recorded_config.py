"""A run from its workdir alone: the recorded config.json stands for the config file
(`--config=WORKDIR/config.json`, or `--workdir=WORKDIR` without --config)."""

import datetime
import json
import os
import pathlib
import subprocess
import sys

import pytest
from etils import epath

from conftest import small_config
from resnet_jax import config_files, recorded_config, train
from resnet_jax.storage import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_recorded_config_is_the_config_in_force(tmp_path):
  config = small_config(**{'dataset.mean': (1.0,), 'lr_boundaries_steps': (2, 4)})
  workdir = epath.Path(tmp_path)
  workdir_lib.record_config(workdir, config, changes={}, step=0)
  workdir_lib.record_config(workdir, config, changes={'batch_size': (16, 32)}, step=3,
                            allowed=['batch_size'])
  loaded = recorded_config.get_config(str(tmp_path))
  assert loaded.batch_size == 32  # the history replayed
  assert loaded.dataset.mean == (1.0,) and loaded.lr_boundaries_steps == (2, 4)  # tuples
  assert recorded_config.get_config(str(tmp_path / 'config.json')).to_dict() == loaded.to_dict()
  config.batch_size = 32
  assert workdir_lib.config_changes(workdir, loaded) == {}
  assert json.loads(loaded.to_json()) == json.loads(config.to_json())
  # A key added to configs/default.py after the run began: its default, and no change.
  record = json.loads((tmp_path / 'config.json').read_text())
  del record['ema_decay'], record['study']
  (tmp_path / 'config.json').write_text(json.dumps(record))
  older = recorded_config.get_config(str(tmp_path))
  assert older.ema_decay == config.ema_decay and older.study.path_draws == config.study.path_draws
  assert workdir_lib.config_changes(workdir, older) == {
      'ema_decay': (None, config.ema_decay), **{
          k: (None, v) for k, v in workdir_lib.flat_config(config).items()
          if k.startswith('study.')}}


def test_argv_gets_the_record_where_the_config_file_would_be(tmp_path):
  shim = config_files.RECORDED_CONFIG
  (tmp_path / 'config.json').write_text('{}')
  assert config_files.with_recorded_config(
      ['main', f'--config={tmp_path}/config.json', '--config.seed=1']) == [
          'main', f'--config={shim}:{tmp_path}/config.json', '--config.seed=1']
  assert config_files.with_recorded_config(
      ['main', f'--workdir={tmp_path}', '--config.seed=1']) == [
          'main', f'--config={shim}:{tmp_path}', f'--workdir={tmp_path}', '--config.seed=1']
  given = ['main', '--config=configs/digits.py', f'--workdir={tmp_path}']
  assert config_files.with_recorded_config(given) == given
  with pytest.raises(SystemExit, match=r"--config is needed .*workdir '.*/new' holds no "
                                       'config.json of an earlier run'):
    config_files.with_recorded_config(['main', f'--workdir={tmp_path}/new'])


def _run(*argv):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  return subprocess.run([sys.executable, '-m', 'resnet_jax.main', *argv], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def _listing(directory):
  return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                for p in pathlib.Path(directory).rglob('*')
                if p.name != workdir_lib.LOCK_FILE)


@pytest.mark.slow
def test_the_workdir_alone_resumes_a_run_started_with_overrides(tmp_path, digits_dir):
  workdir = tmp_path / 'run'
  # Overrides galore (image size, batch, data_dir, cadences): none is given again below.
  config = small_config(**{'dataset.data_dir': digits_dir, 'num_train_steps': 3,
                           'schedule': 'constant'})
  train.train_and_evaluate(config, str(workdir))

  resumed = _run(f'--workdir={workdir}', '--config.num_train_steps=6')
  exited = datetime.datetime.now()
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Restored checkpoint of step 3' in resumed.stderr
  # The console: no backend, oneDNN or orbax chatter; one closing line, soon followed by
  # the exit (absl's prefix: I1206 14:24:16.811173 ...).
  for noise in ('oneDNN', "Unable to initialize backend 'tpu'", 'Metadata file does not exist',
                'orbax'):
    assert noise not in resumed.stderr
  last = resumed.stderr.strip().splitlines()[-1]
  assert 'Done: step 6 of 6 in ' in last and f'In {workdir}: config.json' in last
  said = datetime.datetime.strptime(f'{exited.year} {last[1:5]} {last.split()[1]}',
                                    '%Y %m%d %H:%M:%S.%f')
  assert (exited - said).total_seconds() < 5
  assert workdir_lib.last_evaluation(epath.Path(workdir))[0] == 6

  before = _listing(workdir)
  finished = _run(f'--workdir={workdir}')
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert 'finished at step 6 of 6' in finished.stderr
  assert _listing(workdir) == before  # nothing written (the lock file, held, is empty again)
  assert (workdir / workdir_lib.LOCK_FILE).read_text() == ''

  copied = _run(f'--config={workdir}/config.json', f'--workdir={tmp_path}/copy',
                '--config.num_train_steps=2', '--config.eval_every_steps=2')
  assert copied.returncode == 0, copied.stderr[-3000:]
  assert workdir_lib.config_changes(epath.Path(tmp_path / 'copy'),
                                    workdir_lib.read_config(workdir)) == {
      'eval_every_steps': (2, 3), 'num_train_steps': (2, 6)}
