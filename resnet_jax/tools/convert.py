"""Import PyTorch ResNet weights (torchvision, timm) as variables of our models.

  python -m resnet_jax.tools.convert --source=torchvision --model=resnet50 \
      --input=resnet50-11ad3fa6.pth --output=/tmp/r50_torchvision

reads a local state dict (`.safetensors`, or a `.pth`/`.pt` file loaded with
`torch.load(weights_only=True)`: nothing but tensors is ever unpickled) and writes a
directory that fine-tuning (`init_checkpoint`), predict, report and export read. The
same as a function: `load_torch_checkpoint(path, model_name) -> variables`.

torchvision's ResNets and timm's plain `resnet*` checkpoints share one layout (conv1,
bn1, layer{s}.{b}.conv{k}/bn{k}, downsample.0/.1, fc); ours is v1.5 like both, pads
the same way and uses the same BatchNorm epsilon, so the logits agree to float rounding.
"""

import os
import pickle
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import data, models
from resnet_jax.errors import check_choice
from resnet_jax.storage import trained

SOURCES = ('torchvision', 'timm')
# Models whose torch layout is the one above: ImageNet stems, post-activation residual blocks.
MODELS = tuple(name for name, (variant, preact) in models.VARIANTS.items()
               if variant.stem == 'imagenet' and not preact
               and variant.shortcut_variant == 'identity')
_MODULES = {'stem_conv': 'conv1', 'stem_bn': 'bn1', 'downsample_conv': 'downsample.0',
            'downsample_bn': 'downsample.1', 'head': 'fc'}
_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
           'var': 'running_var'}
_IGNORED = re.compile(r'(^|\.)num_batches_tracked$')


class ConvertError(ValueError):
  """The checkpoint cannot become the requested model; the message names the key."""


def torch_name(path: tuple[str, ...]) -> str:
  """Our variable path (e.g. stage1_block2/conv1/conv/kernel) → the torch key."""
  parts = []
  for part in path[:-1]:
    block = re.fullmatch(r'stage(\d+)_block(\d+)', part)
    if block:
      parts.append(f'layer{block.group(1)}.{int(block.group(2)) - 1}')
    elif part != 'conv':  # blocks.Conv wraps nn.Conv in a module named 'conv'
      parts.append(_MODULES.get(part, part))
  return '.'.join(parts + [_LEAVES[path[-1]]])


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
  """HWIO conv kernels → OIHW; (in, out) dense kernels → (out, in); vectors as they are."""
  if array.ndim == 4:
    return array.transpose(3, 2, 0, 1)
  return array.T if array.ndim == 2 else array


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def _from_torch_layout(array: np.ndarray) -> np.ndarray:
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  return array.T if array.ndim == 2 else array


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a `.safetensors` or `.pth` file as float32 numpy arrays.

  A `.pth` may be a bare state dict or a training checkpoint holding one under
  'state_dict' or 'model' (DDP's 'module.' prefixes are dropped).
  """
  if not os.path.isfile(path):
    raise ConvertError(f'--input {path!r} is not a file')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # noqa: PLC0415
    try:
      tensors = load_file(path)
    except Exception as error:  # noqa: BLE001  (safetensors raises its own error types)
      raise ConvertError(f'cannot read {path!r} as safetensors: {error}') from None
  else:
    tensors = _read_torch_file(path)
  tensors = {re.sub(r'^module\.', '', key): value for key, value in tensors.items()}
  return {key: np.asarray(value, np.float32) for key, value in tensors.items()
          if not _IGNORED.search(key)}


def _read_torch_file(path: str) -> dict[str, Any]:
  try:
    import torch  # noqa: PLC0415  (an optional dependency)
  except ImportError:
    raise ConvertError(f'reading {path!r} needs PyTorch (pip install torch); or save the '
                       'state dict as .safetensors, which needs no torch') from None
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as error:
    first_line = str(error).strip().splitlines()[0]
    raise ConvertError(f'{path!r} holds more than tensors, and arbitrary objects are never '
                       f'unpickled here (torch.load weights_only=True: {first_line})') from None
  except (RuntimeError, EOFError, OSError) as error:
    raise ConvertError(f'cannot read {path!r} with torch.load: {error}') from None
  for wrapper in ('state_dict', 'model'):
    if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
      loaded = loaded[wrapper]
  if not isinstance(loaded, dict):
    raise ConvertError(f'{path!r} holds a {type(loaded).__name__}, not a state dict')
  return {key: value.detach().float().numpy() for key, value in loaded.items()
          if isinstance(value, torch.Tensor)}


def check_model(model_name: str) -> None:
  if model_name not in MODELS:
    raise ConvertError(f'cannot import {model_name!r} from PyTorch; valid models: '
                       f'{", ".join(MODELS)}')


def variables_from_state_dict(state_dict: dict[str, np.ndarray], model_name: str,
                              source: str = 'PyTorch') -> dict[str, Any]:
  """{'params', 'batch_stats'} of `model_name` from a torch state dict.

  Raises:
    ConvertError: naming the first missing key, a key of the wrong shape, or keys the
      model has no place for.
  """
  check_model(model_name)
  if 'fc.weight' not in state_dict:
    raise ConvertError(f"missing key 'fc.weight': not a {source} {model_name} state dict")
  num_classes = state_dict['fc.weight'].shape[0]
  model = models.create_model(model_name, num_classes=num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                             train=False))
  used = set()

  def convert(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> np.ndarray:
    names = tuple(str(getattr(k, 'key', k)) for k in path[1:])
    key = torch_name(names)
    if key not in state_dict:
      raise ConvertError(f'missing key {key!r} (for {"/".join(names)}): not a {source} '
                         f'{model_name} state dict')
    expected = _torch_shape(leaf.shape)
    if state_dict[key].shape != expected:
      raise ConvertError(f'key {key!r} has shape {tuple(state_dict[key].shape)}; '
                         f'{model_name} needs {expected}')
    used.add(key)
    return np.ascontiguousarray(_from_torch_layout(state_dict[key]))

  variables = jax.tree_util.tree_map_with_path(convert, dict(shapes))
  unexpected = sorted(set(state_dict) - used)
  if unexpected:
    raise ConvertError(f'{len(unexpected)} key(s) that {model_name} has no place for, e.g. '
                       f'{", ".join(repr(k) for k in unexpected[:3])}: a deeper or other model?')
  return {'params': variables['params'], 'batch_stats': variables['batch_stats']}


def torch_state_dict(variables: dict[str, Any]) -> dict[str, np.ndarray]:
  """The inverse of variables_from_state_dict: our variables as a torchvision state dict."""
  state_dict = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables[collection])[0]:
      names = tuple(str(getattr(k, 'key', k)) for k in path)
      state_dict[torch_name(names)] = np.ascontiguousarray(_to_torch_layout(np.asarray(leaf)))
  return state_dict


def load_torch_checkpoint(path: str, model_name: str) -> dict[str, Any]:
  """Variables of `model_name` from a local torchvision/timm ResNet checkpoint.

  Args:
    path: a `.safetensors` file, or a `.pth`/`.pt` state dict (needs torch).
    model_name: resnet18, resnet34, resnet50, resnet101, resnet152 (or resnet200).

  Returns:
    {'params': ..., 'batch_stats': ...} for
    `create_model(model_name, num_classes=N).apply(variables, images_nhwc, train=False)`,
    N being the checkpoint's class count; images normalised as torchvision's are.
  """
  check_model(model_name)
  return variables_from_state_dict(read_state_dict(path), model_name)


def _imagenet_class_names() -> tuple[str, ...] | None:
  try:
    from torchvision.models._meta import _IMAGENET_CATEGORIES  # noqa: PLC0415
  except ImportError:
    return None
  return tuple(_IMAGENET_CATEGORIES)


def convert(*, source: str, model_name: str, input_path: str, output_dir: str,
            class_names: tuple[str, ...] | None = None) -> trained.ModelInfo:
  """Writes `output_dir/variables/` and `model_info.json` from a torch checkpoint."""
  check_choice('--source', source, SOURCES, error=ConvertError)
  check_model(model_name)
  if os.path.exists(os.path.join(output_dir, trained.VARIABLES_DIR)):
    raise ConvertError(f'--output {output_dir!r} already holds converted variables; choose '
                       'a new directory')
  variables = variables_from_state_dict(read_state_dict(input_path), model_name, source)
  num_classes = variables['params']['head']['bias'].shape[0]
  if class_names is None and num_classes == 1000:
    class_names = _imagenet_class_names()
  if class_names is not None and len(class_names) != num_classes:
    raise ConvertError(f'{len(class_names)} class names for a {num_classes}-class checkpoint')
  info = trained.ModelInfo(
      model=model_name, num_classes=num_classes,
      class_names=class_names or tuple(str(i) for i in range(num_classes)),
      image_shape=(224, 224, 3), mean=data.IMAGENET_MEAN,
      std=data.IMAGENET_STD, augment='imagenet')
  os.makedirs(output_dir, exist_ok=True)
  trained.save_variables(output_dir, variables)
  trained.write_model_info(output_dir, info)
  return info


def main(argv: list[str]) -> None:
  from absl import flags  # noqa: PLC0415

  from resnet_jax import console  # noqa: PLC0415
  del argv
  console.quiet_libraries()  # orbax logs dozens of INFO lines per save
  values = flags.FLAGS
  names = None
  if values.class_names:
    with open(values.class_names) as f:
      names = tuple(line.strip() for line in f if line.strip())
  try:
    info = convert(source=values.source, model_name=values.model, input_path=values.input,
                   output_dir=values.output, class_names=names)
  except ConvertError as error:
    sys.exit(f'error: {error}')
  print(f'wrote {info.model} ({info.num_classes} classes) to {values.output}')


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_string('source', 'torchvision', f'Where the checkpoint is from: {SOURCES}.')
  flags.DEFINE_string('model', None, f'Our model name: {", ".join(MODELS)}.')
  flags.DEFINE_string('input', None, 'A .safetensors or .pth state dict.')
  flags.DEFINE_string('output', None, 'A new directory for the converted checkpoint.')
  flags.DEFINE_string('class_names', None, 'Optional: a text file, one class name per line.')
  flags.mark_flags_as_required(['model', 'input', 'output'])
  app.run(main)
