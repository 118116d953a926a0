"""Kill training with SIGKILL at random moments, rerun it, and check it ends as if never killed.

  python -m resnet_jax.bench.chaos --trials=10

Each trial starts the same short run in a fresh workdir, kills it with `kill -9` (at a
random training step plus a random fraction of a step, or as soon as a checkpoint write
is in progress), and reruns the same command until it finishes. A trial passes when
  * the final parameters, statistics and optimizer state are bitwise equal to an
    uninterrupted run's,
  * every checkpoint left in the workdir restores,
  * each rerun resumes from the newest checkpoint that was complete when the kill came,
    so it redoes at most `checkpoint_every_steps` steps plus, with asynchronous writes,
    those trained while that checkpoint was still being written (reported as "redone");
    with --nocheckpoint_async a rerun that redoes more fails the trial.
Prints one line per kill and a summary; exits non-zero if any trial failed.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from resnet_jax import config_files
from resnet_jax.storage import checkpointing

FLAGS = flags.FLAGS
flags.DEFINE_integer('trials', 10, 'Independent kill-and-resume trials.')
flags.DEFINE_integer('kills_per_trial', 2, 'Most kills in one trial.')
flags.DEFINE_integer('seed', 0, 'Seed of the kill schedule.')
flags.DEFINE_integer('num_train_steps', 40, 'Steps of the run under test.')
flags.DEFINE_integer('checkpoint_every_steps', 5, 'Checkpoint cadence of that run.')
flags.DEFINE_string('workdir', None, 'Where trials run (default: a temporary directory).')
flags.DEFINE_bool('checkpoint_async', True, 'Async checkpoint writes (the default config); '
                  'with synchronous ones, no rerun may redo more than checkpoint_every_steps.')

_STEP_LINE = re.compile(r'\] \[(\d+)\] train/')
_RESTORED = re.compile(r'Restored checkpoint of step (\d+)')


def _command(workdir: str) -> list[str]:
  config = config_files.checkout_config('digits')
  return [sys.executable, '-m', 'resnet_jax.main', f'--config={config}',
          f'--workdir={workdir}', f'--config.num_train_steps={FLAGS.num_train_steps}',
          f'--config.checkpoint_every_steps={FLAGS.checkpoint_every_steps}',
          '--config.log_every_steps=1', f'--config.eval_every_steps={FLAGS.num_train_steps}',
          '--config.batch_size=32', '--config.max_checkpoints_to_keep=100',
          f'--config.checkpoint_async={FLAGS.checkpoint_async}']


def _run(workdir: str, kill_at_step: int | None, kill_in_save: bool,
         jitter: float = 0.0) -> tuple[int, str, str]:
  """Runs once; kills it per the schedule. Returns (last step logged, output, how)."""
  log_path = f'{workdir}.{time.time_ns()}.log'
  with open(log_path, 'w') as log:
    process = subprocess.Popen(_command(workdir), stdout=log, stderr=subprocess.STDOUT)
    how = 'finished'
    checkpoints = os.path.join(workdir, 'checkpoints')
    leftovers = _temporary(checkpoints)  # from an earlier kill; the run cleans them up
    while process.poll() is None:
      writing = bool(_temporary(checkpoints) - leftovers)
      reached = None
      if kill_at_step is not None:
        with open(log_path) as partial:
          logged = [int(s) for s in _STEP_LINE.findall(partial.read())]
        reached = max(logged) if logged else 0
      if (kill_in_save and writing) or (reached is not None and reached >= kill_at_step):
        time.sleep(jitter)
        process.send_signal(signal.SIGKILL)
        how = ('killed during a checkpoint write' if kill_in_save else
               f'killed {jitter * 1000:.0f} ms after step {reached}')
        break
      time.sleep(0.005)
    process.wait()
  with open(log_path) as log:
    output = log.read()
  os.remove(log_path)
  steps = [int(s) for s in _STEP_LINE.findall(output)]
  return (max(steps) if steps else 0), output, how


def _temporary(checkpoints: str) -> set[str]:
  return ({n for n in os.listdir(checkpoints) if 'tmp' in n} if os.path.isdir(checkpoints)
          else set())


def _committed(workdir: str) -> list[int]:
  checkpoints = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit()) if os.path.isdir(
      checkpoints) else []


def _trial(index: int, root: str, reference, rng: random.Random) -> tuple[list[str], int]:
  """One trial; returns its failures (empty when it passed) and the most steps redone."""
  workdir = os.path.join(root, f'trial_{index}')
  failures, kills, redone = [], rng.randint(1, FLAGS.kills_per_trial), 0
  expected_start, progress = None, 0
  for kill in range(kills + 1):
    last_run = kill == kills
    in_save = not last_run and rng.random() < 0.4
    kill_at = None if last_run or in_save else rng.randint(1, FLAGS.num_train_steps)
    last_step, output, how = _run(workdir, kill_at, in_save, jitter=rng.uniform(0, 0.1))
    restored = [int(s) for s in _RESTORED.findall(output)]
    print(f'trial {index} run {kill}: {how}; resumed from '
          f'{restored[0] if restored else "scratch"}; last step logged {last_step}')
    if expected_start is not None and (restored or last_step):
      start = restored[0] if restored else 0
      if start != expected_start:
        failures.append(f'trial {index}: run {kill} resumed from {start}, but checkpoint '
                        f'{expected_start} was complete')
      redone = max(redone, progress - start)
      if not FLAGS.checkpoint_async and progress - start > FLAGS.checkpoint_every_steps:
        failures.append(f'trial {index}: run {kill} redid {progress - start} steps')
    if not last_run:
      committed = _committed(workdir)
      expected_start = committed[-1] if committed else 0
      progress = max(progress, last_step)
  if 'Traceback' in output:
    return failures + [f'trial {index}: the final run crashed:\n{output[-2000:]}'], redone
  steps_left = _committed(workdir)
  state = None
  for step in steps_left:
    try:
      state = checkpointing.load_arrays(workdir, step)
    except Exception as error:  # noqa: BLE001
      failures.append(f'trial {index}: checkpoint {step} does not restore: {error}')
  if not steps_left or steps_left[-1] != FLAGS.num_train_steps or state is None:
    return failures + [f'trial {index}: did not end at step {FLAGS.num_train_steps}'], redone
  for key in ('params', 'batch_stats', 'opt_state'):
    if not all(jax.tree.leaves(jax.tree.map(np.array_equal, reference[key], state[key]))):
      failures.append(f'trial {index}: {key} differ from the uninterrupted run')
  shutil.rmtree(workdir)
  return failures, redone


def main(argv: list[str]) -> None:
  del argv
  root = FLAGS.workdir or tempfile.mkdtemp(prefix='chaos_')
  rng = random.Random(FLAGS.seed)
  print(f'uninterrupted reference run in {root}/reference ...')
  _run(os.path.join(root, 'reference'), None, False)
  reference = checkpointing.load_arrays(os.path.join(root, 'reference'),
                                        FLAGS.num_train_steps)
  failures, most_redone = [], 0
  for index in range(FLAGS.trials):
    trial_failures, redone = _trial(index, root, reference, rng)
    failures += trial_failures
    most_redone = max(most_redone, redone)
  failed = len({f.split(':')[0] for f in failures})
  print(f'most steps redone after a kill: {most_redone} (checkpoint_every_steps='
        f'{FLAGS.checkpoint_every_steps})')
  print(f'{FLAGS.trials - failed} passed, {failed} failed')
  for failure in failures:
    print(failure)
  sys.exit(1 if failures else 0)


if __name__ == '__main__':
  app.run(main)
