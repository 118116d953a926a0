"""BatchNorm over groups of a fixed number of examples ("ghost" or virtual BatchNorm).

With group_size N, each consecutive run of N examples of the global batch is normalised
by its own statistics: the per-device BatchNorm of the paper and of MLPerf, but fixed
by the config instead of by the hardware, so 1 device and 64 devices compute the same
thing. Parameters and statistics have flax BatchNorm's names and shapes, so checkpoints
move freely between group sizes. The statistics are flax BatchNorm's (one pass, in
float32); the normalisation, x·mul + shift, costs less than flax's, and a group of the
whole batch no more than flax's BatchNorm (resnet_jax.bench.norm_benchmark times both).
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
    batch, groups = x.shape[0], 1

    def per_example(stat):  # a group's statistic [G, C] to each of its examples' rows
      if groups == 1:
        return stat
      stat = jnp.repeat(stat, self.group_size, axis=0)
      return stat.reshape((batch,) + (1,) * (x.ndim - 2) + (features,))

    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      if batch % self.group_size:
        raise ValueError(f'batch of {batch} examples is not a multiple of bn_group_size '
                         f'{self.group_size}')
      groups, xf = batch // self.group_size, x.astype(jnp.float32)

      def group_mean(v):  # [G, C]
        if groups == 1:  # as flax
          return v.mean(tuple(range(x.ndim - 1)), keepdims=True)
        # Each example's mean, then each group's: XLA:CPU reduces [G, N, H, W, C] → [G, C]
        # 4× slower than [B, H, W, C] → [B, C] where it fuses the square.
        v = v.mean(tuple(range(1, x.ndim - 1)))
        return v.reshape(groups, self.group_size, features).mean(1)

      mean = group_mean(xf)
      if self.use_fast_variance:
        # One pass, as flax's BatchNorm: E[x] and E[x²] in one fusion. Accumulated in
        # float32 and clipped at 0, the variance is off by O(ε)·E[x²]: small beside it
        # while |mean| ≲ 100·std (tests/test_norm.py), as BN inputs are.
        var = jnp.maximum(0.0, group_mean(jnp.square(xf)) - jnp.square(mean))
      else:
        var = group_mean(jnp.square(xf - per_example(mean)))
      if not self.is_initializing():
        for running, stat in ((running_mean, mean), (running_var, var)):
          stat = stat.reshape(-1, features).mean(0)  # the groups' average
          running.value = self.momentum * running.value + (1 - self.momentum) * stat
    # y = x·mul + shift: scale folded into mul as in flax's _normalize, and the mean into
    # the shift, so the gradient's large reductions are sums of dy and dy·x over each
    # example, with no broadcast operand (which XLA:CPU reduces 2-4× slower), and XLA
    # writes two fewer float32 arrays of x's size than for flax's (x - mean)·mul.
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    return (x * per_example(mul) + per_example(bias - mean * mul)).astype(self.dtype)
