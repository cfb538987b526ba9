"""A serving experiment end to end through `measure.experiment.run`, in this process.

The real VLLMStreamingEngine serves the stand-in `vllm` package's fixed-pace async engine on its
own event loop; energy comes from the fake meter (a constant 100 W, tests/fakes.py). Durations
are short, so the steady window is always under 30 s here: these runs show the rejection in a
real result; the window's energy arithmetic is covered on constructed timings (test_serving_metrics).
"""

from __future__ import annotations

import gc

import pyarrow as pa
import pytest

from llem_ray.config.experiment import ExperimentConfig
from llem_ray.errors import BackendError
from llem_ray.measure.experiment import run
from llem_ray.results.persistence import RESULT_FILE, from_json, save_experiment
from llem_ray.results.summary import format_result
from llem_ray.results.table import STUDY_TABLE_SCHEMA, result_row

NO_WARMUP = {"n_warmup": 0, "thermal_floor_s": 0}


def _config(serving: dict, **overrides) -> ExperimentConfig:
    base = dict(
        backend="vllm",
        model="llem/tiny-llama",
        dataset="synthetic",
        max_input_tokens=16,
        max_output_tokens=6,
        scenario="serving",
        vllm={"max_num_seqs": 16},
        warmup={"n_warmup": 2, "thermal_floor_s": 0},
        baseline={"duration_s": 0.2},
        serving=serving,
    )
    return ExperimentConfig(**{**base, **overrides})


def _request_ids(vllm) -> list[str]:
    return [p["request_id"] for name, p in vllm.EVENTS if name == "async_generate"]


def test_a_rate_mode_serving_experiment_end_to_end(vllm_stand_in, fakes, tmp_path):
    config = _config(
        {"request_rate_req_s": 40, "duration_s": 1.5, "warmup_requests": 4, "slo": {"ttft_ms": 500, "tpot_ms": 100}}
    )
    measured = run(config)
    result, serving = measured.result, measured.result.serving
    assert result.scenario == "serving" and result.name == "tiny-llama_vllm_bf16_40rps"
    assert serving.mode == "rate" and serving.target_rate_req_s == 40 and serving.requests_sent == 60
    assert serving.requests_completed == 60 and serving.requests_failed == 0 and not serving.generator_fell_behind
    assert serving.offered_rate_req_s == pytest.approx(40, rel=0.05)
    assert serving.slo_attainment == 1.0 and serving.goodput_req_s == pytest.approx(serving.achieved_rate_req_s)
    assert serving.latency.ttft.count == serving.measured_requests > 40
    assert serving.latency.tpot.p50_ms < 100 and serving.latency.e2e.p50_ms > serving.latency.ttft.p50_ms
    # the window opened after the 4 warm-up requests and closed when sending stopped; at 1.4 s it is rejected
    assert 0 < serving.window_start_s < 0.5 and serving.window_end_s == 1.5 and not serving.window_accepted
    assert any(w.startswith("steady window 1.") and "rejected" in w for w in result.measurement_warnings)
    assert serving.energy_window_j is None and serving.energy_per_slo_request_j is None
    # the run itself is measured as any window: energy, tokens, J/token over it ('total': no accepted window)
    assert result.measurement_methodology == "total" and result.steady_state_window is None
    assert result.duration_s == pytest.approx(1.5, abs=0.3) and result.n_requests == 60
    assert result.output_tokens == 60 * 6 and result.energy_total_j == pytest.approx(100.0 * result.duration_s, rel=0.1)
    assert result.energy_per_output_token_j == pytest.approx(result.energy_total_j / 360)
    assert result.baseline_power_w == pytest.approx(100.0) and result.prefill is None and result.latency.batch is None
    assert result.warmup.iterations_completed == 2
    # warm-up batches (16 requests, the engine's max_num_seqs), then the prefix cache cleared, then the run
    ids = _request_ids(vllm_stand_in)
    assert ids[0] == "llem-load-warmup" and ids[1:33] == [f"llem-warmup{b}-{i}" for b in range(2) for i in range(16)]
    assert ids[33:] == [f"llem-serve-{i}" for i in range(60)]
    # the run's requests were sent with the heap frozen (collections skip the engine), the warm-up's not
    frozen = {p["request_id"]: p["gc_frozen_objects"] for name, p in vllm_stand_in.EVENTS if name == "async_generate"}
    assert frozen["llem-serve-0"] > 10_000 and frozen["llem-warmup0-0"] == frozen["llem-warmup1-0"] == 0
    assert gc.get_freeze_count() == 0
    names = [name for name, _ in vllm_stand_in.EVENTS]
    assert names.index("async_reset_prefix_cache") < names.index("async_generate", 34)
    assert names[-1] == "async_shutdown"
    assert "measured" in measured.timeseries.column("phase").to_pylist()

    text = format_result(result)
    assert "  serving       40 req/s for 1.5 s: offered 40 req/s" in text and "(rejected: < 30 s)" in text
    assert "  SLO           100.0% met" in text

    run_dir = save_experiment(result, measured.timeseries, tmp_path)
    assert from_json(run_dir / RESULT_FILE).serving == serving
    row = result_row(result, key="k", order_index=0, result_path="r")
    pa.Table.from_pylist([row], schema=STUDY_TABLE_SCHEMA)  # every column has the schema's type
    assert row["scenario"] == "serving" and row["serving.offered_rate_req_s"] == serving.offered_rate_req_s
    assert row["serving.slo_attainment"] == 1.0 and row["serving.window_accepted"] is False


def test_a_fixed_concurrency_serving_experiment(vllm_stand_in, fakes):
    result = run(_config({"concurrency": 2, "duration_s": 0.5, "warmup_requests": 2}, warmup=NO_WARMUP)).result
    serving = result.serving
    assert result.name == "tiny-llama_vllm_bf16_c2" and serving.mode == "concurrency" and serving.concurrency == 2
    assert serving.target_rate_req_s is None and serving.burstiness is None
    assert serving.requests_sent >= 2 * 10 and serving.requests_failed == 0
    assert serving.offered_rate_req_s == pytest.approx(serving.requests_sent / 0.5)
    assert "no SLO bound set (serving.slo): every completed request counts as meeting the SLO" in (
        result.measurement_warnings
    )
    warm_ids = [i for i in _request_ids(vllm_stand_in) if i.startswith("llem-warmup")]
    assert warm_ids == []  # n_warmup 0: no warm-up batch


def test_a_run_in_which_every_request_fails_raises_and_still_shuts_the_engine_down(vllm_stand_in, fakes):
    from vllm import _async

    _async.FAIL_REQUEST_IDS.update(f"llem-serve-{i}" for i in range(20))
    config = _config({"request_rate_req_s": 40, "duration_s": 0.5, "warmup_requests": 2}, warmup=NO_WARMUP)
    with pytest.raises(BackendError, match="every request of the serving run failed"):
        run(config)
    assert [name for name, _ in vllm_stand_in.EVENTS][-1] == "async_shutdown"
