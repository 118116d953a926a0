"""Parameters and multiply-accumulates (MACs) per image of the registered models.

  python -m resnet_jax.tools.summary [--model=resnet50] [--image_size=224] [--num_classes=1000] \
      [--format=text|json]

Without --model: every model in models.VARIANTS. Defaults: 224² and 1000 classes for
ImageNet-stem models, 32² and 10 classes for CIFAR ones. The same as a function:
`summarize(model_name) -> {'model', 'params', 'macs', 'gmacs', 'image_size', 'num_classes'}`.

Nothing is compiled or run. Parameters are the leaves of the 'params' collection
(BatchNorm running statistics are not parameters), shapes from jax.eval_shape. MACs are
counted exactly from the jaxpr of an eval-mode forward pass of one image: every
convolution (output elements × kernel taps × input features per group) and every dot
(output elements × contracted size), which covers the convolutions and the classifier
whichever conv_impl writes them. BatchNorm, ReLU, pooling and residual additions are not
counted, as in torchvision's figures (its weights' `_ops` metadata: ResNet-50 4.09 G at 224²).

XLA's `cost_analysis()` (which the step benchmark uses for FLOP/s) does not do this job:
it counts what the device computes, skipping convolution taps that fall on padding and
adding one FLOP per elementwise op, so it comes to 0.972 × 2 × these MACs for ResNet-50 at
224² and 0.922 × for ResNet-20 at 32² (measured 2026-12-01); papers and torchvision count
every tap.
"""

import json
import math
import sys
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core

from resnet_jax import models


def count_macs(jaxpr: core.Jaxpr) -> int:
  """Multiply-accumulates of every convolution and dot in `jaxpr` and its sub-jaxprs."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape
      _, rhs_spec, _ = eqn.params['dimension_numbers']
      # rhs's input-feature axis already holds input features / feature_group_count.
      taps = math.prod(rhs[axis] for axis in rhs_spec[2:])
      total += math.prod(eqn.outvars[0].aval.shape) * taps * rhs[rhs_spec[1]]
    elif name == 'dot_general':
      (lhs_contracting, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += (math.prod(eqn.outvars[0].aval.shape) *
                math.prod(lhs[axis] for axis in lhs_contracting))
    # Generic recursion (pjit, custom_jvp/vjp, remat, scan, cond, ...): custom rules are
    # callables, not jaxprs, so only the primal computation is counted.
    subcounts = [count_macs(sub) for sub in _subjaxprs(eqn.params)]
    if name == 'cond':
      total += max(subcounts, default=0)  # one branch runs
    elif name == 'scan':
      total += sum(subcounts) * eqn.params['length']
    else:  # while: the body counts once, its trip count is not static
      total += sum(subcounts)
  return total


def _subjaxprs(params: dict[str, Any]) -> list[core.Jaxpr]:
  found = []
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, core.ClosedJaxpr):
        found.append(item.jaxpr)
      elif isinstance(item, core.Jaxpr):
        found.append(item)
  return found


def summarize(model_name: str, *, image_size: int | None = None,
              num_classes: int | None = None, conv_impl: str = 'xla') -> dict[str, Any]:
  """Parameter count and MACs per image of `model_name`; ValueError for bad arguments."""
  models.check_model_name(model_name)
  cifar = models.VARIANTS[model_name][0].stem == 'cifar'
  image_size = (32 if cifar else 224) if image_size is None else image_size
  num_classes = (10 if cifar else 1000) if num_classes is None else num_classes
  models.check_image_size(model_name, image_size)
  if num_classes < 1:
    raise ValueError(f'num_classes must be at least 1, not {num_classes}')
  model = models.create_model(model_name, num_classes=num_classes, conv_impl=conv_impl)
  image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), image)
  params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables['params']))
  forward = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, image)
  macs = count_macs(forward.jaxpr)
  return {'model': model_name, 'image_size': image_size, 'num_classes': num_classes,
          'params': params, 'macs': macs, 'gmacs': round(macs / 1e9, 3)}


def format_table(rows: list[dict[str, Any]]) -> str:
  """An aligned text table of summarize() results."""
  width = max(len('model'), *(len(row['model']) for row in rows))
  lines = [f'{"model":<{width}}  {"image":>5}  {"classes":>7}  {"params":>11}  {"GMACs":>8}']
  lines += [f'{r["model"]:<{width}}  {r["image_size"]:>5}  {r["num_classes"]:>7}  '
            f'{r["params"]:>11,}  {r["macs"] / 1e9:>8.3f}' for r in rows]
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  from absl import flags  # noqa: PLC0415
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  values = flags.FLAGS
  if values.format not in ('text', 'json'):
    sys.exit(f'error: unknown --format {values.format!r}; valid: text, json')
  names = [values.model] if values.model is not None else list(models.VARIANTS)
  try:
    rows = [summarize(name, image_size=values.image_size, num_classes=values.num_classes)
            for name in names]
  except ValueError as error:
    sys.exit(f'error: {error}')
  print(json.dumps(rows, indent=1) if values.format == 'json' else format_table(rows))


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_string('model', None, 'A model name; default: every model in VARIANTS.')
  flags.DEFINE_integer('image_size', None, 'Image side; default 224 (ImageNet), 32 (CIFAR).')
  flags.DEFINE_integer('num_classes', None, 'Classes; default 1000 (ImageNet), 10 (CIFAR).')
  # A string, not an enum: a bad value then gets the one-line error with the valid choices.
  flags.DEFINE_string('format', 'text', 'text (an aligned table) or json.')
  app.run(main)
