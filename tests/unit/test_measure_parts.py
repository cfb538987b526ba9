"""Warm-up, FLOPs and metric helpers: pure functions with known answers."""

import pytest

from llem_ray.config.experiment import WarmupConfig
from llem_ray.energy.protocol import PowerSample
from llem_ray.measure.flops import estimate_flops
from llem_ray.measure.metrics import (
    DeviceStats,
    device_stats,
    facility_figures,
    host_bound,
    measurement_warnings,
    peak_memory_mib,
    percentiles,
)
from llem_ray.measure.warmup import coefficient_of_variation, run_warmup
from llem_ray.results.schema import ExperimentResult, GPUInfo
from llem_ray.results.table import STUDY_TABLE_SCHEMA
from llem_ray.results.timeseries import TIMESERIES_SCHEMA


def _batches(latencies_s):
    it = iter(latencies_s)
    return lambda: next(it)


def test_fixed_warmup_runs_exactly_n_batches():
    result = run_warmup(_batches([0.5, 0.1, 0.1, 0.1, 0.1, 9.0]), WarmupConfig(n_warmup=5, window_size=3))
    assert result.iterations_completed == 5 and result.latencies_ms == pytest.approx([500, 100, 100, 100, 100])
    assert result.converged and result.final_cv == pytest.approx(0.0)


def test_convergence_stops_once_the_window_is_stable():
    config = WarmupConfig(convergence_detection=True, window_size=3, target_cv=0.05, max_prompts=20)
    result = run_warmup(_batches([1.0, 0.5, 0.2, 0.2, 0.2, 0.2, 5.0]), config)
    assert result.converged and result.iterations_completed == 5


def test_convergence_gives_up_at_max_prompts():
    config = WarmupConfig(convergence_detection=True, window_size=2, target_cv=0.01, max_prompts=4)
    result = run_warmup(_batches([1.0, 2.0, 1.0, 2.0, 1.0]), config)
    assert not result.converged and result.iterations_completed == 4 and result.final_cv > 0.01


def test_cv_needs_two_values():
    assert coefficient_of_variation([1.0]) is None
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(2**0.5 / 2)


def test_flops_follow_palm_and_exclude_nothing_else():
    flops = estimate_flops(1_000, input_tokens=30, output_tokens=10)
    assert flops.total_flops == 2 * 1_000 * 40 and flops.flops_per_output_token == 8_000
    assert flops.confidence == "medium"
    assert estimate_flops(1_000, 30, 10, num_beams=4).confidence == "low"
    assert estimate_flops(1_000, 30, 0) is None


def test_percentiles_in_ms_with_linear_interpolation():
    p = percentiles([0.001 * v for v in range(1, 101)])
    assert p.count == 100 and p.mean_ms == pytest.approx(50.5)
    assert p.p50_ms == pytest.approx(50.5) and p.p95_ms == pytest.approx(95.05) and p.p99_ms == pytest.approx(99.01)
    assert percentiles([]) is None


def _sample(t, uuid, power, temp, reasons=()):
    return PowerSample(t, uuid, power, temp, 50.0, 1.0, 1000.0, reasons)


def test_device_stats_sum_device_means_and_flag_only_slowdowns():
    samples = [
        _sample(0, "A", 100, 40),
        _sample(1, "A", 200, 55, ("sw_power_cap",)),
        _sample(0, "B", 50, 30, ("applications_clocks_setting",)),
        _sample(1, "B", None, 31),
    ]
    stats = device_stats(samples)
    assert stats.mean_power_w == pytest.approx(150 + 50)
    assert stats.max_temperature_c == 55 and stats.temperature_drift_c == 15
    assert stats.throttle_reasons == ["sw_power_cap"] and stats.n_samples == 2


def test_warnings_cover_short_window_few_samples_throttle_drift_and_floor():
    stats = device_stats([_sample(0, "A", 100, 40, ("hw_slowdown",)), _sample(1, "A", 100, 52)])
    text = " | ".join(measurement_warnings(energy_measured=True, window_s=5, stats=stats, thermal_floor_s=10))
    for needle in ("< 10 s", "only 2 power samples", "hw_slowdown", "drifted 12.0", "thermal floor 10 s"):
        assert needle in text
    assert measurement_warnings(energy_measured=False, window_s=5, stats=stats, thermal_floor_s=0) == []


def test_no_warnings_for_a_clean_long_window():
    stats = device_stats([_sample(i, "A", 100, 40 + i * 0.1) for i in range(20)])
    assert measurement_warnings(energy_measured=True, window_s=30, stats=stats, thermal_floor_s=60) == []


def test_facility_figures():
    assert facility_figures(3.6e6, 1.5, 400) == (pytest.approx(5.4e6), pytest.approx(600.0))
    assert facility_figures(3.6e6, None, 400) == (None, pytest.approx(400.0))
    assert facility_figures(None, 1.5, 400) == (None, None)


@pytest.mark.parametrize(
    ("power_w", "util_pct", "expected"),
    [
        (150.0, 97.0, True),  # ~150 W of 700 W (eager HF generate on an H200), whatever NVML's utilisation says
        (350.0, 72.0, True),  # compiled static-cache decode on an H200: half the limit, idle a quarter of the time
        (350.0, 98.0, False),  # half the limit, but the GPU is never idle: memory-bound, not host-bound
        (400.0, 85.0, False),  # busy enough
        (651.0, 97.0, False),  # vLLM, 8 B shape, near the power cap
    ],
)
def test_host_bound_flags_a_gpu_waiting_for_the_host(power_w, util_pct, expected):
    bound, warning = host_bound(DeviceStats(n_samples=50, mean_power_w=power_w, mean_utilization_pct=util_pct), [700.0])
    assert bound is expected
    assert (warning is not None) is expected
    if expected:
        assert f"{power_w:.0f} W of its 700 W limit" in warning and "host" in warning


def test_host_bound_is_unknown_without_power_or_a_limit():
    assert host_bound(DeviceStats(), [700.0]) == (None, None)
    assert host_bound(DeviceStats(n_samples=5, mean_power_w=100.0), [None]) == (None, None)
    two_gpus = DeviceStats(n_samples=5, mean_power_w=900.0, mean_utilization_pct=99.0)  # summed over devices
    assert host_bound(two_gpus, [700.0, 700.0]) == (False, None)


def _memory(t, uuid, mib):
    return PowerSample(t, uuid, 100.0, 40.0, 50.0, mib)


def test_peak_memory_is_the_highest_sum_over_the_gpus_of_one_reading():
    samples = [
        _memory(0, "A", 1000),
        _memory(0, "B", 3000),  # 4000 together
        _memory(1, "A", 2500),
        _memory(1, "B", 2000),  # 4500: the peak, though neither GPU peaks here
        _memory(2, "A", 2600),  # B did not report: not a complete reading
        _memory(2, "cpu", 900_000),  # CodeCarbon's host pseudo device: not GPU memory
    ]
    assert peak_memory_mib(samples, ["A", "B"], at_end_mib=None) == 4500
    assert peak_memory_mib(samples, ["A", "B"], at_end_mib=5000) == 5000  # the reading as the window closed
    assert peak_memory_mib(samples, [], at_end_mib=None) is None  # CPU run: no GPU memory to speak of
    assert peak_memory_mib([], ["A"], at_end_mib=None) is None


def test_the_result_has_one_memory_field_in_mib():
    fields = ExperimentResult.model_fields
    assert "peak_memory_mib" in fields and not [f for f in fields if f.endswith("_mb")]
    assert "NVML" in fields["peak_memory_mib"].description
    assert "peak_memory_mib" in STUDY_TABLE_SCHEMA.names and "peak_memory_mb" not in STUDY_TABLE_SCHEMA.names
    assert "memory_used_mib" in TIMESERIES_SCHEMA.names and "vram_total_mib" in GPUInfo.model_fields
