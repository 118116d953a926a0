"""BatchNorm over groups of a fixed number of examples ("ghost" or virtual BatchNorm).

With group_size N, each consecutive run of N examples of the global batch is normalised
by its own statistics: the per-device BatchNorm of the paper and of MLPerf, but fixed
by the config instead of by the hardware, so 1 device and 64 devices compute the same
thing. Parameters and statistics have flax BatchNorm's names and shapes, so checkpoints
move freely between group sizes. Statistics and normalisation are computed as flax's
BatchNorm computes them (one pass, float32), so a group of the whole batch costs what
flax's does (resnet_jax.tools.norm_benchmark measures both).
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupBatchNorm(nn.Module):
  """BatchNorm whose training statistics are taken over groups of `group_size` examples.

  Running statistics average the groups' means and (biased) variances, so they estimate
  what a group sees. Attributes match flax.linen.BatchNorm's where they overlap;
  `use_fast_variance=False` takes the variance in two passes, E[(x - E[x])²].
  """
  group_size: int
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros
  use_fast_variance: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x, features = jnp.asarray(x), x.shape[-1]  # NumPy inputs too are reduced by XLA
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', self.bias_init, (features,), jnp.float32)
    if self.use_running_average:
      xs, mean, var = x, running_mean.value, running_var.value
    else:
      batch = x.shape[0]
      if batch % self.group_size:
        raise ValueError(f'batch of {batch} examples is not a multiple of bn_group_size '
                         f'{self.group_size}')
      if batch == self.group_size:  # no group axis: the same program as flax's BatchNorm
        xs, axes = x, tuple(range(x.ndim - 1))
      else:
        xs = x.reshape((batch // self.group_size, self.group_size, *x.shape[1:]))
        axes = tuple(range(1, xs.ndim - 1))
      groups = xs.astype(jnp.float32)
      mean = groups.mean(axes, keepdims=True)
      if self.use_fast_variance:
        # One pass, as flax's BatchNorm: E[x] and E[x²] in one fusion. Accumulated in
        # float32 and clipped at 0, the variance is off by ~ε·E[x²]: small beside it
        # while |mean| ≲ 100·std (tests/test_norm.py), as BN inputs are.
        var = jnp.maximum(0.0, jnp.square(groups).mean(axes, keepdims=True) - jnp.square(mean))
      else:
        var = jnp.square(groups - mean).mean(axes, keepdims=True)
      if not self.is_initializing():
        group_mean = mean.reshape(-1, features).mean(axis=0)
        group_var = var.reshape(-1, features).mean(axis=0)
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * group_mean
        running_var.value = self.momentum * running_var.value + (1 - self.momentum) * group_var
    # flax's _normalize: one float32 multiplier per feature, (x - mean) * mul + bias.
    y = (xs - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
    return y.reshape(x.shape).astype(self.dtype)
