"""The open-loop load generator against a local stand-in server that streams tokens at a fixed pace.

The server is the stand-in `vllm` package's async engine (tests/unit/fake_engines/vllm/_async.py)
behind the real `VLLMStreamingEngine`, on its own event loop; requests really run concurrently
on asyncio and every timestamp is real.
"""

from __future__ import annotations

import gc
import statistics

import pytest

from llem_ray.backends.vllm.serving import VLLMStreamingEngine
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.scenarios.arrivals import arrival_schedule
from llem_ray.scenarios.loadgen import ConcurrencyPlan, RatePlan, frozen_gc_heap, run_load

FIRST_TOKEN_S = 0.01
TOKEN_INTERVAL_S = 0.004
TOKENS = 6


@pytest.fixture
def server(vllm_stand_in, monkeypatch):
    monkeypatch.setattr(vllm_stand_in, "FIRST_TOKEN_S", FIRST_TOKEN_S)
    monkeypatch.setattr(vllm_stand_in, "TOKEN_INTERVAL_S", TOKEN_INTERVAL_S)

    def start(max_num_seqs: int = 256) -> VLLMStreamingEngine:
        config = ExperimentConfig(
            backend="vllm",
            model="llem/tiny-llama",
            dataset="synthetic",
            max_output_tokens=TOKENS,
            vllm={"max_num_seqs": max_num_seqs},
            scenario="serving",
            serving={"concurrency": 1, "duration_s": 1},
        )
        engine = VLLMStreamingEngine()
        engine.load(config, "cpu")
        started.append(engine)
        return engine

    started: list[VLLMStreamingEngine] = []
    yield start
    for engine in started:
        engine.unload()


def _rate_plan(rate_req_s: float, duration_s: float, seed: int = 3) -> RatePlan:
    arrivals = arrival_schedule(rate_req_s, duration_s, 1.0, seed)
    return RatePlan(arrivals, [[5, 6, 7]] * len(arrivals), TOKENS, warmup_requests=2, duration_s=duration_s)


def test_measured_offered_rate_is_within_5_percent_of_the_target(server):
    engine = server()
    plan = _rate_plan(50.0, 2.0)
    trace = engine.call(run_load(engine, plan))
    sent = [r.sent_s for r in trace.records]
    assert len(sent) == 100 and all(r.completed for r in trace.records)
    measured_req_s = (len(sent) - 1) / (sent[-1] - sent[0])  # from the send timestamps alone
    expected_req_s = (len(sent) - 1) / (plan.arrivals_s[-1] - plan.arrivals_s[0])
    assert measured_req_s == pytest.approx(expected_req_s, rel=0.05)
    assert measured_req_s == pytest.approx(50.0, rel=0.05)
    assert len(sent) / trace.send_end_s == pytest.approx(50.0, rel=0.05)
    assert statistics.median(r.lag_s for r in trace.records) < 0.02
    assert all(r.output_tokens == TOKENS and len(r.chunk_times_s) == TOKENS for r in trace.records)
    assert FIRST_TOKEN_S <= statistics.median(r.ttft_s for r in trace.records) < FIRST_TOKEN_S + 0.02
    assert TOKEN_INTERVAL_S <= statistics.median(r.tpot_s for r in trace.records) < 2 * TOKEN_INTERVAL_S
    assert [r.warmup for r in trace.records[:3]] == [True, True, False]


def test_open_loop_sends_on_schedule_while_a_slow_engine_queues(server):
    engine = server(max_num_seqs=1)  # one request at a time: ~0.03 s each, arrivals every 0.02 s
    trace = engine.call(run_load(engine, _rate_plan(50.0, 0.6)))
    assert max(r.lag_s for r in trace.records) < 0.1  # the sender never waited for the engine
    ttfts = [r.ttft_s for r in trace.records]
    assert ttfts[-1] > ttfts[0] + 0.1  # the queue grew: later requests waited for the earlier ones
    assert trace.end_s > trace.send_end_s + 0.1  # ... and drained after sending stopped


def test_fixed_concurrency_keeps_that_many_requests_in_flight(server):
    engine = server()
    trace = engine.call(run_load(engine, ConcurrencyPlan(3, lambda: [5, 6], TOKENS, 0, duration_s=0.5)))
    records = trace.records
    assert records[0].scheduled_s == 0.0 and len(records) >= 3 * 10
    assert all(r.sent_s < 0.55 for r in records) and trace.send_end_s == 0.5
    events = sorted([(r.sent_s, 1) for r in records] + [(r.end_s, -1) for r in records])
    running, most = 0, 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    assert most == 3
    assert max(r.lag_s for r in records) < 0.05  # each one replaced as soon as it ended


def test_failed_and_cancelled_requests_are_recorded_and_the_run_goes_on(server, vllm_stand_in):
    from vllm import _async

    engine = server()
    _async.FAIL_REQUEST_IDS.add("llem-serve-1")
    slow = RatePlan([0.0, 0.01, 0.02], [[1], [1], [1]], 500, 0, duration_s=0.03)  # 500 tokens: ~2 s each
    trace = engine.call(run_load(engine, slow, drain_timeout_s=0.1))
    errors = [r.error for r in trace.records]
    assert errors[1] == "BackendError: vLLM request llem-serve-1 failed: ValueError: stand-in failure of llem-serve-1"
    assert errors[0] == errors[2] == "cancelled: still running 0.1 s after sending stopped (drain timeout)"
    assert trace.end_s < 1.0 and all(r.end_s is not None for r in trace.records)
    engine.unload()
    assert [n for name, n in vllm_stand_in.EVENTS if name == "async_shutdown"] == [0]  # cancelled = aborted


def test_frozen_gc_heap_freezes_what_is_alive_and_unfreezes_after_even_on_error():
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), frozen_gc_heap():
        assert gc.get_freeze_count() > 10_000  # this process's modules and pytest's objects
        garbage = []
        garbage.append(garbage)  # a cycle made inside the block is still collected
        del garbage
        assert gc.collect() >= 1
        raise RuntimeError("the run failed")
    assert gc.get_freeze_count() == 0
