"""A stage's identical blocks as one `nn.scan` (compiled once), and its variable layout.

In a ResNet stage, every block after the first has the same shapes. Scanning over them
makes XLA compile one block body per stage instead of one per block, which cuts the
compile time of deep nets (ResNet-152: 50 blocks → 8 bodies). The scanned variables
carry a leading block axis; `scan_layout` and `unscanned_layout` convert between the
two layouts, so a checkpoint trained one way can be evaluated or fine-tuned the other.

The block that ResNet scans is rematerialised (blocks.remat; 'conv_outputs' unless the
model's remat says otherwise): the scan's backward reads each residual of the body from a
[units, ...] array that the forward loop writes, and without a policy those are all of
autodiff's residuals, BN's float32 temporaries and ReLU masks included, which XLA fuses
away in an unrolled net but must store across a loop (docs/models.md, "Memory options").
"""

import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_jax.models.blocks import DIAGNOSTICS, PATHS

_BLOCK_NAME = re.compile(r'^stage(\d+)_block(\d+)$')


class RepeatedBlock(nn.Module):
  """One block as a scan body: (carry, unit) -> (block(carry), None).

  `unit` is None, or this block's (drop path rate, drop key): the rates differ along the
  stage, so they are scanned inputs, and so are the keys, the unscanned blocks' own.
  """
  block: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x: jnp.ndarray,
               unit: tuple[jax.Array, jax.Array] | None) -> tuple[jnp.ndarray, None]:
    if unit is None:
      return self.block(name='block')(x), None
    rate, key = unit
    return self.block(drop_path_rate=rate, name='block')(x, key), None


def scanned_blocks(block: Callable[..., nn.Module], length: int, name: str) -> nn.Module:
  """A module that applies `length` copies of `block` (a partial module, rematerialised
  or not: the caller's choice) in sequence.

  Call it as (x, None), or (x, (rates, keys)) with each block's drop path rate and key
  stacked along a leading axis of `length`.
  """
  stack = nn.scan(RepeatedBlock,
                  variable_axes={'params': 0, 'batch_stats': 0, DIAGNOSTICS: 0, PATHS: 0},
                  split_rngs={'params': True, 'dropout': True}, length=length)
  return stack(block=block, name=name)


def stack_name(stage: int) -> str:
  """The variable name of stage `stage`'s scanned blocks 2..N (stages count from 1)."""
  return f'stage{stage}_blocks'


def scan_layout(collection: dict[str, Any]) -> dict[str, Any]:
  """Unscanned variables (one collection, e.g. params) → the scan_blocks=True layout."""
  out, stacks = {}, {}
  for name, value in collection.items():
    match = _BLOCK_NAME.match(name)
    if match and int(match.group(2)) > 1:
      stacks.setdefault(int(match.group(1)), {})[int(match.group(2))] = value
    else:
      out[name] = value
  for stage, blocks in stacks.items():
    ordered = [blocks[b] for b in sorted(blocks)]
    if len(ordered) == 1:  # A single repeated block is not scanned.
      out[f'stage{stage}_block2'] = ordered[0]
    else:
      out[stack_name(stage)] = {'block': jax.tree.map(lambda *xs: jnp.stack(xs), *ordered)}
  return out


def unscanned_layout(collection: dict[str, Any]) -> dict[str, Any]:
  """The inverse of scan_layout."""
  out = {}
  for name, value in collection.items():
    match = re.match(r'^stage(\d+)_blocks$', name)
    if not match:
      out[name] = value
      continue
    length = jax.tree.leaves(value['block'])[0].shape[0]
    for index in range(length):
      out[f'stage{match.group(1)}_block{index + 2}'] = jax.tree.map(
          lambda x, index=index: x[index], value['block'])
  return out
