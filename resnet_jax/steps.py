"""Train state and the pure step functions that the trainer jits over the mesh.

The steps return plain dicts of per-step arrays; the trainer folds them into clu metrics
inside its jitted call (resnet_jax/metrics.py). Nothing here imports clu, jmp,
ml_collections or TensorFlow, so the step runs on a bare accelerator image (JAX, flax,
optax): that is what launch/gpu_benchmark.sh measures.
"""

import functools
from typing import TYPE_CHECKING, Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import Mesh

from resnet_jax import diagnostics as diagnostics_lib
from resnet_jax import erasing, losses, mixing, models, optim, sharding
from resnet_jax.models.blocks import DIAGNOSTICS

if TYPE_CHECKING:
  import jmp
  import ml_collections


class TrainState(train_state.TrainState):
  """flax's TrainState plus BatchNorm statistics and an optional weight EMA.

  Attributes:
    batch_stats: the model's `batch_stats` collection.
    ema: None, or {'params': ..., 'batch_stats': ...} averaged over steps.
    skipped_steps: steps whose loss or gradients were not finite (int32 count,
      checkpointed). With drop_nonfinite their update was dropped; without it the
      trainer stops the run (nonfinite_policy 'halt').
    first_skipped_step: the step number of the first of them (0: none).
    loss_scale: None, or a jmp.DynamicLossScale (float16 training): the loss is
      multiplied by it before differentiation; it halves after a non-finite step and
      doubles after `period` finite ones.
  """
  batch_stats: Any = None
  ema: Any = None
  skipped_steps: Any = None
  first_skipped_step: Any = None
  loss_scale: Any = None


LOSS_SCALES = ('auto', 'dynamic', 'none')


def create_loss_scale(config: 'ml_collections.ConfigDict') -> 'jmp.DynamicLossScale | None':
  """The config's dynamic loss scale, or None ('auto': dynamic for float16 only)."""
  dynamic = config.loss_scale == 'dynamic' or (config.loss_scale == 'auto' and
                                                config.dtype == 'float16')
  if not dynamic:
    return None
  import jmp  # Only float16 training needs it; bare accelerator images lack it.
  return jmp.DynamicLossScale(jnp.asarray(config.loss_scale_init, jnp.float32),
                              period=config.loss_scale_period)


def create_train_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                       image_shape: tuple[int, ...], *, use_ema: bool, mesh: Mesh,
                       loss_scale: 'jmp.DynamicLossScale | None' = None) -> TrainState:
  """Initialises the model and optimizer in one jitted call, replicated over `mesh`.

  The call is the same program on every start (the rng is its argument), so the
  persistent compilation cache (compilation_cache.py) holds it.
  """

  def init(rng: jax.Array) -> TrainState:
    variables = models.init_variables(rng=rng, model=model, train=False,
                                      images=jnp.zeros((1, *image_shape), jnp.float32))
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    ema = {'params': params, 'batch_stats': batch_stats} if use_ema else None
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                              batch_stats=batch_stats, ema=ema,
                              skipped_steps=jnp.zeros((), jnp.int32),
                              first_skipped_step=jnp.zeros((), jnp.int32),
                              loss_scale=loss_scale)
    # flax's step 0 is a Python int, a weakly typed array once jitted; a restored step is
    # not: the train step compiled for one missed the persistent cache's entry of the other.
    return state.replace(step=jnp.zeros((), jnp.int32))

  # Init runs once. ResNet-50 on a CPU (docs/performance.md): level 1 compiles in about
  # the time of level 0 (XLA's default, 3, takes 2-3x as long) and runs 5x faster than
  # level 0, which matters most when the compile comes from the persistent cache.
  lowered = jax.jit(init, out_shardings=sharding.replicated(mesh)).lower(rng)
  return lowered.compile({'xla_backend_optimization_level': 1})(rng)


def normalize_images(images: jnp.ndarray, mean: Sequence[float],
                     std: Sequence[float]) -> jnp.ndarray:
  """(images − mean) / std per channel in float32; XLA fuses it into the first conv."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def all_finite(tree: Any) -> jnp.ndarray:
  """True when no floating-point leaf of `tree` holds a NaN or an infinity.

  jmp.all_finite's reduction plus one barrier: without it (jmp's form), XLA rewrites the
  final reduction into a chain of per-leaf ANDs and copies that chain into every fusion
  that reads the result (each of a ResNet-50's ~430 state updates), and its CPU compile
  took 3x as long (docs/performance.md). It also keeps jmp off the float32/bfloat16
  path, which bare accelerator images run without jmp.
  """
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  if not leaves:
    return jnp.array(True)
  return jnp.all(jax.lax.optimization_barrier(jnp.stack(leaves)))


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                  label_smoothing: float = 0.0) -> jnp.ndarray:
  """Per-example softmax cross-entropy in float32, with optional label smoothing."""
  return losses.softmax_cross_entropy(
      logits, mixing.soft_targets(labels, logits.shape[-1], label_smoothing))


def top_k_correct(logits: jnp.ndarray, labels: jnp.ndarray, k: int) -> jnp.ndarray:
  """1.0 where the label is among the k largest logits."""
  if k == 1:  # An argmax partitions over the batch; top_k gathers the logits first.
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def _select(keep_new: jnp.ndarray, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def train_step(state: TrainState, batch: dict[str, jnp.ndarray], *,
               learning_rate_fn: Callable[[jnp.ndarray], jnp.ndarray],
               drop_nonfinite: bool = True, label_smoothing: float = 0.0,
               ema_decay: float = 0.0, image_mean: Sequence[float] = (0.0,),
               image_std: Sequence[float] = (1.0,), freeze_batch_stats: bool = False,
               mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
               mix_switch_prob: float = 0.5, mix_group_size: int = 0,
               mix_seed: int = 0, dropout_seed: int | None = None,
               loss: str = 'softmax', bce_target_threshold: float = 0.0,
               random_erasing: float = 0.0, random_erasing_mode: str = 'const',
               ema_every_steps: int = 1, ema_copy_steps: int = 0,
               diagnostics: bool = False) -> tuple[TrainState, dict[str, Any]]:
  """One optimizer step on a global batch; BatchNorm statistics span all of it.

  The step holds no conditional: on XLA:GPU a `conditional` copies its predicate to
  the host and blocks the stream, so the host could not run ahead of the device.

  Args:
    state: the current state (donated by the trainer).
    batch: {'image': [B, H, W, C] (uint8 or float), 'label': [B]}.
    learning_rate_fn: the schedule, evaluated here only for logging, at the
      optimizer's own count of applied updates (the step its schedule sees).
    drop_nonfinite: a step whose loss or gradients are not finite leaves parameters,
      optimizer state, statistics and EMA as they were (a select fused into the
      update). False applies every update: for runs that stop at the first
      non-finite step anyway (nonfinite_policy 'halt'), where nothing needs dropping.
    label_smoothing: weight of the uniform target.
    ema_decay: decay of the weight EMA (used when state.ema is not None).
    ema_every_steps: the EMA takes a step on steps divisible by it, and holds otherwise.
    ema_copy_steps: an EMA step whose previous EMA step came before this step copies the
      weights instead of averaging them (torchvision's EMA restarts during the warmup).
    image_mean: per-channel mean subtracted from the images.
    image_std: per-channel standard deviation the images are divided by.
    freeze_batch_stats: BatchNorm normalises with the running statistics and leaves them
      as they are (fine-tuning on small batches); stochastic depth and shortcut dropout
      still act.
    mixup_alpha, cutmix_alpha, mix_switch_prob, mix_group_size: batch mixing
      (mixing.mix_batch); off when both alphas are 0. Its draws depend on
      (mix_seed, step) only, so a resumed run mixes as an uninterrupted one. top1
      counts the unmixed labels.
    mix_seed: the seed of those draws; random erasing draws from mix_seed + 2.
    dropout_seed: None for models without dropout or stochastic depth; else the seed of
      the model's 'dropout' RNG, folded with the step like mix_seed.
    loss: losses.LOSSES: 'softmax' cross-entropy or timm's 'bce'.
    bce_target_threshold: binarises the bce targets above it (0: off).
    random_erasing: per-example probability of erasing a box (erasing.random_erasing),
      applied to the normalised images before mixing, as the sources do it per image.
    random_erasing_mode: its fill, erasing.MODES.
    diagnostics: also return resnet_jax.diagnostics.compute's tags, from this step's
      own forward and backward pass (the model sows its responses into the
      `diagnostics` collection). False traces exactly the step without them.

  Returns:
    The new state and this step's metrics: 'loss' and 'finite' (scalars), 'top1'
    ([B], 1.0 where correct), 'learning_rate', 'skipped_steps', 'loss_scale'
    (float32 scalars; loss_scale 1 without loss scaling); with `diagnostics`, also
    'diagnostics': {tag: float32 scalar}.
  """
  images = normalize_images(batch['image'], image_mean, image_std)
  num_classes = state.params['head']['bias'].shape[-1]
  if random_erasing:
    images = erasing.random_erasing(
        jax.random.fold_in(jax.random.key(mix_seed + 2), state.step), images,
        probability=random_erasing, mode=random_erasing_mode)
  if mixup_alpha or cutmix_alpha:
    images, targets = mixing.mix_batch(
        jax.random.fold_in(jax.random.key(mix_seed), state.step), images, batch['label'],
        num_classes, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
        switch_prob=mix_switch_prob, label_smoothing=label_smoothing,
        group_size=mix_group_size)
  else:
    targets = mixing.soft_targets(batch['label'], num_classes, label_smoothing)

  loss_scale = state.loss_scale  # a jmp.DynamicLossScale, or None
  apply_kwargs = {}
  if dropout_seed is not None:
    apply_kwargs['rngs'] = {'dropout': jax.random.fold_in(jax.random.key(dropout_seed),
                                                          state.step)}
  mutable = ([] if freeze_batch_stats else ['batch_stats']) + (
      [DIAGNOSTICS] if diagnostics else [])

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    # Frozen statistics change BatchNorm's mode only: drop path and shortcut dropout act.
    apply = functools.partial(state.apply_fn, variables, images, train=True,
                              use_running_average=freeze_batch_stats, **apply_kwargs)
    logits, updates = apply(mutable=mutable) if mutable else (apply(), {})
    batch_stats = state.batch_stats if freeze_batch_stats else updates['batch_stats']
    mean_loss = losses.per_example_loss(logits, targets, loss=loss,
                                        bce_target_threshold=bce_target_threshold).mean()
    scaled = mean_loss if loss_scale is None else loss_scale.scale(mean_loss)
    return scaled, (mean_loss, logits, batch_stats, updates.get(DIAGNOSTICS, {}))

  (_, (mean_loss, logits, batch_stats, sown)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  if loss_scale is not None:
    grads = loss_scale.unscale(grads)
  finite = jnp.isfinite(mean_loss) & all_finite(grads)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if state.ema is not None:
    decay = jnp.asarray(ema_decay, jnp.float32)
    if ema_copy_steps:
      decay = jnp.where(new_state.step - ema_every_steps < ema_copy_steps, 0.0, decay)
    if ema_every_steps > 1:  # a select, not a conditional (see above)
      decay = jnp.where(new_state.step % ema_every_steps == 0, decay, 1.0)
    new_state = new_state.replace(ema=jax.tree.map(
        lambda avg, new: decay * avg + (1.0 - decay) * new, state.ema,
        {'params': new_state.params, 'batch_stats': batch_stats}))
  if drop_nonfinite:
    # The step still counts, so the data stream stays in step; the optimizer's own
    # count (and with it the schedule) does not advance.
    new_state = new_state.replace(**{
        name: _select(finite, getattr(new_state, name), getattr(state, name))
        for name in ('params', 'opt_state', 'batch_stats', 'ema')})
  skipped = state.skipped_steps + jnp.where(finite, 0, 1).astype(jnp.int32)
  new_state = new_state.replace(
      skipped_steps=skipped,
      first_skipped_step=jnp.where(finite | (state.skipped_steps > 0),
                                   state.first_skipped_step, new_state.step).astype(jnp.int32),
      loss_scale=None if loss_scale is None else loss_scale.adjust(finite))
  step_metrics = {
      'loss': mean_loss, 'finite': finite, 'top1': top_k_correct(logits, batch['label'], 1),
      'learning_rate': jnp.asarray(
          learning_rate_fn(optim.applied_updates(state.opt_state, state.step)), jnp.float32),
      'skipped_steps': skipped.astype(jnp.float32),
      'loss_scale': jnp.asarray(1.0 if loss_scale is None else loss_scale.loss_scale,
                                jnp.float32)}
  if diagnostics:
    step_metrics['diagnostics'] = diagnostics_lib.compute(grads, state.params,
                                                          new_state.params, sown)
  return new_state, step_metrics


def eval_step(state: TrainState, batch: dict[str, jnp.ndarray], *, use_ema: bool = False,
              image_mean: Sequence[float] = (0.0,), image_std: Sequence[float] = (1.0,),
              flip: bool = False) -> dict[str, jnp.ndarray]:
  """Per-example metrics of one padded evaluation batch, with its mask.

  Args:
    state: the state to evaluate.
    batch: {'image', 'label', 'mask'}; mask is 1 for real examples, 0 for padding.
    use_ema: evaluate the EMA weights instead of the live ones.
    image_mean: as in train_step.
    image_std: as in train_step.
    flip: average the logits of each image and its mirror image (FFCV's test-time
      augmentation; FFCV sums them, which changes no prediction).

  Returns:
    {'loss', 'top1', 'top5', 'mask'}, each [B]: examples with mask 0 must count for
    nothing (metrics.EvalMetrics does so).
  """
  variables = (state.ema if use_ema else
               {'params': state.params, 'batch_stats': state.batch_stats})
  images = normalize_images(batch['image'], image_mean, image_std)
  logits = state.apply_fn(variables, images, train=False)
  if flip:
    logits = 0.5 * (logits + state.apply_fn(variables, images[:, :, ::-1], train=False))
  labels = batch['label']
  return {'loss': cross_entropy(logits, labels), 'top1': top_k_correct(logits, labels, 1),
          'top5': top_k_correct(logits, labels, 5), 'mask': batch['mask']}
