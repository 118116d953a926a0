"""Export a trained model as a self-contained StableHLO serving artifact (jax.export).

  python -m resnet_jax.tools.export --workdir=/tmp/digits --output=/tmp/digits_served

reads a run's workdir or a directory written by resnet_jax.tools.convert and writes a new
directory holding
  model.jax_exported  the serialized jax.export.Exported: uint8 images
                      [batch, height, width, channels] -> {'logits', 'probabilities'},
                      both float32 [batch, num_classes]; the batch is symbolic, the
                      normalisation and the weights (as constants) are inside;
  signature.json      input and output shapes, class names, image size, mean/std, the
                      preprocessing in words, model, step, weights, platforms and the jax
                      version that wrote it.
Serving needs jax and flatbuffers (jax.export's deserialize imports it) and these two
files only, not this code base:
  `call, signature = export.load(path)`, or `jax.export.deserialize(bytes).call(images)`.
Images are prepared as evaluation prepared them; signature.json's `preprocessing` says
how, step by step (for augment 'imagenet': the centred eval_crop_fraction square, resized;
otherwise a plain resize), as `predict` does it.
"""

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from resnet_jax.errors import ConfigError
from resnet_jax.storage import trained

EXPORTED_FILE = 'model.jax_exported'
SIGNATURE_FILE = 'signature.json'
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
# All lower on a CPU-only machine: the 'xla' convolutions use no platform-specific ops.
DEFAULT_PLATFORMS = ('cpu', 'cuda', 'tpu')
OUTPUTS = ('logits', 'probabilities')
BATCH = 'batch'


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
  """The platforms without repeats; ConfigError naming the valid ones if any is unknown."""
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    problem = f'unknown platforms {", ".join(map(repr, unknown))}' if unknown else 'no platforms'
    raise ConfigError(f'{problem}; valid: {", ".join(PLATFORMS)} (comma-separated)')
  return tuple(dict.fromkeys(platforms))


def check_output(output: str) -> None:
  """ConfigError if `output` is a file or a non-empty directory: never overwrite."""
  if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
    raise ConfigError(f'--output {output!r} already exists and is not an empty directory; '
                      'choose a new one')


def serving_function(
    restored: trained.Restored) -> Callable[[jax.Array], dict[str, jax.Array]]:
  """uint8 images -> {'logits', 'probabilities'}, the weights closed over (so constants).

  conv_impl 'xla' because 'auto' picks the CPU dot forms on this machine, which would
  then be baked into the GPU and TPU lowerings too.
  """
  logits_fn = restored.logits_fn(conv_impl='xla', dtype=jnp.float32)
  variables = restored.variables

  def serve(images: jax.Array) -> dict[str, jax.Array]:
    logits = logits_fn(variables, images)
    return {'logits': logits, 'probabilities': jax.nn.softmax(logits, axis=-1)}

  return serve


def _shape(aval: Any) -> list[int | str]:
  """JSON-able shape: ints, and the symbolic dimensions by name."""
  return [str(d) if jax.export.is_symbolic_dim(d) else int(d) for d in aval.shape]


def export(workdir: str, output: str, *, step: int | None = None, weights: str = 'auto',
           platforms: Sequence[str] = DEFAULT_PLATFORMS) -> dict[str, Any]:
  """Writes `output/model.jax_exported` and `output/signature.json`; returns the signature.

  Args:
    workdir: a training workdir or a directory written by resnet_jax.tools.convert.
    output: a new (or empty) directory.
    step: a checkpoint step of the workdir; None for the newest.
    weights: 'auto', 'ema' or 'live' (see trained.load_variables).
    platforms: what the artifact may run on, a subset of PLATFORMS.

  Raises:
    ConfigError: an unknown platform, an existing `output`, or (from trained.restore) no
      model there, no such step or no EMA; nothing is written then.
  """
  platforms = check_platforms(platforms)
  check_output(output)
  restored = trained.restore(workdir, step=step, weights=weights)
  info = restored.info
  height, width, channels = info.image_shape
  spec = jax.ShapeDtypeStruct(
      jax.export.symbolic_shape(f'{BATCH}, {height}, {width}, {channels}'), jnp.uint8)
  exported = jax.export.export(jax.jit(serving_function(restored)),
                               platforms=platforms)(spec)
  outputs = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
  signature = {
      'format': 'jax.export',
      'file': EXPORTED_FILE,
      'input': {'name': 'images', 'shape': _shape(exported.in_avals[0]), 'dtype': 'uint8',
                'note': 'eval-prepared pixels 0..255, not normalised'},
      'outputs': {name: {'shape': _shape(outputs[name]), 'dtype': str(outputs[name].dtype)}
                  for name in OUTPUTS},
      'class_names': list(info.class_names),
      'image_shape': list(info.image_shape),
      'mean': list(info.mean),
      'std': list(info.std),
      'augment': info.augment,
      'eval_crop_fraction': info.eval_crop_fraction,
      'preprocessing': info.eval_preprocessing(),
      'model': info.model,
      'step': restored.step,
      'weights': restored.weights,
      'source': os.path.abspath(workdir) if '://' not in workdir else workdir,
      'platforms': list(exported.platforms),
      'jax_version': jax.__version__,
      'calling_convention_version': exported.calling_convention_version,
  }
  # Lowered before anything is written, so a failure leaves no half-written directory.
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, EXPORTED_FILE), 'wb') as f:
    f.write(exported.serialize())
  with open(os.path.join(output, SIGNATURE_FILE), 'w') as f:
    json.dump(signature, f, indent=2)
  return signature


def load(path: str) -> tuple[Callable[[Any], dict[str, jax.Array]], dict[str, Any]]:
  """The served function (uint8 images -> {'logits', 'probabilities'}) and its signature.

  Uses jax.export only, never the model code: a server without this package can copy
  these lines. Jitted, so each new batch size compiles once; a shape or dtype other than
  the signature's raises ValueError.
  """
  files = [os.path.join(path, name) for name in (EXPORTED_FILE, SIGNATURE_FILE)]
  missing = [name for name in files if not os.path.isfile(name)]
  if missing:
    raise ConfigError(f'{path!r} is not an export directory: no {", ".join(missing)}')
  with open(files[0], 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(files[1]) as f:
    signature = json.load(f)
  return jax.jit(exported.call), signature


def main(argv: list[str]) -> None:
  from absl import flags  # noqa: PLC0415

  from resnet_jax import console  # noqa: PLC0415
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  console.quiet_libraries()  # orbax logs a dozen INFO lines per restore
  values = flags.FLAGS
  try:
    signature = export(values.workdir, values.output, step=values.step,
                       weights=values.weights, platforms=values.platforms)
  except ConfigError as error:
    sys.exit(f'error: {error}')
  print(f'wrote {signature["model"]} step {signature["step"]} for '
        f'{",".join(signature["platforms"])} to {values.output}')


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_string('workdir', None,
                      'A training workdir or a resnet_jax.tools.convert directory.')
  flags.DEFINE_string('output', None, 'A new directory for the serving artifact.')
  flags.DEFINE_integer('step', None, 'A checkpoint step of --workdir; default: the newest.')
  # Strings, not enums: a bad value then gets the one-line error with the valid choices.
  flags.DEFINE_string('weights', 'auto', f'Which weights: {", ".join(trained.WEIGHTS)}.')
  flags.DEFINE_list('platforms', list(DEFAULT_PLATFORMS),
                    f'Platforms to lower for, comma-separated: {", ".join(PLATFORMS)}.')
  flags.mark_flags_as_required(['workdir', 'output'])
  app.run(main)
