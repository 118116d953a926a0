"""The ResNet family: the variant table, `create_model` and `model_from_config`.

The network itself is plain Flax (models/resnet.py, blocks.py, norm.py, block_stack.py).
`conv_impl` picks its convolution kernels here, through one seam: on the CPU backend,
resnet_jax.cpu.conv's dot forms (same parameters, outputs equal to float rounding).
"""

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from resnet_jax.cpu import conv as cpu_conv
from resnet_jax.errors import check_choice
from resnet_jax.models import block_stack
from resnet_jax.models.blocks import BasicBlock, BottleneckBlock
from resnet_jax.models.resnet import ResNet

if TYPE_CHECKING:
  import ml_collections

ModuleDef = Any


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
  check_choice('model', name, VARIANTS, choices_name='models')


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
  check_choice('dtype', dtype, DTYPES, choices_name='dtypes')
  return DTYPES[dtype]


def create_model(name: str, *, num_classes: int, dtype: Any = jnp.float32,
                 conv_impl: str = 'auto', **overrides: Any) -> ResNet:
  """Builds a registered model.

  Args:
    name: a key of VARIANTS, e.g. 'resnet50', 'resnet20', 'preact_resnet18'.
    num_classes: classifier width.
    dtype: compute dtype, a jnp dtype or one of 'float32', 'bfloat16', 'float16'.
    conv_impl: cpu.conv.CONV_IMPLS: 'auto' (the dot forms on the CPU backend, where
      XLA's own convolutions are slow; XLA's elsewhere), 'xla' or 'dot'.
    **overrides: other ResNet attributes (zero_init_residual, bn_momentum, ...).

  Returns:
    An unbound ResNet module.
  """
  check_model_name(name)
  dtype = compute_dtype(dtype)
  variant, preact = VARIANTS[name]
  fields = dataclasses.asdict(variant) | {'preact': preact}
  fields['block_cls'] = variant.block_cls  # asdict must not copy the class
  kernels = cpu_conv.model_kernels(conv_impl)
  return ResNet(num_classes=num_classes, dtype=dtype, **(fields | kernels | overrides))


def init_variables(model: ResNet, rng: jax.Array, images: jax.Array,
                   **kwargs: Any) -> dict[str, Any]:
  """model.init(rng, images, **kwargs), except that a `scan_blocks` model gets exactly the
  variables the same model unscanned draws, in the scanned layout (nn.scan would split
  the RNG its own way): switching scan_blocks on changes nothing but compile time."""
  if not model.scan_blocks:
    return model.init(rng, images, **kwargs)
  variables = model.clone(scan_blocks=False).init(rng, images, **kwargs)
  return {name: block_stack.scan_layout(dict(collection))
          for name, collection in variables.items()}


def model_from_config(config: 'ml_collections.ConfigDict', num_classes: int) -> ResNet:
  """The model a config (configs/default.py keys) describes."""
  return create_model(
      config.model, num_classes=num_classes, dtype=config.dtype,
      zero_init_residual=config.zero_init_residual, bn_momentum=config.bn_momentum,
      bn_epsilon=config.bn_epsilon, bn_group_size=config.bn_group_size,
      conv_impl=config.conv_impl, scan_blocks=config.scan_blocks, remat=config.remat)
