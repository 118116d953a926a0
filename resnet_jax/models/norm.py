"""BatchNorm over groups of a fixed number of examples ("ghost" or virtual BatchNorm).

With group_size N, each consecutive run of N examples of the global batch is normalised
by its own statistics: the per-device BatchNorm of the paper and of MLPerf, but fixed
by the config instead of by the hardware, so 1 device and 64 devices compute the same
thing. Parameters and statistics have flax BatchNorm's names and shapes, so checkpoints
move freely between group sizes.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupBatchNorm(nn.Module):
  """BatchNorm whose training statistics are taken over groups of `group_size` examples.

  Running statistics average the groups' means and (biased) variances, so they estimate
  what a group sees. Attributes match flax.linen.BatchNorm's where they overlap.
  """
  group_size: int
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = x.shape[-1]
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', self.bias_init, (features,), jnp.float32)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
      y = (x.astype(jnp.float32) - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
      return y.astype(self.dtype)
    batch = x.shape[0]
    if batch % self.group_size:
      raise ValueError(f'batch of {batch} examples is not a multiple of bn_group_size '
                       f'{self.group_size}')
    groups = x.astype(jnp.float32).reshape((batch // self.group_size, self.group_size,
                                            *x.shape[1:]))
    axes = tuple(range(1, groups.ndim - 1))
    mean = jnp.mean(groups, axis=axes, keepdims=True)
    # Two-pass variance: E[(x - mean)^2] stays accurate where E[x^2] - mean^2 cancels.
    var = jnp.mean(jnp.square(groups - mean), axis=axes, keepdims=True)
    y = (groups - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
    if not self.is_initializing():
      group_mean = mean.reshape(-1, features).mean(axis=0)
      group_var = var.reshape(-1, features).mean(axis=0)
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * group_mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * group_var
    return y.reshape(x.shape).astype(self.dtype)
