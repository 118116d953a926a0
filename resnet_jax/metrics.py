"""The trainer's metrics as clu Collections, accumulated on the device.

The steps (steps.py) return plain per-step arrays; the trainer's jitted call folds them
into running totals here, so nothing crosses to the host until a log step reads them.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
from clu import metrics
from jax.sharding import Mesh

from resnet_jax import sharding


@flax.struct.dataclass
class Count(metrics.Metric):
  """Number of (unmasked) examples seen."""
  count: jnp.ndarray

  @classmethod
  def from_model_output(cls, *, mask: jnp.ndarray, **_) -> 'Count':
    return cls(count=mask.sum().astype(jnp.int32))

  def merge(self, other: 'Count') -> 'Count':
    return type(self)(count=self.count + other.count)

  @classmethod
  def empty(cls) -> 'Count':
    return cls(count=jnp.array(0, jnp.int32))

  def compute(self) -> jnp.ndarray:
    return self.count


def _finite_loss(loss: jnp.ndarray, finite: jnp.ndarray, **_) -> dict[str, jnp.ndarray]:
  return {'values': loss[None], 'mask': finite[None]}


def _finite(name: str):
  def values(finite: jnp.ndarray, **outputs) -> dict[str, jnp.ndarray]:
    return {'values': outputs[name][None], 'mask': finite[None]}
  return values


@flax.struct.dataclass
class GradNormMax(metrics.Metric):
  """The largest gradient norm over the steps whose loss and gradients were finite (0: none);
  clu has no maximum."""
  value: jnp.ndarray

  @classmethod
  def from_model_output(cls, *, grad_norm: jnp.ndarray, finite: jnp.ndarray,
                        **_) -> 'GradNormMax':
    return cls(value=jnp.where(finite, grad_norm, 0.0).astype(jnp.float32))

  def merge(self, other: 'GradNormMax') -> 'GradNormMax':
    return type(self)(value=jnp.maximum(self.value, other.value))

  @classmethod
  def empty(cls) -> 'GradNormMax':
    return cls(value=jnp.array(0.0, jnp.float32))

  def compute(self) -> jnp.ndarray:
    return self.value


@flax.struct.dataclass
class UnreadableCount(Count):
  """Image-folder files that could not be read (data/pipeline.py gives their rows the
  next readable image of the batch); 0 for other sources."""

  @classmethod
  def from_model_output(cls, *, unreadable: jnp.ndarray | None = None,
                        **_) -> 'UnreadableCount':
    return cls(count=jnp.zeros((), jnp.int32) if unreadable is None else
               unreadable.sum().astype(jnp.int32))


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_fun(_finite_loss)  # over the steps whose loss was finite
  top1: metrics.Average.from_output('top1')
  learning_rate: metrics.LastValue.from_output('learning_rate')
  skipped_steps: metrics.LastValue.from_output('skipped_steps')
  loss_scale: metrics.LastValue.from_output('loss_scale')  # 1 without loss scaling
  # Global L2 norms (steps.global_norms), over the finite steps since the last log.
  grad_norm: metrics.Average.from_fun(_finite('grad_norm'))
  grad_norm_max: GradNormMax
  update_norm: metrics.Average.from_fun(_finite('update_norm'))
  param_norm: metrics.LastValue.from_output('param_norm')
  unreadable_images: UnreadableCount  # since the last log


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1: metrics.Average.from_output('top1')
  top5: metrics.Average.from_output('top5')
  num_examples: Count


@functools.lru_cache
def _empty_fn(collection: type[metrics.Collection], mesh: Mesh) -> Any:
  # Made on the devices: a device_put of host zeros to a global sharding would compare
  # them across processes (an all-gather) at every log step.
  return jax.jit(collection.empty, out_shardings=sharding.replicated(mesh))


def empty(collection: type[metrics.Collection], mesh: Mesh) -> metrics.Collection:
  """Zero totals of `collection`, replicated over `mesh`: the start of an accumulation."""
  return _empty_fn(collection, mesh)()


def accumulate(totals: metrics.Collection, step_metrics: dict[str, jnp.ndarray]) -> Any:
  """`totals` merged with one step's outputs; call it inside the jitted step, so the
  running metrics stay on the device (no host dispatch per step)."""
  merged = totals.merge(type(totals).single_from_model_output(**step_metrics))
  # The totals keep the dtypes of `empty`, so the next call reuses this compile.
  return jax.tree.map(lambda new, old: new.astype(old.dtype), merged, totals)


def accumulate_eval(totals: EvalMetrics, step_metrics: dict[str, jnp.ndarray]) -> EvalMetrics:
  """`totals` plus one evaluation batch's per-example outputs (steps.eval_step), its sums
  taken in one float32 vector: one all-reduce per sharded batch where clu's `accumulate`
  takes two (the float sums and the int32 counts apart). The same totals; a batch's
  count is exact in float32 (< 2**24 examples).
  """
  mask = step_metrics['mask'].astype(jnp.float32)
  names = ('loss', 'top1', 'top5')
  sums = jnp.stack([*(jnp.where(mask > 0, step_metrics[name], 0.0).astype(jnp.float32)
                      for name in names), mask]).sum(axis=1)
  count = sums[-1].astype(jnp.int32)
  return totals.replace(
      num_examples=Count(count=totals.num_examples.count + count),
      **{name: metrics.Average(total=getattr(totals, name).total + sums[i],
                               count=getattr(totals, name).count + count)
         for i, name in enumerate(names)})


def to_host(totals: metrics.Collection, prefix: str) -> dict[str, float]:
  """The computed metrics as Python floats named `prefix/name` (reads the device)."""
  return {f'{prefix}/{name}': float(value)
          for name, value in jax.device_get(totals.compute()).items()}
