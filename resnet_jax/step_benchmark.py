"""Speed and memory of the jitted training or evaluation step on synthetic device data.

The step is the trainer's own (steps.train_step / eval_step over the data mesh), with
the model and optimizer that `config` describes, so what this measures is what
training runs.
"""

import functools
import resource
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resnet_jax import allocator, models, optim, sharding, steps

MODES = ('train', 'eval')


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  start = time.perf_counter()
  result = jax.block_until_ready(fn())
  return result, time.perf_counter() - start


def matmul_peak_flops(dtype: Any, size: int | None = None, repeats: int = 5) -> float:
  """Best FLOP/s of a square matmul in `dtype` on the default device (the "peak")."""
  size = size or (2048 if jax.default_backend() == 'cpu' else 8192)
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda a, b: a @ b)
  _timed(lambda: matmul(a, a))
  best = min(_timed(lambda: matmul(a, a))[1] for _ in range(repeats))
  return 2 * size**3 / best


def _flops(compiled: Any) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def _xla_memory_bytes(compiled: Any) -> int | None:
  """XLA's own peak estimate: arguments + outputs + temporaries − donated aliases."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes +
             analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def _device_peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def measure(config: ml_collections.ConfigDict, *, mode: str, num_classes: int = 1000,
            warmup_steps: int = 2, timed_steps: int = 10,
            process_start: float | None = None) -> dict[str, Any]:
  """Times `mode` ('train' or 'eval') for config's model, batch, image size and dtype.

  Args:
    config: a config derived from configs/default.py; its model, dtype, batch_size,
      dataset.image_size, conv_impl, scan_blocks and remat count.
    mode: 'train' (forward, backward, optimizer update) or 'eval' (forward, metrics).
    num_classes: classifier width.
    warmup_steps: untimed steps after the first.
    timed_steps: steps timed one by one; the median counts.
    process_start: time.perf_counter() at process start, for seconds_to_first_step.

  Returns:
    A dict of figures; see benchmark.py for the keys.
  """
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; valid: {", ".join(MODES)}')
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  size = config.dataset.image_size
  model = models.model_from_config(config, num_classes)
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=100,
                                                   num_train_steps=10_000)
  state, init_seconds = _timed(lambda: steps.create_train_state(
      jax.random.key(0), model, optim.create_optimizer(config, learning_rate_fn),
      (size, size, 3), use_ema=False, mesh=mesh, loss_scale=steps.create_loss_scale(config)))
  rng = np.random.default_rng(0)
  host_batch = {'image': rng.integers(0, 256, (config.batch_size, size, size, 3), np.uint8),
                'label': rng.integers(0, num_classes, (config.batch_size,), np.int32),
                'mask': np.ones((config.batch_size,), np.float32)}
  batch = jax.device_put(host_batch, sharding.batch_sharding(mesh))
  normalize = dict(image_mean=tuple(config.dataset.mean), image_std=tuple(config.dataset.std))
  if mode == 'train':
    step_fn = jax.jit(functools.partial(steps.train_step, learning_rate_fn=learning_rate_fn,
                                        **normalize), donate_argnums=0)
  else:
    step_fn = jax.jit(functools.partial(steps.eval_step, **normalize))
  compiled, compile_seconds = _timed(lambda: step_fn.lower(state, batch).compile())

  def run_step():
    nonlocal state
    output = compiled(state, batch)
    if mode == 'train':
      state = output[0]
    return output

  _, first_step_seconds = _timed(run_step)
  seconds_to_first_step = (time.perf_counter() - process_start) if process_start else None
  for _ in range(warmup_steps):
    _timed(run_step)
  step_seconds = statistics.median(_timed(run_step)[1] for _ in range(timed_steps))
  flops = _flops(compiled)
  peak = matmul_peak_flops(models.compute_dtype(config.dtype))
  achieved = flops / step_seconds if flops else None
  return {
      'mode': mode, 'model': config.model, 'batch_size': config.batch_size,
      'image_size': size, 'dtype': config.dtype, 'conv_impl': config.conv_impl,
      'scan_blocks': config.scan_blocks, 'remat': config.remat,
      'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind,
      'num_devices': jax.device_count(),
      'init_seconds': init_seconds, 'compile_seconds': compile_seconds,
      'first_step_seconds': first_step_seconds, 'seconds_to_first_step': seconds_to_first_step,
      'step_seconds': step_seconds, 'images_per_sec': config.batch_size / step_seconds,
      'flops_per_step': flops, 'achieved_flops_per_sec': achieved,
      'matmul_peak_flops_per_sec': peak,
      'fraction_of_matmul_peak': achieved / peak if achieved else None,
      'xla_memory_bytes': _xla_memory_bytes(compiled),
      'device_peak_bytes': _device_peak_bytes(),
      'allocator': allocator.active(),
      'host_max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
  }
