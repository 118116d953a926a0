"""scikit-learn's 1,797 handwritten digits as uint8 arrays: the one split of both the TFDS
builder (digits.py) and the in-memory source, so the two hold the same examples.

The images ship inside scikit-learn (UCI optdigits, 8×8, 17 grey levels); a fixed
permutation (seed 0) holds out 360 images (20 %) as `test`, the other 1,437 are `train`.
"""

import numpy as np

NAME = 'sklearn_digits'
NUM_TEST_EXAMPLES = 360
CLASS_NAMES = tuple(str(d) for d in range(10))
SPLITS = ('train', 'test')


def arrays() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """split -> (uint8 images [N, 8, 8, 1], int32 labels [N], int64 indices into
  scikit-learn's order [N]); grey levels 0..16 rescaled to 0..255."""
  from sklearn import datasets  # noqa: PLC0415  (a second of imports, only when used)
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.RandomState(0).permutation(len(images))
  parts = {'train': order[NUM_TEST_EXAMPLES:], 'test': order[:NUM_TEST_EXAMPLES]}
  return {split: (images[part], labels[part], part) for split, part in parts.items()}
