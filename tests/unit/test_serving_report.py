"""The summary and `llem report` of a serving study: CIs over cycles, load curves per configuration."""

from __future__ import annotations

import pytest

from llem_ray.results.aggregate import summary_table
from llem_ray.results.persistence import save_experiment
from llem_ray.results.report import write_report
from llem_ray.results.schema import ExperimentResult, Percentiles, ServingLatency, ServingResult
from tests.result_factory import make_result, make_timeseries
from tests.unit.test_report import assert_self_contained


def serving_result(
    cycle: int,
    *,
    rate: float | None = None,
    concurrency: int | None = None,
    ttft_slo_ms: float = 500,
    j_per_slo: float = 2.0,
    attainment: float = 0.9,
) -> ExperimentResult:
    """A serving result of one configuration (its load and SLO), cycle `cycle`, with chosen headline numbers."""
    offered = rate if rate is not None else 40.0
    serving_config = {
        "request_rate_req_s": rate,
        "concurrency": concurrency,
        "burstiness": 1.0,
        "duration_s": 60,
        "warmup_requests": 10,
        "slo": {"ttft_ms": ttft_slo_ms, "tpot_ms": 50},
    }
    config = {"model": "llem/llama-3.1-8b", "backend": "vllm", "scenario": "serving", "serving": serving_config}
    ttft = Percentiles(count=50, mean_ms=80, p50_ms=70, p95_ms=150, p99_ms=200)
    serving = ServingResult(
        mode="rate" if rate is not None else "concurrency",
        target_rate_req_s=rate,
        burstiness=1.0 if rate else None,
        concurrency=concurrency,
        duration_s=60,
        warmup_requests=10,
        slo_ttft_ms=ttft_slo_ms,
        slo_tpot_ms=50,
        requests_sent=int(offered * 60),
        requests_completed=int(offered * 60),
        requests_failed=0,
        send_phase_s=60,
        drain_s=3,
        offered_rate_req_s=offered * (1 + 0.001 * cycle),
        generator_fell_behind=False,
        window_start_s=5,
        window_end_s=60,
        window_accepted=True,
        measured_requests=int(offered * 55),
        requests_in_window=offered * 55,
        slo_requests_in_window=offered * 55 * attainment,
        output_tokens_in_window=int(offered * 55 * 256),
        achieved_rate_req_s=offered,
        slo_attainment=attainment * (1 - 0.01 * cycle),
        goodput_req_s=offered * attainment,
        latency=ServingLatency(ttft=ttft, tpot=ttft, e2e=ttft),
        energy_window_j=30000.0,
        mean_power_w=545.0,
        energy_per_output_token_j=0.05,
        energy_per_request_j=j_per_slo * attainment,
        energy_per_slo_request_j=j_per_slo * (1 + 0.02 * cycle),
        energy_per_slo_request_adjusted_j=j_per_slo / 2,
    )
    name = f"llama-3.1-8b_vllm_bf16_{f'{rate:g}rps' if rate else f'c{concurrency}'}_slo{ttft_slo_ms:g}"
    base = make_result(config_hash=name, cycle=cycle, model="llem/llama-3.1-8b", backend="vllm")
    return base.model_copy(update={"name": name, "config": config, "scenario": "serving", "serving": serving})


def serving_study() -> list[ExperimentResult]:
    loads = [(2.0, None, 1.5, 1.0), (8.0, None, 1.2, 0.95), (32.0, None, 2.5, 0.6), (None, 64, 6.0, 0.2)]
    return [
        serving_result(cycle, rate=rate, concurrency=conc, ttft_slo_ms=slo, j_per_slo=j, attainment=att)
        for slo in (500, 200)
        for rate, conc, j, att in loads
        for cycle in (1, 2, 3)
    ]


def test_summary_gives_cis_over_cycles_and_one_load_curve_per_configuration():
    rows = summary_table(serving_study()).to_pylist()
    assert len(rows) == 8 and all(r["scenario"] == "serving" for r in rows)
    first = rows[0]
    assert first["serving.energy_per_slo_request_j_n"] == 3
    assert first["serving.energy_per_slo_request_j_mean"] == pytest.approx(1.5 * 1.04)
    assert first["serving.energy_per_slo_request_j_ci95_low"] < first["serving.energy_per_slo_request_j_mean"]
    assert first["serving.energy_per_slo_request_j_ci95_high"] > first["serving.energy_per_slo_request_j_mean"]
    assert first["serving.slo_attainment_mean"] == pytest.approx(0.98) and first["serving.slo_attainment_n"] == 3
    assert first["serving.offered_rate_req_s_mean"] == pytest.approx(2.004)
    assert first["serving.target_rate_req_s"] == 2.0
    curves = {}
    for r in rows:
        curves.setdefault(r["load_series"], []).append((r["serving.target_rate_req_s"], r["serving.concurrency"]))
    assert sorted(len(v) for v in curves.values()) == [4, 4]  # rates and the concurrency point share a curve
    labels = {r["load_series_label"] for r in rows}
    assert labels == {
        "llama-3.1-8b · vllm · bf16 · TTFT ≤ 500 ms, TPOT ≤ 50 ms (Poisson)",
        "llama-3.1-8b · vllm · bf16 · TTFT ≤ 200 ms, TPOT ≤ 50 ms (Poisson)",
    }
    offline = summary_table([make_result()]).to_pylist()[0]
    assert offline["scenario"] == "offline" and offline["load_series"] is None
    assert offline["serving.energy_per_slo_request_j_n"] == 0
    assert offline["serving.energy_per_slo_request_j_mean"] is None


def test_report_draws_j_per_slo_request_and_attainment_against_the_rate(tmp_path):
    study = tmp_path / "serving-study"
    for result in serving_study():
        save_experiment(result, make_timeseries(), study / "experiments" / f"{result.name}-c{result.placement.cycle}")
    page = write_report(study)
    text = page.read_text(encoding="utf-8")
    pngs = {p.name for p in assert_self_contained(page)}
    assert "serving_load_curves.png" in pngs
    assert "batch_scaling.png" not in pngs and "pareto.png" not in pngs  # no offline configuration to draw
    assert "Serving: energy per SLO-meeting request vs load" in text
    assert "concurrency 64" in text and "32 req/s" in text and "TTFT ≤ 200 ms" in text
    assert "<td>1.56<br><span class=ci>[" in text  # J per SLO-meeting request at 2 req/s, with its CI


def test_a_mixed_study_keeps_the_offline_plots_and_adds_the_serving_section(tmp_path):
    study = tmp_path / "mixed"
    results = [make_result(cycle=c, batch_size=8, j_per_token=0.2) for c in (1, 2)] + serving_study()[:6]
    for result in results:
        save_experiment(result, make_timeseries(), study / "experiments" / f"{result.name}-c{result.placement.cycle}")
    page = write_report(study)
    pngs = {p.name for p in assert_self_contained(page)}
    assert {"batch_scaling.png", "pareto.png", "serving_load_curves.png"} <= pngs
