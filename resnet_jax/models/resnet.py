"""The ResNet family's network in Flax Linen: ImageNet v1.5, CIFAR (He et al. 2015 §4.2),
pre-activation (He et al. 2016).

It takes NHWC images and returns float32 logits. BatchNorm statistics live in the
`batch_stats` collection; parameters and statistics are float32 whatever the compute
`dtype`. Convolutions pad like torchvision (k // 2 on each side), so weights converted
from PyTorch see the same pixels. The variant table and `create_model` are in
`resnet_jax.models`.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_jax.models import block_stack, blocks
from resnet_jax.models.ablations import UnitAblation
from resnet_jax.models.blocks import Conv
from resnet_jax.models.norm import GroupBatchNorm

ModuleDef = Any


def drop_path_rates(stage_sizes: Sequence[int], drop_path_rate: float) -> tuple[float, ...]:
  """Each residual unit's stochastic-depth rate, in order over all stages: timm's linear
  rule, drop_path_rate × i / (units − 1) for the i-th unit (0-based)."""
  units = sum(stage_sizes)
  return tuple(drop_path_rate * index / max(units - 1, 1) for index in range(units))


class ResNet(nn.Module):
  """A residual network; the variant table below fixes its shape.

  Attributes:
    stage_sizes: blocks per stage.
    block_cls: the unit: a production unit of blocks.UNITS (BasicBlock,
      BottleneckBlock, their PreAct forms) or, with `ablation`, one of ablations.UNITS.
    num_classes: width of the classifier.
    stem: 'imagenet' (7×7/2 conv + 3×3/2 max pool) or 'cifar' (3×3/1 conv).
    stage_filters: filters of each stage's blocks (before expansion).
    preact: pre-activation blocks (He et al. 2016) with a final BN-ReLU.
    shortcut: of the units that change shape: 'projection' (1×1 conv + BN, option B),
      'zero_pad' (option A), 'projection_all' (option C: projections on every unit).
    zero_init_residual: zero-init the last BN scale (last conv if no BN follows it) of
      each branch; a plain net (shortcut_variant 'none') has no residual branch to start
      at zero, so there it does nothing.
    ablation: the Identity Mappings paper's unit ablation (ablations.UnitAblation) the
      units run, None for the production units; its placement also shapes the stem and
      the head (relu_preact: a final ReLU; full_preact is `preact`).
    stride_in_1x1: bottleneck units stride in their first 1×1 conv (the CIFAR bottleneck
      nets' reference code), not in the 3×3 (v1.5).
    bn_momentum: running-average decay of BatchNorm statistics.
    bn_epsilon: BatchNorm epsilon.
    bn_group_size: 0: BatchNorm statistics over the whole (global) batch; N: over
      independent groups of N examples, whatever the device count.
    dtype: compute dtype; parameters and statistics stay float32.
    conv_general_dilated: the convolution flax.linen.Conv runs (None: lax's); with
      `max_pool`, the seam through which create_model swaps in other kernels for the
      same parameters.
    max_pool: the stem's pooling, with flax.linen.max_pool's signature.
    scan_blocks: run each stage's identical blocks as one nn.scan (faster compiles of
      deep nets; variables get a leading block axis, see block_stack; initialise with
      models.init_variables for the unscanned model's weights). XLA:CPU runs
      the scanned loop 6–17× slower per step: meant for GPU and TPU. Without `remat`,
      the scanned units are rematerialised under the 'conv_outputs' policy anyway:
      a scan stores every value its backward reads, which XLA cannot fuse away as it
      does in the unrolled net (docs/models.md, "Memory options").
    remat: recompute each block's activations in the backward pass instead of keeping
      them (less memory, more compute), under `remat_policy`.
    remat_policy: what remat keeps (blocks.REMAT_POLICIES): 'full', only each unit's
      input; 'conv_outputs', its convolutions' outputs too, so the backward recomputes
      BN, ReLU and additions but no convolution. Ignored without `remat`.
    drop_path_rate: stochastic depth (timm's ResNet): in training, unit i's residual
      branch is dropped per example with rate drop_path_rates(...)[i] and kept ones are
      scaled by 1 / (1 − rate); needs the 'dropout' RNG. 0: off.
    blurpool: FFCV's blur before every strided conv with >= 16 input channels
      (blocks.Conv); no parameters of its own.
  """
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int
  stem: str = 'imagenet'
  stage_filters: Sequence[int] = (64, 128, 256, 512)
  preact: bool = False
  shortcut: str = 'projection'
  zero_init_residual: bool = True
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_group_size: int = 0
  dtype: Any = jnp.float32
  conv_general_dilated: Callable | None = None
  max_pool: Callable = nn.max_pool
  scan_blocks: bool = False
  remat: bool = False
  remat_policy: str = 'full'
  ablation: UnitAblation | None = None
  stride_in_1x1: bool = False
  drop_path_rate: float = 0.0
  blurpool: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True, *,
               use_running_average: bool | None = None) -> jnp.ndarray:
    """Logits of images `x`.

    Args:
      x: [B, H, W, C] images, normalised.
      train: training mode: stochastic depth and shortcut dropout act (they need the
        'dropout' RNG) and, by default, BatchNorm uses the batch's statistics.
      use_running_average: BatchNorm's mode on its own (None: `not train`): True with
        train=True normalises with the running statistics while the regularisers still
        act (fine-tuning with frozen statistics).
    """
    if use_running_average is None:
      use_running_average = not train
    conv = functools.partial(Conv, dtype=self.dtype,
                             conv_general_dilated=self.conv_general_dilated,
                             blurpool=self.blurpool)
    norm_cls = (functools.partial(GroupBatchNorm, group_size=self.bn_group_size)
                if self.bn_group_size else nn.BatchNorm)
    norm = functools.partial(norm_cls, use_running_average=use_running_average,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                             dtype=self.dtype)
    placement = ('full_preact' if self.preact
                 else self.ablation.placement if self.ablation else 'original')
    x = x.astype(self.dtype)
    imagenet_stem = self.stem == 'imagenet'
    x = conv(self.stage_filters[0], (7, 7) if imagenet_stem else (3, 3), 2 if imagenet_stem else 1,
             name='stem_conv')(x)
    if placement != 'full_preact':
      x = norm(name='stem_bn')(x)
      if placement != 'relu_preact':  # there, each unit starts with its ReLU
        x = nn.relu(x)
    if imagenet_stem:
      x = self.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block_cls = blocks.remat(self.block_cls, self.remat_policy) if self.remat else self.block_cls
    # A scan saves each residual its backward reads as a [units, ...] array: without
    # remat, keep the convolution outputs only, as XLA's fusions do in the unrolled net.
    scanned_cls = blocks.remat(self.block_cls, self.remat_policy if self.remat else 'conv_outputs',
                               prevent_cse=False)
    rates = drop_path_rates(self.stage_sizes, self.drop_path_rate)
    # One key per unit, drawn here: scanned and unrolled stages drop the same examples.
    keys = (jax.random.split(self.make_rng('dropout'), len(rates))
            if train and self.drop_path_rate > 0 else None)
    unit_fields = {'conv': conv, 'norm': norm, 'shortcut': self.shortcut,
                   'zero_init_residual': self.zero_init_residual, 'deterministic': not train}
    if self.stride_in_1x1:
      unit_fields['stride_in_1x1'] = True
    if self.ablation is not None:
      unit_fields['ablation'] = self.ablation
    unit = 0
    for stage, (num_blocks, filters) in enumerate(zip(self.stage_sizes, self.stage_filters),
                                                  start=1):
      block = functools.partial(block_cls, filters=filters, **unit_fields)
      x = block(strides=2 if stage > 1 else 1, drop_path_rate=rates[unit],
                name=f'stage{stage}_block1')(x, *_key(keys, unit))
      unit += 1
      if self.scan_blocks and num_blocks > 2:
        stop = unit + num_blocks - 1
        units = None if keys is None else (jnp.asarray(rates[unit:stop], jnp.float32),
                                           keys[unit:stop])
        x, _ = block_stack.scanned_blocks(
            functools.partial(scanned_cls, filters=filters, strides=1, **unit_fields),
            num_blocks - 1,
            block_stack.stack_name(stage))(x, units)
        unit = stop
        continue
      for index in range(2, num_blocks + 1):
        x = block(strides=1, drop_path_rate=rates[unit],
                  name=f'stage{stage}_block{index}')(x, *_key(keys, unit))
        unit += 1
    if placement == 'full_preact':
      x = nn.relu(norm(name='final_bn')(x))
    elif placement == 'relu_preact':
      x = nn.relu(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='head')(x)


def _key(keys: jax.Array | None, unit: int) -> tuple[jax.Array, ...]:
  """The call arguments that give unit `unit` its drop key: none without drop path."""
  return () if keys is None else (keys[unit],)
