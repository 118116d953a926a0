"""What gradient accumulation costs: one update of a batch as one pass or as k micro-batches.

  python -m resnet_jax.bench.accumulation_cost [--model=resnet20] [--image_size=32]
      [--batch_size=128] [--accumulate=4] [--loop=auto|scan|unrolled] [--rounds=5]

Compiles steps.train_step for both on one device and prints XLA's temporaries of each,
their step times (alternating rounds of 3 steps, medians) and the same-run ratio. `--loop`
picks the micro-batch loop: `auto` is what the trainer runs (unrolled on the CPU backend,
a scan elsewhere).
"""

import functools
import statistics
import sys

import jax
import numpy as np
import optax
from absl import flags

from resnet_jax import models, sharding, steps, train_state
from resnet_jax.bench import command_flags, timing
from resnet_jax.step_options import ForwardOptions, StepOptions


PROG = 'python -m resnet_jax.bench.accumulation_cost'
_FLAGS = flags.FlagValues()  # its own: see command_flags.py
flags.DEFINE_string('model', 'resnet20', 'A registered model name.', flag_values=_FLAGS)
flags.DEFINE_integer('image_size', 32, 'Image side.', flag_values=_FLAGS)
flags.DEFINE_integer('batch_size', 128, 'The batch of one update.', flag_values=_FLAGS)
flags.DEFINE_integer('accumulate', 4, 'Micro-batches of the accumulated step.',
                     flag_values=_FLAGS)
flags.DEFINE_enum('loop', 'auto', ['auto', 'scan', 'unrolled'],
                  "The micro-batch loop; auto: the trainer's.", flag_values=_FLAGS)
flags.DEFINE_integer('rounds', 5, 'Alternating timing rounds.', flag_values=_FLAGS)


def main(argv: list[str]) -> None:
  args = command_flags.parse(_FLAGS, argv, prog=PROG, doc=__doc__)
  if args.accumulate < 1 or args.batch_size % args.accumulate:
    command_flags.fail(PROG, f'--accumulate {args.accumulate} must be a divisor of '
                             f'--batch_size {args.batch_size}')
  trainer_unroll = steps._micro_batch_unroll  # pylint: disable=protected-access
  if args.loop != 'auto':
    steps._micro_batch_unroll = (lambda k: 1) if args.loop == 'scan' else (lambda k: k)
  try:
    _measure(args)
  finally:
    steps._micro_batch_unroll = trainer_unroll  # the trainer's choice, for callers in-process


def _measure(args: flags.FlagValues) -> None:
  """Compiles and times both steps, then prints the figures."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  rng = np.random.default_rng(0)
  size, batch_size = args.image_size, args.batch_size
  batch = jax.device_put({
      'image': rng.integers(0, 256, (batch_size, size, size, 3), np.uint8),
      'label': rng.integers(0, 10, (batch_size,), np.int32)})
  states, step_fns, temporaries = {}, {}, {}
  for k in (1, args.accumulate):
    model = models.create_model(args.model, num_classes=10)
    states[k] = train_state.create_train_state(jax.random.key(0), model, optax.sgd(0.1, 0.9),
                                               (size, size, 3), use_ema=False, mesh=mesh)
    options = StepOptions(forward=ForwardOptions(grad_accum_steps=k))
    step_fns[k] = jax.jit(functools.partial(steps.train_step, options=options,
                                            learning_rate_fn=optax.constant_schedule(0.1)),
                          donate_argnums=0)
    compiled = step_fns[k].lower(states[k], batch).compile()
    temporaries[k] = compiled.memory_analysis().temp_size_in_bytes
    states[k], _ = step_fns[k](states[k], batch)  # the first call, outside the timing
  jax.block_until_ready(states)

  def candidate(k):
    def call():
      states[k], _ = step_fns[k](states[k], batch)
      return states[k]
    return call

  times = timing.seconds_per_call({k: candidate(k) for k in sorted(states)}, calls=3,
                                  rounds=args.rounds, settle=False)
  k = args.accumulate
  ratios = [a / b for a, b in zip(times[k], times[1])]
  print(f'{args.model} at {size}², batch {batch_size}, {jax.devices()[0].device_kind} '
        f'({jax.default_backend()}), loop {args.loop}')
  for key, label in ((1, 'whole batch'), (k, f'{k} micro-batches')):
    print(f'  {label:>16}: {statistics.median(times[key]) * 1e3:8.1f} ms a step, XLA '
          f'temporaries {temporaries[key] / 2**20:7.1f} MiB')
  print(f'  time ratio {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-'
        f'{max(ratios):.2f}), temporaries ratio {temporaries[k] / temporaries[1]:.2f}')


if __name__ == '__main__':
  main(sys.argv[1:])
