"""The residual-network studies: loss landscapes (Li et al. 2018) and lesions and paths
(Veit et al. 2016): resnet_jax.studies.landscape, resnet_jax.studies.lesion, resnet_jax/studies/."""

import itertools
import json
import math
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import degradation_digits as degradation_config
from resnet_jax import models, studies
from resnet_jax.errors import ConfigError
from resnet_jax.models.blocks import BasicBlock, ResidualUnit
from resnet_jax.storage import trained
from resnet_jax.studies import directions, landscape, lesion, nets, paths

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGE_SHAPE = (8, 8, 1)


def _study_settings(**overrides):
  config = degradation_config.get_config()
  with config.unlocked():
    for key, value in overrides.items():
      config.study[key] = value
  return config.study


def _net(name, seed=0):
  """An untrained net with random BN scales, offsets and running statistics (so no
  branch starts at zero and BN is not the identity)."""
  info = trained.ModelInfo(model=name, num_classes=10, class_names=tuple('0123456789'),
                           image_shape=IMAGE_SHAPE, mean=(8.0,), std=(4.0,), augment='none')
  model = info.create_model()
  variables = model.init(jax.random.key(seed), jnp.zeros((1, *IMAGE_SHAPE)), train=False)
  leaves, treedef = jax.tree.flatten(variables['batch_stats'])
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  stats = [0.3 * jax.random.normal(k, x.shape) if i % 2 == 0 else
           jax.random.uniform(k, x.shape, minval=0.5, maxval=2.0)
           for i, (k, x) in enumerate(zip(keys, leaves))]  # flax sorts: mean, var
  leaves, param_tree = jax.tree.flatten(variables['params'])
  keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
  params = jax.tree.unflatten(param_tree, [
      x if x.ndim > 1 else jax.random.uniform(k, x.shape, minval=0.5, maxval=1.5)
      for k, x in zip(keys, leaves)])
  variables = variables | {'params': params, 'batch_stats': jax.tree.unflatten(treedef, stats)}
  restored = trained.Restored(info=info, variables=variables, step=0, weights='live')
  family = 'plain' if name.startswith('plain') else 'resnet'
  return nets.TrainedNet(name, family, int(name[len(family):]), restored)


def _examples(count=24, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 17, (count, *IMAGE_SHAPE)).astype(np.uint8),
          rng.integers(0, 10, count).astype(np.int32))


def _logits(net, variables, images):
  info = net.restored.info
  normalised = (jnp.asarray(images, jnp.float32) - info.mean[0]) / info.std[0]
  return net.model.apply(variables, normalised, train=False)


# Filter-normalised directions ----------------------------------------------------------

def test_each_filter_of_a_direction_has_its_filters_norm():
  params = _net('resnet20').restored.variables['params']
  direction = directions.random_direction(params, jax.random.key(3))
  checked = 0
  for d, w in zip(jax.tree.leaves(direction), jax.tree.leaves(params)):
    if w.ndim <= 1:
      assert not np.any(np.asarray(d)), 'BN and bias entries keep a zero direction'
      continue
    # A filter: one output channel (the last axis; a dense layer's output unit).
    d, w = (np.asarray(x).reshape(-1, x.shape[-1]) for x in (d, w))
    np.testing.assert_allclose(np.linalg.norm(d, axis=0), np.linalg.norm(w, axis=0),
                               rtol=1e-5)
    checked += 1
  assert checked == 19 + 1  # 19 convolutions and the classifier


def test_directions_differ_per_seed_and_repeat_with_it():
  params = _net('plain20').restored.variables['params']
  first, again, other = (jax.tree.leaves(directions.random_direction(params, jax.random.key(s)))
                         for s in (0, 0, 1))
  kernel = next(i for i, leaf in enumerate(first) if leaf.ndim == 4)
  np.testing.assert_array_equal(first[kernel], again[kernel])
  assert not np.allclose(first[kernel], other[kernel])


# The landscape ---------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['plain20', 'resnet20'])
def test_the_surface_at_the_centre_is_the_models_loss(name):
  net, (images, labels) = _net(name), _examples()
  row = landscape.net_landscape(net, images, labels,
                                _study_settings(landscape_points=3, eval_batch_size=10))
  loss, error = nets.evaluator(net, images, labels)()
  logits = _logits(net, net.restored.variables, images)
  expected = -jax.nn.log_softmax(logits)[np.arange(len(labels)), labels].mean()
  assert loss == pytest.approx(float(expected), rel=1e-5)
  assert row['centre_loss'] == pytest.approx(loss, rel=1e-5)
  assert row['line_loss'][1] == pytest.approx(loss, rel=1e-5)
  assert row['centre_error'] == pytest.approx(error)
  grid = np.asarray(row['grid_loss'])
  assert grid.shape == (3, 3) and np.sum(grid != grid[1, 1]) == 8


def test_surface_shape_tells_a_bowl_from_a_rough_surface():
  coords = np.linspace(-1, 1, 21)
  a, b = np.meshgrid(coords, coords, indexing='ij')
  bowl = landscape.surface_shape(a**2 + 2 * b**2, span=1.0)
  assert bowl['local_minima'] == 1 and bowl['negative_curvature'] == 0
  assert 0 < bowl['rise_0.25'] < bowl['rise_0.5'] < bowl['rise_1']
  rough = landscape.surface_shape(a**2 + b**2 + 0.3 * np.sin(12 * a) * np.sin(12 * b), 1.0)
  assert rough['local_minima'] > 1 and rough['negative_curvature'] > 0.2
  # The cross term: a saddle everywhere, and a tilted bowl that is still convex.
  assert landscape.surface_shape(a * b, 1.0)['negative_curvature'] == 1
  assert landscape.surface_shape(a**2 + b**2 + 1.9 * a * b, 1.0)['negative_curvature'] == 0


# Lesions ---------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['plain20', 'resnet20'])
def test_deleting_no_unit_reproduces_the_models_error(name):
  net, (images, labels) = _net(name), _examples()
  row = lesion.net_lesions(net, images, labels, _study_settings(lesion_draws=2))
  assert row['error'] == nets.evaluator(net, images, labels)()[1]
  assert row['downsampling'] == ['stage2_block1', 'stage3_block1']
  deletable = 9 if name == 'resnet20' else 7
  assert len(row['single']) == deletable
  assert [r['k'] for r in row['random']] == list(range(1, 8))
  assert len(row['random'][0]['errors']) == 2 and len(row['random'][-1]['errors']) == 1


def test_plain_and_residual_twins_lose_the_same_random_units():
  images, labels = _examples()
  settings = _study_settings(lesion_draws=3)
  plain, residual = (lesion.net_lesions(_net(name), images, labels, settings)
                     for name in ('plain20', 'resnet20'))
  assert [r['deleted'] for r in plain['random']] == [r['deleted'] for r in residual['random']]
  assert len({tuple(d) for d in plain['random'][1]['deleted']}) > 1  # draws differ


@pytest.mark.parametrize('unit', ['stage1_block2', 'stage2_block1'])
def test_deleting_a_residual_unit_is_its_branch_set_to_zero(unit):
  net, (images, _) = _net('resnet20'), _examples()
  names = paths.unit_names(net.restored.variables['params'])
  keep = jnp.asarray([0.0 if n == unit else 1.0 for n in names])
  deleted = _logits(net, paths.with_paths(net.restored.variables, names, keep), images)
  # Independently: the branch ends in BN (original placement), so a BN with scale 0 and
  # offset 0 outputs exactly zero.
  params = jax.tree.map(lambda x: x, net.restored.variables['params'])
  params[unit]['bn2'] = {'scale': jnp.zeros_like(params[unit]['bn2']['scale']),
                         'bias': jnp.zeros_like(params[unit]['bn2']['bias'])}
  zeroed = _logits(net, net.restored.variables | {'params': params}, images)
  np.testing.assert_allclose(deleted, zeroed, rtol=1e-5, atol=1e-5)
  intact = _logits(net, net.restored.variables, images)
  assert not np.allclose(deleted, intact, atol=1e-3)


def test_deleting_a_plain_unit_makes_it_the_identity():
  net, (images, _) = _net('plain20'), _examples()
  names = [n for n in paths.unit_names(net.restored.variables['params'])
           if n not in ('stage2_block1', 'stage3_block1')]
  keep = jnp.asarray([0.0 if n == 'stage2_block2' else 1.0 for n in names])
  deleted = _logits(net, paths.with_paths(net.restored.variables, names, keep), images)

  def identity(next_fun, args, kwargs, context):
    if (isinstance(context.module, ResidualUnit) and context.module.name == 'stage2_block2'
        and context.method_name == '__call__'):
      return args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(identity):
    expected = _logits(net, net.restored.variables, images)
  np.testing.assert_allclose(deleted, expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='stage2_block1 changes the shape'):
    _logits(net, paths.with_paths(net.restored.variables, ['stage2_block1'],
                                  jnp.zeros(1)), images)


# Paths -------------------------------------------------------------------------------------

@pytest.mark.parametrize('units', [1, 3, 9, 27, 54])
def test_path_length_counts_sum_to_two_to_the_n(units):
  counts = paths.path_length_counts(units)
  assert sum(counts) == 2**units and len(counts) == units + 1
  assert counts == counts[::-1] and counts[1] == units


def _three_unit_net():
  model = paths.with_path_hooks(models.ResNet(
      stage_sizes=(1, 1, 1), block_cls=BasicBlock, num_classes=4, stem='cifar',
      stage_filters=(4, 8, 8), shortcut='zero_pad', zero_init_residual=False))
  images = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
  return model, model.init(jax.random.key(1), images, train=False), images


def test_routes_leave_the_forward_pass_alone_and_split_the_gradient_into_paths():
  model, variables, images = _three_unit_net()
  labels = jnp.arange(5) % 4
  names = paths.unit_names(variables['params'])
  assert names == ['stage1_block1', 'stage2_block1', 'stage3_block1']
  plain_logits = model.apply(variables, images, train=False)
  gradient = jax.jit(paths.input_gradient, static_argnums=0)
  whole = gradient(model, variables, images, labels)
  by_route = []
  for route in itertools.product((0.0, 1.0), repeat=3):
    route = jnp.asarray(route)
    routed = paths.with_paths(variables, names, route, 'backprop_branch')
    np.testing.assert_array_equal(model.apply(routed, images, train=False), plain_logits)
    by_route.append(gradient(model, variables, images, labels, route))
  np.testing.assert_allclose(sum(by_route), whole, rtol=1e-4, atol=1e-6)
  assert all(float(jnp.abs(g).max()) > 0 for g in by_route)
  assert not np.allclose(by_route[0], whole)


def test_effective_lengths_is_the_shortest_window():
  assert lesion.effective_lengths([0, 1, 8, 1, 0], share=0.8) == (2, 2)
  assert lesion.effective_lengths([0, 5, 5, 0], share=0.9) == (1, 2)
  counts = paths.path_length_counts(54)
  lo, hi = lesion.effective_lengths(counts)
  assert lo < 27 < hi and hi - lo < 20


# Settings and workdirs ---------------------------------------------------------------------

@pytest.mark.parametrize('override, message', [
    ({'landscape_points': 20}, 'study.landscape_points 20 must be odd'),
    ({'landscape_range': 0.0}, 'study.landscape_range 0.0 must be > 0'),
    ({'lesion_examples': -1}, 'study.lesion_examples -1 must be >= 0'),
    ({'lesion_draws': 0}, 'study.lesion_draws 0 must be >= 1'),
    ({'eval_batch_size': 0}, 'study.eval_batch_size 0 must be >= 1'),
    ({'path_draws': 0}, 'study.path_draws 0 must be >= 1'),
    ({'path_examples': 0}, 'study.path_examples 0 must be >= 1'),
    ({'landscape_examples': -2}, 'study.landscape_examples -2 must be >= 0'),
])
def test_bad_study_settings_are_named(override, message):
  with pytest.raises(ConfigError, match=message):
    studies.check_study(_study_settings(**override))


def test_a_config_without_a_study_block_is_named():
  with pytest.raises(ConfigError, match='^the config has no study block'):
    studies.check_study(None)


def test_gradient_per_path_length_has_one_figure_per_length():
  images, labels = _examples(count=12)
  norms = paths.gradient_by_path_length(_net('resnet20'), images, labels, draws=2, seed=0)
  assert len(norms) == 10 and all(len(n) == 2 for n in norms)
  assert all(np.isfinite(m) and m > 0 for n in norms for m in n)


def test_path_gradient_summary_spread_and_peak_stability():
  counts = [1, 3, 3, 1]
  # Length 2 clearly peaks in total gradient (3 × 5); the draws of length 1 vary.
  norms = [[1.0, 1.0], [1.0, 3.0], [5.0, 5.0], [0.5, 0.5]]
  summary = paths.path_gradient_summary(norms, counts, resamples=200, seed=1)
  assert summary['gradient'] == [1.0, 2.0, 5.0, 0.5]
  assert summary['total_gradient'] == [1.0, 6.0, 15.0, 0.5]
  assert summary['gradient_p10'][1] == pytest.approx(1.2) and summary['gradient_p90'][1] == pytest.approx(2.8)
  assert summary['peak_share'] == [0.0, 0.0, 1.0, 0.0]
  # Two lengths close in total gradient with noisy draws: the share splits between them.
  noisy = paths.path_gradient_summary([[1, 1], [1, 9], [4, 6], [1, 1]], counts, resamples=400)
  assert 0.1 < noisy['peak_share'][1] < 0.9 and noisy['peak_share'][1] + noisy['peak_share'][2] == 1


def test_a_workdir_without_nets_says_how_to_make_them(tmp_path):
  with pytest.raises(ConfigError, match='holds no plainN/resnetN runs: train them first'):
    nets.find_nets(str(tmp_path))
  (tmp_path / 'plain20').mkdir()
  with pytest.raises(ConfigError, match='--models resnet20: .* is not a run directory'):
    nets.find_nets(str(tmp_path), ['resnet20'])


def test_the_cli_names_a_bad_setting_before_reading_anything(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'resnet_jax.studies.landscape',
                           f'--workdir={tmp_path}', '--config.study.landscape_points=4'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      'error: study.landscape_points 4 must be odd and >= 3 (the centre is a grid point), '
      'e.g. 21')


def test_a_net_trained_on_other_data_is_refused(tmp_path):
  run = tmp_path / 'resnet20'
  run.mkdir()
  config = degradation_config.get_config()
  (run / 'config.json').write_text(config.to_json())
  with config.unlocked():
    config.dataset.image_size = 8
  with pytest.raises(ConfigError, match=r'^resnet20 was trained with dataset.image_size 14, '
                     'the study config says 8: pass the --config the nets were trained with$'):
    nets.load_net(str(tmp_path), 'resnet20', config)


@pytest.mark.slow
def test_both_commands_run_on_a_workdir_of_trained_nets(tmp_path, trained_workdir):
  # The session's trained ResNet-8 (digits at 8×8) as a degradation workdir's resnet8.
  (tmp_path / 'resnet8').symlink_to(trained_workdir, target_is_directory=True)
  data_dir = json.loads((tmp_path / 'resnet8' / 'config.json').read_text())['dataset'][
      'data_dir']
  overrides = ['--config.dataset.image_size=8', f'--config.dataset.data_dir={data_dir}',
               '--config.study.landscape_points=3', '--config.study.landscape_examples=40',
               '--config.study.lesion_examples=40', '--config.study.lesion_draws=2',
               '--config.study.path_draws=1', '--config.study.path_examples=8']
  for command, files in (('landscape', ['landscape_8.png', 'interpolation.png']),
                         ('lesion', ['lesion_single.png', 'lesion_random.png',
                                     'path_lengths.png'])):
    result = subprocess.run([sys.executable, '-m', f'resnet_jax.studies.{command}',
                             f'--workdir={tmp_path}', *overrides], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '| resnet8 |' in result.stdout
    for name in files:
      assert (tmp_path / name).read_bytes()[:4] == b'\x89PNG'
  surface, = json.loads((tmp_path / 'landscape.json').read_text())
  assert np.asarray(surface['grid_loss']).shape == (3, 3) and surface['examples'] == 40
  row, = json.loads((tmp_path / 'lesion.json').read_text())
  assert sum(row['paths']['counts']) == 2**3 and len(row['single']) == 3
  assert all(math.isfinite(g) and g > 0 for g in row['paths']['gradient'])
