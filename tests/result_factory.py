"""Real `ExperimentResult`s and timeseries tables with chosen numbers, for statistics and report tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from llem_ray.results.schema import EnvironmentSnapshot, ExperimentResult, LatencyStats, Percentiles, Placement
from llem_ray.results.timeseries import TIMESERIES_SCHEMA

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_result(
    *,
    config_hash: str = "cfg0",
    cycle: int = 1,
    batch_size: int = 1,
    j_per_token: float | None = 0.5,
    tokens_per_s: float = 100.0,
    adjusted_j: float | None = 40.0,
    ttft_ms: float | None = 20.0,
    model: str = "llem/tiny-llama",
    backend: str = "pytorch",
    methodology: str = "total",
    window: tuple[float, float] | None = None,
    warnings: list[str] | None = None,
) -> ExperimentResult:
    """A result of configuration `config_hash`, cycle `cycle`, with the given headline numbers."""
    ttft = None
    if ttft_ms is not None:
        ttft = Percentiles(count=4, mean_ms=ttft_ms, p50_ms=ttft_ms, p95_ms=ttft_ms, p99_ms=ttft_ms)
    started = START + timedelta(minutes=10 * cycle)
    return ExperimentResult(
        name=f"{model.rsplit('/', 1)[-1]}_{backend}_bf16_bs{batch_size}",
        measurement_config_hash=config_hash,
        config={"model": model, "backend": backend, backend: {"batch_size": batch_size}},
        backend=backend,
        model=model,
        precision="bf16",
        batch_size=batch_size,
        device="cuda",
        started_at=started,
        ended_at=started + timedelta(seconds=60),
        measurement_methodology=methodology,
        steady_state_window=window,
        duration_s=60.0,
        n_requests=8,
        input_tokens=1024,
        output_tokens=1024,
        tokens_per_second=tokens_per_s,
        energy_meter="nvml" if j_per_token is not None else None,
        energy_total_j=None if j_per_token is None else j_per_token * 1024,
        energy_adjusted_j=adjusted_j,
        energy_per_output_token_j=j_per_token,
        latency=LatencyStats(ttft=ttft, request=Percentiles(count=8, mean_ms=90, p50_ms=90, p95_ms=120, p99_ms=130)),
        peak_memory_mib=512.0,
        mean_gpu_utilization_pct=80.0,
        mean_power_w=250.0,
        max_temperature_c=60.0,
        environment_snapshot=EnvironmentSnapshot(
            tool_version="2.0.0", python_version="3.12", platform="linux", hostname="test"
        ),
        placement=Placement(cycle=cycle),
        measurement_warnings=list(warnings or []),
        reproducibility_notes="a result built by tests/result_factory.py",
    )


def make_timeseries(duration_s: float = 60.0, hz: float = 2.0, power_w: float = 250.0) -> pa.Table:
    """A one-device timeseries: 5 s of warm-up, then the measured window with a ramp and plateau."""
    rows = []
    n = int((duration_s + 5.0) * hz)
    for i in range(n):
        elapsed = i / hz - 5.0
        ramp = min(1.0, max(0.0, elapsed / 5.0))
        rows.append(
            {
                "t_s": 1_700_000_000.0 + i / hz,
                "elapsed_s": elapsed,
                "device_uuid": "GPU-0",
                "phase": "warmup" if elapsed < 0 else "measured",
                "power_w": 80.0 + ramp * (power_w - 80.0),
                "temperature_c": 40.0 + 20.0 * ramp,
                "utilization_pct": 90.0 * ramp,
                "memory_used_mib": 512.0,
                "sm_clock_mhz": 1980.0,
                "throttle_reasons": "",
            }
        )
    return pa.Table.from_pylist(rows, schema=TIMESERIES_SCHEMA)
