"""ResNet family in Flax Linen: ImageNet v1.5, CIFAR (He et al. 2015 §4.2), pre-activation.

Every model takes NHWC images and returns float32 logits. BatchNorm statistics live
in the `batch_stats` collection; parameters and statistics are float32 whatever the
compute `dtype`. Convolutions pad like torchvision (k // 2 on each side), so weights
converted from PyTorch see the same pixels.
"""

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax import block_stack
from resnet_jax import conv as conv_lib
from resnet_jax.blocks import BasicBlock, BottleneckBlock, Conv
from resnet_jax.norm import GroupBatchNorm

if TYPE_CHECKING:
  import ml_collections

ModuleDef = Any


class ResNet(nn.Module):
  """A residual network; the variant table below fixes its shape.

  Attributes:
    stage_sizes: blocks per stage.
    block_cls: BasicBlock or BottleneckBlock.
    num_classes: width of the classifier.
    stem: 'imagenet' (7×7/2 conv + 3×3/2 max pool) or 'cifar' (3×3/1 conv).
    stage_filters: filters of each stage's blocks (before expansion).
    preact: pre-activation blocks (He et al. 2016) with a final BN-ReLU.
    shortcut: 'projection' (1×1 conv + BN) or 'zero_pad' (option A).
    zero_init_residual: zero-init the last BN scale (last conv if preact) of each branch.
    bn_momentum: running-average decay of BatchNorm statistics.
    bn_epsilon: BatchNorm epsilon.
    bn_group_size: 0: BatchNorm statistics over the whole (global) batch; N: over
      independent groups of N examples, whatever the device count.
    dtype: compute dtype; parameters and statistics stay float32.
    conv_impl: conv.CONV_IMPLS: whether 1×1, strided 3×3 and small-map convolutions
      and the max pool's gradient take conv.py's dot forms ('auto': on CPU, where
      XLA's own are slow); the same parameters either way.
    scan_blocks: run each stage's identical blocks as one nn.scan (faster compiles of
      deep nets; variables get a leading block axis, see block_stack). XLA:CPU runs
      the scanned loop 6–17× slower per step: meant for GPU and TPU.
    remat: recompute each block's activations in the backward pass instead of keeping
      them (less memory, more compute).
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
  conv_impl: str = 'auto'
  scan_blocks: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    use_dot = conv_lib.use_dot(self.conv_impl)
    conv = functools.partial(Conv, dtype=self.dtype, dot_pointwise=use_dot)
    norm_cls = (functools.partial(GroupBatchNorm, group_size=self.bn_group_size)
                if self.bn_group_size else nn.BatchNorm)
    norm = functools.partial(norm_cls, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                             dtype=self.dtype)
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.stage_filters[0], (7, 7), 2, name='stem_conv')(x)
      if not self.preact:
        x = nn.relu(norm(name='stem_bn')(x))
      if use_dot:
        x = conv_lib.max_pool(x, 3, 2, 1)
      else:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.stage_filters[0], (3, 3), name='stem_conv')(x)
      if not self.preact:
        x = nn.relu(norm(name='stem_bn')(x))
    block_cls = nn.remat(self.block_cls) if self.remat else self.block_cls
    for stage, (num_blocks, filters) in enumerate(zip(self.stage_sizes, self.stage_filters),
                                                  start=1):
      block = functools.partial(block_cls, filters=filters, conv=conv, norm=norm,
                                preact=self.preact, shortcut=self.shortcut,
                                zero_init_residual=self.zero_init_residual)
      x = block(strides=2 if stage > 1 else 1, name=f'stage{stage}_block1')(x)
      if self.scan_blocks and num_blocks > 2:
        x, _ = block_stack.scanned_blocks(functools.partial(block, strides=1),
                                          num_blocks - 1, block_stack.stack_name(stage))(x, None)
        continue
      for index in range(2, num_blocks + 1):
        x = block(strides=1, name=f'stage{stage}_block{index}')(x)
    if self.preact:
      x = nn.relu(norm(name='final_bn')(x))
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='head')(x)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the variant table: the arguments that fix a model's shape."""
  stage_sizes: tuple[int, ...]
  block_cls: ModuleDef
  stem: str
  stage_filters: tuple[int, ...]
  shortcut: str


def _imagenet(stage_sizes, block_cls) -> Variant:
  return Variant(stage_sizes, block_cls, 'imagenet', (64, 128, 256, 512), 'projection')


def _cifar(depth: int) -> Variant:
  n = (depth - 2) // 6
  return Variant((n, n, n), BasicBlock, 'cifar', (16, 32, 64), 'zero_pad')


_BASE_VARIANTS = {
    'resnet18': _imagenet((2, 2, 2, 2), BasicBlock),
    'resnet34': _imagenet((3, 4, 6, 3), BasicBlock),
    'resnet50': _imagenet((3, 4, 6, 3), BottleneckBlock),
    'resnet101': _imagenet((3, 4, 23, 3), BottleneckBlock),
    'resnet152': _imagenet((3, 8, 36, 3), BottleneckBlock),
    'resnet200': _imagenet((3, 24, 36, 3), BottleneckBlock),
    'resnet20': _cifar(20),
    'resnet32': _cifar(32),
    'resnet44': _cifar(44),
    'resnet56': _cifar(56),
    'resnet110': _cifar(110),
}

VARIANTS: dict[str, tuple[Variant, bool]] = {
    **{name: (variant, False) for name, variant in _BASE_VARIANTS.items()},
    **{f'preact_{name}': (variant, True) for name, variant in _BASE_VARIANTS.items()},
}
"""Model name → (shape, pre-activation)."""


def check_model_name(name: str) -> None:
  """Raises ValueError naming `name` and the valid choices if it is not a model."""
  if name not in VARIANTS:
    raise ValueError(f'unknown model {name!r}; valid models: {", ".join(VARIANTS)}')


# Smallest input side that leaves the last stage at least 1×1 after all downsampling.
_MIN_IMAGE_SIZE = {'imagenet': 32, 'cifar': 8}


def check_image_size(name: str, image_size: int) -> None:
  """Raises ValueError if `image_size` is too small for model `name`."""
  check_model_name(name)
  minimum = _MIN_IMAGE_SIZE[VARIANTS[name][0].stem]
  if image_size < minimum:
    raise ValueError(f'dataset.image_size {image_size} is too small for {name}: it needs at '
                     f'least {minimum} pixels (its stages downsample {minimum}×)')


DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def compute_dtype(dtype: Any) -> Any:
  """A jnp dtype from a name in DTYPES (or a dtype); ValueError naming the valid ones."""
  if not isinstance(dtype, str):
    return dtype
  if dtype not in DTYPES:
    raise ValueError(f'unknown dtype {dtype!r}; valid dtypes: {", ".join(DTYPES)}')
  return DTYPES[dtype]


def create_model(name: str, *, num_classes: int, dtype: Any = jnp.float32,
                 **overrides: Any) -> ResNet:
  """Builds a registered model.

  Args:
    name: a key of VARIANTS, e.g. 'resnet50', 'resnet20', 'preact_resnet18'.
    num_classes: classifier width.
    dtype: compute dtype, a jnp dtype or one of 'float32', 'bfloat16', 'float16'.
    **overrides: other ResNet attributes (zero_init_residual, bn_momentum, ...).

  Returns:
    An unbound ResNet module.
  """
  check_model_name(name)
  dtype = compute_dtype(dtype)
  variant, preact = VARIANTS[name]
  fields = dataclasses.asdict(variant) | {'preact': preact}
  fields['block_cls'] = variant.block_cls  # asdict must not copy the class
  return ResNet(num_classes=num_classes, dtype=dtype, **(fields | overrides))


def model_from_config(config: 'ml_collections.ConfigDict', num_classes: int) -> ResNet:
  """The model a config (configs/default.py keys) describes."""
  return create_model(
      config.model, num_classes=num_classes, dtype=config.dtype,
      zero_init_residual=config.zero_init_residual, bn_momentum=config.bn_momentum,
      bn_epsilon=config.bn_epsilon, bn_group_size=config.bn_group_size,
      conv_impl=config.conv_impl, scan_blocks=config.scan_blocks, remat=config.remat)
