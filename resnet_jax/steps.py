"""The pure step functions that the trainer jits over the mesh (the state: train_state.py).

The steps return plain dicts of per-step arrays; the trainer folds them into clu metrics
inside its jitted call (resnet_jax/metrics.py). Nothing here imports clu, jmp,
ml_collections or TensorFlow, so the step runs on a bare accelerator image (JAX, flax,
optax): that is what launch/gpu_benchmark.sh measures.
"""

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from resnet_jax import diagnostics as diagnostics_lib
from resnet_jax import erasing, losses, mixing, optim
from resnet_jax.models.blocks import DIAGNOSTICS
from resnet_jax.step_options import ForwardOptions, InputOptions, StepOptions, UpdateOptions
from resnet_jax.train_state import TrainState


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
  """1.0 where the label is among the k largest logits (k > 1: a tie with the k-th
  largest counts for the label)."""
  if k == 1:  # An argmax partitions over the batch.
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  # Fewer than k logits above the label's, counted on each device's share of the batch:
  # XLA partitions lax.top_k by gathering the whole batch's logits onto every device.
  label_logits = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  return (jnp.sum(logits > label_logits, axis=-1) < k).astype(jnp.float32)


def global_norms(grads: Any, params: Any, new_params: Any) -> dict[str, jnp.ndarray]:
  """L2 norms over all parameters of the gradient, the parameters after the step and the
  step's update (big_vision's l2_grads, l2_params, l2_updates): a diverging run shows
  which grew first.

  One concatenated vector per tree, not a reduction per leaf (optax.global_norm): XLA:CPU
  took 30 % longer to compile the per-leaf form's ~200 extra reductions for a ResNet-20
  of test size (8×8, batch 8: 3.7 -> 5.2 s; this form 3.9 s). Measured on the 2-core CPU VM
  (2026-12-06, bench/benchmark.py against the code without norms, alternating runs):
  ResNet-20 at 28², batch 128, step time unchanged (378-389 ms against 380-395 ms);
  ResNet-50 at 128², batch 16, 3 % longer (945-975 ms against 910-943 ms), compile
  6.4-6.8 s against 6.2-6.4 s. Not yet measured on an accelerator.
  """
  def flat(tree: Any) -> jnp.ndarray:
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)])

  def norm(vector: jnp.ndarray) -> jnp.ndarray:
    return jnp.sqrt(jnp.vdot(vector, vector))

  new, old = flat(new_params), flat(params)
  return {'grad_norm': norm(flat(grads)), 'param_norm': norm(new),
          'update_norm': norm(new - old)}


def _select(keep_new: jnp.ndarray, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def _prepared(step: jnp.ndarray, batch: dict[str, jnp.ndarray], num_classes: int,
              inputs: InputOptions) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(normalised, erased and mixed images, soft targets) of a training batch."""
  images = normalize_images(batch['image'], inputs.image_mean, inputs.image_std)
  if inputs.random_erasing:
    images = erasing.random_erasing(
        jax.random.fold_in(jax.random.key(inputs.seed + 2), step), images,
        probability=inputs.random_erasing, mode=inputs.random_erasing_mode,
        **erasing.BOXES[inputs.random_erasing_box])
  if inputs.mixup_alpha or inputs.cutmix_alpha:
    return mixing.mix_batch(
        jax.random.fold_in(jax.random.key(inputs.seed), step), images, batch['label'],
        num_classes, mixup_alpha=inputs.mixup_alpha, cutmix_alpha=inputs.cutmix_alpha,
        switch_prob=inputs.mix_switch_prob, label_smoothing=inputs.label_smoothing,
        group_size=inputs.mix_group_size)
  return images, mixing.soft_targets(batch['label'], num_classes, inputs.label_smoothing)


def _micro_batches(x: jnp.ndarray, k: int) -> jnp.ndarray:
  """[B, ...] -> [k, B/k, ...], example i in micro-batch i mod k: each device's share of
  the batch splits into its own share of every micro-batch, so nothing moves between
  devices, and the micro-batches do not depend on the device count."""
  return jnp.swapaxes(x.reshape((x.shape[0] // k, k, *x.shape[1:])), 0, 1)


def _whole_batch(x: jnp.ndarray) -> jnp.ndarray:
  """_micro_batches' inverse."""
  return jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1], *x.shape[2:]))


def _micro_batch_unroll(k: int) -> int:
  """The micro-batch loop keeps one micro-batch's activations in memory; but XLA:CPU ran
  it 15x slower than the whole batch (docs/training.md), so on the CPU it is unrolled."""
  return k if jax.default_backend() == 'cpu' else 1


class Gradients(NamedTuple):
  """One update's gradient and what its forward pass computed on the way."""
  grads: Any  # unscaled when the state has a loss scale
  mean_loss: jnp.ndarray
  logits: jnp.ndarray
  batch_stats: Any  # the forward pass's new statistics (the old ones when frozen)
  sown: dict[str, Any]  # the model's `diagnostics` collection ({} unless asked)


def _gradients(state: TrainState, images: jnp.ndarray, targets: jnp.ndarray,
               forward: ForwardOptions, diagnostics: bool) -> Gradients:
  """The gradient of one update, over forward.grad_accum_steps micro-batches (a scan: one
  micro-batch's activations live at a time)."""
  loss_scale = state.loss_scale  # a jmp.DynamicLossScale, or None
  mutable = ([] if forward.freeze_batch_stats else ['batch_stats']) + (
      [DIAGNOSTICS] if diagnostics else [])

  def loss_fn(params, batch_stats, images, targets, dropout_key):
    variables = {'params': params, 'batch_stats': batch_stats}
    rngs = {} if dropout_key is None else {'rngs': {'dropout': dropout_key}}
    # Frozen statistics change BatchNorm's mode only: drop path and shortcut dropout act.
    apply = functools.partial(state.apply_fn, variables, images, train=True,
                              use_running_average=forward.freeze_batch_stats, **rngs)
    logits, updates = apply(mutable=mutable) if mutable else (apply(), {})
    new_stats = batch_stats if forward.freeze_batch_stats else updates['batch_stats']
    mean_loss = losses.per_example_loss(
        logits, targets, loss=forward.loss,
        bce_target_threshold=forward.bce_target_threshold).mean()
    scaled = mean_loss if loss_scale is None else loss_scale.scale(mean_loss)
    return scaled, (mean_loss, logits, new_stats, updates.get(DIAGNOSTICS, {}))

  grad_fn = jax.grad(loss_fn, has_aux=True)
  key = (None if forward.dropout_seed is None else
         jax.random.fold_in(jax.random.key(forward.dropout_seed), state.step))
  k = forward.grad_accum_steps
  if k == 1:
    grads, (mean_loss, logits, batch_stats, sown) = grad_fn(
        state.params, state.batch_stats, images, targets, key)
  else:
    def micro_step(grad_sum, micro):
      index, images, targets = micro
      micro_key = None if key is None else jax.random.fold_in(key, index)
      grads, (loss, logits, batch_stats, _) = grad_fn(state.params, state.batch_stats,
                                                       images, targets, micro_key)
      return jax.tree.map(jnp.add, grad_sum, grads), (loss, logits, batch_stats)

    grad_sum, (micro_losses, micro_logits, micro_stats) = jax.lax.scan(
        micro_step, jax.tree.map(jnp.zeros_like, state.params),
        (jnp.arange(k), _micro_batches(images, k), _micro_batches(targets, k)),
        unroll=_micro_batch_unroll(k))
    grads = jax.tree.map(lambda g: g / k, grad_sum)
    # Each micro-batch's running-average update from the same statistics, averaged: one
    # momentum step with the micro-batches' mean statistics, as BN groups of one
    # micro-batch each would take it.
    batch_stats = jax.tree.map(lambda s: s.mean(0), micro_stats)
    mean_loss, logits, sown = micro_losses.mean(), _whole_batch(micro_logits), {}
  if loss_scale is not None:
    grads = loss_scale.unscale(grads)
  return Gradients(grads, mean_loss, logits, batch_stats, sown)


def _updated(state: TrainState, grads: Any, batch_stats: Any, finite: jnp.ndarray,
             update: UpdateOptions) -> TrainState:
  """The state after applying `grads`: EMA, a dropped non-finite step, the counters."""
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if state.ema is not None:
    decay = jnp.asarray(update.ema_decay, jnp.float32)
    if update.ema_copy_steps:
      decay = jnp.where(new_state.step - update.ema_every_steps < update.ema_copy_steps, 0.0,
                        decay)
    if update.ema_every_steps > 1:  # a select, not a conditional (see train_step)
      decay = jnp.where(new_state.step % update.ema_every_steps == 0, decay, 1.0)
    new_state = new_state.replace(ema=jax.tree.map(
        lambda avg, new: decay * avg + (1.0 - decay) * new, state.ema,
        {'params': new_state.params, 'batch_stats': batch_stats}))
  if update.drop_nonfinite:
    # The step still counts, so the data stream stays in step; the optimizer's own
    # count (and with it the schedule) does not advance.
    new_state = new_state.replace(**{
        name: _select(finite, getattr(new_state, name), getattr(state, name))
        for name in ('params', 'opt_state', 'batch_stats', 'ema')})
  skipped = state.skipped_steps + jnp.where(finite, 0, 1).astype(jnp.int32)
  loss_scale = state.loss_scale
  return new_state.replace(
      skipped_steps=skipped,
      first_skipped_step=jnp.where(finite | (state.skipped_steps > 0),
                                   state.first_skipped_step, new_state.step).astype(jnp.int32),
      loss_scale=None if loss_scale is None else loss_scale.adjust(finite))


def train_step(state: TrainState, batch: dict[str, jnp.ndarray], *,
               learning_rate_fn: Callable[[jnp.ndarray], jnp.ndarray],
               options: StepOptions = StepOptions(),
               diagnostics: bool = False) -> tuple[TrainState, dict[str, Any]]:
  """One optimizer step on a global batch: its inputs prepared, its gradient taken, the
  update applied (the three groups of `options`, resnet_jax/step_options.py).

  The step holds no conditional: on XLA:GPU a `conditional` copies its predicate to
  the host and blocks the stream, so the host could not run ahead of the device.

  Args:
    state: the current state (donated by the trainer).
    batch: {'image': [B, H, W, C] (uint8 or float), 'label': [B]}.
    learning_rate_fn: the schedule, evaluated here only for logging, at the
      optimizer's own count of applied updates (the step its schedule sees).
    options: inputs, forward and update options (step_options.StepOptions).
    diagnostics: also return resnet_jax.diagnostics.compute's tags, from this step's
      own forward and backward pass (the model sows its responses into the
      `diagnostics` collection). False traces exactly the step without them.

  Returns:
    The new state and this step's metrics: 'loss' and 'finite' (scalars), 'top1'
    ([B], 1.0 where correct), 'learning_rate', 'skipped_steps', 'loss_scale'
    (float32 scalars; loss_scale 1 without loss scaling), 'grad_norm', 'param_norm',
    'update_norm' (global_norms; update_norm 0 for a dropped step); with `diagnostics`, also
    'diagnostics': {tag: float32 scalar}.
  """
  if diagnostics and options.forward.grad_accum_steps > 1:
    raise ValueError('diagnostics need grad_accum_steps 1')
  num_classes = state.params['head']['bias'].shape[-1]
  images, targets = _prepared(state.step, batch, num_classes, options.inputs)
  taken = _gradients(state, images, targets, options.forward, diagnostics)
  finite = jnp.isfinite(taken.mean_loss) & all_finite(taken.grads)
  new_state = _updated(state, taken.grads, taken.batch_stats, finite, options.update)
  step_metrics = {
      'loss': taken.mean_loss, 'finite': finite,
      'top1': top_k_correct(taken.logits, batch['label'], 1),
      **global_norms(taken.grads, state.params, new_state.params),
      'learning_rate': jnp.asarray(
          learning_rate_fn(optim.applied_updates(state.opt_state, state.step)), jnp.float32),
      'skipped_steps': new_state.skipped_steps.astype(jnp.float32),
      'loss_scale': jnp.asarray(1.0 if state.loss_scale is None else
                                state.loss_scale.loss_scale, jnp.float32)}
  if diagnostics:
    step_metrics['diagnostics'] = diagnostics_lib.compute(taken.grads, state.params,
                                                          new_state.params, taken.sown)
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
