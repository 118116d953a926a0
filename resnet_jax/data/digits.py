"""The embedded default dataset: scikit-learn's 1,797 handwritten digits as a TFDS builder.

The arrays come from sklearn_digits.py (no download: they ship inside scikit-learn), which
the in-memory source reads too.
"""

import tensorflow_datasets as tfds

from resnet_jax.data import sklearn_digits

NUM_TEST_EXAMPLES = sklearn_digits.NUM_TEST_EXAMPLES


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
            'label': tfds.features.ClassLabel(names=list(sklearn_digits.CLASS_NAMES)),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    return {split: self._generate_examples(*arrays)
            for split, arrays in sklearn_digits.arrays().items()}

  def _generate_examples(self, images, labels, indices):
    for image, label, index in zip(images, labels, indices):
      yield int(index), {'image': image, 'label': int(label)}
