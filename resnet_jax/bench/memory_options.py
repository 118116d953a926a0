"""What each memory option keeps: XLA's memory analysis of the compiled training step.

  python -m resnet_jax.bench.memory_options [--model=resnet50] [--batch_size=8] \
      [--image_size=224] [--dtype=float32] [--conv_impl=xla] \
      [--variants=plain,remat,remat_conv_outputs,scan_blocks,scan_remat,scan_remat_conv_outputs] \
      [--format=text|json]

For each variant (VARIANTS) it builds the trainer's own step (steps.train_step with SGD
momentum, on abstract state: nothing is initialised or run), compiles it for the
default backend and prints:

- temp_mib: XLA's temporaries (`compiled.memory_analysis().temp_size_in_bytes`): the
  activations kept for the backward pass and everything else the step allocates;
- argument_mib, output_mib: the state and batch in, the new state out (donated);
- residual_mib: what JAX's autodiff keeps from the forward pass for the backward (the
  leaves of `jax.vjp`'s backward function for the model's loss), before XLA sees it:
  independent of the backend, and what a scanned stage must store as [units, ...] arrays;
- convolutions: `convolution` ops in the compiled HLO (a backward that recomputes no
  convolution has as many as the plain step).

Only JAX, flax and optax are imported (no TensorFlow), so it runs on a bare accelerator
image too. docs/models.md, "Memory options", gives the figures and what they mean: in
particular, XLA:CPU hoists the recomputation of an unrolled `remat` back into the forward
pass, so on CPU only the scanned variants show what remat saves.
"""

import functools
import json
import re
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax
from absl import flags

from resnet_jax import models, steps, train_state
from resnet_jax.bench import command_flags
from resnet_jax.cpu import conv as cpu_conv

VARIANTS: dict[str, dict[str, Any]] = {
    'plain': {},
    'remat': {'remat': True, 'remat_policy': 'full'},
    'remat_conv_outputs': {'remat': True, 'remat_policy': 'conv_outputs'},
    'scan_blocks': {'scan_blocks': True},
    'scan_remat': {'scan_blocks': True, 'remat': True, 'remat_policy': 'full'},
    'scan_remat_conv_outputs': {'scan_blocks': True, 'remat': True,
                                'remat_policy': 'conv_outputs'},
}
"""Variant name → create_model options."""

_MIB = 2**20


def abstract_train_state(model: Any, tx: optax.GradientTransformation,
                         image_shape: tuple[int, ...]) -> train_state.TrainState:
  """The shapes of train_state.create_train_state's state (no EMA, no loss scale), unallocated."""

  def init() -> train_state.TrainState:
    variables = models.init_variables(model, jax.random.key(0),
                                      jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return train_state.TrainState.create(
        apply_fn=model.apply, params=variables['params'], tx=tx,
        batch_stats=variables.get('batch_stats', {}),
        skipped_steps=jnp.zeros((), jnp.int32),
        first_skipped_step=jnp.zeros((), jnp.int32)).replace(step=jnp.zeros((), jnp.int32))

  return jax.eval_shape(init)


def count_convolutions(hlo_text: str) -> int:
  """`convolution` instructions in an HLO module's text (fused computations included)."""
  return len(re.findall(r'= \S+ convolution\(', hlo_text))


def residual_bytes(model: Any, state: train_state.TrainState, images: jax.ShapeDtypeStruct) -> int:
  """Bytes that reverse-mode autodiff keeps from the model's training forward pass: the
  array leaves of the backward function that jax.vjp returns for loss(params), params
  and images included (abstract: nothing runs)."""

  def residuals(params: Any, batch_stats: Any, images: jax.Array) -> list[jax.Array]:
    def loss(params: Any) -> jax.Array:
      logits, _ = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                              train=True, mutable=['batch_stats'])
      return logits.sum()

    _, backward = jax.vjp(loss, params)
    return jax.tree.leaves(backward)

  shapes = jax.eval_shape(residuals, state.params, state.batch_stats, images)
  return sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in shapes)


def measure(model_name: str, variant: str, *, batch_size: int, image_size: int,
            dtype: str = 'float32', conv_impl: str = 'xla', num_classes: int = 1000,
            residuals: bool = True) -> dict[str, Any]:
  """One row of the table: the compiled train step of `model_name` under `variant`."""
  if variant not in VARIANTS:
    raise ValueError(f'unknown variant {variant!r}; valid: {", ".join(VARIANTS)}')
  model = models.create_model(model_name, num_classes=num_classes, dtype=dtype,
                              conv_impl=conv_impl, **VARIANTS[variant])
  tx = optax.sgd(0.1, momentum=0.9)
  state = abstract_train_state(model, tx, (image_size, image_size, 3))
  batch = {'image': jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.uint8),
           'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32),
           'mask': jax.ShapeDtypeStruct((batch_size,), jnp.float32)}
  step = jax.jit(functools.partial(steps.train_step,
                                   learning_rate_fn=optax.constant_schedule(0.1)),
                 donate_argnums=0)
  compiled = step.lower(state, batch).compile()
  analysis = compiled.memory_analysis()
  row = {'model': model_name, 'variant': variant, 'batch_size': batch_size,
         'image_size': image_size, 'dtype': dtype, 'conv_impl': conv_impl,
         'backend': jax.default_backend(),
         'temp_mib': analysis.temp_size_in_bytes / _MIB,
         'argument_mib': analysis.argument_size_in_bytes / _MIB,
         'output_mib': analysis.output_size_in_bytes / _MIB,
         'alias_mib': analysis.alias_size_in_bytes / _MIB,
         'convolutions': count_convolutions(compiled.as_text())}
  if residuals:
    images = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.float32)
    row['residual_mib'] = residual_bytes(model, state, images) / _MIB
  return row


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """An aligned text table of measure()'s rows."""
  if not rows:
    return ''
  first = rows[0]
  lines = [(f'{first["model"]} {first["dtype"]} batch {first["batch_size"]} at '
            f'{first["image_size"]}², conv_impl={first["conv_impl"]}, '
            f'backend {first["backend"]}'),
           (f'{"variant":<24} {"temp MiB":>9} {"args MiB":>9} {"residuals MiB":>13} '
            f'{"convolutions":>12}')]
  for row in rows:
    residual = row.get('residual_mib')
    lines.append(f'{row["variant"]:<24} {row["temp_mib"]:>9.1f} {row["argument_mib"]:>9.1f} '
                 f'{"-" if residual is None else f"{residual:.1f}":>13} '
                 f'{row["convolutions"]:>12}')
  return '\n'.join(lines)


_FLAGS = flags.FlagValues()  # its own: see command_flags.py
flags.DEFINE_string('model', 'resnet50', 'A registered model name.', flag_values=_FLAGS)
flags.DEFINE_integer('batch_size', 8, 'Global batch.', flag_values=_FLAGS)
flags.DEFINE_integer('image_size', 224, 'Image side.', flag_values=_FLAGS)
flags.DEFINE_integer('num_classes', 1000, 'Classifier width.', flag_values=_FLAGS)
flags.DEFINE_string('dtype', 'float32', ', '.join(models.DTYPES), flag_values=_FLAGS)
flags.DEFINE_string('conv_impl', 'xla', 'xla (default: what GPUs and TPUs run), dot or auto',
                    flag_values=_FLAGS)
command_flags.define_subset('variants', VARIANTS, 'Variants to measure', flag_values=_FLAGS)
flags.DEFINE_bool('no_residuals', False,
                  'skip the residual_mib column (one more trace per variant)', flag_values=_FLAGS)
flags.DEFINE_enum('format', 'text', ['text', 'json'], 'Output format.', flag_values=_FLAGS)


def main(argv: Sequence[str]) -> int:
  args = command_flags.parse(_FLAGS, argv, prog='python -m resnet_jax.bench.memory_options',
                             doc=__doc__)
  try:
    models.check_model_name(args.model)
    models.check_image_size(args.model, args.image_size)
    models.compute_dtype(args.dtype)
    cpu_conv.check_conv_impl(args.conv_impl)
  except ValueError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  rows = []
  for variant in args.variants:
    rows.append(measure(args.model, variant, batch_size=args.batch_size,
                        image_size=args.image_size, dtype=args.dtype,
                        conv_impl=args.conv_impl, num_classes=args.num_classes,
                        residuals=not args.no_residuals))
    if args.format == 'text':  # one line at a time: a ResNet-50 compile takes a while
      print(format_table(rows).split('\n')[-1] if len(rows) > 1 else format_table(rows),
            flush=True)
  if args.format == 'json':
    print(json.dumps(rows, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
