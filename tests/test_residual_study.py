"""The residual idea's instruments: plain nets, shortcut options and the Identity Mappings
ablations, the training diagnostics, the papers' configs and the degradation command."""

import copy
import functools
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cifar10_identity_mappings, cifar10_table6
from configs import degradation_digits as degradation_config
from conftest import small_config
from resnet_jax import config_checks, diagnostics, models, sharding, steps, train, train_state
from resnet_jax.errors import ConfigError
from resnet_jax.studies import degradation
from resnet_jax.tools import diagnostics_plots, report

REPO = pathlib.Path(__file__).resolve().parent.parent
IMAGES = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))


def _init(name, **options):
  model = models.create_model(name, num_classes=10, **options)
  return model, model.init(jax.random.key(0), IMAGES[:1], train=False)


def _count(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def _train_apply(model, variables, **kwargs):
  return model.apply(variables, IMAGES, train=True, mutable=['batch_stats'], **kwargs)[0]


def test_plain_twin_has_the_residual_nets_parameters_and_other_outputs():
  residual, variables = _init('resnet8', zero_init_residual=False)
  plain, plain_variables = _init('plain8', zero_init_residual=False)
  assert jax.tree.structure(variables) == jax.tree.structure(plain_variables)
  assert not np.allclose(_train_apply(residual, variables), _train_apply(plain, variables))


def test_zero_init_residual_leaves_a_plain_net_alive():
  plain, variables = _init('plain20', zero_init_residual=True)
  assert all(np.all(block['bn2']['scale'] == 1) for name, block in variables['params'].items()
             if name.startswith('stage'))
  assert float(jnp.std(_train_apply(plain, variables))) > 0


@pytest.mark.parametrize('option,count', [
    ('zero_pad', 21_115_978),  # B minus its 3 projections (conv + BN)
    ('projection', 21_289_802),  # torchvision's resnet34 at 10 classes
    ('projection_all', 22_208_970)])  # + a projection on each of the 13 identity units
def test_shortcut_options_a_b_c(option, count):
  model = models.create_model('resnet34', num_classes=10, shortcut=option)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), IMAGES[:1], train=False))
  assert _count(variables) == count
  has_projection = ['downsample_conv' in block for block in variables['params'].values()
                    if isinstance(block, dict)]
  assert any(has_projection) == (option != 'zero_pad')


def test_cifar_bottleneck_strides_in_its_first_1x1_like_the_reference_code():
  model, variables = _init('preact_resnet164')
  _, state = model.apply(variables, IMAGES, train=False, capture_intermediates=True,
                         mutable=['intermediates'])
  block = state['intermediates']['stage2_block1']
  assert block['conv1']['__call__'][0].shape[1:3] == (8, 8)  # 16×16 in, stride 2
  assert block['conv2']['__call__'][0].shape[1:3] == (8, 8)
  assert variables['params']['stage1_block1']['downsample_conv']['conv']['kernel'].shape == \
      (1, 1, 16, 64)


def test_gating_closed_and_scaling_to_the_shortcut_agree():
  """g = σ(−50) ≈ 0 makes exclusive gating pass the shortcut only, as scaling (1, 0) does."""
  gated, variables = _init('resnet20', shortcut_variant='exclusive_gating', gate_bias_init=-50.0)
  scaled = models.create_model('resnet20', num_classes=10, shortcut_variant='scaling',
                               shortcut_scale=1.0, residual_scale=0.0)
  plain_params = jax.tree.map(lambda x: x, variables['params'])
  for block in plain_params.values():
    block.pop('gate_conv', None), block.pop('gate_bias', None)
  np.testing.assert_allclose(
      _train_apply(gated, variables),
      _train_apply(scaled, {'params': plain_params, 'batch_stats': variables['batch_stats']}),
      rtol=1e-5, atol=1e-5)
  # A 1×1 conv and a bias per identity unit: 3, 2 and 2 of them in the three stages.
  assert _count(variables) == 269_722 + 3 * (16 * 16 + 16) + 2 * (32 * 32 + 32) + \
      2 * (64 * 64 + 64)


def test_dropout_shortcut_is_random_in_training_only():
  identity, variables = _init('resnet8')
  dropout = models.create_model('resnet8', num_classes=10, shortcut_variant='dropout')
  rngs = [{'dropout': jax.random.key(seed)} for seed in (1, 2)]
  first, second = (_train_apply(dropout, variables, rngs=r) for r in rngs)
  assert not np.allclose(first, second)
  np.testing.assert_allclose(dropout.apply(variables, IMAGES, train=False),
                             identity.apply(variables, IMAGES, train=False), rtol=1e-6)


def test_full_preact_placement_is_the_preact_model():
  preact, variables = _init('preact_resnet8')
  placed = models.create_model('resnet8', num_classes=10, placement='full_preact')
  np.testing.assert_allclose(_train_apply(placed, variables), _train_apply(preact, variables))


@pytest.mark.parametrize('placement', ['bn_after_add', 'relu_before_add', 'relu_preact'])
def test_placements_keep_the_parameters_and_change_the_function(placement):
  original, variables = _init('resnet8', zero_init_residual=False)
  placed = models.create_model('resnet8', num_classes=10, placement=placement,
                               zero_init_residual=False)
  assert jax.tree.structure(placed.init(jax.random.key(0), IMAGES[:1], train=False)) == \
      jax.tree.structure(variables)
  _, state = placed.apply(variables, IMAGES, train=True, capture_intermediates=True,
                          mutable=['batch_stats', 'intermediates'])
  outputs = [block['__call__'][0] for name, block in state['intermediates'].items()
             if name.startswith('stage')]
  if placement == 'relu_before_add':  # ReLU(F) + x of non-negative x stays non-negative
    assert all(float(out.min()) >= 0 for out in outputs)
  if placement == 'relu_preact':  # F ends in BN and the stream is not rectified: negatives
    assert all(float(out.min()) < 0 for out in outputs)
  assert not np.allclose(_train_apply(placed, variables), _train_apply(original, variables))


@pytest.mark.parametrize('override,message', [
    ({'placement': 'bn_before_add'}, "unknown placement 'bn_before_add'; valid: auto, "),
    ({'shortcut': 'D'}, "unknown shortcut 'D'; valid: auto, zero_pad, projection, "),
    ({'shortcut_variant': 'none'}, "unknown shortcut_variant 'none'; valid: identity, "),
    ({'model': 'plain20', 'shortcut_variant': 'scaling'}, "model 'plain20' is plain"),
    ({'model': 'preact_resnet20', 'placement': 'original'}, "contradicts model"),
    ({'shortcut_variant': 'dropout', 'shortcut_dropout': 1.0}, 'must be in [0, 1)'),
    ({'diagnostics_every_steps': -1}, 'diagnostics_every_steps -1 must be >= 0')])
def test_bad_unit_options_name_the_value(override, message):
  config = small_config(**override)
  with pytest.raises(ConfigError, match=None) as error:
    config_checks.check_config(config, sharding.make_mesh())
  assert message in str(error.value) and '\n' not in str(error.value)


@pytest.mark.parametrize('experiment', sorted(cifar10_identity_mappings.EXPERIMENTS))
def test_identity_mappings_experiments_are_valid(experiment):
  config = cifar10_identity_mappings.get_config(experiment)
  config_checks.check_config(config, sharding.make_mesh())
  model = models.model_from_config(config, 10)
  assert model.preact == experiment.endswith('full_preact')


def test_table6_configs_cover_the_paper():
  assert set(cifar10_table6.PAPER_TEST_ERROR) < set(cifar10_table6.MODELS)
  for name in cifar10_table6.MODELS:
    config = cifar10_table6.get_config(name)
    assert config.model == name and config.num_train_steps == 64_000
  with pytest.raises(ValueError, match="unknown model 'plain21'; valid models: plain20"):
    cifar10_table6.get_config('plain21')


# Diagnostics -----------------------------------------------------------------------------

def _state_and_batch(name, **model_options):
  model = models.create_model(name, num_classes=10, conv_impl='xla', zero_init_residual=False,
                              **model_options)
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = train_state.create_train_state(jax.random.key(0), model, optax.sgd(0.1, momentum=0.9),
                                         (16, 16, 3), use_ema=False, mesh=mesh)
  batch = {'image': IMAGES, 'label': jnp.arange(8) % 10}
  return state, batch


def _step(state, batch):
  return jax.jit(functools.partial(steps.train_step, learning_rate_fn=lambda _: 0.1,
                                   diagnostics=True))(state, batch)


@pytest.mark.parametrize('name', ['resnet8', 'preact_resnet8'])
def test_diagnostics_match_an_independent_computation(name):
  state, batch = _state_and_batch(name)
  new_state, step_metrics = _step(state, batch)
  tags = jax.device_get(step_metrics['diagnostics'])

  def loss(params):
    logits, _ = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                               batch['image'], train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()

  grads = jax.jit(jax.grad(loss))(state.params)
  blocks = [n for n in state.params if n.startswith('stage')] + ['head']
  for block in blocks:
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads[block])))
    assert tags[f'diagnostics/grad_norm/{block}'] == pytest.approx(norm, rel=1e-4)
    before = np.sqrt(sum(np.sum(np.square(p)) for p in jax.tree.leaves(state.params[block])))
    update = np.sqrt(sum(np.sum(np.square(a - b)) for a, b in zip(
        jax.tree.leaves(new_state.params[block]), jax.tree.leaves(state.params[block]))))
    assert tags[f'diagnostics/update_ratio/{block}'] == pytest.approx(update / before, rel=1e-4)
  stem = np.sqrt(sum(np.sum(np.square(g)) for n in ('stem_conv', 'stem_bn') if n in grads
                     for g in jax.tree.leaves(grads[n])))
  assert tags['diagnostics/grad_norm/stem'] == pytest.approx(stem, rel=1e-4)

  # The responses, from flax's own record of every module's output in the same pass.
  _, captured = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                               batch['image'], train=True, capture_intermediates=True,
                               mutable=['batch_stats', 'intermediates'])
  responses = {tag: value for tag, value in tags.items() if '/response_std/' in tag}
  assert len(responses) == 6  # 3 units × two 3×3 convs
  for tag, value in responses.items():
    block, conv = tag.split('/')[-2:]
    module = conv if name.startswith('preact') else conv.replace('conv', 'bn')
    output = captured['intermediates'][block][module]['__call__'][0]
    assert value == pytest.approx(float(jnp.std(output)), rel=1e-4), tag


def test_scanned_stages_report_under_unscanned_names():
  state, batch = _state_and_batch('resnet20')
  scanned, _ = _state_and_batch('resnet20', scan_blocks=True)
  plain_tags = jax.device_get(_step(state, batch)[1]['diagnostics'])
  scanned_tags = jax.device_get(_step(scanned, batch)[1]['diagnostics'])
  assert set(plain_tags) == set(scanned_tags)
  for tag in plain_tags:
    assert scanned_tags[tag] == pytest.approx(plain_tags[tag], rel=1e-3, abs=1e-6), tag


def test_diagnostics_off_leave_the_compiled_step_unchanged(no_compilation_cache):
  config = small_config()
  mesh = sharding.make_mesh()
  learning_rate_fn = optax.constant_schedule(0.1)  # one function: HLO metadata names its line
  state = train.create_state(config, _info(), mesh, learning_rate_fn)
  batch = {'image': jnp.zeros((16, 8, 8, 1), jnp.uint8), 'label': jnp.zeros((16,), jnp.int32)}
  batch = sharding.to_global(jax.device_get(batch), mesh)

  def hlo(config, **kwargs):
    step = train.make_train_step(config, learning_rate_fn, mesh, **kwargs)
    return step.lower(state, batch, _totals(mesh)).compile().as_text()

  with_diagnostics = copy.deepcopy(config)
  with_diagnostics.diagnostics_every_steps = 5  # its ordinary steps; one call site, so
  off, ordinary = [hlo(c) for c in (config, with_diagnostics)]  # the metadata matches too
  assert ordinary == off
  assert hlo(with_diagnostics, diagnostics=True) != off


def _info():
  from resnet_jax.data import sources
  return sources.DatasetInfo(num_classes=10, num_train_examples=1437, num_eval_examples=360,
                             image_shape=(8, 8, 1), class_names=tuple(map(str, range(10))))


def _totals(mesh):
  from resnet_jax import metrics
  return metrics.empty(metrics.TrainMetrics, mesh)


def test_depth_order():
  names = ['head', 'stage2_block1', 'stem', 'stage1_block10', 'stage1_block2', 'final_bn']
  assert diagnostics.depth_order(names) == ['stem', 'stage1_block2', 'stage1_block10',
                                            'stage2_block1', 'final_bn', 'head']


# The degradation command -------------------------------------------------------------------

@pytest.mark.slow
def test_degradation_writes_table_figures_and_diagnostics(tmp_path, digits_dir):
  config = degradation_config.get_config()
  config.dataset.data_dir = digits_dir
  config.dataset.image_size = 8
  config.dataset.crop_padding = 1
  config.batch_size = 16
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 6
  config.diagnostics_every_steps = 3
  config.checkpoint_every_steps = 6
  config.warmup_epochs = 0.0
  rows = degradation.run_experiment(config, str(tmp_path), [20])
  assert [row['model'] for row in rows] == ['plain20', 'resnet20']
  assert json.loads((tmp_path / 'degradation.json').read_text()) == rows
  for row in rows:
    assert 0 <= row['train_error'] <= 1 and 0 <= row['test_error'] <= 1
    assert row['num_train_steps'] == 6
  assert '| plain20 |' in degradation.format_table(rows)
  for name in ('degradation.png', 'responses.png'):
    assert (tmp_path / name).read_bytes()[:4] == b'\x89PNG'
  scalars = report.read_scalars(tmp_path / 'plain20')
  assert [step for step, _ in scalars['diagnostics/grad_norm/stage2_block1']] == [3, 6]
  assert len(diagnostics_plots.response_layers(scalars)) == 18
  written = report.plot_diagnostics(str(tmp_path / 'resnet20'),
                                    report.read_scalars(tmp_path / 'resnet20'), tmp_path,
                                    compare=str(tmp_path / 'plain20'))
  assert sorted(written) == ['diagnostics_grad_norm', 'diagnostics_response_std']
  assert all(path.read_bytes()[:4] == b'\x89PNG' for path in written.values())


def test_degradation_rejects_a_depth_without_twins(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'resnet_jax.studies.degradation',
                           f'--workdir={tmp_path}', '--depths=20,21'], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: depth 21 has no plain21/resnet21 (cifar nets); valid depths: 8, 20, 32, 44, 56')
  assert not any(tmp_path.iterdir())
