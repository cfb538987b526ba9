"""The serving scenario against a real vLLM async engine on a GPU (issue #17): streaming, timing, energy.

Skipped without vLLM. Random-weight Llama-3.2-1B shapes, TP = 1; about 2-3 minutes (two engine
starts, one 35 s serving run so that the steady window is kept).

    . /tmp/vsite/env.sh; LLEM_GPU_FIGURES=$OUT/s.jsonl python3 -m pytest tests/gpu/test_vllm_serving.py -m gpu -s
"""

import importlib.util

import pytest

from llem_ray.backends.vllm.serving import VLLMStreamingEngine
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.energy.baseline import BaselineCache
from llem_ray.measure.experiment import run
from llem_ray.scenarios.loadgen import RatePlan, run_load

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")

MODEL = "llem/llama-3.2-1b"


def _config(**overrides) -> ExperimentConfig:
    base = dict(
        backend="vllm",
        model=MODEL,
        weights="random",
        dataset="synthetic",
        max_input_tokens=128,
        max_output_tokens=64,
        scenario="serving",
        prefill_split=False,
        vllm={"max_num_seqs": 64},
        serving={
            "request_rate_req_s": 8,
            "duration_s": 38,
            "warmup_requests": 4,
            "slo": {"ttft_ms": 500, "tpot_ms": 50},
        },
    )
    return ExperimentConfig(**{**base, **overrides})


def test_the_async_engine_streams_every_token_and_shuts_down(record):
    engine = VLLMStreamingEngine()
    info = engine.load(_config(), "cuda")
    try:
        ids = [[100 + (i * 7 + j) % 5000 for j in range(64)] for i in range(16)]
        plan = RatePlan([0.05 * i for i in range(16)], ids, 64, warmup_requests=0, duration_s=1.0)
        trace = engine.call(run_load(engine, plan))
    finally:
        engine.unload()
    records = trace.records
    assert info.max_concurrent_requests == 64
    assert all(r.completed and r.output_tokens == 64 for r in records)
    chunks = sum(len(r.chunk_times_s) for r in records)
    record(
        "vllm_serving_stream",
        requests=len(records),
        chunks=chunks,
        tokens=64 * len(records),
        ttft_ms=[round(r.ttft_s * 1000, 2) for r in records],
        tpot_ms=[round(r.tpot_s * 1000, 3) for r in records],
    )
    assert chunks >= 0.9 * 64 * len(records)  # DELTA outputs: (nearly) one chunk per token


def test_a_serving_run_keeps_its_steady_window_and_reports_energy_per_slo_request(record):
    result = run(
        _config(warmup={"n_warmup": 1, "thermal_floor_s": 2}, baseline={"duration_s": 5}),
        baseline_cache=BaselineCache(),
    ).result
    s = result.serving
    record(
        "vllm_serving_run",
        offered_req_s=s.offered_rate_req_s,
        achieved_req_s=s.achieved_rate_req_s,
        window=[s.window_start_s, s.window_end_s],
        accepted=s.window_accepted,
        attainment=s.slo_attainment,
        ttft_p50_ms=s.latency.ttft.p50_ms,
        tpot_p50_ms=s.latency.tpot.p50_ms,
        j_per_token=s.energy_per_output_token_j,
        j_per_slo_request=s.energy_per_slo_request_j,
        j_per_slo_request_adjusted=s.energy_per_slo_request_adjusted_j,
        power_w=s.mean_power_w,
        lag_max_ms=s.generator_lag_max_ms,
        warnings=result.measurement_warnings,
    )
    assert s.requests_failed == 0 and not s.generator_fell_behind
    assert s.offered_rate_req_s == pytest.approx(8, rel=0.05)
    assert s.window_accepted and s.window_end_s - s.window_start_s >= 30
    assert result.measurement_methodology == "steady_state"
    assert s.energy_per_slo_request_j is not None and s.energy_per_slo_request_j >= s.energy_per_request_j > 0
    assert s.energy_window_adjusted_j < s.energy_window_j and s.mean_power_w > result.baseline_power_w
