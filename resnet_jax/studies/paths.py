"""Residual units as paths (Veit et al. 2016, "Residual Networks Behave Like Ensembles of
Relatively Shallow Networks", arXiv:1605.06431): deleting units, counting and sampling
paths.

A net of n residual units unrolls into 2^n paths from input to output; a path of length
k passes through k branches and n − k shortcuts, and C(n, k) paths have length k. A
model under `with_path_hooks` reads per-unit scalars from the PATHS collection: `keep` 0
deletes a unit's branch (the shortcut stays; a plain unit becomes the identity),
`backprop_branch` routes the backward pass through the branch (1) or the shortcut (0)
without changing the forward values, which samples one path of the backward pass as the
paper does for its Fig. 6. Without those variables the hooked model is the model.
"""

import math
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from resnet_jax import models, steps
from resnet_jax.models.blocks import PATHS, ResidualUnit

_UNIT = re.compile(r'^stage(\d+)_block(\d+)$')


class PathHooks:
  """Mixed into a unit class (with_path_hooks): the PATHS collection's scalars act on
  the unit's addition (`combine`) or, in a plain unit, on its output (`plain_output`)."""

  def _path_variable(self, name: str) -> jax.Array | None:
    """This unit's entry `name` of the PATHS collection, None where it is absent."""
    return self.get_variable(PATHS, name) if self.has_variable(PATHS, name) else None

  def combine(self, branch: jnp.ndarray, shortcut: jnp.ndarray) -> jnp.ndarray:
    """branch + shortcut: `keep` multiplies the branch term (0 deletes it, Veit et al.'s
    lesion); `backprop_branch` (0 or 1) routes the backward pass through the branch only
    (1) or the shortcut only (0), leaving the forward values alone."""
    keep = self._path_variable('keep')
    if keep is not None:
      branch = branch * keep.astype(branch.dtype)
    route = self._path_variable('backprop_branch')
    if route is not None:
      branch = _gradient_scaled(branch, route)
      shortcut = _gradient_scaled(shortcut, 1 - route)
    return super().combine(branch, shortcut)

  def plain_output(self, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """A plain unit with `keep`: keep × unit(x) + (1 − keep) × x, so 0 replaces the
    unit by the identity (possible only where the unit keeps the shape)."""
    keep = self._path_variable('keep')
    if keep is None:
      return y
    if x.shape != y.shape:
      raise ValueError(f'{self.name} changes the shape {x.shape} -> {y.shape}: a plain unit '
                       'can be replaced by the identity only where it keeps the shape')
    keep = keep.astype(y.dtype)
    return keep * y + (1 - keep) * x


_HOOKED: dict[type, type] = {}


def with_path_hooks(model: models.ResNet) -> models.ResNet:
  """`model` with units that read the PATHS collection (PathHooks); same variables."""
  unit = model.block_cls
  if unit not in _HOOKED:
    _HOOKED[unit] = type(f'Path{unit.__name__}', (PathHooks, unit), {})
  return model.clone(block_cls=_HOOKED[unit])


def _gradient_scaled(x: jnp.ndarray, scale: jax.Array) -> jnp.ndarray:
  """x in the forward pass; its gradient times `scale` in the backward pass."""
  frozen = jax.lax.stop_gradient(x)
  return frozen + scale.astype(x.dtype) * (x - frozen)


def unit_names(params: dict[str, Any]) -> list[str]:
  """The residual units of an unscanned net's parameters, input to output."""
  units = [(int(m.group(1)), int(m.group(2)), name) for name in params
           if (m := _UNIT.match(name))]
  return [name for *_, name in sorted(units)]


def reshaping_units(model: nn.Module, variables: Any, image_shape: Sequence[int]) -> set[str]:
  """The units whose output shape differs from their input's (the downsampling units)."""
  shapes = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, ResidualUnit) and context.method_name == '__call__':
      shapes[context.module.name] = (args[0].shape, out.shape)
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *image_shape)), train=False),
                   variables)
  return {name for name, (before, after) in shapes.items() if before != after}


def with_paths(variables: Any, names: Sequence[str], values: jax.Array,
               field: str = 'keep') -> Any:
  """`variables` with PATHS[name][field] = values[i] for the i-th of `names`."""
  return variables | {PATHS: {name: {field: values[i]} for i, name in enumerate(names)}}


def path_length_counts(units: int) -> list[int]:
  """How many of the 2^units paths have length k = 0..units: C(units, k)."""
  return [math.comb(units, k) for k in range(units + 1)]


def random_subsets(candidates: Sequence[str], size: int, draws: int,
                   rng: np.random.Generator) -> list[list[str]]:
  """`draws` subsets of `size` distinct candidates (fewer where fewer exist)."""
  if size in (0, len(candidates)):
    return [list(candidates)[:size]]
  return [sorted(rng.choice(candidates, size, replace=False).tolist(),
                 key=list(candidates).index) for _ in range(draws)]


def input_gradient(model: nn.Module, variables: Any, images: jax.Array, labels: jax.Array,
                   route: jax.Array | None = None) -> jax.Array:
  """The gradient of the summed cross-entropy with respect to the first unit's input,
  the backward pass routed through unit i's branch where route[i] is 1 and its shortcut
  where 0 (units in unit_names order; None: through both, the whole gradient). Summed
  over all 2^n routes, it is the whole gradient: the backward pass is linear in what
  flows back, so it splits into paths."""
  names = unit_names(variables['params'])
  first = names[0]

  def is_first(context: Any) -> bool:
    return (isinstance(context.module, ResidualUnit) and context.module.name == first
            and context.method_name == '__call__')

  def loss(delta: jax.Array) -> jax.Array:
    def add_delta(next_fun, args, kwargs, context):
      if is_first(context):
        args = (args[0] + delta, *args[1:])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(add_delta):
      routed = (variables if route is None
                else with_paths(variables, names, route, 'backprop_branch'))
      logits = model.apply(routed, images, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()

  seen = []

  def record(next_fun, args, kwargs, context):
    if is_first(context):
      seen.append(jax.ShapeDtypeStruct(args[0].shape, args[0].dtype))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  return jax.grad(loss)(jnp.zeros(seen[0].shape, seen[0].dtype))


def gradient_by_path_length(net: Any, images: np.ndarray, labels: np.ndarray, draws: int,
                            seed: int) -> list[list[float]]:
  """Veit et al.'s Fig. 6b, per draw: for each length k = 0..n, `draws` measurements, each
  the mean per-example norm of the loss gradient that reaches the first unit's input when
  the backward pass runs through the branches of k random units and the shortcuts of the
  others (forward pass unchanged: the whole net), each on its own batch (the examples split
  into `draws` batches; the paper: random batches). `path_gradient_summary` reduces them."""
  model, info = net.model, net.restored.info
  names = unit_names(net.restored.variables['params'])
  size = len(labels) // draws
  batches = []
  for j in range(draws):
    part = slice(j * size, (j + 1) * size)
    batches.append((steps.normalize_images(jnp.asarray(images[part]), info.mean, info.std),
                    jnp.asarray(labels[part])))

  @jax.jit
  def mean_norm(variables: Any, batch_images: jax.Array, batch_labels: jax.Array,
                route: jax.Array) -> jax.Array:
    grads = input_gradient(model, variables, batch_images, batch_labels, route)
    return jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3))).mean()

  rng = np.random.default_rng(seed)
  magnitudes = []
  for k in range(len(names) + 1):
    subsets = random_subsets(names, k, draws, rng)
    subsets = subsets * draws if len(subsets) == 1 else subsets  # k = 0, n: one path
    norms = []
    for subset, batch in zip(subsets, batches):
      route = jnp.asarray([1.0 if name in subset else 0.0 for name in names], jnp.float32)
      norms.append(float(mean_norm(net.restored.variables, *batch, route)))
    magnitudes.append(norms)
  return magnitudes


def path_gradient_summary(norms: Sequence[Sequence[float]], counts: Sequence[int], *,
                          resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
  """The curve of gradient_by_path_length's measurements and how stable it is.

  Returns:
    'gradient' (mean per length), 'gradient_p10' / 'gradient_p90' (the measurements'
    10th / 90th percentiles), 'total_gradient' (mean × paths of that length), and
    'peak_share': per length, the share of `resamples` bootstrap resamples of the draws
    (each length's measurements resampled with replacement) whose total gradient peaks
    there. A stable curve puts most of it on one or two lengths.
  """
  table = np.asarray(norms, dtype=float)  # [lengths, draws]
  counts = np.asarray(counts, dtype=float)
  rng = np.random.default_rng(seed)
  picks = rng.integers(0, table.shape[1], (resamples, *table.shape))
  resampled = np.take_along_axis(table[None], picks, axis=2).mean(axis=2)  # [resamples, lengths]
  peaks = np.argmax(resampled * counts, axis=1)
  mean = table.mean(axis=1)
  return {'gradient': mean.tolist(),
          'gradient_p10': np.percentile(table, 10, axis=1).tolist(),
          'gradient_p90': np.percentile(table, 90, axis=1).tolist(),
          'total_gradient': (mean * counts).tolist(),
          'peak_share': (np.bincount(peaks, minlength=len(counts)) / resamples).tolist()}
