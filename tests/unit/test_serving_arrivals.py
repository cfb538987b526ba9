"""The rate mode's arrival schedule: deterministic for a seed, exact offered rate, gamma-shaped gaps."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llem_ray.scenarios.arrivals import arrival_schedule


def test_the_schedule_is_deterministic_for_a_seed():
    first = arrival_schedule(8.0, 60.0, 1.0, seed=42)
    assert first == arrival_schedule(8.0, 60.0, 1.0, seed=42)  # a cycle repeats the same schedule
    assert first != arrival_schedule(8.0, 60.0, 1.0, seed=43)
    assert first[:3] == pytest.approx([0.010419, 0.132724, 0.251555], abs=1e-6)  # the same on every machine


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.5, 200.0),
    duration=st.floats(1.0, 120.0),
    burstiness=st.floats(0.1, 20.0),
    seed=st.integers(0, 2**31),
)
def test_every_schedule_sends_rate_x_duration_requests_in_order_inside_the_duration(rate, duration, burstiness, seed):
    arrivals = arrival_schedule(rate, duration, burstiness, seed)
    assert len(arrivals) == round(rate * duration)
    assert all(0 <= a <= duration for a in arrivals)
    assert arrivals == sorted(arrivals)


@pytest.mark.parametrize(("burstiness", "cv"), [(1.0, 1.0), (0.25, 2.0), (16.0, 0.25)])
def test_gaps_have_the_spread_of_their_gamma_shape(burstiness, cv):
    arrivals = arrival_schedule(100.0, 60.0, burstiness, seed=7)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert statistics.fmean(gaps) == pytest.approx(60.0 / 6001, rel=0.02)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(cv, rel=0.1)  # CV = 1 / sqrt(shape)


def test_nonsense_arguments_are_refused():
    with pytest.raises(ValueError, match="must be > 0"):
        arrival_schedule(0.0, 10.0, 1.0, seed=1)
