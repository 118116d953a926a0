"""Stochastic depth (timm's drop_path) and FFCV's BlurPool: against their references."""

import functools
import json
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from resnet_jax import config_checks, models, sharding
from resnet_jax.errors import ConfigError
from resnet_jax.models import block_stack, blocks
from resnet_jax.models.resnet import drop_path_rates

REPO = pathlib.Path(__file__).resolve().parent.parent
IMAGES = jax.random.normal(jax.random.key(1), (16, 8, 8, 3))
from conftest import needs_torch  # PyTorch parity: the slow tier


def _init(name, **options):
  model = models.create_model(name, num_classes=10, zero_init_residual=False, **options)
  return model, model.init(jax.random.key(0), IMAGES[:1], train=False)


def _train_apply(model, variables, seed, mutable=('batch_stats',), images=IMAGES, **kwargs):
  return model.apply(variables, images, train=True, mutable=list(mutable),
                     rngs={'dropout': jax.random.key(seed)}, **kwargs)


def timm_drop_path(x, drop_prob, training, random_tensor):
  """timm.layers.drop_path (scale_by_keep=True) in NumPy, its Bernoulli draw given."""
  if drop_prob == 0. or not training:
    return x
  keep_prob = 1 - drop_prob
  random_tensor = random_tensor.astype(x.dtype)
  if keep_prob > 0.0:
    random_tensor = random_tensor / np.float32(keep_prob)
  return x * random_tensor


# Stochastic depth ------------------------------------------------------------------------

def test_drop_path_rates_follow_timms_linear_rule():
  assert drop_path_rates((2, 2, 2, 2), 0.05) == tuple(0.05 * i / 7 for i in range(8))
  model, variables = _init('resnet20', drop_path_rate=0.2)
  recorded = []

  def record(module, method):
    if isinstance(module, blocks.ResidualUnit) and method == '__call__':
      recorded.append(module.drop_path_rate)
    return False

  _train_apply(model, variables, 0, capture_intermediates=record)
  assert recorded == pytest.approx([0.2 * i / 8 for i in range(9)], abs=0, rel=1e-15)


@pytest.mark.parametrize('name', ['resnet20', 'preact_resnet20'])
def test_drop_path_keeps_the_variables_and_evaluation(name):
  base, variables = _init(name)
  model, dropped = _init(name, drop_path_rate=0.3)
  jax.tree.map(np.testing.assert_array_equal, dropped, variables)
  np.testing.assert_array_equal(model.apply(variables, IMAGES, train=False),
                                base.apply(variables, IMAGES, train=False))


def test_drop_path_is_deterministic_per_dropout_key():
  model, variables = _init('resnet20', drop_path_rate=0.5)
  first, again, other = (_train_apply(model, variables, seed)[0] for seed in (1, 1, 2))
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)
  with pytest.raises(Exception, match='dropout'):  # training needs the stream
    model.apply(variables, IMAGES, train=True, mutable=['batch_stats'])


def _unit(preact, strides, rate):
  """A standalone basic unit, 16 → 32 channels where it strides (projection shortcut)."""
  norm = functools.partial(nn.BatchNorm, use_running_average=False, momentum=0.9,
                           epsilon=1e-5)
  unit_cls = blocks.UNITS['basic', preact]
  unit = unit_cls(filters=16 * strides, strides=strides, conv=blocks.Conv, norm=norm,
                  deterministic=False, drop_path_rate=rate)
  x = jax.random.normal(jax.random.key(3), (64, 6, 6, 16))
  variables = unit.init(jax.random.key(0), x)
  return unit, variables, x


@pytest.mark.parametrize('preact', [False, True])
@pytest.mark.parametrize('strides', [1, 2])
def test_a_unit_applies_timms_drop_path_to_its_branch(preact, strides):
  rate, key = 0.4, jax.random.key(7)
  unit, variables, x = _unit(preact, strides, rate)
  # timm's places: after the branch's last BN (original), the branch's last conv (preact).
  last = 'conv2' if preact else 'bn2'
  shortcut = 'downsample_conv' if preact else 'downsample_bn'
  out, state = unit.apply(variables, x, key, mutable=['batch_stats', 'intermediates'],
                          capture_intermediates=lambda mdl, _: mdl.name in (last, shortcut))
  captured = state['intermediates']
  branch = np.asarray(captured[last]['__call__'][0])
  if strides == 1:
    skip = np.asarray(x)
  else:
    skip = np.asarray(captured[shortcut]['__call__'][0])
  mask = np.asarray(jax.random.bernoulli(key, 1 - jnp.float32(rate), (64, 1, 1, 1)))
  want = skip + timm_drop_path(branch, rate, True, mask)
  np.testing.assert_allclose(out, want if preact else np.maximum(want, 0), rtol=1e-6,
                             atol=1e-6)
  assert 0 < mask.sum() < 64  # per example: some kept, some dropped
  # The same unit with the 'dropout' stream instead of an explicit key: as random, as scaled.
  streamed, _ = unit.apply(variables, x, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.key(8)})
  assert not np.allclose(streamed, out)


def _identity_unit_scales(model, variables, seed):
  """Per identity unit of a preact_resnet20 (out = x + s · conv2, s per example): the
  scale s each example's branch got, by least squares; {unit name: [B]}."""
  images = jax.random.normal(jax.random.key(2), (64, 8, 8, 3))
  _, state = _train_apply(model, variables, seed, mutable=['batch_stats', 'intermediates'],
                          images=images, capture_intermediates=True)
  found = state['intermediates']
  names = [f'stage{s}_block{b}' for s in (1, 2, 3) for b in (1, 2, 3)]
  inputs = [found['stem_conv']['__call__'][0]] + [found[n]['__call__'][0] for n in names[:-1]]
  scales = {}
  for name, x in zip(names, inputs):
    if name.endswith('block1') and name != 'stage1_block1':
      continue  # those change shape: projection or zero-pad shortcuts
    unit = found[name]
    branch, delta = np.asarray(unit['conv2']['__call__'][0]), np.asarray(
        unit['__call__'][0] - x)
    scales[name] = (delta * branch).sum(axis=(1, 2, 3)) / (branch**2).sum(axis=(1, 2, 3))
  return scales


def test_the_net_drops_each_units_examples_independently():
  """With a rate near 1, each identity unit scales each example's branch by 0 or
  1 / (1 − p_i), p_i = 0.9 · i / 8, its masks its own. (Scanned stages keep no
  intermediates; the next test shows they compute the same.)"""
  model, variables = _init('preact_resnet20', drop_path_rate=0.9)
  scales = _identity_unit_scales(model, variables, seed=4)
  index = {f'stage{s}_block{b}': 3 * (s - 1) + b - 1 for s in (1, 2, 3) for b in (1, 2, 3)}
  masks = []
  for name, scale in scales.items():
    rate = 0.9 * index[name] / 8
    kept = scale > 0.5
    np.testing.assert_allclose(scale[kept], 1 / (1 - rate), rtol=1e-4)
    np.testing.assert_allclose(scale[~kept], 0, atol=1e-5)
    masks.append(kept)
  assert masks[0].all()  # unit 0: rate 0
  assert all(0 < m.sum() < len(m) for m in masks[1:])
  assert len({m.tobytes() for m in masks[1:]}) == len(masks) - 1  # no two units alike


@pytest.mark.parametrize('remat', [False, True])
def test_scanned_stages_drop_the_same_examples_as_unrolled_ones(remat):
  """Feasible, so required: the same dropout key gives the same training outputs (the
  per-unit keys are drawn once, before the stages) and the same evaluation."""
  unrolled, variables = _init('preact_resnet20', drop_path_rate=0.5)
  scanned = unrolled.clone(scan_blocks=True, remat=remat)
  scanned_variables = {k: block_stack.scan_layout(dict(c)) for k, c in variables.items()}
  want, want_stats = _train_apply(unrolled, variables, 5)
  got, got_stats = jax.jit(lambda v: _train_apply(scanned, v, 5))(scanned_variables)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5),
               block_stack.unscanned_layout(dict(got_stats['batch_stats'])),
               dict(want_stats['batch_stats']))
  np.testing.assert_allclose(scanned.apply(scanned_variables, IMAGES, train=False),
                             unrolled.apply(variables, IMAGES, train=False), rtol=1e-5,
                             atol=1e-5)


# BlurPool --------------------------------------------------------------------------------

def test_blur_is_ffcvs_depthwise_filter():
  x = jax.random.normal(jax.random.key(2), (2, 7, 9, 5))
  kernel = jnp.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], jnp.float32) / 16
  depthwise = jax.lax.conv_general_dilated(
      x, jnp.tile(kernel[:, :, None, None], (1, 1, 1, 5)), (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=5)
  np.testing.assert_allclose(blocks.blur(x), depthwise, rtol=1e-6, atol=1e-6)


def _shapes(name, **options):
  model = models.create_model(name, num_classes=10, **options)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                           train=False))


def test_blurpool_keeps_resnet50s_variables():
  assert _shapes('resnet50', blurpool=True, drop_path_rate=0.05) == _shapes('resnet50')


@pytest.mark.parametrize('name', ['resnet18', 'resnet20'])
def test_options_off_and_blurpool_keep_the_parameters(name):
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  base, off, blurred = (models.create_model(name, num_classes=10, zero_init_residual=False,
                                            **options)
                         for options in ({}, {'blurpool': False, 'drop_path_rate': 0.0},
                                         {'blurpool': True}))
  variables = base.init(jax.random.key(0), images[:1], train=False)
  for model in (off, blurred):
    jax.tree.map(np.testing.assert_array_equal,
                 model.init(jax.random.key(0), images[:1], train=False), variables)
  np.testing.assert_array_equal(off.apply(variables, images, train=False),
                                base.apply(variables, images, train=False))
  assert not np.allclose(blurred.apply(variables, images, train=False),
                         base.apply(variables, images, train=False))


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_both_options_in_half_precision(dtype):
  model, variables = _init('resnet20', dtype=dtype, blurpool=True, drop_path_rate=0.2)
  logits, _ = _train_apply(model, variables, 0)
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


_FFCV = '''
import numpy as np
import torch as ch
import torch.nn.functional as F


class BlurPoolConv2d(ch.nn.Module):  # libffcv/ffcv-imagenet, train_imagenet.py
    def __init__(self, conv):
        super().__init__()
        default_filter = ch.tensor([[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]]) / 16.0
        filt = default_filter.repeat(conv.in_channels, 1, 1, 1)
        self.conv = conv
        self.register_buffer('blur_filter', filt)

    def forward(self, x):
        blurred = F.conv2d(x, self.blur_filter, stride=1, padding=(1, 1),
                           groups=self.conv.in_channels, bias=None)
        return self.conv.forward(blurred)


def apply_blurpool(mod: ch.nn.Module):
    for (name, child) in mod.named_children():
        if isinstance(child, ch.nn.Conv2d) and (np.max(child.stride) > 1
                                                and child.in_channels >= 16):
            setattr(mod, name, BlurPoolConv2d(child))
        else: apply_blurpool(child)
'''

_SCRIPT = _FFCV + '''
import json, sys, tempfile
import jax
from resnet_jax import models
from resnet_jax.models import blocks
from resnet_jax.tools import convert
from resnet_jax.bench import torch_parity

ch.manual_seed(0)
convs = []
for cin, cout, k, s in [(16, 24, 3, 2), (32, 64, 1, 2), (8, 16, 3, 2), (16, 16, 3, 1)]:
    conv = ch.nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False)
    wrapped = ch.nn.Sequential(conv)
    apply_blurpool(wrapped)
    x = ch.randn(2, cin, 11, 11)
    with ch.no_grad():
        want = wrapped(x).numpy().transpose(0, 2, 3, 1)
    ours = blocks.Conv(cout, (k, k), s, blurpool=True)
    params = {'params': {'conv': {'kernel': conv.weight.detach().numpy().transpose(2, 3, 1, 0)}}}
    got = np.asarray(ours.apply(params, x.numpy().transpose(0, 2, 3, 1)))
    convs.append({'blurred': isinstance(wrapped[0], BlurPoolConv2d),
                  'max_abs_difference': float(np.abs(got - want).max())})

nets = []
with tempfile.TemporaryDirectory() as directory:
    for name in sys.argv[1:]:
        path = f'{directory}/{name}.pth'
        torch_model = torch_parity.save_reference(name, path)  # its state dict unblurred
        apply_blurpool(torch_model)
        images = ch.randn(2, 3, 64, 64, generator=ch.Generator().manual_seed(1))
        with ch.no_grad():
            want = torch_model(images).numpy()
        variables = convert.load_torch_checkpoint(path, name)
        nhwc = images.numpy().transpose(0, 2, 3, 1)
        logits = {}
        for blurpool in (True, False):
            model = models.create_model(name, num_classes=1000, blurpool=blurpool)
            logits[blurpool] = np.asarray(jax.jit(
                lambda v, x: model.apply(v, x, train=False))(variables, nhwc))
        nets.append({'model': name, 'max_abs_logit': float(np.abs(want).max()),
                     'max_abs_difference': float(np.abs(logits[True] - want).max()),
                     'unblurred_difference': float(np.abs(logits[False] - want).max()),
                     'blurred_convs': sum(isinstance(m, BlurPoolConv2d)
                                          for m in torch_model.modules())})
print(json.dumps({'convs': convs, 'nets': nets}))
'''


@needs_torch
def test_blurpool_equals_ffcvs_on_torch():
  # A subprocess: torch and TensorFlow (loaded by conftest) crash when in one process.
  done = subprocess.run([sys.executable, '-c', _SCRIPT, 'resnet18', 'resnet50'], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  # FFCV's rule: stride > 1 and at least 16 input channels.
  assert [conv['blurred'] for conv in result['convs']] == [True, True, False, False]
  for conv in result['convs']:
    assert conv['max_abs_difference'] < 1e-5, conv
  for net in result['nets']:
    # Three strided 3×3 convs (v1.5; resnet18's conv1 of stages 2-4) and three strided 1×1
    # projections; the 7×7 stem (3 input channels) stays as it is.
    assert net['blurred_convs'] == 6, net
    assert net['max_abs_logit'] > 0.3, net
    assert net['max_abs_difference'] < 1e-4, net
    assert net['unblurred_difference'] > 100 * net['max_abs_difference'], net


# Config ----------------------------------------------------------------------------------

def test_config_records_and_passes_both_options():
  config = small_config()
  assert models.unit_options(config) == {} and not models.uses_dropout_rng(config)
  config.drop_path_rate, config.blurpool = 0.05, True
  assert models.unit_options(config) == {'drop_path_rate': 0.05, 'blurpool': True}
  assert models.uses_dropout_rng(config)
  model = models.model_from_config(config, 10)
  assert model.drop_path_rate == 0.05 and model.blurpool
  config_checks.check_config(config, sharding.make_mesh())
  assert models.uses_dropout_rng(small_config(shortcut_variant='dropout'))


@pytest.mark.parametrize('override,message', [
    ({'drop_path_rate': 1.0}, 'drop_path_rate 1.0 must be in [0, 1)'),
    ({'drop_path_rate': -0.1}, 'drop_path_rate -0.1 must be in [0, 1)'),
    ({'model': 'plain20', 'drop_path_rate': 0.1},
     "drop_path_rate 0.1: model 'plain20' is plain (no residual branch to drop)")])
def test_bad_drop_path_rates_name_the_value(override, message):
  with pytest.raises(ConfigError) as error:
    config_checks.check_config(small_config(**override), sharding.make_mesh())
  assert message in str(error.value)
  with pytest.raises(ValueError, match=None) as error:
    models.create_model(override.get('model', 'resnet20'), num_classes=10,
                        drop_path_rate=override['drop_path_rate'])
  assert message in str(error.value)
