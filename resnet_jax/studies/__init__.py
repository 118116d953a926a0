"""Studies of why residual connections work: the research home beside the training core.

- degradation: plain and residual twins trained with one recipe (He et al. 2015, Fig. 6).
- landscape: loss surfaces along filter-normalised random directions (Li et al. 2018);
  directions.py draws the directions.
- lesion: units deleted at test time, path lengths and the gradient per path length (Veit
  et al. 2016); paths.py.
- nets.py: a degradation workdir's trained nets, the examples, one compiled evaluation;
  command.py: the two studies' command line; plots.py: their figures.

Their settings are the config's `study` block (configs/default.py); docs/residual-study.md
shows the figures.
"""

from typing import Any

from resnet_jax.errors import ConfigError


def check_study(study: Any) -> None:
  """ConfigError naming a study setting out of range, or a config without the block."""
  if study is None:
    raise ConfigError('the config has no study block: use a config derived from '
                      'configs/default.py, which defines study.*')
  if study.landscape_points < 3 or study.landscape_points % 2 == 0:
    raise ConfigError(f'study.landscape_points {study.landscape_points} must be odd and '
                      '>= 3 (the centre is a grid point), e.g. 21')
  if study.landscape_range <= 0:
    raise ConfigError(f'study.landscape_range {study.landscape_range} must be > 0, e.g. 1.0')
  for key in ('landscape_examples', 'lesion_examples'):
    if study[key] < 0:
      raise ConfigError(f'study.{key} {study[key]} must be >= 0 (0: the whole split)')
  for key in ('eval_batch_size', 'lesion_draws', 'path_draws', 'path_examples'):
    if study[key] < 1:
      raise ConfigError(f'study.{key} {study[key]} must be >= 1')
