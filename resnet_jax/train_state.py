"""The train state: parameters, BatchNorm statistics, optimizer state, the weight EMA and
the float16 loss scale, and its creation in one jitted call replicated over the mesh.

Like steps.py, nothing here imports jmp (but for float16's loss scale), clu, ml_collections
or TensorFlow: the state is created on a bare accelerator image.
"""

from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state as flax_train_state
from jax.sharding import Mesh

from resnet_jax import models, sharding

if TYPE_CHECKING:
  import jmp
  import ml_collections


class TrainState(flax_train_state.TrainState):
  """flax's TrainState plus BatchNorm statistics and an optional weight EMA.

  Attributes:
    batch_stats: the model's `batch_stats` collection.
    ema: None, or {'params': ..., 'batch_stats': ...} averaged over steps.
    skipped_steps: steps whose loss or gradients were not finite (int32 count,
      checkpointed). With drop_nonfinite their update was dropped; without it the
      trainer stops the run (nonfinite_policy 'halt').
    first_skipped_step: the step number of the first of them (0: none).
    loss_scale: None, or a jmp.DynamicLossScale (float16 training): the loss is
      multiplied by it before differentiation; it halves after a non-finite step and
      doubles after `period` finite ones.
  """
  batch_stats: Any = None
  ema: Any = None
  skipped_steps: Any = None
  first_skipped_step: Any = None
  loss_scale: Any = None


LOSS_SCALES = ('auto', 'dynamic', 'none')


def create_loss_scale(config: 'ml_collections.ConfigDict') -> 'jmp.DynamicLossScale | None':
  """The config's dynamic loss scale, or None ('auto': dynamic for float16 only)."""
  dynamic = config.loss_scale == 'dynamic' or (config.loss_scale == 'auto' and
                                                config.dtype == 'float16')
  if not dynamic:
    return None
  import jmp  # Only float16 training needs it; bare accelerator images lack it.
  return jmp.DynamicLossScale(jnp.asarray(config.loss_scale_init, jnp.float32),
                              period=config.loss_scale_period)


def create_train_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                       image_shape: tuple[int, ...], *, use_ema: bool, mesh: Mesh,
                       loss_scale: 'jmp.DynamicLossScale | None' = None) -> TrainState:
  """Initialises the model and optimizer in one jitted call, replicated over `mesh`.

  The call is the same program on every start (the rng is its argument), so the
  persistent compilation cache (compilation_cache.py) holds it.
  """

  def init(rng: jax.Array) -> TrainState:
    variables = models.init_variables(rng=rng, model=model, train=False,
                                      images=jnp.zeros((1, *image_shape), jnp.float32))
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    ema = {'params': params, 'batch_stats': batch_stats} if use_ema else None
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                              batch_stats=batch_stats, ema=ema,
                              skipped_steps=jnp.zeros((), jnp.int32),
                              first_skipped_step=jnp.zeros((), jnp.int32),
                              loss_scale=loss_scale)
    # flax's step 0 is a Python int, a weakly typed array once jitted; a restored step is
    # not: the train step compiled for one missed the persistent cache's entry of the other.
    return state.replace(step=jnp.zeros((), jnp.int32))

  # Init runs once. ResNet-50 on a CPU (docs/performance.md): level 1 compiles in about
  # the time of level 0 (XLA's default, 3, takes 2-3x as long) and runs 5x faster than
  # level 0, which matters most when the compile comes from the persistent cache.
  lowered = jax.jit(init, out_shardings=sharding.replicated(mesh)).lower(rng)
  return lowered.compile({'xla_backend_optimization_level': 1})(rng)
