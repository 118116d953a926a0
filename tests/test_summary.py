"""summary.py: parameter counts and exact MAC counts from jaxprs (tracing only, no compiles)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from resnet_jax.tools import summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# torchvision's parameter counts (bit-exact) and multiply-adds at 224² (the `num_params` and
# `_ops` metadata of torchvision.models.ResNet*_Weights.IMAGENET1K_V1); the CIFAR nets' counts
# follow He et al. 2015 §4.2 (option A shortcuts: no projection parameters).
IMAGENET = {'resnet18': (11_689_512, 1.81e9), 'resnet34': (21_797_672, 3.66e9),
            'resnet50': (25_557_032, 4.09e9), 'resnet101': (44_549_160, 7.80e9),
            'resnet152': (60_192_808, 11.51e9)}
CIFAR = {'resnet20': 269_722, 'resnet32': 464_154, 'resnet44': 658_586, 'resnet56': 853_018,
         'resnet110': 1_727_962}


@pytest.mark.parametrize('name', IMAGENET)
def test_imagenet_params_exact_and_macs_near_torchvision(name):
  params, torchvision_macs = IMAGENET[name]
  result = summary.summarize(name)
  assert (result['image_size'], result['num_classes']) == (224, 1000)
  assert result['params'] == params
  print(f'{name}: {result["macs"]:,} MACs, {result["macs"] / torchvision_macs - 1:+.3%} '
        'vs torchvision')
  assert abs(result['macs'] / torchvision_macs - 1) < 0.03


@pytest.mark.parametrize('name', CIFAR)
def test_cifar_params_exact(name):
  result = summary.summarize(name)
  assert (result['image_size'], result['num_classes']) == (32, 10)
  assert result['params'] == CIFAR[name]


def test_counter_formulas_and_sub_jaxprs():
  # NCHW/OIHW with 2 feature groups: out 1·8·5·5 elements × 3·3 taps × 6/2 features.
  def conv(x, w):
    return lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                    dimension_numbers=('NCHW', 'OIHW', 'NCHW'),
                                    feature_group_count=2)
  jaxpr = jax.make_jaxpr(conv)(jnp.zeros((1, 6, 9, 9)), jnp.zeros((8, 3, 3, 3)))
  assert summary.count_macs(jaxpr.jaxpr) == 8 * 5 * 5 * 9 * 3

  # A batched dot (4·2·5 outputs × 3) inside jit, a scan of 7 and a cond.
  def nested(a, b):
    y = jax.jit(lambda a, b: jnp.einsum('bij,bjk->bik', a, b))(a, b)
    y, _ = lax.scan(lambda c, _: (c, c @ jnp.ones((5, 5))), y, None, length=7)
    return lax.cond(True, lambda y: y @ jnp.ones((5, 1)), lambda y: y[..., :1], y)
  jaxpr = jax.make_jaxpr(nested)(jnp.zeros((4, 2, 3)), jnp.zeros((4, 3, 5)))
  assert summary.count_macs(jaxpr.jaxpr) == 40 * 3 + 7 * 40 * 5 + 8 * 5


def _count_primitive(jaxpr, name):
  return sum((eqn.primitive.name == name) +
             sum(_count_primitive(sub, name) for sub in summary._subjaxprs(eqn.params))
             for eqn in jaxpr.eqns)


def test_dot_convolutions_count_the_same():
  xla = summary.summarize('resnet18', image_size=64, conv_impl='xla')
  dot = summary.summarize('resnet18', image_size=64, conv_impl='dot')
  assert dot['macs'] == xla['macs']
  # The dot model must really use dots (1×1 shortcuts, small-map 3×3s), or this proves nothing.
  from resnet_jax import models
  model = models.create_model('resnet18', num_classes=1000, conv_impl='dot')
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x).jaxpr
  assert _count_primitive(jaxpr, 'dot_general') > 1


def test_macs_against_xlas_cost_analysis():
  """An independent count: XLA's FLOPs skip padded taps and add elementwise ops."""
  from resnet_jax import models
  model = models.create_model('resnet20', num_classes=10, conv_impl='xla')
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  analysis = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, x).cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  ratio = analysis['flops'] / (2 * summary.summarize('resnet20')['macs'])
  assert 0.85 < ratio < 1.0, ratio  # measured 0.922


def test_macs_scale_with_area_and_classes():
  # Every feature map of 448² is exactly twice as wide as at 224² (224 = 7·32), so the
  # convolutions cost exactly 4×; the classifier (2048 × 1000) does not grow. (At 112²
  # the last stage rounds 3.5 up to 4 pixels: 3.79×, not 4×.)
  head = 2048 * 1000
  at_224 = summary.summarize('resnet50')['macs']
  at_448 = summary.summarize('resnet50', image_size=448)['macs']
  assert at_448 - head == 4 * (at_224 - head)
  ten = summary.summarize('resnet18', image_size=32, num_classes=10)
  thousand = summary.summarize('resnet18', image_size=32, num_classes=1000)
  assert thousand['macs'] - ten['macs'] == 512 * 990
  assert thousand['params'] - ten['params'] == 513 * 990


def test_bad_arguments():
  with pytest.raises(ValueError, match='unknown model'):
    summary.summarize('resnet19')
  with pytest.raises(ValueError, match='too small for resnet50: it needs at least 32'):
    summary.summarize('resnet50', image_size=16)


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.tools.summary', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_cli_json():
  done = _cli('--model=resnet50', '--format=json')
  assert done.returncode == 0, done.stderr
  (row,) = json.loads(done.stdout)
  assert row['model'] == 'resnet50' and row['params'] == 25_557_032
  assert (row['image_size'], row['num_classes']) == (224, 1000)
  assert abs(row['macs'] / 4.09e9 - 1) < 0.03
  assert row['gmacs'] == pytest.approx(row['macs'] / 1e9, abs=1e-3)


def test_cli_unknown_model():
  done = _cli('--model=resnet19')
  assert done.returncode != 0
  assert done.stderr.strip().splitlines() == [
      f'error: unknown model \'resnet19\'; valid models: {", ".join(summary.models.VARIANTS)}']
