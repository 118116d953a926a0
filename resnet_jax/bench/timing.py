"""How the benchmarks time one thing against another: alternating rounds, in one process.

These machines are shared and noisy; a ratio holds only when both sides ran in the same
process, interleaved, so a slow spell falls on every candidate alike.
"""

import time
from typing import Any, Callable, Hashable, Mapping

import jax


def seconds_per_call(candidates: Mapping[Hashable, Callable[[], Any]], *,
                     calls: int | Mapping[Hashable, int], rounds: int,
                     settle: bool = True) -> dict[Hashable, list[float]]:
  """Seconds per call of each candidate, one figure per round.

  In each round every candidate runs in turn: one untimed call (with `settle`: its buffers
  settle and the previous candidate's work drains), then `calls` calls back to back
  (`calls[name]` where it is a mapping), waited on once at the end, so the host runs
  ahead of the device as in training. A candidate that carries state (a train step) keeps
  it in its closure.

  Returns:
    {name: [seconds per call in round 1, round 2, ...]}; min() is the best round, and
    zip() of two lists gives the per-round ratios.
  """
  counts = {name: calls[name] if isinstance(calls, Mapping) else calls for name in candidates}
  if min(counts.values(), default=1) < 1 or rounds < 1:
    raise ValueError(f'calls {calls} and rounds {rounds} must be >= 1')
  times: dict[Hashable, list[float]] = {name: [] for name in candidates}
  for _ in range(rounds):
    for name, call in candidates.items():
      if settle:
        jax.block_until_ready(call())
      start = time.perf_counter()
      for _ in range(counts[name]):
        output = call()
      jax.block_until_ready(output)
      times[name].append((time.perf_counter() - start) / counts[name])
  return times


def compiled_and_seconds(lower: Callable[[], Any]) -> tuple[Any, float]:
  """(`lower().compile()`, the seconds both took): a jitted call's compile time alone."""
  start = time.perf_counter()
  compiled = lower().compile()
  return compiled, time.perf_counter() - start
