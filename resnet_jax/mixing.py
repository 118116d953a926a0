"""Batch-level mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019), as timm's Mixup
does them in 'batch' mode, with one lambda for the whole batch; the partner of each
example is its mirror image within a fixed group of consecutive examples (timm: the
reversed batch, images[::-1]). Groups that fit inside one device's share of the batch
mix with no traffic between devices, and since the groups are fixed by the config, the
mixed batch is the same for any device count. Pure and jittable; the alphas,
switch_prob, label_smoothing, group_size and num_classes are static (Python numbers).
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


def sample_beta(rng: jax.Array, alpha: float) -> jnp.ndarray:
  """One draw from Beta(alpha, alpha), float32, computed without a loop (beta_logit)."""
  return jax.nn.sigmoid(beta_logit(rng, alpha))


def beta_logit(rng: jax.Array, alpha: float, candidates: int = 32) -> jnp.ndarray:
  """log(lam / (1 − lam)) for one lam ~ Beta(alpha, alpha), computed without a loop.

  jax.random.beta runs a rejection sampler in a while loop, and on XLA:GPU each trip of
  a data-dependent loop copies its condition to the host. Here Marsaglia & Tsang's
  (2000) gamma sampler tries `candidates` proposals at once and keeps the first
  accepted one (each is accepted with probability > 0.95, so all fail with probability
  < 1e-40); shapes below 1 are boosted (Gamma(a) = Gamma(a + 1) · U^(1/a)). Beta is
  X / (X + Y) for X, Y ~ Gamma(alpha): its logit is log X − log Y, which stays exact where
  float32 rounds lam itself to 0 or 1 (a tenth of the draws for alpha 0.1).
  """
  shape = alpha + 1.0 if alpha < 1.0 else alpha
  d = shape - 1.0 / 3.0
  c = 1.0 / (9.0 * d) ** 0.5

  def log_gamma(key: jax.Array) -> jnp.ndarray:
    z_key, u_key, boost_key = jax.random.split(key, 3)
    z = jax.random.normal(z_key, (candidates,), jnp.float32)
    u = jax.random.uniform(u_key, (candidates,), jnp.float32, minval=1e-30)
    v = (1.0 + c * z) ** 3
    safe_v = jnp.where(v > 0, v, 1.0)
    accepted = (v > 0) & (jnp.log(u) < 0.5 * z * z + d - d * safe_v + d * jnp.log(safe_v))
    log_x = jnp.log(d * safe_v)[jnp.argmax(accepted)]
    if alpha < 1.0:
      log_x += jnp.log(jax.random.uniform(boost_key, (), jnp.float32, minval=1e-30)) / alpha
    return log_x

  x_key, y_key = jax.random.split(rng)
  return log_gamma(x_key) - log_gamma(y_key)


def partners(x: jnp.ndarray, group_size: int = 0) -> jnp.ndarray:
  """Each example's partner: the batch reversed within consecutive groups of
  `group_size` examples (0: the whole batch, as timm)."""
  batch = x.shape[0]
  group = group_size or batch
  if batch % group:
    raise ValueError(f'batch of {batch} examples is not a multiple of the mixing group '
                     f'size {group}')
  return x.reshape(batch // group, group, *x.shape[1:])[:, ::-1].reshape(x.shape)


def mix_batch(rng: jax.Array, images: jnp.ndarray, labels: jnp.ndarray, num_classes: int, *,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, switch_prob: float = 0.5,
              label_smoothing: float = 0.0,
              group_size: int = 0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mixes each example with its partner (see `partners`).

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
    group_size: partners are chosen within consecutive groups of this many examples
      (0: the whole batch); it must divide the batch.

  Returns:
    The mixed images (shape and dtype of `images`) and float32 soft targets
    [B, num_classes] whose rows sum to 1: lam·t(y) + (1 − lam)·t(partner's y), where lam
    is the weight of each example's own image (for cutmix, its kept pixel fraction).
  """
  targets = soft_targets(labels, num_classes, label_smoothing)
  use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
  if not (use_mixup or use_cutmix):
    return images, targets
  switch_key, mixup_key, cutmix_key, box_key = jax.random.split(rng, 4)
  partner = partners(images, group_size)
  if use_mixup:
    mix_lam = sample_beta(mixup_key, mixup_alpha)
    # float32 so bfloat16 inputs are blended without double rounding.
    mixed = (mix_lam * images.astype(jnp.float32) +
             (1.0 - mix_lam) * partner.astype(jnp.float32)).astype(images.dtype)
    lam = mix_lam
  if use_cutmix:
    cut_lam = sample_beta(cutmix_key, cutmix_alpha)
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
  return mixed, lam * targets + (1.0 - lam) * partners(targets, group_size)

