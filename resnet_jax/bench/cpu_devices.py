"""Training-step speed on a CPU-only host against the number of JAX devices it is split into.

  python -m resnet_jax.bench.cpu_devices --config=configs/fashion_mnist.py --batch_size=64 \\
      --counts=1,2,4 --rounds=2

The device count is fixed when a process starts JAX, so each count is its own child
process (`resnet_jax.bench.benchmark --mode=train --cpu_devices=N`); the counts alternate
over --rounds so a shared machine's drift falls on all of them, and each count's best
round is reported with its ratio to the first count. Why several devices help:
resnet_jax/cpu/devices.py.
"""

import json
import os
import subprocess
import sys
from typing import Sequence

from absl import flags

from resnet_jax import config_files
from resnet_jax.bench import command_flags

_FLAGS = flags.FlagValues()
flags.DEFINE_string('config', config_files.checkout_config('fashion_mnist'),
                    "A config file (its model, image size and recipe settings)",
                    flag_values=_FLAGS)
flags.DEFINE_integer('batch_size', 64, 'Global batch size', flag_values=_FLAGS)
flags.DEFINE_list('counts', ['1', '2'], 'CPU device counts to compare; the first is the '
                  'baseline of the ratios', flag_values=_FLAGS)
flags.DEFINE_integer('rounds', 2, 'Alternating rounds over the counts; best counts',
                     flag_values=_FLAGS)
flags.DEFINE_integer('timed_steps', 10, 'Timed steps per child (median reported)',
                     flag_values=_FLAGS)
flags.DEFINE_integer('num_classes', 10, 'Classifier width', flag_values=_FLAGS)


def _counts(items: Sequence[str], prog: str) -> list[int]:
  try:
    counts = [int(item) for item in items]
  except ValueError:
    command_flags.fail(prog, f'--counts {",".join(items)} must be integers >= 1, e.g. 1,2,4')
  if not counts or min(counts) < 1:
    command_flags.fail(prog, f'--counts {",".join(items)} must be integers >= 1, e.g. 1,2,4')
  return counts


def measure(config: str, count: int, *, batch_size: int, timed_steps: int,
            num_classes: int) -> dict:
  """One child process's step benchmark (benchmark.py's JSON) on `count` CPU devices."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'} | {'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.bench.benchmark', '--mode=train', '--format=json',
       f'--config={config}', f'--cpu_devices={count}', f'--batch_size={batch_size}',
       f'--timed_steps={timed_steps}', f'--num_classes={num_classes}'],
      env=env, capture_output=True, text=True, check=False)
  if result.returncode:
    sys.exit(f'cpu_devices: the benchmark on {count} device(s) failed: '
             f'{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""}')
  measured = json.loads(result.stdout.strip().splitlines()[-1])
  if (measured['backend'], measured['num_devices']) != ('cpu', count):
    sys.exit(f'cpu_devices: asked for {count} CPU device(s), the benchmark ran on '
             f'{measured["num_devices"]} {measured["backend"]} device(s)')
  return measured


def main(argv: Sequence[str]) -> int:
  prog = 'python -m resnet_jax.bench.cpu_devices'
  args = command_flags.parse(_FLAGS, argv, prog=prog, doc=__doc__)
  counts = _counts(args.counts, prog)
  if args.rounds < 1:
    command_flags.fail(prog, f'--rounds {args.rounds} must be >= 1')
  best: dict[int, float] = {}
  for round_index in range(args.rounds):
    for count in counts:
      result = measure(args.config, count, batch_size=args.batch_size,
                       timed_steps=args.timed_steps, num_classes=args.num_classes)
      rate = result['images_per_sec']
      best[count] = max(best.get(count, 0.0), rate)
      print(f'round {round_index + 1}: {count} CPU device(s): {rate:,.1f} img/s '
            f'(step {result["step_seconds"] * 1e3:.1f} ms, {result["model"]}, batch '
            f'{args.batch_size}, {result["image_size"]}²)', flush=True)
  baseline = best[counts[0]]
  for count in counts:
    print(f'best of {args.rounds}: {count} CPU device(s) {best[count]:,.1f} img/s = '
          f'{best[count] / baseline:.2f}× {counts[0]} device(s); {os.cpu_count()} cores')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
