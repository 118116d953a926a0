"""What the trainer knows about a dataset before building anything (no TensorFlow here:
the in-memory source runs without it)."""

import dataclasses
import hashlib
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Class names, split sizes and the model's input shape."""
  num_classes: int
  class_names: tuple[str, ...]
  num_train_examples: int
  num_eval_examples: int
  image_shape: tuple[int, int, int]
  # What the training split is (fingerprint()): recorded in the workdir, checked on resume.
  train_fingerprint: str = ''


def fingerprint(parts: Iterable[str]) -> str:
  """A short hash of a split's description: its dataset, version, spec and size, or an
  image folder's file list (label and relative path of every file)."""
  return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]
