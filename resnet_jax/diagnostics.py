"""Gradient-flow diagnostics of a training step, computed on the device inside that step.

Per block of the network (stem, stage1_block1, ..., final_bn, head): the gradient's L2
norm, the parameters' L2 norm after the update, and the update's norm relative to the
parameters before it. Per 3×3 conv: the standard deviation of its response over the
batch (He et al. 2015, Fig. 7; sown by the model, models/blocks.py). Names are stable
TensorBoard tags:

  diagnostics/grad_norm/<block>        diagnostics/param_norm/<block>
  diagnostics/update_ratio/<block>     diagnostics/response_std/<block>/conv<i>
  diagnostics/grad_norm/total

Blocks of a scanned stage (models.block_stack) get their unscanned names, so a run
reads the same with scan_blocks on or off. `depth_order` sorts block names input first.
"""

import re
from typing import Any

import jax
import jax.numpy as jnp

PREFIX = 'diagnostics'
_STEM = ('stem_conv', 'stem_bn')
_STACK = re.compile(r'^stage(\d+)_blocks$')
_BLOCK = re.compile(r'^stage(\d+)_block(\d+)$')


def _squared_norms(tree: Any) -> dict[str, jnp.ndarray]:
  """Block name → sum of squares of its leaves (float32)."""
  out: dict[str, jnp.ndarray] = {}
  for name, subtree in tree.items():
    leaves = jax.tree.leaves(subtree)
    match = _STACK.match(name)
    if match:  # leading axis: blocks 2..N of the stage
      per_block = sum(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=tuple(range(1, x.ndim)))
                      for x in leaves)
      for index in range(per_block.shape[0]):
        out[f'stage{match.group(1)}_block{index + 2}'] = per_block[index]
      continue
    block = 'stem' if name in _STEM else name
    out[block] = out.get(block, 0.0) + sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                                           for x in leaves)
  return out


def block_norms(tree: Any) -> dict[str, jnp.ndarray]:
  """Block name → L2 norm of that block's leaves in `tree` (a params-shaped tree)."""
  return {name: jnp.sqrt(value) for name, value in _squared_norms(dict(tree)).items()}


def response_stds(sown: Any) -> dict[str, jnp.ndarray]:
  """'<block>/conv<i>' → response std, from the model's `diagnostics` collection."""
  out = {}
  for name, block in dict(sown).items():
    match = _STACK.match(name)
    for key, (value, *_) in dict(block['block'] if match else block).items():
      conv = key.removesuffix('_response_std')
      if match:
        for index in range(value.shape[0]):
          out[f'stage{match.group(1)}_block{index + 2}/{conv}'] = value[index]
      else:
        out[f'{name}/{conv}'] = value
  return out


def compute(grads: Any, params_before: Any, params_after: Any,
            sown: Any) -> dict[str, jnp.ndarray]:
  """All diagnostics of one step, as {tag: float32 scalar}.

  Args:
    grads: the step's (unscaled) gradients, shaped like the params.
    params_before: the parameters the gradients were taken at.
    params_after: the parameters after the update (== before on a dropped step).
    sown: the model's `diagnostics` collection from the same forward pass.
  """
  grad_sq = _squared_norms(dict(grads))
  before_sq = _squared_norms(dict(params_before))
  update_sq = _squared_norms(jax.tree.map(lambda a, b: a - b, dict(params_after),
                                          dict(params_before)))
  after_sq = _squared_norms(dict(params_after))
  out = {f'{PREFIX}/grad_norm/total': jnp.sqrt(sum(grad_sq.values()))}
  for name in grad_sq:
    out[f'{PREFIX}/grad_norm/{name}'] = jnp.sqrt(grad_sq[name])
    out[f'{PREFIX}/param_norm/{name}'] = jnp.sqrt(after_sq[name])
    # The ratio of norms, not of squares; a block of all-zero weights reads 0, not NaN.
    out[f'{PREFIX}/update_ratio/{name}'] = jnp.sqrt(update_sq[name]) / jnp.maximum(
        jnp.sqrt(before_sq[name]), 1e-12)
  out |= {f'{PREFIX}/response_std/{name}': value for name, value in response_stds(sown).items()}
  return {tag: jnp.asarray(value, jnp.float32) for tag, value in out.items()}


def depth_key(block: str) -> tuple[int, int]:
  """Sort key of a block name by its depth in the network (stem first, head last)."""
  if block == 'stem':
    return (0, 0)
  match = _BLOCK.match(block)
  if match:
    return (int(match.group(1)), int(match.group(2)))
  return (1_000, 1 if block == 'head' else 0)  # final_bn, then head


def depth_order(blocks: Any) -> list[str]:
  """Block names sorted input to output."""
  return sorted(blocks, key=depth_key)

