"""The embedded default dataset: scikit-learn's 1,797 handwritten digits as a TFDS builder.

The images ship inside scikit-learn (UCI optdigits, 8×8, 17 grey levels), so preparing
the dataset needs no download. A fixed permutation holds out 360 images (20 %) as the
`test` split; the other 1,437 are `train`.
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST_EXAMPLES = 360


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's bundled handwritten digits, 8×8×1 uint8, 10 classes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Fixed 1,437 / 360 train/test split (permutation seed 0).'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='Optical recognition of handwritten digits (UCI), as bundled with '
                    'scikit-learn; grey levels 0..16 rescaled to 0..255.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    from sklearn import datasets  # Only needed while preparing.
    digits = datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    order = np.random.RandomState(0).permutation(len(images))
    return {
        'train': self._generate_examples(images, digits.target, order[NUM_TEST_EXAMPLES:]),
        'test': self._generate_examples(images, digits.target, order[:NUM_TEST_EXAMPLES]),
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
    for index in indices:
      yield int(index), {'image': images[index], 'label': int(labels[index])}
