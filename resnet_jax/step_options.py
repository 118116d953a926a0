"""What the train step does besides forward and backward, in three small groups, and the
one place they are derived from a config (`StepOptions.from_config`).

| group | fields | couplings |
|---|---|---|
| `InputOptions`: the batch before the model | normalisation, random erasing, mixup/cutmix, label smoothing, `seed` | label smoothing also softens the mixed targets; mixing and erasing draw from (seed, step) and (seed + 2, step); mixing groups default to the BN groups |
| `ForwardOptions`: the loss and its gradient | `loss`, `bce_target_threshold`, `freeze_batch_stats`, `dropout_seed`, `grad_accum_steps` | `dropout_seed` is set only for models that draw dropout (drop path, the dropout shortcut); frozen statistics leave both acting; diagnostics need `grad_accum_steps` 1 |
| `UpdateOptions`: applying it | `drop_nonfinite`, `ema_decay`, `ema_every_steps`, `ema_copy_steps` | the EMA fields act only when the state holds an EMA (`ema_decay` > 0 at creation); `drop_nonfinite` is `nonfinite_policy` 'skip' |

Imports no ml_collections (the config is read by attribute): the GPU benchmark builds
the recipe's step with it on bare accelerator images.
"""

import dataclasses
from typing import Any

from resnet_jax import models

NONFINITE_POLICIES = ('auto', 'skip', 'halt')


def nonfinite_policy(config: Any) -> str:
  """'skip' or 'halt'; 'auto' skips with float16 (loss-scale overflows happen), else halts."""
  if config.nonfinite_policy != 'auto':
    return config.nonfinite_policy
  return 'skip' if config.dtype == 'float16' else 'halt'


@dataclasses.dataclass(frozen=True)
class InputOptions:
  """The batch on the device before the model sees it.

  Attributes:
    image_mean, image_std: per-channel normalisation.
    label_smoothing: weight of the uniform target.
    random_erasing, random_erasing_mode, random_erasing_box: per-example probability of
      erasing a box in the normalised image (erasing.random_erasing), its fill and its
      geometry (erasing.BOXES).
    mixup_alpha, cutmix_alpha, mix_switch_prob, mix_group_size: batch mixing
      (mixing.mix_batch); off when both alphas are 0. top1 counts the unmixed labels.
    seed: mixing draws from (seed, step), erasing from (seed + 2, step), so a resumed
      run draws as an uninterrupted one.
  """
  image_mean: tuple[float, ...] = (0.0,)
  image_std: tuple[float, ...] = (1.0,)
  label_smoothing: float = 0.0
  random_erasing: float = 0.0
  random_erasing_mode: str = 'const'
  random_erasing_box: str = 'torchvision'
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  mix_switch_prob: float = 0.5
  mix_group_size: int = 0
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class ForwardOptions:
  """The loss and how its gradient is taken.

  Attributes:
    loss: losses.LOSSES: 'softmax' cross-entropy or timm's 'bce'.
    bce_target_threshold: binarises the bce targets above it (0: off).
    freeze_batch_stats: BatchNorm normalises with the running statistics and leaves them
      as they are; stochastic depth and shortcut dropout still act.
    dropout_seed: None for models without dropout or stochastic depth; else the seed of
      the model's 'dropout' RNG, folded with the step (and the micro-batch).
    grad_accum_steps: k: the batch is split into k micro-batches (example i in
      micro-batch i mod k), each a forward and backward pass with its own BatchNorm
      statistics, and their mean gradient makes one update.
  """
  loss: str = 'softmax'
  bce_target_threshold: float = 0.0
  freeze_batch_stats: bool = False
  dropout_seed: int | None = None
  grad_accum_steps: int = 1


@dataclasses.dataclass(frozen=True)
class UpdateOptions:
  """Applying the gradient.

  Attributes:
    drop_nonfinite: a step whose loss or gradients are not finite leaves parameters,
      optimizer state, statistics and EMA as they were (a select fused into the update).
      False applies every update: for runs that stop at the first non-finite step anyway.
    ema_decay: decay of the weight EMA (used when state.ema is not None).
    ema_every_steps: the EMA takes a step on steps divisible by it, and holds otherwise.
    ema_copy_steps: an EMA step whose previous EMA step came before this step copies the
      weights instead of averaging them (torchvision's EMA restarts during the warmup).
  """
  drop_nonfinite: bool = True
  ema_decay: float = 0.0
  ema_every_steps: int = 1
  ema_copy_steps: int = 0


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """All of the train step's options: its three groups."""
  inputs: InputOptions = InputOptions()
  forward: ForwardOptions = ForwardOptions()
  update: UpdateOptions = UpdateOptions()

  @classmethod
  def from_config(cls, config: Any, *, steps_per_epoch: int = 0) -> 'StepOptions':
    """The options the trainer runs `config` with. `steps_per_epoch` places
    ema_copy_during_warmup's end."""
    ema_copy_steps = (int(round(config.warmup_epochs * steps_per_epoch))
                      if config.ema_copy_during_warmup else 0)
    return cls(
        inputs=InputOptions(
            image_mean=tuple(config.dataset.mean), image_std=tuple(config.dataset.std),
            label_smoothing=config.label_smoothing, random_erasing=config.random_erasing,
            random_erasing_mode=config.random_erasing_mode,
            random_erasing_box=config.random_erasing_box, mixup_alpha=config.mixup_alpha,
            cutmix_alpha=config.cutmix_alpha, mix_switch_prob=config.mix_switch_prob,
            mix_group_size=config.mix_group_size or config.bn_group_size, seed=config.seed),
        forward=ForwardOptions(
            loss=config.loss, bce_target_threshold=config.bce_target_threshold,
            freeze_batch_stats=config.freeze_batch_stats,
            dropout_seed=config.seed + 1 if models.uses_dropout_rng(config) else None,
            grad_accum_steps=config.grad_accum_steps),
        update=UpdateOptions(
            drop_nonfinite=nonfinite_policy(config) == 'skip', ema_decay=config.ema_decay,
            ema_every_steps=config.ema_every_steps, ema_copy_steps=ema_copy_steps))
