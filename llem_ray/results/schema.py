"""Result models (RES-01..15). Every quantity carries its unit in its name.

Each field of `ExperimentResult` is a column of the study table under its dotted name
(results.columns); a field marked `Metric(...)` is also a summary metric, and with `progress` a
column of the table printed when a study ends. Nothing else lists the metrics.

`ExperimentResult` is what one experiment produces, in any backend; `StudyResult` points at result
files instead of embedding them (RES-15). `SCHEMA_VERSION` is bumped on any field change: minor
for additions, major for removals or meaning changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llem_ray.results.columns import NOT_A_COLUMN, Metric

SCHEMA_VERSION = "3.1"
"""3.1: added `scenario` and `serving` (the serving scenario: load, latency, SLO and energy per request).
3.0: `peak_memory_mb` became `peak_memory_mib` (one meaning for every backend), `vram_total_mb`
`vram_total_mib`; `reproducibility_notes` is the measuring meter's own (no fixed text); added
`energy_per_output_token_total_j`, `host_bound` and `prefix_caching`."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GPUInfo(_Model):
    index: int
    name: str
    uuid: str
    pci_bus_id: str | None = None
    vram_total_mib: float | None = Field(None, description="Total GPU memory (NVML), MiB")
    power_limit_w: float | None = None
    persistence_mode: bool | None = None


class EnvironmentSnapshot(_Model):
    """Where and with what a result was measured (CM-32..34, MEAS-01)."""

    tool_version: str
    python_version: str
    platform: str
    hostname: str
    torch_version: str | None = None
    cuda_version: str | None = None
    cuda_version_source: Literal["torch", "version.txt", "nvcc"] | None = None
    driver_version: str | None = None
    gpus: Annotated[list[GPUInfo], NOT_A_COLUMN] = Field(default_factory=list)
    cpu_model: str | None = None
    cpu_governor: str | None = None
    container: str | None = Field(None, description="docker / podman / kubernetes / None")
    pip_freeze: Annotated[list[str], NOT_A_COLUMN] = Field(default_factory=list)


class EnergyBreakdown(_Model):
    """Raw vs baseline-adjusted energy and where the baseline came from (RES-07)."""

    raw_j: float | None = None
    adjusted_j: float | None = None
    baseline_power_w: float | None = None
    baseline_source: Literal["measured", "cached", "disabled", "unavailable"] = "unavailable"
    baseline_measured_at: datetime | None = None
    baseline_duration_s: float | None = None


class PhaseMetrics(_Model):
    """Energy and time of one phase (prefill or decode, PREC-01)."""

    duration_s: float
    energy_j: float | None
    tokens: int
    energy_per_token_j: float | None
    tokens_per_second: float | None


class Percentiles(_Model):
    """Distribution summary; every value in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


class LatencyStats(_Model):
    batch: Annotated[Percentiles | None, Metric("mean", of=("p50_ms",))] = None
    request: Annotated[Percentiles | None, Metric("mean", of=("p50_ms", "p95_ms"))] = None
    ttft: Annotated[Percentiles | None, Metric("ci", of=("p50_ms",))] = None
    itl: Annotated[Percentiles | None, Metric("mean", of=("p50_ms",))] = None


class FlopsResult(_Model):
    """Estimated FLOPs of the measured window, warm-up excluded (CM-26..28)."""

    total_flops: float
    flops_per_output_token: float
    method: str
    confidence: Literal["high", "medium", "low"]


class WarmupResult(_Model):
    """What warm-up did (CM-24)."""

    converged: bool
    final_cv: float | None
    iterations_completed: int
    target_cv: float
    max_prompts: int
    latencies_ms: list[float]


class Placement(_Model):
    """Where a result was measured in a cluster (filled by the Ray worker; None in-process)."""

    node_id: str | None = None
    hostname: str | None = None
    gpu_uuids: list[str] = Field(default_factory=list)
    pci_bus_ids: list[str] = Field(default_factory=list)
    cycle: Annotated[int | None, NOT_A_COLUMN] = None  # the study table's `cycle` (1 when None)
    attempt: Annotated[int | None, NOT_A_COLUMN] = None  # the study table's `attempt`


class ServingLatency(_Model):
    """Client-side latency of the serving scenario's measured requests (sent inside its steady window), ms."""

    ttft: Annotated[Percentiles | None, Metric("mean", of=("p50_ms", "p99_ms"))] = Field(
        None, description="Time to first token: send to first streamed token"
    )
    tpot: Annotated[Percentiles | None, Metric("mean", of=("p50_ms", "p99_ms"))] = Field(
        None, description="Time per output token: (last - first token) / (tokens - 1)"
    )
    itl: Percentiles | None = Field(None, description="Gaps between consecutive streamed chunks")
    e2e: Percentiles | None = Field(None, description="End to end: send to last token")


class ServingResult(_Model):
    """What one serving run measured (`scenario: serving`; docs/methodology.md, "Serving scenario").

    Times are s since the run began. In the steady window, a request counts by the share of its
    output tokens streamed inside the window (`requests_in_window`, fractional): achieved rate,
    SLO attainment, goodput and the per-request energies all use that count. Energy figures are
    None when the window is rejected (shorter than 30 s, or none) or no energy was measured.
    """

    mode: Literal["rate", "concurrency"]
    target_rate_req_s: float | None = Field(None, description="Configured request_rate_req_s (rate mode)")
    burstiness: float | None = Field(None, description="Gamma shape of the arrivals (rate mode)")
    concurrency: int | None = Field(None, description="Requests kept in flight (fixed-concurrency mode)")
    duration_s: float = Field(..., description="Configured time requests were sent for, s")
    warmup_requests: int
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    requests_sent: int
    requests_completed: int
    requests_failed: int = Field(..., description="Failed by the engine or cancelled when the drain timed out")
    send_phase_s: float = Field(..., description="From the start to when sending stopped, s")
    drain_s: float = Field(..., description="From when sending stopped to the end of the last request, s")
    offered_rate_req_s: Annotated[float, Metric("mean")] = Field(
        ..., description="Requests sent / send_phase_s, as the generator sent them"
    )
    generator_lag_p99_ms: float | None = Field(None, description="99th percentile of send time - due time, ms")
    generator_lag_max_ms: float | None = None
    generator_fell_behind: bool = Field(
        ...,
        description="After the warm-up a request was sent > 100 ms late, and not as a hiccup "
        "(<= 500 ms late, the generator on time again after it): the window ends there",
    )
    window_start_s: float | None = Field(None, description="Steady window start: the last warm-up request ended")
    window_end_s: float | None = Field(None, description="Steady window end: sending stopped (or fell behind)")
    window_accepted: bool = Field(..., description="The window is at least 30 s long: its energy figures are kept")
    measured_requests: int = Field(..., description="Requests sent inside the window (the latency percentiles')")
    requests_in_window: float | None = Field(None, description="Requests served in the window (token shares)")
    slo_requests_in_window: float | None = Field(None, description="Of those, requests meeting every SLO bound")
    output_tokens_in_window: int | None = None
    achieved_rate_req_s: Annotated[float | None, Metric("mean")] = Field(
        None, description="requests_in_window / window length"
    )
    slo_attainment: Annotated[float | None, Metric("ci")] = Field(
        None, description="slo_requests_in_window / requests_in_window, 0-1"
    )
    goodput_req_s: Annotated[float | None, Metric("mean")] = Field(
        None, description="slo_requests_in_window / window length"
    )
    latency: ServingLatency = Field(default_factory=ServingLatency)
    energy_window_j: float | None = Field(None, description="Raw GPU energy in the window, J")
    energy_window_adjusted_j: float | None = Field(None, description="energy_window_j - baseline W x window s")
    mean_power_w: Annotated[float | None, Metric("mean")] = Field(
        None, description="energy_window_j / window length, W"
    )
    energy_per_output_token_j: Annotated[float | None, Metric("mean")] = None
    energy_per_output_token_adjusted_j: float | None = None
    energy_per_request_j: Annotated[float | None, Metric("mean")] = None
    energy_per_request_adjusted_j: float | None = None
    energy_per_slo_request_j: Annotated[float | None, Metric("ci")] = Field(
        None, description="energy_window_j / slo_requests_in_window"
    )
    energy_per_slo_request_adjusted_j: Annotated[float | None, Metric("mean")] = None


class ExperimentResult(_Model):
    """One experiment's measurement, identical in shape for every backend (RES-01, RES-21)."""

    schema_version: str = SCHEMA_VERSION
    name: str
    measurement_config_hash: str
    config: Annotated[dict[str, Any], NOT_A_COLUMN]  # in the study table as `config.<dotted>` (results.table)
    backend: str
    model: str
    precision: str
    batch_size: int
    device: str = Field(..., description="'cuda' or 'cpu'")
    started_at: datetime
    ended_at: datetime
    scenario: Literal["offline", "serving"] = "offline"
    measurement_methodology: Literal["total", "steady_state", "windowed"] = "total"
    steady_state_window: tuple[float, float] | None = Field(
        None, description="(start_s, end_s) relative to the measured window start"
    )
    duration_s: Annotated[float, Metric("mean")] = Field(..., description="Measured window wall time, s")
    n_requests: int
    input_tokens: int
    output_tokens: int
    tokens_per_second: Annotated[float, Metric("ci", progress="tok/s", progress_format=".1f")] = Field(
        ..., description="Output tokens per second of the measured window"
    )
    energy_meter: str | None = Field(None, description="Meter that measured: nvml, zeus, codecarbon or None")
    energy_meter_accuracy: str | None = None
    energy_total_j: Annotated[float | None, Metric("mean", progress="energy J", progress_format=".1f")] = None
    energy_adjusted_j: Annotated[float | None, Metric("ci")] = None
    energy_per_device_j: dict[str, float] | None = Field(None, description="GPU UUID -> J")
    baseline_power_w: float | None = None
    energy_per_output_token_j: Annotated[float | None, Metric("ci", progress="J/token")] = Field(
        None, description="J/token by `measurement_methodology`: over the steady-state window when there is one"
    )
    energy_per_output_token_total_j: Annotated[float | None, Metric("ci")] = Field(
        None, description="J/token over the whole measured window (ramp-up and drain included), beside the above"
    )
    energy_breakdown: EnergyBreakdown = Field(default_factory=EnergyBreakdown)
    prefill: PhaseMetrics | None = None
    decode: PhaseMetrics | None = None
    latency: LatencyStats = Field(default_factory=LatencyStats)
    peak_memory_mib: Annotated[float | None, Metric("mean")] = Field(
        None,
        description="Highest GPU memory in use (NVML, all processes) on the experiment's GPUs, summed, during the "
        "measured window, MiB: CUDA contexts plus torch's caching allocator or the engine's pools; None on CPU",
    )
    mean_gpu_utilization_pct: Annotated[float | None, Metric("mean")] = None
    mean_power_w: Annotated[float | None, Metric("mean")] = None
    host_bound: Annotated[bool | None, Metric("any")] = Field(
        None,
        description="GPU drew well under its power limit in the window (see methodology): J/token follows "
        "the host; None without power samples or a known limit",
    )
    prefix_caching: bool | None = Field(
        None, description="The engine's prefix cache was on (cleared before every workload); None: no such cache"
    )
    max_temperature_c: Annotated[float | None, Metric("max")] = None
    throttle_reasons: list[str] = Field(default_factory=list)
    flops: FlopsResult | None = None
    warmup: WarmupResult | None = None
    serving: ServingResult | None = Field(None, description="The serving scenario's load, latency, SLO and energy")
    warmup_excluded_samples: int | None = None
    energy_facility_j: float | None = Field(None, description="energy_total_j x PUE, when PUE is configured")
    co2e_g: float | None = Field(None, description="CO2-equivalent, g, when carbon intensity is configured")
    environment_snapshot: EnvironmentSnapshot
    placement: Placement = Field(default_factory=Placement)
    measurement_warnings: list[str] = Field(default_factory=list)
    reproducibility_notes: str = Field(
        ..., description="What measured the energy, how, how far to trust it, how to compare (the meter's own)"
    )


class StudySummary(_Model):
    total_experiments: int
    completed: int
    failed: int
    skipped: int
    total_energy_j: float | None
    wall_time_s: float


class StudyResult(_Model):
    """A finished (or stopped) study: pointers to result files, not embedded results (RES-13, RES-15)."""

    schema_version: str = SCHEMA_VERSION
    study_name: str
    study_design_hash: str
    measurement_protocol: dict[str, Any]
    output_dir: str
    result_files: list[str]
    results_table: str | None = Field(None, description="Path of the consolidated results.parquet")
    summary: StudySummary
    skipped: list[dict[str, Any]] = Field(default_factory=list)
