"""Learning-rate schedules, the optax optimizer chain and its weight-decay mask."""

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

from resnet_jax.errors import check_choice

if TYPE_CHECKING:
  import ml_collections

SCHEDULES = ('cosine', 'step', 'constant', 'polynomial')
OPTIMIZERS = ('sgd', 'adamw', 'lars')


def check_choices(config: 'ml_collections.ConfigDict') -> None:
  """Raises ValueError naming a bad optimizer or schedule and the valid choices."""
  check_choice('optimizer', config.optimizer, OPTIMIZERS, choices_name='optimizers')
  check_choice('schedule', config.schedule, SCHEDULES, choices_name='schedules')
  if config.backbone_lr_multiplier < 0:
    raise ValueError(f'backbone_lr_multiplier {config.backbone_lr_multiplier} must be >= 0 '
                     '(freeze_backbone=True freezes it)')
  if config.lr_boundaries_epochs and config.lr_boundaries_steps:
    raise ValueError('set lr_boundaries_epochs or lr_boundaries_steps, not both '
                     f'(got {config.lr_boundaries_epochs} and {config.lr_boundaries_steps})')


def scaled_learning_rate(base_lr: float, global_batch_size: int) -> float:
  """The linear scaling rule of Goyal et al. 2017: base_lr × batch / 256."""
  return base_lr * global_batch_size / 256


def create_learning_rate_fn(config: 'ml_collections.ConfigDict', *, steps_per_epoch: int,
                            num_train_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then `config.schedule`, all in optimizer steps.

  Args:
    config: reads base_lr, batch_size, schedule, warmup_epochs, lr_boundaries_epochs,
      lr_boundaries_steps, lr_decay_factor.
    steps_per_epoch: optimizer steps in one pass over the training split.
    num_train_steps: total optimizer steps of the run.

  Returns:
    step -> learning rate.
  """
  peak = scaled_learning_rate(config.base_lr, config.batch_size)
  warmup_steps = min(int(round(config.warmup_epochs * steps_per_epoch)), num_train_steps)
  if config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(num_train_steps - warmup_steps, 1))
  elif config.schedule == 'constant':
    main = optax.constant_schedule(peak)
  elif config.schedule == 'polynomial':  # MLPerf's LARS recipes: (1 - t)^power down to 0
    main = optax.polynomial_schedule(peak, 0.0, config.lr_poly_power,
                                     max(num_train_steps - warmup_steps, 1))
  elif config.schedule == 'step':
    boundaries = (list(config.lr_boundaries_steps) or
                  [int(round(e * steps_per_epoch)) for e in config.lr_boundaries_epochs])
    # Boundaries count from the start of training, as in the paper; the joined
    # schedule below sees steps counted from the end of warmup.
    main = optax.piecewise_constant_schedule(
        peak, {b - warmup_steps: config.lr_decay_factor for b in boundaries})
  else:
    check_choices(config)
  if not warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def applied_updates(opt_state: Any, default: jnp.ndarray) -> jnp.ndarray:
  """The optimizer's own count of applied updates: the step its schedule sees.

  A dropped non-finite step advances the train state's step but not this count, so
  logged learning rates must be read at this count. `default` where the optimizer has
  no schedule (a constant learning rate).
  """
  def is_schedule_state(x: Any) -> bool:
    return isinstance(x, optax.ScaleByScheduleState)
  counts = [leaf.count for leaf in jax.tree.leaves(opt_state, is_leaf=is_schedule_state)
            if is_schedule_state(leaf)]
  return counts[0] if counts else default


def weight_decay_mask(params: Any) -> Any:
  """True for convolution and dense kernels; BN scales/biases and dense biases decay not."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


HEAD = 'head'  # the classifier's parameters; everything else is the backbone


def backbone_labels(params: Any) -> dict[str, str]:
  """'head' or 'backbone' for each top-level module of the parameters."""
  return {name: 'head' if name == HEAD else 'backbone' for name in params}


def create_optimizer(config: 'ml_collections.ConfigDict',
                     learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """The config's optimizer; with freeze_backbone or a backbone_lr_multiplier other than 1,
  the head and the backbone get their own (optax.multi_transform)."""
  head = _base_optimizer(config, learning_rate_fn)
  if config.freeze_backbone:
    backbone = optax.set_to_zero()
  elif config.backbone_lr_multiplier != 1.0:
    multiplier = config.backbone_lr_multiplier
    backbone = _base_optimizer(config, lambda step: multiplier * learning_rate_fn(step))
  else:
    return head
  return optax.multi_transform({'head': head, 'backbone': backbone}, backbone_labels)


def sgd(learning_rate_fn: optax.Schedule, *, momentum: float, nesterov: bool,
        weight_decay: float) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum; L2 on kernels added to the gradient before momentum,
  as torch.optim.SGD's weight_decay."""
  return optax.chain(optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
                     optax.sgd(learning_rate_fn, momentum=momentum, nesterov=nesterov))


def _base_optimizer(config: 'ml_collections.ConfigDict',
                    learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum and L2 on kernels, AdamW with decoupled decay, or LARS."""
  if config.optimizer == 'sgd':
    return sgd(learning_rate_fn, momentum=config.momentum, nesterov=config.nesterov,
               weight_decay=config.weight_decay)
  if config.optimizer == 'adamw':
    return optax.adamw(learning_rate_fn, b1=config.adam_b1, b2=config.adam_b2,
                       weight_decay=config.weight_decay, mask=weight_decay_mask)
  if config.optimizer == 'lars':
    # You et al. 2017 as MLPerf uses it: BN parameters and biases get neither weight decay
    # nor the layer-wise trust ratio.
    return optax.lars(learning_rate_fn, weight_decay=config.weight_decay,
                      weight_decay_mask=weight_decay_mask, trust_ratio_mask=weight_decay_mask,
                      trust_coefficient=config.lars_trust_coefficient,
                      momentum=config.momentum, nesterov=config.nesterov)
  check_choices(config)
  raise AssertionError('unreachable')
