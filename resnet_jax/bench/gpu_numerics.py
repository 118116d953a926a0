"""Numerics on the accelerator: three checks, each PASS or FAIL with its error and tolerance.

  python -m resnet_jax.bench.gpu_numerics [--checks=logits,bf16_step,scan]
      [--config=configs/imagenet50.py] [--model=resnet50] [--image_size=224] [--json=PATH]
  launch/gpu_check.sh   (the GPU benchmark, then this)

- logits: torchvision weights with non-trivial BatchNorm state, converted
  (tools.torch_parity, tools.convert); our eval-mode float32 logits at precision
  'highest' against torchvision's on the CPU in float32. Error: max |ours − torch| /
  max |torch| over --logit_batch images; TF32 or a conversion bug shows up far above
  the tolerance.
- bf16_step: the recipe's training step (tools.bare_config, as the trainer builds it)
  in bfloat16 and in float32 (precision 'highest') from the same initial state on the
  same batch, --steps steps: every loss and parameter stays finite, and each step's
  bfloat16 loss is within --bf16_loss_rtol × the first float32 loss of float32's.
- scan: the recipe's model with scan_blocks against the same weights unscanned (float32,
  'highest'): train-mode logits and parameter gradients of the loss. Error: max |Δ| /
  max |unscanned|, the larger of the two.

Exits 1 if any check fails or raises. Needs JAX, flax, optax, numpy, torch and
torchvision; no TensorFlow, clu, jmp or ml_collections (bare CUDA JAX images).
"""

import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from typing import Any

from absl import flags

from resnet_jax import config_files
from resnet_jax.bench import command_flags

PROG = 'python -m resnet_jax.bench.gpu_numerics'
CHECKS = ('logits', 'bf16_step', 'scan')


def _relative(difference: float, scale: float) -> float:
  return difference / scale if scale else difference


def check_logits(args: flags.FlagValues, config: Any) -> dict[str, Any]:
  import jax

  from resnet_jax.bench import torch_parity
  with tempfile.TemporaryDirectory() as directory, jax.default_matmul_precision('highest'):
    difference, scale = torch_parity.logit_difference(
        config.model, directory, batch_size=args.logit_batch, image_size=args.image_size)
  return {'error': _relative(difference, scale), 'tolerance': args.logits_rtol,
          'max_abs_difference': difference, 'max_abs_logit': scale,
          'what': f'{config.model} {args.image_size}² float32 logits (precision highest) vs '
                  'torchvision float32 on the CPU: max |Δ| / max |logit|'}


def _recipe_config(args: flags.FlagValues, **overrides: Any) -> Any:
  from resnet_jax.bench import bare_config
  config = bare_config.load(args.config, {
      key: value for key, value in {'model': args.model, 'dataset.image_size': args.image_size,
                                    **overrides}.items() if value is not None})
  config.batch_size = args.batch_size
  config.bn_group_size = min(config.bn_group_size, args.batch_size)
  return config


def _host_batch(config: Any, num_classes: int) -> dict[str, Any]:
  import numpy as np
  rng = np.random.default_rng(0)
  size = config.dataset.image_size
  return {'image': rng.integers(0, 256, (config.batch_size, size, size, 3), np.uint8),
          'label': rng.integers(0, num_classes, (config.batch_size,), np.int32),
          'mask': np.ones((config.batch_size,), np.float32)}


def check_bf16_step(args: flags.FlagValues, config: Any) -> dict[str, Any]:
  import jax
  import numpy as np

  from resnet_jax import sharding, steps, train_state
  from resnet_jax.bench import bare_config
  mesh = sharding.make_mesh()
  host_batch = _host_batch(config, args.num_classes)
  losses, finite = {}, {}
  for dtype in ('float32', 'bfloat16'):
    config.dtype = dtype
    model, tx, _, kwargs = bare_config.recipe_step(config, args.num_classes)
    precision = (jax.default_matmul_precision('highest') if dtype == 'float32'
                 else contextlib.nullcontext())
    with precision:
      state = train_state.create_train_state(
          jax.random.key(0), model, tx, (config.dataset.image_size,) * 2 + (3,),
          use_ema=kwargs['options'].update.ema_decay > 0, mesh=mesh,
          loss_scale=train_state.create_loss_scale(config))
      batch = jax.device_put(host_batch, sharding.batch_sharding(mesh))
      step = jax.jit(functools.partial(steps.train_step, **kwargs), donate_argnums=0)
      losses[dtype] = []
      for _ in range(args.steps):
        state, metrics = step(state, batch)
        losses[dtype].append(float(metrics['loss']))
    finite[dtype] = bool(np.isfinite(losses[dtype]).all() and all(
        np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.params)))
  reference = np.asarray(losses['float32'])
  # Relative to the first loss: later losses fall fast on one repeated batch, and the
  # same absolute deviation would look larger and larger.
  errors = np.abs(np.asarray(losses['bfloat16']) - reference) / abs(reference[0])
  error = float(errors.max()) if all(finite.values()) else float('inf')
  return {'error': error, 'tolerance': args.bf16_loss_rtol, 'losses': losses, 'finite': finite,
          'what': f'{args.steps} {config.model} recipe steps, batch {config.batch_size} at '
                  f'{config.dataset.image_size}², same init and batch: max over steps of '
                  '|loss bf16 − loss fp32| / first loss fp32; every loss and parameter finite: '
                  f'{"yes" if all(finite.values()) else "NO"}'}


def check_scan(args: flags.FlagValues, config: Any) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from resnet_jax import models, steps
  from resnet_jax.models import block_stack
  config.dtype = 'float32'
  config.scan_blocks = False
  unscanned = models.model_from_config(config, args.num_classes)
  scanned = unscanned.clone(scan_blocks=True)
  size = config.dataset.image_size
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.normal(size=(config.batch_size, size, size, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, args.num_classes, (config.batch_size,)), jnp.int32)

  def logits_and_grads(model, variables):
    def loss_fn(params):
      logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                              images, train=True, mutable=['batch_stats'],
                              rngs={'dropout': jax.random.key(1)})
      return steps.cross_entropy(logits, labels).mean(), logits
    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
    return logits, grads

  with jax.default_matmul_precision('highest'):
    variables = jax.jit(lambda key: models.init_variables(unscanned, key, images[:1],
                                                          train=False))(jax.random.key(0))
    layout = {name: block_stack.scan_layout(dict(collection))
              for name, collection in variables.items()}
    want_logits, want_grads = jax.jit(functools.partial(logits_and_grads, unscanned))(variables)
    got_logits, got_grads = jax.jit(functools.partial(logits_and_grads, scanned))(layout)
  want_grads = block_stack.scan_layout(dict(want_grads))

  def relative(got, want):
    pairs = list(zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))
    difference = max(float(jnp.abs(g - w).max()) for g, w in pairs)
    return _relative(difference, max(float(jnp.abs(w).max()) for _, w in pairs))

  logits_error = relative(got_logits, want_logits)
  grads_error = relative(got_grads, want_grads)
  return {'error': max(logits_error, grads_error), 'tolerance': args.scan_rtol,
          'logits_error': logits_error, 'grads_error': grads_error,
          'what': f'{config.model} scan_blocks vs unscanned, float32 (precision highest), '
                  f'batch {config.batch_size} at {size}², train mode: logits '
                  f'{logits_error:.1e}, gradients {grads_error:.1e} (max |Δ| / max |ref|)'}


def run(args: flags.FlagValues) -> list[dict[str, Any]]:
  import jax
  results = []
  functions = {'logits': check_logits, 'bf16_step': check_bf16_step, 'scan': check_scan}
  print(f'gpu_numerics: {jax.device_count()}× {jax.devices()[0].device_kind} '
        f'({jax.default_backend()}), jax {jax.__version__}', flush=True)
  for name in args.checks:
    start = time.perf_counter()
    try:
      result = functions[name](args, _recipe_config(args))
      result['passed'] = bool(result['error'] <= result['tolerance'])
    except Exception as error:  # noqa: BLE001  (a check that raises has failed)
      result = {'passed': False, 'error': None, 'tolerance': None,
                'what': f'raised {type(error).__name__}: {str(error)[:400]}'}
    result |= {'check': name, 'seconds': time.perf_counter() - start}
    results.append(result)
    measured = (f'{result["error"]:.2e} <= {result["tolerance"]:.1e}' if result['passed'] else
                f'{result["error"]:.2e} > {result["tolerance"]:.1e}' if result['error'] is not None
                else 'no measurement')
    print(f'{"PASS" if result["passed"] else "FAIL"} {name}: {measured} ({result["what"]}; '
          f'{result["seconds"]:.0f} s)', flush=True)
  return results


_FLAGS = flags.FlagValues()  # its own: see command_flags.py
command_flags.define_subset('checks', CHECKS, 'the checks', flag_values=_FLAGS)
flags.DEFINE_string('config', config_files.checkout_config('imagenet50'),
                    'the recipe of bf16_step and scan, and the model of all three',
                    flag_values=_FLAGS)
flags.DEFINE_string('model', None, "default: the config's (a torchvision ResNet for logits)",
                    flag_values=_FLAGS)
flags.DEFINE_integer('image_size', 224, 'image side', flag_values=_FLAGS)
flags.DEFINE_integer('num_classes', 1000, 'classifier width', flag_values=_FLAGS)
flags.DEFINE_integer('batch_size', 32, 'bf16_step and scan: images', flag_values=_FLAGS)
flags.DEFINE_integer('logit_batch', 2, 'logits: images', flag_values=_FLAGS)
flags.DEFINE_integer('steps', 3, 'bf16_step: training steps', flag_values=_FLAGS)
# Tolerances. float32 at precision 'highest' differs from torch's CPU float32 by
# accumulation order only (~1e-6 of the largest logit); TF32 (10-bit mantissa) would
# be ~1e-3. bfloat16 (8-bit mantissa) moves a ~6.9 initial loss by ~1e-3 relative.
flags.DEFINE_float('logits_rtol', 2e-4, 'logits: tolerance', flag_values=_FLAGS)
flags.DEFINE_float('bf16_loss_rtol', 2e-2, 'bf16_step: tolerance', flag_values=_FLAGS)
flags.DEFINE_float('scan_rtol', 1e-4, 'scan: tolerance', flag_values=_FLAGS)
flags.DEFINE_string('json', None, 'also write the results here', flag_values=_FLAGS)


def _parse(argv: list[str]) -> flags.FlagValues:
  return command_flags.parse(_FLAGS, argv, prog=PROG, doc=__doc__)


def main(argv: list[str]) -> int:
  """The checks; exit status 1 if any fails."""
  args = _parse(argv)
  results = run(args)
  failed = [r['check'] for r in results if not r['passed']]
  if args.json:
    with open(args.json, 'w') as file:
      json.dump(results, file, indent=2, default=float)
  print(f'gpu_numerics: {"FAIL (" + ", ".join(failed) + ")" if failed else "PASS"} '
        f'({len(results) - len(failed)}/{len(results)} within tolerance)')
  return 1 if failed or not results else 0


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  sys.exit(main(sys.argv[1:]))
