"""The trained nets a study reads (a degradation workdir's plainN / resnetN runs), the
examples it evaluates them on, and one compiled evaluation of a net in evaluation mode.

A study evaluates every net in evaluation mode (running BN statistics), as Li et al.
2018's and Veit et al. 2016's code do (`net.eval()`), on examples read once into memory
through the evaluation pipeline (no augmentation; the first `count` of the split).
"""

import dataclasses
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from resnet_jax import models, steps
from resnet_jax.studies import degradation, paths
from resnet_jax.errors import ConfigError
from resnet_jax.storage import trained, workdir


@dataclasses.dataclass(frozen=True)
class TrainedNet:
  """One trained net of a study: `name` is its model (e.g. 'plain56'), its run dir's name."""
  name: str
  family: str  # 'plain' or 'resnet'
  depth: int
  restored: trained.Restored

  @property
  def model(self) -> models.ResNet:
    """The net's model, its units reading the path studies' PATHS variables."""
    return paths.with_path_hooks(self.restored.create_model())


def find_nets(root: str, names: Sequence[str] | None = None) -> list[str]:
  """The model names of the plainN / resnetN runs under `root` (all, sorted by depth
  then family, or `names`, each checked to exist); ConfigError if there are none."""
  found = _runs(root)
  for name in names or ():
    if name not in found:
      raise ConfigError(f'--models {name}: {os.path.join(root, name)!r} is not a run '
                        f'directory; found: {", ".join(found) or "none"}')
  if names:
    return list(names)
  if not found:
    raise ConfigError(f'{root!r} holds no plainN/resnetN runs: train them first with '
                      f'python -m resnet_jax.studies.degradation --workdir={root}')
  return found


def _runs(root: str) -> list[str]:
  """The plainN / resnetN run directories (holding a config) under `root`."""
  found = []
  for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    family = next((f for f in degradation.FAMILIES if entry.startswith(f)), None)
    if family and entry[len(family):].isdigit() and os.path.isfile(
        os.path.join(root, entry, workdir.CONFIG_FILE)):
      found.append(entry)
  return sorted(found, key=lambda name: (_depth(name), name))


def _depth(name: str) -> int:
  return int(name.removeprefix('plain').removeprefix('resnet'))


def load_net(root: str, name: str, config: ml_collections.ConfigDict) -> TrainedNet:
  """The run `root/name`'s newest weights (the live ones, as the degradation command
  evaluates); ConfigError if it was trained on other data than `config` names."""
  run_dir = os.path.join(root, name)
  recorded = workdir.read_config(run_dir)
  for key in ('name', 'image_size'):
    if recorded.dataset[key] != config.dataset[key]:
      raise ConfigError(f'{name} was trained with dataset.{key} {recorded.dataset[key]!r}, '
                        f'the study config says {config.dataset[key]!r}: pass the '
                        '--config the nets were trained with')
  family = 'plain' if name.startswith('plain') else 'resnet'
  return TrainedNet(name, family, _depth(name), trained.restore(run_dir, weights='live'))


def read_examples(config: ml_collections.ConfigDict, split: str, count: int,
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 images, int labels) of the split's first `count` examples (0: all), as the
  evaluation pipeline prepares them (inputs.host_examples: either pipeline)."""
  from resnet_jax.data import inputs  # noqa: PLC0415
  return inputs.host_examples(config, split, count)


Evaluate = Callable[..., tuple[float, float]]


def evaluator(net: TrainedNet, images: np.ndarray, labels: np.ndarray, *,
              batch_size: int = 512, transform: Callable[..., Any] | None = None) -> Evaluate:
  """A function (*args) -> (mean cross-entropy, error) of `net` on the examples.

  `transform(variables, *args)` gives the variables to evaluate (None: the trained ones,
  no args); it runs inside the compiled function, so a direction or a lesion mask is a
  traced argument and one compile serves a whole grid or study. Examples go through in
  chunks of `batch_size` (the last one padded and masked).
  """
  model, info = net.model, net.restored.info
  variables = net.restored.variables
  batch_size = min(batch_size, len(labels))

  # The variables are an argument, not a closure: a constant would be baked into the
  # executable.
  @jax.jit
  def chunk_sums(trained_variables: Any, args: tuple[Any, ...], chunk_images: jax.Array,
                 chunk_labels: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    used = trained_variables if transform is None else transform(trained_variables, *args)
    logits = model.apply(used, steps.normalize_images(chunk_images, info.mean, info.std),
                         train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, chunk_labels)
    wrong = (logits.argmax(-1) != chunk_labels).astype(jnp.float32)
    return (losses * mask).sum(), (wrong * mask).sum()

  chunks = []
  for start in range(0, len(labels), batch_size):
    part_images, part_labels = images[start:start + batch_size], labels[start:start + batch_size]
    mask = np.ones(batch_size, np.float32)
    mask[len(part_labels):] = 0
    pad = batch_size - len(part_labels)
    if pad:
      part_images = np.concatenate([part_images, np.zeros((pad,) + part_images.shape[1:],
                                                          part_images.dtype)])
      part_labels = np.concatenate([part_labels, np.zeros(pad, part_labels.dtype)])
    chunks.append((jnp.asarray(part_images), jnp.asarray(part_labels), jnp.asarray(mask)))

  def evaluate(*args: Any) -> tuple[float, float]:
    sums = [chunk_sums(variables, args, *chunk) for chunk in chunks]
    loss, wrong = (float(sum(float(s[i]) for s in sums)) for i in range(2))
    return loss / len(labels), wrong / len(labels)

  return evaluate
