"""The gradient-accumulation cost tool: both steps compile and run, figures printed; bad
input refused."""

import re

import pytest

from resnet_jax.bench import accumulation_cost


def test_prints_both_steps_and_the_ratios(capsys):
  accumulation_cost.main(['--image_size=8', '--batch_size=8', '--accumulate=2', '--rounds=1',
                          '--loop=scan'])
  out = capsys.readouterr().out
  steps = re.findall(r'(whole batch|2 micro-batches): +([\d.]+) ms a step, XLA temporaries +'
                     r'([\d.]+) MiB', out)
  assert [label for label, _, _ in steps] == ['whole batch', '2 micro-batches'], out
  assert all(float(ms) > 0 and float(mib) > 0 for _, ms, mib in steps), out
  assert re.search(r'time ratio [\d.]+ \(rounds [\d.]+-[\d.]+\), temporaries ratio [\d.]+', out)


def test_refuses_a_micro_batch_count_that_does_not_divide_the_batch(capsys):
  with pytest.raises(SystemExit) as exit_info:
    accumulation_cost.main(['--batch_size=8', '--accumulate=3'])
  assert exit_info.value.code == 2
  assert '--accumulate 3 must be a divisor of --batch_size 8' in capsys.readouterr().err
