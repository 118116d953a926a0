"""What the trainer knows about a dataset before building anything (no TensorFlow here:
the in-memory source runs without it)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Class names, split sizes and the model's input shape."""
  num_classes: int
  class_names: tuple[str, ...]
  num_train_examples: int
  num_eval_examples: int
  image_shape: tuple[int, int, int]
