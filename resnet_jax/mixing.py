"""Batch-level mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019), as timm's Mixup
does them in 'batch' mode: each example is mixed with its partner in the reversed batch
(images[::-1]), with one lambda for the whole batch. Pure and jittable; the alphas,
switch_prob, label_smoothing and num_classes are static (Python numbers).
"""

import jax
import jax.numpy as jnp
import optax


def soft_targets(labels: jnp.ndarray, num_classes: int,
                 label_smoothing: float = 0.0) -> jnp.ndarray:
  """One-hot float32 targets, optionally smoothed towards the uniform distribution."""
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return optax.smooth_labels(targets, label_smoothing) if label_smoothing else targets


def _cutmix_box(rng: jax.Array, lam: jnp.ndarray, height: int,
                width: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """A box covering about (1 − lam) of the image, centred uniformly and clipped.

  Returns:
    A boolean [H, W] mask, True inside the box, and the fraction of pixels outside it
    (lam corrected for the clipping and the integer box size).
  """
  ratio = jnp.sqrt(1.0 - lam)
  # Truncation as timm's int(); the box keeps the unclipped side length when it fits.
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  y_key, x_key = jax.random.split(rng)
  cy = jax.random.randint(y_key, (), 0, height)
  cx = jax.random.randint(x_key, (), 0, width)
  y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy - cut_h // 2 + cut_h, 0, height)
  x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx - cut_w // 2 + cut_w, 0, width)
  # Traced bounds, static shapes: compare iotas instead of slicing.
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  mask = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  kept = 1.0 - ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / (height * width)
  return mask, kept


def mix_batch(rng: jax.Array, images: jnp.ndarray, labels: jnp.ndarray, num_classes: int, *,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, switch_prob: float = 0.5,
              label_smoothing: float = 0.0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mixes each example with its partner in the reversed batch.

  With both alphas > 0, cutmix is picked with probability switch_prob, else mixup; with
  one > 0, only that one; with both 0, the images pass through unchanged.

  Args:
    rng: a PRNG key; the same key gives the same mix.
    images: [B, H, W, C] floating-point images (normalised), any float dtype.
    labels: [B] integer class labels.
    num_classes: the number of classes (width of the targets).
    mixup_alpha: mixup's lam ~ Beta(alpha, alpha); 0 disables mixup.
    cutmix_alpha: cutmix's lam ~ Beta(alpha, alpha); 0 disables cutmix.
    switch_prob: probability of cutmix when both are enabled.
    label_smoothing: as optax.smooth_labels, applied to both one-hot targets.

  Returns:
    The mixed images (shape and dtype of `images`) and float32 soft targets
    [B, num_classes] whose rows sum to 1: lam·t(y) + (1 − lam)·t(y[::-1]), where lam is
    the weight of each example's own image (for cutmix, its kept pixel fraction).
  """
  targets = soft_targets(labels, num_classes, label_smoothing)
  use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
  if not (use_mixup or use_cutmix):
    return images, targets
  switch_key, mixup_key, cutmix_key, box_key = jax.random.split(rng, 4)
  partner = images[::-1]
  if use_mixup:
    mix_lam = jax.random.beta(mixup_key, mixup_alpha, mixup_alpha)
    # float32 so bfloat16 inputs are blended without double rounding.
    mixed = (mix_lam * images.astype(jnp.float32) +
             (1.0 - mix_lam) * partner.astype(jnp.float32)).astype(images.dtype)
    lam = mix_lam
  if use_cutmix:
    cut_lam = jax.random.beta(cutmix_key, cutmix_alpha, cutmix_alpha)
    mask, cut_lam = _cutmix_box(box_key, cut_lam, images.shape[1], images.shape[2])
    # A select, not a blend: every pixel is exactly the example's or its partner's.
    cut = jnp.where(mask[None, :, :, None], partner, images)
    lam = cut_lam
  if use_mixup and use_cutmix:
    # Both branches are cheap elementwise ops that XLA fuses, so select rather than cond.
    choose_cut = jax.random.bernoulli(switch_key, switch_prob)
    mixed = jnp.where(choose_cut, cut, mixed)
    lam = jnp.where(choose_cut, cut_lam, mix_lam)
  elif use_cutmix:
    mixed = cut
  lam = lam.astype(jnp.float32)
  return mixed, lam * targets + (1.0 - lam) * targets[::-1]


def mixed_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Per-example softmax cross-entropy against soft targets, in float32."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                     targets.astype(jnp.float32))
