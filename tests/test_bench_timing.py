"""bench/timing.py: the alternating rounds every same-run comparison uses (a fake clock)."""

import pytest

from resnet_jax.bench import timing


def test_rounds_alternate_the_candidates_and_time_only_the_back_to_back_calls(monkeypatch):
  clock = {'now': 0.0}
  events = []
  monkeypatch.setattr(timing.time, 'perf_counter', lambda: clock['now'])

  def candidate(name, seconds):
    def call():
      events.append(name)
      clock['now'] += seconds
      return name
    return call

  times = timing.seconds_per_call({'a': candidate('a', 2.0), 'b': candidate('b', 3.0)},
                                  calls=4, rounds=2)
  # Per round: a's settling call, a × 4, then b's; the settling calls are not timed.
  assert events == (['a'] * 5 + ['b'] * 5) * 2
  assert times == {'a': [2.0, 2.0], 'b': [3.0, 3.0]}
  events.clear()
  unsettled = timing.seconds_per_call({'a': candidate('a', 1.0)}, calls=3, rounds=1,
                                      settle=False)
  assert events == ['a'] * 3 and unsettled == {'a': [1.0]}


def test_each_candidate_may_take_its_own_number_of_calls(monkeypatch):
  clock = {'now': 0.0}
  counted = {'a': 0, 'b': 0}
  monkeypatch.setattr(timing.time, 'perf_counter', lambda: clock['now'])

  def candidate(name, seconds):
    def call():
      counted[name] += 1
      clock['now'] += seconds
    return call

  times = timing.seconds_per_call({'a': candidate('a', 2.0), 'b': candidate('b', 5.0)},
                                  calls={'a': 6, 'b': 2}, rounds=3)
  assert counted == {'a': 3 * 7, 'b': 3 * 3} and times == {'a': [2.0] * 3, 'b': [5.0] * 3}


def test_bad_counts_are_refused():
  with pytest.raises(ValueError, match='calls 0'):
    timing.seconds_per_call({'a': lambda: None}, calls=0, rounds=1)
  with pytest.raises(ValueError, match='calls'):
    timing.seconds_per_call({'a': lambda: None, 'b': lambda: None}, calls={'a': 1, 'b': 0},
                            rounds=1)
