"""Speed and memory of the jitted training or evaluation step on synthetic device data.

`measure_step` times the trainer's own step (steps.train_step / eval_step over the data
mesh) for a given model and optimizer; like the step, it needs only JAX, flax and optax,
so it runs on a bare accelerator image (resnet_jax/bench/gpu_benchmark.py). `measure` builds
the model and optimizer that a config describes, as training does.
"""

import functools
import resource
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from resnet_jax import models, optim, sharding, steps, train_state
from resnet_jax.cpu import allocator
from resnet_jax.errors import check_choice
from resnet_jax.step_options import InputOptions, StepOptions, UpdateOptions
from resnet_jax.tools import summary
from resnet_jax.bench.flop_count import inference_flops, training_flops, xla_count_shown

if TYPE_CHECKING:
  import ml_collections

MODES = ('train', 'eval')


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  start = time.perf_counter()
  result = jax.block_until_ready(fn())
  return result, time.perf_counter() - start


def matmul_peak_flops(dtype: Any, size: int | None = None, repeats: int = 5) -> float:
  """Best FLOP/s of a square matmul in `dtype` on the default device (the "peak").

  The operands are standard-normal random: a GPU's tensor cores draw less power on
  constant data (all ones) and can clock higher than on real activations.
  """
  size = size or (2048 if jax.default_backend() == 'cpu' else 8192)
  a, b = jax.random.normal(jax.random.key(0), (2, size, size), jnp.float32).astype(dtype)
  matmul = jax.jit(lambda a, b: a @ b)
  _timed(lambda: matmul(a, b))
  best = min(_timed(lambda: matmul(a, b))[1] for _ in range(repeats))
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


def measure_step(model: nn.Module, tx: optax.GradientTransformation, *, mode: str,
                 batch_size: int, image_size: int, channels: int = 3, num_classes: int = 1000,
                 loss_scale: Any = None, image_mean: Sequence[float] = (127.5,),
                 image_std: Sequence[float] = (64.0,), learning_rate_fn: Any = None,
                 warmup_steps: int = 2, timed_steps: int = 10,
                 process_start: float | None = None,
                 step_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
  """Times `mode` ('train' or 'eval') of `model` on one synthetic batch on the devices.

  Args:
    model: the network (its dtype, remat and scan_blocks are what is measured).
    tx: the optimizer of the train step.
    mode: 'train' (forward, backward, optimizer update, metrics) or 'eval' (forward).
    batch_size: global batch, split over every device.
    image_size: image side; channels: image channels (uint8 on the device).
    num_classes: classifier width.
    loss_scale: a jmp loss scale (float16), or None.
    image_mean, image_std: the normalisation the step applies.
    learning_rate_fn: the schedule train_step logs (default: constant 0.1).
    warmup_steps: untimed steps after the first.
    timed_steps: steps timed one by one (median: step_seconds), then back to back
      with one wait at the end (pipelined_step_seconds: the host runs ahead, as in
      training).
    process_start: time.perf_counter() at process start, for seconds_to_first_step.
    step_kwargs: train mode: steps.train_step's keyword arguments as the trainer binds
      them ({'learning_rate_fn', 'options'}: tools.bare_config.recipe_step);
      they replace learning_rate_fn, image_mean, image_std and the non-finite policy.

  Returns:
    A dict of figures; see benchmark.py for the keys.
  """
  check_choice('mode', mode, MODES)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(batch_size, mesh)
  learning_rate_fn = learning_rate_fn or optax.constant_schedule(0.1)
  state, init_seconds = _timed(lambda: train_state.create_train_state(
      jax.random.key(0), model, tx, (image_size, image_size, channels),
      use_ema=bool(step_kwargs and step_kwargs['options'].update.ema_decay > 0),
      mesh=mesh, loss_scale=loss_scale))
  rng = np.random.default_rng(0)
  host_batch = {'image': rng.integers(0, 256, (batch_size, image_size, image_size, channels),
                                      np.uint8),
                'label': rng.integers(0, num_classes, (batch_size,), np.int32),
                'mask': np.ones((batch_size,), np.float32)}
  batch = jax.device_put(host_batch, sharding.batch_sharding(mesh))
  normalize = dict(image_mean=tuple(image_mean), image_std=tuple(image_std))
  if mode == 'train':
    kwargs = step_kwargs or dict(learning_rate_fn=learning_rate_fn, options=StepOptions(
        inputs=InputOptions(**normalize),
        update=UpdateOptions(drop_nonfinite=loss_scale is not None)))
    step_fn = jax.jit(functools.partial(steps.train_step, **kwargs), donate_argnums=0)
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
  start = time.perf_counter()
  for _ in range(timed_steps):
    output = run_step()
  jax.block_until_ready(output)
  pipelined_step_seconds = (time.perf_counter() - start) / timed_steps
  flops = _flops(compiled)
  return {
      'mode': mode, 'batch_size': batch_size, 'image_size': image_size,
      'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind,
      'num_devices': jax.device_count(),
      'init_seconds': init_seconds, 'compile_seconds': compile_seconds,
      'first_step_seconds': first_step_seconds, 'seconds_to_first_step': seconds_to_first_step,
      'step_seconds': step_seconds, 'images_per_sec': batch_size / step_seconds,
      'pipelined_step_seconds': pipelined_step_seconds,
      'pipelined_images_per_sec': batch_size / pipelined_step_seconds,
      'xla_flops_per_step': flops,  # XLA's count: no convolutions on GPUs (flop_count.py)
      'xla_memory_bytes': _xla_memory_bytes(compiled),
      'device_peak_bytes': _device_peak_bytes(),
      'host_max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
  }


def measure(config: 'ml_collections.ConfigDict', *, mode: str, num_classes: int = 1000,
            warmup_steps: int = 2, timed_steps: int = 10,
            process_start: float | None = None) -> dict[str, Any]:
  """Times `mode` ('train' or 'eval') for config's model, batch, image size and dtype.

  Args:
    config: a config derived from configs/default.py; its model, dtype, batch_size,
      dataset.image_size, conv_impl, scan_blocks, remat, optimizer and loss scaling count.
    mode: 'train' or 'eval'.
    num_classes: classifier width.
    warmup_steps, timed_steps, process_start: as in measure_step.

  Returns:
    measure_step's figures, the config's settings, and the fraction of the device's
    matmul peak (a square matmul timed in the same run) that the step reaches.
  """
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=100,
                                                   num_train_steps=10_000)
  result = measure_step(
      models.model_from_config(config, num_classes),
      optim.create_optimizer(config, learning_rate_fn), mode=mode,
      batch_size=config.batch_size, image_size=config.dataset.image_size,
      num_classes=num_classes, loss_scale=train_state.create_loss_scale(config),
      image_mean=config.dataset.mean, image_std=config.dataset.std,
      learning_rate_fn=learning_rate_fn, warmup_steps=warmup_steps,
      timed_steps=timed_steps, process_start=process_start)
  peak = matmul_peak_flops(models.compute_dtype(config.dtype))
  # The model's work counted from its MACs: XLA's cost_analysis() counts nothing inside
  # cuDNN/cuBLAS custom calls on GPUs (1.05e11 for ResNet-50's ~6.3e12 at batch 256).
  macs = summary.summarize(config.model, image_size=config.dataset.image_size,
                           num_classes=num_classes)['macs']
  analytic = (training_flops(macs, config.batch_size) if mode == 'train' else
              inference_flops(macs, config.batch_size))
  xla = result['xla_flops_per_step']
  achieved = analytic / result['step_seconds']
  return result | {
      'flops_per_step': analytic,
      'xla_flops_per_step': xla if xla_count_shown(xla, analytic) else None,
      'model': config.model, 'dtype': config.dtype, 'conv_impl': config.conv_impl,
      'scan_blocks': config.scan_blocks, 'remat': config.remat,
      'achieved_flops_per_sec': achieved, 'matmul_peak_flops_per_sec': peak,
      'fraction_of_matmul_peak': achieved / peak if achieved else None,
      'allocator': allocator.active()}
