"""The ResNet family: the variant table, `create_model` and `model_from_config`.

Names: resnetN (He et al. 2015: ImageNet 18-200; CIFAR basic 20-110 and 1202; CIFAR
bottleneck 164 and 1001 as the Identity Mappings paper's reference code builds them),
preact_resnetN (He et al. 2016, full pre-activation) and plainN (resnetN without its
shortcuts, He et al. 2015's plain baselines).

The network itself is plain Flax (models/resnet.py, blocks.py, norm.py, block_stack.py);
the Identity Mappings ablations' units are in ablations.py, chosen here only when a unit
option asks for one.
`conv_impl` picks its convolution kernels here, through one seam: on the CPU backend,
resnet_jax.cpu.conv's dot forms (same parameters, outputs equal to float rounding).
"""

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from resnet_jax.cpu import conv as cpu_conv
from resnet_jax.errors import check_choice
from resnet_jax.models import ablations, block_stack, blocks
from resnet_jax.models.ablations import UnitAblation
from resnet_jax.models.resnet import ResNet

if TYPE_CHECKING:
  import ml_collections


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the variant table: the arguments that fix a model's shape."""
  stage_sizes: tuple[int, ...]
  block: str  # 'basic' or 'bottleneck'
  stem: str
  stage_filters: tuple[int, ...]
  shortcut: str
  stride_in_1x1: bool = False
  shortcut_variant: str = 'identity'  # 'none': a plain net


def _imagenet(stage_sizes, block) -> Variant:
  return Variant(stage_sizes, block, 'imagenet', (64, 128, 256, 512), 'projection')


def _cifar(depth: int) -> Variant:
  n = (depth - 2) // 6
  return Variant((n, n, n), 'basic', 'cifar', (16, 32, 64), 'zero_pad')


def _cifar_bottleneck(depth: int) -> Variant:
  """resnet-1k-layers' resnet-pre-act.lua: depth 9n + 2, widths 16 → 64/128/256, 1×1
  projections where the shape changes, the stride in the first 1×1 conv."""
  n = (depth - 2) // 9
  return Variant((n, n, n), 'bottleneck', 'cifar', (16, 32, 64), 'projection',
                 stride_in_1x1=True)


_BASE_VARIANTS = {
    'resnet18': _imagenet((2, 2, 2, 2), 'basic'),
    'resnet34': _imagenet((3, 4, 6, 3), 'basic'),
    'resnet50': _imagenet((3, 4, 6, 3), 'bottleneck'),
    'resnet101': _imagenet((3, 4, 23, 3), 'bottleneck'),
    'resnet152': _imagenet((3, 8, 36, 3), 'bottleneck'),
    'resnet200': _imagenet((3, 24, 36, 3), 'bottleneck'),
    'resnet8': _cifar(8),
    'resnet20': _cifar(20),
    'resnet32': _cifar(32),
    'resnet44': _cifar(44),
    'resnet56': _cifar(56),
    'resnet110': _cifar(110),
    'resnet1202': _cifar(1202),
    'resnet164': _cifar_bottleneck(164),
    'resnet1001': _cifar_bottleneck(1001),
}

VARIANTS: dict[str, tuple[Variant, bool]] = {
    **{name: (variant, False) for name, variant in _BASE_VARIANTS.items()},
    **{f'preact_{name}': (variant, True) for name, variant in _BASE_VARIANTS.items()},
    **{name.replace('resnet', 'plain'): (dataclasses.replace(variant, shortcut_variant='none'),
                                         False)
       for name, variant in _BASE_VARIANTS.items()},
}
"""Model name → (shape, pre-activation)."""

# The ablation options of the residual units (blocks.py) and the regularisers drop path
# and BlurPool, with their defaults.
UNIT_OPTIONS = {'shortcut': 'auto', 'placement': 'auto', 'shortcut_variant': 'identity',
                'shortcut_scale': 0.5, 'residual_scale': 1.0, 'gate_bias_init': -6.0,
                'shortcut_dropout': 0.5, 'drop_path_rate': 0.0, 'blurpool': False}
_VARIANT_OPTIONS = {'scaling': ('shortcut_scale', 'residual_scale'),
                    'exclusive_gating': ('gate_bias_init',),
                    'shortcut_gating': ('gate_bias_init',), 'dropout': ('shortcut_dropout',)}


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


REMAT_POLICIES = tuple(blocks.REMAT_POLICIES)  # what remat keeps: see create_model

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def compute_dtype(dtype: Any) -> Any:
  """A jnp dtype from a name in DTYPES (or a dtype); ValueError naming the valid ones."""
  if not isinstance(dtype, str):
    return dtype
  check_choice('dtype', dtype, DTYPES, choices_name='dtypes')
  return DTYPES[dtype]


def unit_options(config: 'ml_collections.ConfigDict') -> dict[str, Any]:
  """The config's unit options that differ from the model's own: {} for today's models.

  Only the scales of the chosen shortcut_variant are kept, so a model's recorded
  architecture (storage.trained.ModelInfo) names what it uses and nothing else;
  drop_path_rate and blurpool appear when they are on.
  """
  options = {key: config[key] for key in ('shortcut', 'placement', 'drop_path_rate', 'blurpool')
             if config[key] != UNIT_OPTIONS[key]}
  variant = config.shortcut_variant
  if variant != UNIT_OPTIONS['shortcut_variant']:
    options['shortcut_variant'] = variant
    options |= {key: config[key] for key in _VARIANT_OPTIONS.get(variant, ())}
  return options


def check_unit_options(name: str, options: dict[str, Any]) -> None:
  """Raises ValueError naming a bad or contradictory unit option of model `name`."""
  check_model_name(name)
  variant, preact = VARIANTS[name]
  if 'shortcut' in options:
    check_choice('shortcut', options['shortcut'], ('auto', *blocks.SHORTCUTS))
  if 'placement' in options:
    check_choice('placement', options['placement'], ('auto', *ablations.PLACEMENTS))
    if preact and options['placement'] not in ('auto', 'full_preact'):
      raise ValueError(f'placement {options["placement"]!r} contradicts model {name!r} '
                       '(full pre-activation): use ' + repr(name.removeprefix('preact_')))
  if 'shortcut_variant' in options:
    choices = [v for v in ablations.SHORTCUT_VARIANTS if v != 'none']  # plainN names those
    check_choice('shortcut_variant', options['shortcut_variant'], choices)
    if variant.shortcut_variant == 'none':
      raise ValueError(f'shortcut_variant {options["shortcut_variant"]!r}: model {name!r} '
                       'is plain (no shortcuts); use ' + repr(name.replace('plain', 'resnet')))
  if not 0 <= options.get('shortcut_dropout', 0) < 1:
    raise ValueError(f'shortcut_dropout {options["shortcut_dropout"]} must be in [0, 1)')
  rate = options.get('drop_path_rate', 0)
  if not 0 <= rate < 1:
    raise ValueError(f'drop_path_rate {rate} must be in [0, 1)')
  if rate and variant.shortcut_variant == 'none':
    raise ValueError(f'drop_path_rate {rate}: model {name!r} is plain (no residual branch '
                     'to drop); use ' + repr(name.replace('plain', 'resnet')))


def uses_dropout_rng(config: 'ml_collections.ConfigDict') -> bool:
  """Whether the config's model draws from the 'dropout' RNG stream in training (the
  dropout shortcut variant, drop path): the train step must then pass rngs={'dropout': ...}."""
  options = unit_options(config)
  return options.get('shortcut_variant') == 'dropout' or options.get('drop_path_rate', 0) > 0


def create_model(name: str, *, num_classes: int, dtype: Any = jnp.float32,
                 conv_impl: str = 'auto', **overrides: Any) -> ResNet:
  """Builds a registered model.

  Args:
    name: a key of VARIANTS, e.g. 'resnet50', 'resnet20', 'preact_resnet18'.
    num_classes: classifier width.
    dtype: compute dtype, a jnp dtype or one of 'float32', 'bfloat16', 'float16'.
    conv_impl: cpu.conv.CONV_IMPLS: 'auto' (the dot forms on the CPU backend, where
      XLA's own convolutions are slow; XLA's elsewhere), 'xla' or 'dot'.
    **overrides: other ResNet attributes (zero_init_residual, bn_momentum, scan_blocks,
      remat, remat_policy, the unit options of UNIT_OPTIONS, ...); 'auto' for shortcut
      or placement: the model's own. remat_policy (REMAT_POLICIES) says what `remat`
      keeps: 'full' (default) only each unit's input, 'conv_outputs' its convolution
      outputs too (the backward recomputes no convolution). It takes effect only with
      remat=True; scan_blocks without remat uses 'conv_outputs' inside the scan.

  Returns:
    An unbound ResNet module.
  """
  check_unit_options(name, overrides)
  if 'remat_policy' in overrides:
    check_choice('remat_policy', overrides['remat_policy'], REMAT_POLICIES)
  dtype = compute_dtype(dtype)
  variant, preact = VARIANTS[name]
  overrides = {key: value for key, value in overrides.items()
               if not (key in ('shortcut', 'placement') and value == 'auto')}
  preact = overrides.pop('preact', preact) or overrides.get('placement') == 'full_preact'
  ablation = UnitAblation(**{
      'shortcut_variant': variant.shortcut_variant,
      'placement': 'full_preact' if preact else 'original',
      **{f.name: overrides.pop(f.name) for f in dataclasses.fields(UnitAblation)
         if f.name in overrides}})
  if ablations.is_production(ablation):
    block_cls, ablation = blocks.UNITS[variant.block, preact], None
  else:
    block_cls = ablations.UNITS[variant.block]
  fields = {'stage_sizes': variant.stage_sizes, 'stem': variant.stem,
            'stage_filters': variant.stage_filters, 'shortcut': variant.shortcut,
            'stride_in_1x1': variant.stride_in_1x1}
  kernels = cpu_conv.model_kernels(conv_impl)
  return ResNet(num_classes=num_classes, dtype=dtype, block_cls=block_cls, preact=preact,
                ablation=ablation, **(fields | kernels | overrides))


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
      conv_impl=config.conv_impl, scan_blocks=config.scan_blocks, remat=config.remat,
      remat_policy=config.remat_policy, **unit_options(config))
