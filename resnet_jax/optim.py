"""Learning-rate schedules, the optax optimizer chain and its weight-decay mask."""

import functools
import re
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import optax

from resnet_jax.errors import check_choice

if TYPE_CHECKING:
  import ml_collections

SCHEDULES = ('cosine', 'step', 'constant', 'polynomial')
OPTIMIZERS = ('sgd', 'adamw', 'lamb', 'lars')
# What weight decay leaves alone (config.weight_decay_skip).
WEIGHT_DECAY_SKIPS = ('norm_and_bias', 'norm', 'norm_except_shortcut', 'none')


def check_choices(config: 'ml_collections.ConfigDict') -> None:
  """Raises ValueError naming a bad optimizer or schedule and the valid choices."""
  check_choice('optimizer', config.optimizer, OPTIMIZERS, choices_name='optimizers')
  check_choice('schedule', config.schedule, SCHEDULES, choices_name='schedules')
  check_choice('weight_decay_skip', config.weight_decay_skip, WEIGHT_DECAY_SKIPS)
  if not config.base_lr > 0:  # also NaN
    raise ValueError(f'base_lr {config.base_lr} must be > 0 (the rate per 256 examples; '
                     'freeze_backbone=True or backbone_lr_multiplier=0 freeze parts)')
  if config.weight_decay < 0:
    raise ValueError(f'weight_decay {config.weight_decay} must be >= 0 (0: off)')
  for name in ('warmup_start_factor', 'final_lr_factor'):
    if not 0 <= config[name] <= 1:
      raise ValueError(f'{name} {config[name]} must be in [0, 1]')
  if config.grad_clip_norm < 0:
    raise ValueError(f'grad_clip_norm {config.grad_clip_norm} must be >= 0 (0: off)')
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
    config: reads base_lr, batch_size, schedule, warmup_epochs, warmup_start_factor,
      final_lr_factor, lr_boundaries_epochs, lr_boundaries_steps, lr_decay_factor.
    steps_per_epoch: optimizer steps in one pass over the training split.
    num_train_steps: total optimizer steps of the run.

  Returns:
    step -> learning rate.
  """
  peak = scaled_learning_rate(config.base_lr, config.batch_size)
  warmup_steps = min(int(round(config.warmup_epochs * steps_per_epoch)), num_train_steps)
  final = config.final_lr_factor
  if config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(num_train_steps - warmup_steps, 1), alpha=final)
  elif config.schedule == 'constant':
    main = optax.constant_schedule(peak)
  elif config.schedule == 'polynomial':  # MLPerf's LARS recipes: (1 - t)^power down to 0
    main = optax.polynomial_schedule(peak, final * peak, config.lr_poly_power,
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
  warmup = optax.linear_schedule(config.warmup_start_factor * peak, peak, warmup_steps)
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


_NORM_MODULE = re.compile(r'(^|_)bn\d*$')  # bn1, stem_bn, downsample_bn, final_bn, ...


def norm_mask(params: Any, *, decay_shortcut_norm: bool = False) -> Any:
  """True for every parameter outside a BatchNorm module (biases included); with
  decay_shortcut_norm, the projection shortcut's BN (downsample_bn) decays too."""
  def decays(path, _) -> bool:
    names = [str(getattr(key, 'key', '')) for key in path[:-1]]
    if decay_shortcut_norm:
      names = [name for name in names if name != 'downsample_bn']
    return not any(_NORM_MODULE.search(name) for name in names)
  return jax.tree_util.tree_map_with_path(decays, params)


def decay_mask(skip: str) -> Callable[[Any], Any] | None:
  """The mask function of config.weight_decay_skip (WEIGHT_DECAY_SKIPS); None where
  everything decays. 'norm_except_shortcut' is what NVIDIA's and FFCV's filters do: they
  skip parameters whose torchvision name contains 'bn', and the shortcut's BN is named
  downsample.1."""
  return {'norm_and_bias': weight_decay_mask, 'norm': norm_mask,
          'norm_except_shortcut': functools.partial(norm_mask, decay_shortcut_norm=True),
          'none': None}[skip]


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
        weight_decay: float, mask: Any = weight_decay_mask) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum; L2 on the `mask`ed parameters (default: kernels) added
  to the gradient before momentum, as torch.optim.SGD's weight_decay."""
  return optax.chain(optax.add_decayed_weights(weight_decay, mask=mask),
                     optax.sgd(learning_rate_fn, momentum=momentum, nesterov=nesterov))


def lamb(learning_rate_fn: optax.Schedule, *, b1: float, b2: float, eps: float,
         weight_decay: float, mask: Any = weight_decay_mask) -> optax.GradientTransformation:
  """LAMB (You et al. 2020) as timm's Lamb trains RSB: Adam's bias-corrected step plus
  decoupled weight decay, scaled by the layer's trust ratio ‖w‖ / ‖step‖ (1 where either
  is 0). Built from optax's parts rather than optax.lamb because timm, like MLPerf, skips
  the trust ratio where it skips weight decay (its always_adapt=False), and optax.lamb
  applies it everywhere."""
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      optax.add_decayed_weights(weight_decay, mask=mask),
      optax.masked(optax.scale_by_trust_ratio(), mask) if mask is not None
      else optax.scale_by_trust_ratio(),
      optax.scale_by_learning_rate(learning_rate_fn))


def _base_optimizer(config: 'ml_collections.ConfigDict',
                    learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """SGD, AdamW, LAMB or LARS, after optional global-norm clipping."""
  optimizer = _unclipped_optimizer(config, learning_rate_fn)
  if config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
  return optimizer


def _unclipped_optimizer(config: 'ml_collections.ConfigDict',
                         learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum and L2, AdamW or LAMB with decoupled decay, or LARS."""
  check_choices(config)
  mask = decay_mask(config.weight_decay_skip)
  if config.optimizer == 'sgd':
    return sgd(learning_rate_fn, momentum=config.momentum, nesterov=config.nesterov,
               weight_decay=config.weight_decay, mask=mask)
  if config.optimizer == 'adamw':
    return optax.adamw(learning_rate_fn, b1=config.adam_b1, b2=config.adam_b2,
                       eps=config.adam_eps, weight_decay=config.weight_decay, mask=mask)
  if config.optimizer == 'lamb':
    return lamb(learning_rate_fn, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                weight_decay=config.weight_decay, mask=mask)
  # You et al. 2017 as MLPerf uses it: BN parameters and biases get neither weight decay
  # nor the layer-wise trust ratio.
  return optax.lars(learning_rate_fn, weight_decay=config.weight_decay,
                    weight_decay_mask=mask or True, trust_ratio_mask=mask or True,
                    trust_coefficient=config.lars_trust_coefficient,
                    momentum=config.momentum, nesterov=config.nesterov)
