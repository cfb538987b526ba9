"""Serving figures on constructed client-side timings: steady window, SLO attainment, goodput, energy per request."""

from __future__ import annotations

import pytest

from llem_ray.config.serving import ServingConfig, SLOConfig
from llem_ray.scenarios.loadgen import LoadTrace, RequestRecord
from llem_ray.scenarios.serving_metrics import Window, meets_slo, serving_result, steady_window, window_counts

SLO = SLOConfig(ttft_ms=200, tpot_ms=50)
EXACT = 1e-12


def record(
    index: int,
    sent_s: float,
    ttft_s: float,
    gap_s: float,
    tokens: int,
    *,
    warmup: bool = False,
    due_s: float | None = None,
    error: str | None = None,
) -> RequestRecord:
    """A request sent at `sent_s` whose tokens arrive one per chunk: the first after `ttft_s`, then every `gap_s`."""
    r = RequestRecord(index, warmup, sent_s if due_s is None else due_s, input_tokens=4, sent_s=sent_s)
    for k in range(tokens):
        r.chunk_times_s.append(sent_s + ttft_s + k * gap_s)
        r.chunk_tokens.append(1)
    r.end_s, r.error = r.chunk_times_s[-1], error
    return r


def constructed() -> list[RequestRecord]:
    return [
        record(0, 0.0, 1.0, 0.5, 19, warmup=True),  # ends at 10.0: the window opens there
        record(1, 11.0, 0.10, 0.02, 11),  # meets both bounds
        record(2, 12.0, 0.30, 0.02, 11),  # TTFT 300 ms > 200
        record(3, 13.0, 0.10, 0.06, 11),  # TPOT 60 ms > 50
        record(4, 14.0, 0.10, 0.02, 1),  # one token: no TPOT, meets
        record(5, 15.0, 0.10, 0.02, 2, error="BackendError: engine died"),  # failed: never meets
        record(6, 49.5, 0.15, 0.04, 11),  # meets; tokens at 49.65 + k*0.04: 9 of 11 before 50.0
    ]


def serving(**overrides) -> ServingConfig:
    return ServingConfig(
        **{"request_rate_req_s": 0.14, "duration_s": 50.0, "warmup_requests": 1, "slo": SLO, **overrides}
    )


def test_slo_attainment_goodput_and_energy_per_request_are_exact_on_constructed_timings():
    records = constructed()
    window, warnings = steady_window(records, duration_s=50.0)
    assert window == Window(10.0, 50.0, accepted=True) and warnings == []
    served, good = 5 + 9 / 11, 2 + 9 / 11  # requests 1-5 wholly, 9/11 of request 6; of them 1, 4 and 9/11 of 6
    counts = window_counts(records, window, SLO)
    assert counts.output_tokens == 11 * 3 + 1 + 2 + 9
    assert counts.requests == pytest.approx(served, rel=EXACT) and counts.slo_requests == pytest.approx(good, rel=EXACT)

    trace = LoadTrace(records, origin_wall_s=1.7e9, send_end_s=50.0, end_s=records[-1].end_s)
    result, notes = serving_result(serving(), trace, window, energy_j=4000.0, baseline_power_w=50.0)
    assert result.slo_attainment == pytest.approx(good / served, rel=EXACT)
    assert result.goodput_req_s == pytest.approx(good / 40.0, rel=EXACT)
    assert result.achieved_rate_req_s == pytest.approx(served / 40.0, rel=EXACT)
    assert result.offered_rate_req_s == pytest.approx(7 / 50.0, rel=EXACT)
    assert result.energy_per_output_token_j == pytest.approx(4000.0 / 45, rel=EXACT)
    assert result.energy_per_request_j == pytest.approx(4000.0 / served, rel=EXACT)
    assert result.energy_per_slo_request_j == pytest.approx(4000.0 / good, rel=EXACT)
    assert result.energy_window_adjusted_j == pytest.approx(4000.0 - 50.0 * 40.0, rel=EXACT)
    assert result.energy_per_slo_request_adjusted_j == pytest.approx(2000.0 / good, rel=EXACT)
    assert result.mean_power_w == pytest.approx(100.0, rel=EXACT)
    assert (result.requests_sent, result.requests_completed, result.requests_failed) == (7, 6, 1)
    assert result.measured_requests == 6 and result.window_accepted
    assert result.latency.ttft.count == 5 and result.latency.ttft.p50_ms == pytest.approx(100.0)
    assert result.latency.tpot.count == 4 and result.latency.tpot.p50_ms == pytest.approx(30.0)  # 20, 20, 40, 60
    assert result.latency.e2e.count == 5
    assert notes == ["1 of 7 requests failed (first: request 5: BackendError: engine died)"]


def test_a_steady_window_shorter_than_30_s_is_rejected_with_a_warning():
    records = constructed()[:6]
    window, warnings = steady_window(records, duration_s=35.0)
    assert window == Window(10.0, 35.0, accepted=False)
    assert warnings == [
        "steady window 25.0 s < 30 s (ML.ENERGY validity rule): rejected, the serving energy "
        "figures are not reported (raise serving.duration_s)"
    ]
    trace = LoadTrace(records, 0.0, send_end_s=35.0, end_s=35.0)
    result, _ = serving_result(serving(duration_s=35.0), trace, window, energy_j=4000.0, baseline_power_w=50.0)
    assert not result.window_accepted and result.energy_window_j is None
    assert result.energy_per_slo_request_j is None and result.energy_per_output_token_j is None
    assert result.slo_attainment == pytest.approx(2 / 5) and result.goodput_req_s == pytest.approx(2 / 25)


def test_the_window_closes_where_the_generator_fell_behind():
    """Late from request 2 on and never on time again: the generator could not keep up from there."""
    records = [
        record(0, 0.0, 0.1, 0.1, 2, warmup=True),
        record(1, 5.0, 0.1, 0.1, 2),
        record(2, 40.3, 0.1, 0.1, 2, due_s=40.0),
        record(3, 45.4, 0.1, 0.1, 2, due_s=45.0),
    ]
    window, warnings = steady_window(records, duration_s=60.0)
    assert window == Window(0.2, 40.0, accepted=True)
    assert warnings == [
        "the load generator fell behind: request 2 was sent 300 ms after it was due at 40.00 s; "
        "the steady window ends there"
    ]
    result, _ = serving_result(serving(duration_s=60.0), LoadTrace(records, 0.0, 60.0, 45.6), window, None, None)
    assert result.generator_fell_behind and result.generator_lag_max_ms == pytest.approx(400.0)


def test_a_stall_the_generator_caught_up_from_is_a_hiccup_the_window_keeps():
    """The H200's 32 req/s case: a ~120 ms stall makes the requests due in it late, then all are on time."""
    records = [
        record(0, 0.0, 0.1, 0.1, 2, warmup=True),
        record(1, 5.0, 0.1, 0.1, 2),
        record(2, 6.12, 0.1, 0.1, 2, due_s=6.0),
        record(3, 6.121, 0.1, 0.1, 2, due_s=6.01),
        record(4, 6.2, 0.1, 0.1, 2),
        record(5, 45.0, 0.1, 0.1, 2),
    ]
    window, warnings = steady_window(records, duration_s=60.0)
    assert window == Window(0.2, 60.0, accepted=True)
    assert warnings == [
        "the load generator was late 2 time(s) and caught up each time (worst: request 2, 120 ms after it was "
        "due at 6.00 s); the steady window keeps them"
    ]
    result, _ = serving_result(serving(duration_s=60.0), LoadTrace(records, 0.0, 60.0, 45.2), window, None, None)
    assert not result.generator_fell_behind and result.generator_lag_max_ms == pytest.approx(120.0)


def test_a_stall_longer_than_a_hiccup_closes_the_window_even_when_the_generator_catches_up():
    records = [
        record(0, 0.0, 0.1, 0.1, 2, warmup=True),
        record(1, 35.0, 0.1, 0.1, 2),
        record(2, 40.6, 0.1, 0.1, 2, due_s=40.0),
        record(3, 45.0, 0.1, 0.1, 2),
    ]
    window, warnings = steady_window(records, duration_s=60.0)
    assert window == Window(0.2, 40.0, accepted=True)
    assert warnings == [
        "the load generator fell behind: request 2 was sent 600 ms after it was due at 40.00 s; "
        "the steady window ends there"
    ]


def test_no_window_when_the_warm_up_outlasts_the_load():
    records = [record(0, 0.0, 0.5, 1.0, 61, warmup=True), record(1, 30.0, 0.1, 0.1, 2)]
    window, warnings = steady_window(records, duration_s=50.0)
    assert window is None
    assert warnings == [
        "no steady window: the warm-up requests ended at 60.50 s, when the offered load had already "
        "ended (50.00 s): raise serving.duration_s or lower serving.warmup_requests"
    ]
    result, _ = serving_result(serving(), LoadTrace(records, 0.0, 50.0, 60.5), None, None, None)
    assert result.window_start_s is None and result.slo_attainment is None and result.goodput_req_s is None
    assert result.measured_requests == 1 and result.latency.ttft.count == 1  # every request after the warm-up


def test_slo_bounds():
    fast = record(0, 0.0, 0.1, 0.01, 5)
    assert meets_slo(fast, SLO) and meets_slo(fast, SLOConfig())
    assert not meets_slo(fast, SLOConfig(ttft_ms=99)) and not meets_slo(fast, SLOConfig(tpot_ms=9.99))
    assert meets_slo(record(1, 0.0, 0.1, 9.0, 1), SLOConfig(tpot_ms=1))  # a single token has no TPOT
    assert not meets_slo(record(2, 0.0, 0.1, 0.01, 5, error="cancelled"), SLOConfig())


def test_an_offered_rate_below_target_and_an_engine_that_does_not_keep_up_are_flagged():
    def run(target_req_s: float, late_every: int) -> list[str]:
        records = [record(0, 0.0, 0.1, 0.1, 2, warmup=True)]
        for i in range(1, 81):
            r = record(i, 0.3 + 0.49 * (i - 1), 0.1, 0.1, 2)
            if i % late_every == 0:  # its tokens arrive long after the window: the engine fell behind
                r.chunk_times_s = type(r.chunk_times_s)("d", [100.0, 100.1])
            records.append(r)
        window, _ = steady_window(records, duration_s=40.0)
        trace = LoadTrace(records, 0.0, send_end_s=40.0, end_s=100.1)
        config = serving(request_rate_req_s=target_req_s, duration_s=40.0)
        result, notes = serving_result(config, trace, window, None, None)
        assert result.offered_rate_req_s == pytest.approx(81 / 40)
        return notes

    assert run(2.0, late_every=1000) == []
    below, saturated = run(4.0, late_every=2)
    assert below == "offered rate 2.02 req/s is 49% below the target 4 req/s: the load generator could not keep up"
    assert saturated.startswith(
        "achieved rate 1.01 req/s in the steady window is 50% below the offered 2.02 req/s: "
        "the engine may not keep up with this load"
    )
