"""One BatchNorm layer, ours against flax's: forward + backward time per layer shape.

  python -m resnet_jax.bench.norm_benchmark [--shapes 256x56x56x256,256x28x28x512,...]
      [--batch N] [--group_size N] [--dtype bfloat16|float32] [--repeats N] [--calls N]
      [--variants flax,ours,...] [--json PATH]

For each NHWC shape, times one jitted training step of the layer: the forward output of
ReLU(BN(x)), its running statistics, and the backward pass against a random cotangent dy
(the gradient of sum(dy · ReLU(BN(x))) with respect to x, scale and bias), for

  flax           flax.linen.BatchNorm (the reference: ratio 1.00)
  ours           GroupBatchNorm, one group of the whole batch
  ours_group     GroupBatchNorm, groups of --group_size (default batch / 4)
  two_pass       GroupBatchNorm as it was: two-pass statistics, (x - mean)·mul; whole batch
  two_pass_group the same, groups of --group_size

The variants take turns within each repeat, in a rotating order, so load on a shared
machine falls on all of them alike. Prints the device, backend, date and command, then
per shape and variant: the median µs of a call over --repeats (each times --calls calls
issued back to back, the host running ahead as in training); the ratio to flax, the
median over repeats of its time over flax's in the same repeat; and what explains a
ratio, the compiled step's kernels (its entry computation's fusions and other
non-trivial instructions) and the bytes XLA's cost model says it moves (the layer is
memory-bound: time follows bytes). Needs only JAX and flax.
"""

import datetime
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import flags

from resnet_jax.bench import command_flags
from resnet_jax.models.norm import GroupBatchNorm

DEFAULT_SHAPES = '256x56x56x256,256x28x28x512,256x56x56x64'
VARIANTS = ('flax', 'ours', 'ours_group', 'two_pass', 'two_pass_group')


def _two_pass(variables, x, group_size, dtype, momentum=0.9, epsilon=1e-5):
  """GroupBatchNorm's training path before one-pass statistics and x·mul + shift."""
  params, stats = variables['params'], variables['batch_stats']
  features, batch = x.shape[-1], x.shape[0]
  groups = x.astype(jnp.float32).reshape((batch // group_size, group_size, *x.shape[1:]))
  axes = tuple(range(1, groups.ndim - 1))
  mean = jnp.mean(groups, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(groups - mean), axis=axes, keepdims=True)
  y = (groups - mean) * (params['scale'] * jax.lax.rsqrt(var + epsilon)) + params['bias']
  new_stats = {
      'mean': momentum * stats['mean'] + (1 - momentum) * mean.reshape(-1, features).mean(0),
      'var': momentum * stats['var'] + (1 - momentum) * var.reshape(-1, features).mean(0)}
  return y.reshape(x.shape).astype(dtype), {'batch_stats': new_stats}


def _layer(variant: str, batch: int, group_size: int, dtype) -> Callable:
  """apply(variables, x) -> (y, {'batch_stats': ...}) for one variant, in training mode."""
  if variant.startswith('two_pass'):
    size = group_size if variant.endswith('group') else batch
    return lambda variables, x: _two_pass(variables, x, size, dtype)
  if variant == 'flax':
    module = nn.BatchNorm(use_running_average=False, dtype=dtype)
  else:
    module = GroupBatchNorm(group_size=group_size if variant == 'ours_group' else batch,
                            dtype=dtype)
  return lambda variables, x: module.apply(variables, x, mutable=['batch_stats'])


def _step(apply: Callable) -> Callable:
  def step(variables, x, dy):
    def forward(params, x):
      y, new_stats = apply({'params': params, 'batch_stats': variables['batch_stats']}, x)
      return nn.relu(y), new_stats
    y, vjp, new_stats = jax.vjp(forward, variables['params'], x, has_aux=True)
    dparams, dx = vjp(dy)
    return y, new_stats, dparams, dx
  return jax.jit(step)


def kernel_count(hlo_text: str) -> int:
  """Instructions of the optimised HLO's entry computation that run as kernels (fusions,
  reductions, copies...), i.e. all but parameters, constants, tuples and bitcasts."""
  entry = hlo_text[hlo_text.index('\nENTRY'):].split('\n}')[0].splitlines()[1:]
  opcodes = [re.search(r'\s([a-z][\w-]*)\(', line.split(' = ', 1)[1])
             for line in entry if ' = ' in line]
  return sum(op.group(1) not in ('parameter', 'constant', 'tuple', 'get-tuple-element',
                                 'bitcast') for op in opcodes if op)


def _bytes_accessed(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get('bytes accessed', float('nan')))


def _parse_shapes(text: str, batch: int | None) -> list[tuple[int, ...]]:
  shapes = [tuple(int(d) for d in s.split('x')) for s in text.split(',') if s]
  return [(batch or s[0], *s[1:]) for s in shapes]


PROG = 'python -m resnet_jax.bench.norm_benchmark'
_FLAGS = flags.FlagValues()  # its own: see command_flags.py
flags.DEFINE_string('shapes', DEFAULT_SHAPES, 'NHWC shapes, e.g. 256x56x56x64',
                    flag_values=_FLAGS)
flags.DEFINE_integer('batch', None, "overrides each shape's N", flag_values=_FLAGS)
flags.DEFINE_integer('group_size', None, 'default: batch / 4', flag_values=_FLAGS)
flags.DEFINE_enum('dtype', 'bfloat16', ['bfloat16', 'float32'], 'Activation dtype.',
                  flag_values=_FLAGS)
flags.DEFINE_integer('repeats', 20, 'Timed repeats (the median counts).', flag_values=_FLAGS)
flags.DEFINE_integer('calls', None, 'calls issued back to back per timed repeat (default: 1 '
                     'on CPU, 10 on accelerators, where one call is ~1 ms)', flag_values=_FLAGS)
command_flags.define_subset('variants', VARIANTS, 'Variants to time (flax, the reference, always)',
                            flag_values=_FLAGS)
flags.DEFINE_string('json', None, 'also write the results here', flag_values=_FLAGS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = command_flags.parse(_FLAGS, sys.argv[1:] if argv is None else argv, prog=PROG,
                             doc=__doc__)
  dtype = jnp.dtype(args.dtype)
  variants = list(args.variants)
  if 'flax' not in variants:
    variants.insert(0, 'flax')
  calls = args.calls or (1 if jax.default_backend() == 'cpu' else 10)
  device = jax.devices()[0]
  header = {
      'device_kind': device.device_kind, 'backend': jax.default_backend(),
      'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
      'command': ' '.join(['python -m resnet_jax.bench.norm_benchmark',
                           *(sys.argv[1:] if argv is None else argv)]),
      'jax': jax.__version__, 'dtype': args.dtype, 'repeats': args.repeats, 'calls': calls}
  print(f"# {header['device_kind']} ({header['backend']}), {header['date']}, "
        f"jax {header['jax']}, {args.dtype}, median of {args.repeats} × {calls} call(s)")
  print(f"# {header['command']}")
  print(f"{'shape':>18} {'variant':>15} {'group':>6} {'median µs':>11} {'vs flax':>8} "
        f"{'kernels':>8} {'MB moved':>9}")
  rows = []
  for shape in _parse_shapes(args.shapes, args.batch):
    batch = shape[0]
    group_size = args.group_size or max(1, batch // 4)
    kx, kdy, kinit = jax.random.split(jax.random.key(0), 3)
    x = (jax.random.normal(kx, shape) * 2 + 0.5).astype(dtype)
    dy = jax.random.normal(kdy, shape).astype(dtype)
    variables = nn.BatchNorm(use_running_average=False).init(kinit, x)
    steps, kernels, mbytes = {}, {}, {}
    for variant in variants:
      compiled = _step(_layer(variant, batch, group_size, dtype)).lower(variables, x, dy)
      steps[variant] = compiled = compiled.compile()
      kernels[variant] = kernel_count(compiled.as_text())
      mbytes[variant] = _bytes_accessed(compiled) / 1e6
      jax.block_until_ready(steps[variant](variables, x, dy))  # warm-up
    times = {v: [] for v in variants}
    for r in range(args.repeats):
      for i in range(len(variants)):
        variant = variants[(r + i) % len(variants)]
        start = time.perf_counter()
        for _ in range(calls):
          out = steps[variant](variables, x, dy)
        jax.block_until_ready(out)
        times[variant].append((time.perf_counter() - start) / calls)
    for variant in variants:
      median_us = statistics.median(times[variant]) * 1e6
      # Each repeat's time over flax's in the same repeat: load that changes between
      # repeats cancels.
      ratio = statistics.median(t / f for t, f in zip(times[variant], times['flax']))
      row = {'shape': 'x'.join(map(str, shape)), 'variant': variant,
             'group_size': batch if variant in ('flax', 'ours', 'two_pass') else group_size,
             'median_us': median_us, 'ratio_vs_flax': ratio,
             'kernels': kernels[variant], 'mbytes_accessed': mbytes[variant]}
      rows.append(row)
      print(f"{row['shape']:>18} {variant:>15} {row['group_size']:>6} {median_us:>11,.0f} "
            f"{row['ratio_vs_flax']:>8.3f} {row['kernels']:>8} {row['mbytes_accessed']:>9,.1f}",
            flush=True)
  result = {**header, 'rows': rows}
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == '__main__':
  main()
