"""Filter-normalised random directions in parameter space (Li et al. 2018, §4).

A direction d has the parameters' shapes, drawn from N(0, 1). Each *filter* of d is then
scaled to the norm of the same filter of the weights θ: d_f ← d_f / ‖d_f‖ · ‖θ_f‖, so a
step of size 1 along d moves every filter by its own size and the plot does not depend
on the scale invariance that BN gives each filter. A filter is one output channel: of a
convolution kernel [h, w, in, out], the slice [..., o]; of a dense kernel [in, out], the
column [:, o] (one output neuron, the paper's treatment of FC layers).

BN's scale and offset and biases (the one-dimensional parameters) get a zero direction:
they stay at their trained values, the `--xignore biasbn` setting with which Li et al.'s
code (github.com/tomgoldstein/loss-landscape, net_plotter.py) draws the paper's
ResNet-56 figures. BN's running statistics are not parameters and are not moved either.
"""

from typing import Any

import jax
import jax.numpy as jnp

Params = Any


def filter_norms(array: jax.Array) -> jax.Array:
  """The L2 norm of each filter (output channel, the last axis) of a kernel."""
  return jnp.sqrt(jnp.sum(jnp.square(array), axis=tuple(range(array.ndim - 1))))


def filter_normalized(direction: Params, params: Params) -> Params:
  """`direction` with each filter scaled to the norm of `params`' filter, and 1-D
  entries (BN, biases) set to zero."""

  def normalise(d: jax.Array, w: jax.Array) -> jax.Array:
    if w.ndim <= 1:
      return jnp.zeros_like(w)
    # 1e-10 as the reference code: an all-zero filter of d stays finite.
    return d * (filter_norms(w) / (filter_norms(d) + 1e-10))

  return jax.tree.map(normalise, direction, params)


def random_direction(params: Params, key: jax.Array) -> Params:
  """A filter-normalised direction drawn from N(0, 1) with `key`."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  drawn = [jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
  return filter_normalized(jax.tree.unflatten(treedef, drawn), params)


def moved(params: Params, steps: tuple[tuple[jax.Array, Params], ...]) -> Params:
  """θ + Σ α_i d_i for steps ((α_1, d_1), (α_2, d_2), ...)."""
  def add(w: jax.Array, *ds: jax.Array) -> jax.Array:
    return w + sum(alpha * d for (alpha, _), d in zip(steps, ds))

  return jax.tree.map(add, params, *(d for _, d in steps))
