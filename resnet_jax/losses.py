"""Training losses on soft targets: softmax cross-entropy, and binary cross-entropy as timm
uses it for "ResNet strikes back" (Wightman et al. 2021). Pure and jittable."""

import jax.numpy as jnp
import optax

LOSSES = ('softmax', 'bce')


def softmax_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Per-example softmax cross-entropy against soft targets, in float32."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets.astype(jnp.float32))


def binary_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray,
                         target_threshold: float = 0.0) -> jnp.ndarray:
  """Per-example sigmoid cross-entropy, averaged over the classes, in float32.

  The batch mean of it is timm's BinaryCrossEntropy (timm/loss/binary_cross_entropy.py:
  F.binary_cross_entropy_with_logits with reduction 'mean', over examples and classes).
  With target_threshold > 0 the (mixed, smoothed) targets become 1 above it and 0 at or
  below it, as timm's target_threshold (RSB A1-A3: 0.2).
  """
  targets = targets.astype(jnp.float32)
  if target_threshold > 0:
    targets = (targets > target_threshold).astype(jnp.float32)
  return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets).mean(-1)


def per_example_loss(logits: jnp.ndarray, targets: jnp.ndarray, *, loss: str = 'softmax',
                     bce_target_threshold: float = 0.0) -> jnp.ndarray:
  """The config's training loss (LOSSES) per example; targets are [B, classes] soft."""
  if loss == 'bce':
    return binary_cross_entropy(logits, targets, bce_target_threshold)
  if loss != 'softmax':
    raise ValueError(f'unknown loss {loss!r}; valid losses: {", ".join(LOSSES)}')
  return softmax_cross_entropy(logits, targets)
