"""Arrival schedule of the serving scenario's rate mode: when each request is sent, seeded.

`arrival_schedule(rate, duration, burstiness, seed)` gives N = round(rate x duration) arrival
times in [0, duration], s since the run began (the ends only where a very bursty shape draws gaps
that vanish next to the others in floating point). Gaps between arrivals are gamma distributed with
shape `burstiness` (1: exponential, a Poisson process; < 1 burstier; > 1 more regular), drawn
from a generator seeded with the experiment's `random_seed`, then scaled together so that the
(N + 1)-th arrival would fall exactly at `duration`. For a Poisson process that is exactly the
process conditioned on N arrivals in the duration (uniform order statistics); for other shapes
the analogous conditioned renewal process. So the offered rate of every schedule is exactly
N / duration (the configured rate, up to rounding N), cycles of one configuration send the same
schedule, and a sweep's load axis is the configured rate, not a sample of it. Pure, no I/O.
"""

from __future__ import annotations

import random


def arrival_schedule(rate_req_s: float, duration_s: float, burstiness: float, seed: int) -> list[float]:
    """Arrival times, s since the run began, ascending, in [0, duration_s] (see module docstring).

    Raises ValueError for a non-positive rate, duration or burstiness.
    """
    if rate_req_s <= 0 or duration_s <= 0 or burstiness <= 0:
        raise ValueError(f"rate ({rate_req_s}), duration ({duration_s}) and burstiness ({burstiness}) must be > 0")
    n = round(rate_req_s * duration_s)
    rng = random.Random(f"llem-arrivals-{seed}")
    elapsed, cumulative = 0.0, []
    for _ in range(n + 1):
        elapsed += rng.gammavariate(burstiness, 1.0)
        cumulative.append(elapsed)
    if elapsed <= 0:  # every gap underflowed (a vanishing shape): all requests at once
        return [0.0] * n
    return [duration_s * (c / elapsed) for c in cumulative[:-1]]  # c / elapsed <= 1: never past duration_s
