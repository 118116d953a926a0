"""The training loop: mesh, data, state, restore; periodic logging, evaluation, checkpoints."""

import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import optax
from absl import logging
from etils import epath
from jax.sharding import Mesh

from resnet_jax import (compilation_cache, config_checks, distributed, finetune, metrics, models,
                        optim, profiling, progress, resume, schedule, sharding,
                        step_options, steps, stopping, summaries, train_state)
from resnet_jax.data import dataset_info, folder_settings, image_folder, inputs
from resnet_jax.cpu import devices as cpu_devices
from resnet_jax.errors import ConfigError
from resnet_jax.storage import checkpointing, trained, training_data
from resnet_jax.storage import workdir as workdir_lib


def _check_finite(state: train_state.TrainState, policy: str, skipped_before: int) -> None:
  """Under 'halt', raises FloatingPointError naming the first non-finite step, if any.

  Reads two scalars from the device: called on log, evaluation and checkpoint steps only.
  """
  skipped = int(state.skipped_steps)
  if policy == 'halt' and skipped > skipped_before:
    where = (f'at step {int(state.first_skipped_step)}' if not skipped_before else
             f'by step {int(state.step)}')
    raise FloatingPointError(
        f'non-finite loss or gradients {where} ({skipped - skipped_before} non-finite '
        'step(s)): the run stopped before saving or evaluating that state '
        '(nonfinite_policy=halt; skip drops such steps and carries on)')


_all_finite = jax.jit(steps.all_finite)


def _eval_and_accumulate(state: train_state.TrainState, batch: dict[str, Any],
                         totals: metrics.EvalMetrics, **kwargs) -> metrics.EvalMetrics:
  return metrics.accumulate_eval(totals, steps.eval_step(state, batch, **kwargs))


_eval_step = jax.jit(_eval_and_accumulate, donate_argnums=2,
                     static_argnames=('use_ema', 'image_mean', 'image_std', 'flip'))


def evaluate(state: train_state.TrainState, data: inputs.Input, config: ml_collections.ConfigDict,
             mesh: Mesh, *, use_ema: bool = False, prefix: str = 'eval') -> dict[str, float]:
  """Masked metrics over the whole evaluation split, every example counted once."""
  totals = metrics.empty(metrics.EvalMetrics, mesh)
  for batch in data.eval_batches():
    totals = _eval_step(state, batch, totals, use_ema=use_ema,
                        image_mean=tuple(config.dataset.mean),
                        image_std=tuple(config.dataset.std), flip=config.eval_flip)
  return metrics.to_host(totals, prefix)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_changes: Sequence[str] = ()) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its newest checkpoint if there is one.

  Args:
    config: a config derived from configs/default.py.
    workdir: holds config.json, TensorBoard events and checkpoints/<step>/.
    allow_changes: config keys (dotted, e.g. 'base_lr', 'dataset.augment') that a resume
      may change besides workdir.RESUMABLE_CHANGES; each change is recorded in the
      workdir's config_history.jsonl.

  Returns:
    The last evaluation's metrics ('eval/top1', ...; 'eval_ema/...' with an EMA).

  Raises:
    ConfigError: a bad config value or dataset, an unusable, busy or incompatible workdir;
      raised before anything is written to `workdir`.
    checkpointing.CheckpointError: checkpoints exist, but none restores.
    FloatingPointError: a non-finite loss or gradient under nonfinite_policy 'halt'.
  """
  workdir = os.path.expanduser(workdir)  # `--workdir=~/x` reaches us unexpanded
  config = config_checks.with_user_paths_expanded(config)
  cpu_devices.request(config.cpu_devices)  # a no-op once JAX has started (the command asked)
  cpu_devices.warn_if_not_in_effect(config.cpu_devices)
  mesh = sharding.make_mesh()
  with image_folder.one_listing():  # a folder's measured settings and its source: one listing
    config = folder_settings.resolved(config, workdir, num_devices=mesh.size)
    config_checks.check_config(config, mesh)
    workdir_lib.check_allowed_keys(allow_changes, config, also=training_data.KEYS)
    workdir_lib.check_writable(workdir)
    workdir = workdir_lib.path(workdir)
    logging.info('Compilation cache: %s',
                 compilation_cache.enable(config.compilation_cache_dir) or 'off')
    data = inputs.create(config, mesh)
  info = data.info
  logging.info('Data: %s', data.description)
  config_checks.check_against_data(config, info)
  init_variables = None
  saved = checkpointing.saved_steps(workdir)
  if config.eval_only and not saved and config.init_checkpoint == '':
    raise ConfigError(f'eval_only: workdir {str(workdir)!r} holds no checkpoint and '
                      'init_checkpoint is empty: nothing to evaluate')
  if config.init_checkpoint != '' and not saved:
    init_variables = finetune.load_init_variables(config)
  # eval_only reads and writes nothing: no lock (it may evaluate beside a training run).
  lock = None if config.eval_only else workdir_lib.Lock(workdir)
  try:
    return _train(config, workdir, data, mesh, init_variables, allow_changes)
  finally:
    if lock is not None:
      lock.release()


def create_state(config: ml_collections.ConfigDict, info: dataset_info.DatasetInfo, mesh: Mesh,
                 learning_rate_fn: optax.Schedule) -> train_state.TrainState:
  """The config's model and optimizer, initialised from config.seed, replicated."""
  model = models.model_from_config(config, info.num_classes)
  return train_state.create_train_state(
      jax.random.key(config.seed), model, optim.create_optimizer(config, learning_rate_fn),
      info.image_shape, use_ema=config.ema_decay > 0, mesh=mesh,
      loss_scale=train_state.create_loss_scale(config))


def bound_train_step(config: ml_collections.ConfigDict, learning_rate_fn: optax.Schedule, *,
                     diagnostics: bool = False, steps_per_epoch: int = 0) -> Callable[..., Any]:
  """steps.train_step with the config's options bound: (state, batch) -> (state, per-step
  metrics). `steps_per_epoch` places ema_copy_during_warmup's end."""
  return functools.partial(
      steps.train_step, learning_rate_fn=learning_rate_fn,
      options=step_options.StepOptions.from_config(config, steps_per_epoch=steps_per_epoch),
      diagnostics=diagnostics)


def make_train_step(config: ml_collections.ConfigDict, learning_rate_fn: optax.Schedule,
                    mesh: Mesh, *, diagnostics: bool = False, steps_per_epoch: int = 0
                    ) -> Callable[..., tuple[train_state.TrainState, metrics.TrainMetrics]]:
  """The bound train step, accumulating its metrics on the device, jitted over `mesh`:
  (state, batch, totals) -> (state, totals); state and totals are donated. With
  `diagnostics`: (state, totals, {tag: scalar}), the step's diagnostics.py tags. Each new
  batch shape (a progressive-resizing resolution) compiles it once more."""
  step = bound_train_step(config, learning_rate_fn, diagnostics=diagnostics,
                          steps_per_epoch=steps_per_epoch)

  def step_and_accumulate(state: train_state.TrainState, batch: dict[str, Any],
                          totals: metrics.TrainMetrics):
    batch = dict(batch)
    # Image folders: 1 where an unreadable file's row holds the next readable image.
    unreadable = batch.pop('unreadable', None)
    state, step_metrics = step(state, batch)
    if unreadable is not None:
      step_metrics['unreadable'] = unreadable
    tags = step_metrics.pop('diagnostics', None)
    totals = metrics.accumulate(totals, step_metrics)
    return (state, totals) if tags is None else (state, totals, tags)

  replicated = sharding.replicated(mesh)
  return jax.jit(step_and_accumulate,
                 in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
                 out_shardings=replicated, donate_argnums=(0, 2))


def _evaluate_only(state: train_state.TrainState, config: ml_collections.ConfigDict,
                   data: inputs.Input, mesh: Mesh) -> dict[str, float]:
  """config.eval_only: the metrics of the restored (or imported) state; nothing is written."""
  summary = evaluate(state, data, config, mesh)
  if state.ema is not None:
    summary |= evaluate(state, data, config, mesh, use_ema=True, prefix='eval_ema')
  summaries.SummaryWriter(None).write_scalars(int(state.step), summary)
  return summary


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, data: inputs.Input,
           mesh: Mesh, init_variables: dict[str, Any] | None,
           allow_changes: Sequence[str]) -> dict[str, float]:
  """train_and_evaluate() once the config, the data and the workdir are known to be good."""
  info = data.info
  length = schedule.run_length(config, info.num_train_examples)
  steps_per_epoch, num_train_steps = length.steps_per_epoch, length.num_train_steps
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  learning_rate_fn = schedule.learning_rate_fn(config, info.num_train_examples)
  state = create_state(config, info, mesh, learning_rate_fn)
  if init_variables is not None:
    state = finetune.apply_init(state, init_variables, config, mesh)
  logging.info('%s: %s parameters; %d train / %d eval examples, %d steps per epoch, '
               '%d steps', config.model,
               f'{sum(x.size for x in jax.tree.leaves(state.params)):,}',
               info.num_train_examples, info.num_eval_examples, steps_per_epoch,
               num_train_steps)

  distributed.check_shared_workdir(workdir)
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=config.max_checkpoints_to_keep,
                                            async_save=config.checkpoint_async,
                                            read_only=config.eval_only)
  try:
    start = resume.restore(config, workdir, state, checkpointer, info, length=length,
                           learning_rate_fn=learning_rate_fn, allow_changes=allow_changes)
  except (ConfigError, checkpointing.CheckpointError):
    checkpointer.close()
    raise
  state, start_step, examples_before = start.state, start.step, start.examples_before
  length, learning_rate_fn = start.length, start.learning_rate_fn
  num_train_steps = length.num_train_steps
  if config.eval_only:
    checkpointer.close()
    return _evaluate_only(state, config, data, mesh)
  is_eval_step = lambda step: step % eval_every == 0 or step == num_train_steps  # noqa: E731
  # A stop on an evaluation step left that evaluation undone; a finished run has nothing to
  # do. Process 0's record decides for every process (evaluation is collective).
  last_eval = distributed.shared_from(0, workdir_lib.last_evaluation(workdir))
  evaluated = last_eval is not None and last_eval[0] == start_step
  if start_step >= num_train_steps and evaluated:
    logging.info('The run in %s finished at step %d of %d (last evaluation: %s); nothing to '
                 'do. A longer run: --config.num_epochs (or num_train_steps) and the same '
                 'workdir.', workdir, start_step, num_train_steps,
                 ', '.join(f'{tag}={value:.6g}' for tag, value in sorted(last_eval[1].items())))
    checkpointer.close()
    return last_eval[1]
  started = time.perf_counter()
  writer = summaries.SummaryWriter(str(workdir), just_logging=jax.process_index() > 0)
  writer.write_hparams(workdir_lib.flat_config(config))
  workdir_lib.record_config(workdir, config, changes=start.changes, step=start_step,
                            allowed=allow_changes, learning_rate=start.rate_change)
  if start.record_data:
    training_data.record(workdir, start.data_entry, step=start_step)
  trained.write_model_info(workdir, trained.model_info_from_config(
      config, info.class_names, info.image_shape[-1]))

  train_step = make_train_step(config, learning_rate_fn, mesh, steps_per_epoch=steps_per_epoch)
  diagnostics_every = config.diagnostics_every_steps
  # A second compile of the same step with the diagnostics as extra outputs, run every
  # diagnostics_every steps: the other steps stay exactly the step without them.
  diagnostics_step = (make_train_step(config, learning_rate_fn, mesh, diagnostics=True,
                                      steps_per_epoch=steps_per_epoch)
                      if diagnostics_every > 0 else None)
  batches = data.train_batches(start_step=start_step, examples_before=examples_before)
  report_progress = progress.Progress(first_step=start_step, last_step=num_train_steps,
                                      steps_per_epoch=steps_per_epoch,
                                      batch_size=config.batch_size)

  def run_evaluation(state: train_state.TrainState, step: int) -> dict[str, float]:
    summary = evaluate(state, data, config, mesh)
    if state.ema is not None:
      summary |= evaluate(state, data, config, mesh, use_ema=True, prefix='eval_ema')
    writer.write_scalars(step, summary)
    workdir_lib.record_evaluation(workdir, step, summary)
    return summary

  policy = config_checks.nonfinite_policy(config)
  skipped_before = int(state.skipped_steps)
  stop_signals = stopping.StopSignals()
  trace = profiling.StepTrace(config.profile_steps, str(workdir), start_step=start_step,
                              last_step=num_train_steps)
  stopped = False
  try:
    eval_summary: dict[str, float] = {}
    if start_step and is_eval_step(start_step) and not evaluated:
      logging.info('Evaluating step %d, which the run stopped before evaluating', start_step)
      eval_summary = run_evaluation(state, start_step)
    # JAX's sync point counts from the first call: make it the restored step, so a stop
    # during start-up still yields a step that this loop reaches.
    stopped = stop_signals.reached(start_step)
    last_step = start_step if stopped else num_train_steps
    totals = metrics.empty(metrics.TrainMetrics, mesh)
    interval_start, interval_step = time.perf_counter(), start_step
    for step in range(start_step + 1, last_step + 1):
      trace.before_step(step, state)
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        if diagnostics_step is not None and step % diagnostics_every == 0:
          state, totals, tags = diagnostics_step(state, next(batches), totals)
          writer.write_scalars(step, {tag: float(value)
                                      for tag, value in jax.device_get(tags).items()})
        else:
          state, totals = train_step(state, next(batches), totals)
      trace.after_step(step, state)
      report_progress(step)
      if step % config.log_every_steps == 0 or step == num_train_steps:
        summary = metrics.to_host(totals, 'train')  # the only read of the device per interval
        _check_finite(state, policy, skipped_before)
        checkpointer.check_saves()  # a failed background save, named as soon as known
        elapsed = time.perf_counter() - interval_start
        summary['train/images_per_sec'] = (step - interval_step) * config.batch_size / elapsed
        writer.write_scalars(step, summary)
        totals = metrics.empty(metrics.TrainMetrics, mesh)
        interval_start, interval_step = time.perf_counter(), step
      if is_eval_step(step) or step % config.checkpoint_every_steps == 0:
        # Never evaluate or save a diverged state. The check waits for the steps still in
        # flight (dispatch is asynchronous): training time, not the pause's.
        _check_finite(state, policy, skipped_before)
      pause_start = time.perf_counter()
      stopped = stop_signals.reached(step)
      if is_eval_step(step) and not stopped:  # a stopped run evaluates it on resume
        with report_progress.timed('eval'):
          eval_summary = run_evaluation(state, step)
      if step % config.checkpoint_every_steps == 0 or step == num_train_steps or stopped:
        with report_progress.timed('checkpoint'):
          _check_finite(state, policy, skipped_before)
          if not _all_finite((state.params, state.batch_stats, state.opt_state, state.ema)):
            raise FloatingPointError(f'the state of step {step} holds NaN or Inf: not saved')
          checkpointer.save(step, state)
      if stopped:
        break
      interval_start += time.perf_counter() - pause_start  # throughput excludes eval and saving

    if not eval_summary and not stopped:  # Trained to the end, never evaluated there.
      eval_summary = run_evaluation(state, int(state.step))
  finally:  # Also after an error: let in-flight saves of earlier, good steps complete.
    # The input's threads and buffers go now, not silently after the closing line (a
    # tf.data pipeline's teardown can take seconds).
    batches.close()
    trace.stop()
    stop_signals.close()
    checkpointer.close()
    writer.close()
  if stopped:
    raise stopping.RunStopped(int(state.step), num_train_steps, stop_signals.cause,
                              saved=int(state.step) > start_step)
  logging.info('%s', progress.closing_line(
      step=int(state.step), last_step=num_train_steps, seconds=time.perf_counter() - started,
      final=eval_summary, best=workdir_lib.best_evaluation(workdir), workdir=str(workdir)))
  return eval_summary
