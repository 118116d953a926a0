"""A trained model on disk: a run's workdir, or a directory written by resnet_jax.tools.convert.

Both hold `model_info.json` (the architecture, class names and how images are prepared).
A workdir keeps its weights in `checkpoints/<step>/` (the whole train state); a
converted directory in `variables/` ({'params', 'batch_stats'} only). Predict, report,
export and fine-tuning read either through `restore` / `load_variables`.
"""

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from resnet_jax import models, steps
from resnet_jax.data import resolution
from resnet_jax.errors import ConfigError, check_choice
from resnet_jax.models import block_stack
from resnet_jax.storage import checkpointing

MODEL_INFO_FILE = 'model_info.json'
VARIABLES_DIR = 'variables'
WEIGHTS = ('auto', 'ema', 'live')


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What inference needs besides the weights.

  Attributes:
    model: a models.VARIANTS name.
    num_classes: classifier width.
    class_names: one per class, in label order.
    image_shape: (height, width, channels) of the model's input.
    mean: per-channel mean subtracted from 0..255 pixels.
    std: per-channel divisor.
    augment: the dataset.augment of training; decides the evaluation crop (see
      data.preprocess.eval_image and eval_preprocessing).
    bn_epsilon: BatchNorm epsilon.
    eval_crop_fraction: the centre crop's side over the shorter side, for augment
      'imagenet' (dataset.eval_crop_fraction; records written before it was kept: 0.875).
    architecture: the unit options that differ from the model's own
      (models.unit_options; empty for the variant table's models).
  """
  model: str
  num_classes: int
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: str
  bn_epsilon: float = 1e-5
  architecture: dict[str, Any] = dataclasses.field(default_factory=dict)
  eval_crop_fraction: float = 0.875

  def eval_preprocessing(self) -> str:
    """How an image file becomes the model's uint8 input, as evaluation prepared it
    (data.preprocess.eval_image), in words a server without this code can follow."""
    size, _, channels = self.image_shape
    decode = (f'decode to {channels} channel(s) as tf.io.decode_image(channels={channels}) '
              'does (first frame; grayscale <-> RGB converted)')
    uint8 = 'round, clip to 0..255, uint8; not normalised (the artifact normalises)'
    if self.augment == 'imagenet':
      return (f'{decode}; crop the centred square of side floor({self.eval_crop_fraction:g} × '
              'the shorter side), its top and left offsets (height - side) // 2 and '
              f'(width - side) // 2; resize it to {size}×{size}, bilinear with antialiasing '
              f'(tf.image.resize(antialias=True)); {uint8}')
    return (f'{decode}; resize to {size}×{size}, bilinear with antialiasing '
            f'(tf.image.resize(antialias=True)), unless it is that size already (no crop); '
            f'{uint8}')

  def create_model(self, **overrides: Any) -> models.ResNet:
    """The architecture, float32, unscanned (the layout load_variables returns)."""
    return models.create_model(self.model, num_classes=self.num_classes,
                               bn_epsilon=self.bn_epsilon, **(self.architecture | overrides))


def model_info_from_config(config: ml_collections.ConfigDict, class_names: tuple[str, ...],
                           channels: int) -> ModelInfo:
  """The ModelInfo of a training run."""
  size = resolution.eval_image_size(config)  # what it was tested at (FixRes)
  return ModelInfo(model=config.model, num_classes=len(class_names),
                   class_names=tuple(class_names), image_shape=(size, size, channels),
                   mean=tuple(config.dataset.mean), std=tuple(config.dataset.std),
                   augment=config.dataset.augment, bn_epsilon=config.bn_epsilon,
                   architecture=models.unit_options(config),
                   eval_crop_fraction=config.dataset.eval_crop_fraction)


def write_model_info(directory: str | epath.Path, info: ModelInfo) -> None:
  """Writes `directory/model_info.json` (process 0 only)."""
  if jax.process_index() == 0:
    record = dataclasses.asdict(info)
    (epath.Path(directory) / MODEL_INFO_FILE).write_text(json.dumps(record, indent=2))


def read_model_info(directory: str | epath.Path) -> ModelInfo:
  """Reads `directory/model_info.json`; ConfigError if the directory has none."""
  path = epath.Path(directory) / MODEL_INFO_FILE
  if not path.exists():
    raise ConfigError(f'{str(directory)!r} holds no {MODEL_INFO_FILE}: expected a workdir of '
                      'resnet_jax.main or a directory written by resnet_jax.tools.convert')
  record = json.loads(path.read_text())
  return ModelInfo(**{**record, 'class_names': tuple(record['class_names']),
                      'image_shape': tuple(record['image_shape']),
                      'mean': tuple(record['mean']), 'std': tuple(record['std'])})


def _unscanned(collection: Any) -> dict[str, Any]:
  return block_stack.unscanned_layout(dict(collection))


def _read(load: Callable[[], Any], what: str) -> Any:
  """load(), with a damaged checkpoint reported as a one-line ConfigError."""
  try:
    return load()
  except Exception as error:  # noqa: BLE001  (orbax and tensorstore raise many types)
    message = ' '.join(str(error).split())[:200]
    raise ConfigError(f'cannot read {what}: {type(error).__name__}: {message}') from None


def load_variables(directory: str | epath.Path, *, step: int | None = None,
                   weights: str = 'auto') -> tuple[dict[str, Any], int, str]:
  """{'params', 'batch_stats'} as numpy arrays in the unscanned layout, their step, and
  which weights they are: 'ema', 'live' or 'converted'.

  Args:
    directory: a workdir (its newest checkpoint, or `step`), or a converted directory.
    step: a checkpoint step of a workdir; None for the newest.
    weights: 'live', 'ema' (the weight average; the run must have kept one) or 'auto'
      (the average if there is one).

  Raises:
    ConfigError: no checkpoint or variables there, no such step, or no EMA to load.
  """
  check_choice('weights', weights, WEIGHTS, error=ConfigError)
  directory = epath.Path(directory)
  if (directory / VARIABLES_DIR).exists():
    if step is not None or weights == 'ema':
      raise ConfigError(f'{str(directory)!r} holds converted weights: one set, no steps and '
                        'no EMA to choose from')
    path = (directory / VARIABLES_DIR).resolve()
    variables = _read(lambda: checkpointing.load_tree(path), repr(str(path)))
    loaded_step, used = 0, 'converted'
  else:
    available = checkpointing.saved_steps(directory)
    if not available:
      raise ConfigError(f'{str(directory)!r} holds no checkpoints/<step>/ and no '
                        f'{VARIABLES_DIR}/: nothing to load')
    loaded_step = available[-1] if step is None else step
    if loaded_step not in available:
      raise ConfigError(f'no checkpoint of step {loaded_step} in {str(directory)!r}; '
                        f'valid steps: {", ".join(map(str, available))}')
    state = _read(lambda: checkpointing.load_arrays(str(directory), loaded_step),
                  f'checkpoint {loaded_step} of {str(directory)!r}')
    ema = state.get('ema')
    if weights == 'ema' and not ema:
      raise ConfigError(f'the run in {str(directory)!r} kept no weight EMA (ema_decay 0); '
                        "use weights 'live'")
    use_ema = bool(ema) and weights in ('ema', 'auto')
    used = 'ema' if use_ema else 'live'
    variables = ema if use_ema else {'params': state['params'],
                                     'batch_stats': state['batch_stats']}
  return ({'params': _unscanned(variables['params']),
           'batch_stats': _unscanned(variables.get('batch_stats') or {})}, loaded_step, used)


def save_variables(directory: str | epath.Path, variables: dict[str, Any]) -> None:
  """Writes {'params', 'batch_stats'} to `directory/variables/` (which must not exist)."""
  path = (epath.Path(directory) / VARIABLES_DIR).resolve()
  tree = jax.tree.map(np.asarray, {'params': variables['params'],
                                   'batch_stats': variables['batch_stats']})
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, tree)
  checkpointer.wait_until_finished()


@dataclasses.dataclass(frozen=True)
class Restored:
  """A trained model ready for inference; `weights` is 'ema', 'live' or 'converted'."""
  info: ModelInfo
  variables: dict[str, Any]
  step: int
  weights: str

  def create_model(self, **overrides: Any) -> models.ResNet:
    return self.info.create_model(**overrides)

  def logits_fn(self, **overrides: Any) -> Callable[[Any, jax.Array], jax.Array]:
    """(variables, uint8 images) -> logits: the normalisation and eval-mode forward that
    predict, report and export share; `overrides` go to create_model."""
    model = self.create_model(**overrides)
    mean, std = self.info.mean, self.info.std

    def logits(variables: Any, images: jax.Array) -> jax.Array:
      return model.apply(variables, steps.normalize_images(images, mean, std), train=False)

    return logits


def restore(directory: str, *, step: int | None = None, weights: str = 'auto') -> Restored:
  """The model of a workdir or converted directory, with its weights and ModelInfo."""
  if not os.path.isdir(directory) and '://' not in directory:
    raise ConfigError(f'{directory!r} is not a directory: expected a workdir or a converted '
                      'checkpoint directory')
  info = read_model_info(directory)
  variables, loaded_step, used = load_variables(directory, step=step, weights=weights)
  return Restored(info=info, variables=variables, step=loaded_step, weights=used)
