"""Random erasing (Zhong et al. 2020) on the device, per example, after normalisation.

The box follows torchvision's RandomErasing.get_params: up to `attempts` tries of an area
fraction ~ U(scale) and a log-uniform aspect ratio, rounded to integer sides, the first
that fits strictly inside the image is kept, placed uniformly; if none fits, the image is
unchanged. All tries are drawn at once and the first accepted one is selected, so there is
no loop or conditional (on XLA:GPU either would sync with the host). Each example draws
from its own key (split from the batch key by index), so the result does not depend on
how the batch is sharded. Pure and jittable; all keyword arguments are static.
"""

import math

import jax
import jax.numpy as jnp

MODES = ('const', 'pixel')
# The box's geometry: torchvision's RandomErasing defaults (area 2-33 %, aspect ratio
# log-uniform in [0.3, 3.3], 10 tries), or Zhong et al.'s own code (zhunzhong07/
# Random-Erasing, transforms.py as fashionmnist.py calls it: area 2-40 %, aspect ratio
# uniform in [0.3, 1/0.3], 100 tries).
BOXES = {
    'torchvision': {'scale': (0.02, 0.33), 'ratio': (0.3, 3.3), 'log_ratio': True,
                    'attempts': 10},
    'zhong': {'scale': (0.02, 0.4), 'ratio': (0.3, 1 / 0.3), 'log_ratio': False,
              'attempts': 100},
}


def _check(probability: float, mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f'random erasing mode {mode!r} is not one of {MODES}')
  if not 0.0 <= probability <= 1.0:
    raise ValueError(f'random erasing probability {probability!r} is not in [0, 1]')


def box_from_draws(scale_u: jnp.ndarray, ratio_u: jnp.ndarray, top_u: jnp.ndarray,
                   left_u: jnp.ndarray, height: int, width: int, *,
                   scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3),
                   log_ratio: bool = True) -> tuple[jnp.ndarray, ...]:
  """The box torchvision's get_params picks for given U[0, 1) draws.

  Args:
    scale_u, ratio_u: [attempts] draws for the area fraction and the log aspect ratio.
    top_u, left_u: scalar draws for the corner of the accepted box.
    height, width: the image size.

  Returns:
    int32 top, left, h, w and a bool `accepted`; (0, 0, height, width, False) when no
    attempt fits, as torchvision (which then erases with the image itself).
  """
  area = height * width
  erase_area = area * (scale[0] + (scale[1] - scale[0]) * scale_u)
  if log_ratio:  # torchvision
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * ratio_u)
  else:  # Zhong et al.'s random.uniform(r1, 1 / r1)
    aspect = ratio[0] + (ratio[1] - ratio[0]) * ratio_u
  # jnp.round rounds halves to even, as Python's round().
  hs = jnp.round(jnp.sqrt(erase_area * aspect)).astype(jnp.int32)
  ws = jnp.round(jnp.sqrt(erase_area / aspect)).astype(jnp.int32)
  fits = (hs < height) & (ws < width)
  first = jnp.argmax(fits)  # the first accepted attempt (0 if none, masked below)
  accepted = fits[first]
  h, w = hs[first], ws[first]
  # torch.randint(0, n) from a uniform; the min guards u·n rounding up to n.
  top = jnp.minimum(jnp.floor(top_u * (height - h + 1)).astype(jnp.int32), height - h)
  left = jnp.minimum(jnp.floor(left_u * (width - w + 1)).astype(jnp.int32), width - w)
  zero = jnp.zeros((), jnp.int32)
  return (jnp.where(accepted, top, zero), jnp.where(accepted, left, zero),
          jnp.where(accepted, h, height), jnp.where(accepted, w, width), accepted)


def erasing_params(rng: jax.Array, batch: int, height: int, width: int, channels: int, *,
                   probability: float, mode: str = 'const',
                   scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), log_ratio: bool = True,
                   attempts: int = 10) -> tuple[jnp.ndarray, ...]:
  """Per-example boxes and fill for random_erasing, from the same key.

  Returns:
    int32 [B] top, left, h, w (h = w = 0 where the example is not erased) and the float32
    fill: [B, H, W, C] N(0, 1) draws for 'pixel', a scalar 0 for 'const'.
  """
  _check(probability, mode)

  def one(key: jax.Array) -> tuple[jnp.ndarray, ...]:
    coin_key, scale_key, ratio_key, corner_key, fill_key = jax.random.split(key, 5)
    top, left, h, w, accepted = box_from_draws(
        jax.random.uniform(scale_key, (attempts,)), jax.random.uniform(ratio_key, (attempts,)),
        *jax.random.uniform(corner_key, (2,)), height, width, scale=scale, ratio=ratio,
        log_ratio=log_ratio)
    # torch.rand(1) < p: never for p = 0, always for p = 1.
    erased = accepted & (jax.random.uniform(coin_key) < probability)
    return top, left, jnp.where(erased, h, 0), jnp.where(erased, w, 0), fill_key

  top, left, h, w, fill_keys = jax.vmap(one)(jax.random.split(rng, batch))
  if mode == 'pixel':
    fill = jax.vmap(lambda key: jax.random.normal(key, (height, width, channels)))(fill_keys)
  else:
    fill = jnp.zeros((), jnp.float32)
  return top, left, h, w, fill


def erase(images: jnp.ndarray, top: jnp.ndarray, left: jnp.ndarray, h: jnp.ndarray,
          w: jnp.ndarray, fill: jnp.ndarray) -> jnp.ndarray:
  """images [B, H, W, C] with each example's box [top, top + h) × [left, left + w)
  replaced by `fill` (broadcastable to images), in the images' dtype."""
  _, height, width, _ = images.shape
  # Traced bounds, static shapes: compare iotas instead of slicing.
  rows = jnp.arange(height)[None, :, None, None]
  cols = jnp.arange(width)[None, None, :, None]
  top, left, h, w = (x[:, None, None, None] for x in (top, left, h, w))
  mask = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  return jnp.where(mask, jnp.asarray(fill).astype(images.dtype), images)


def random_erasing(rng: jax.Array, images: jnp.ndarray, *, probability: float,
                   mode: str = 'const', scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), log_ratio: bool = True,
                   attempts: int = 10) -> jnp.ndarray:
  """Erases one box per example with `probability` (see the module docstring).

  Args:
    rng: a PRNG key; the same key gives the same result, sharded or not.
    images: [B, H, W, C] normalised floating-point images, any float dtype (kept).
    probability: the chance that an example is erased, in [0, 1].
    mode: 'const' fills with 0 (the mean colour after normalisation: torchvision's
      value=0); 'pixel' with per-pixel, per-channel N(0, 1) (timm's mode='pixel').
    scale: range of the erased area as a fraction of the image.
    ratio: range of the box's aspect ratio h / w (BOXES: torchvision's or Zhong et al.'s).
    log_ratio: sample the aspect ratio log-uniformly (torchvision), else uniformly.
    attempts: tries at a box that fits before the example is left unchanged.
  """
  batch, height, width, channels = images.shape
  params = erasing_params(rng, batch, height, width, channels, probability=probability,
                          mode=mode, scale=scale, ratio=ratio, log_ratio=log_ratio,
                          attempts=attempts)
  return erase(images, *params)
