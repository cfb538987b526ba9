"""Turn what one experiment observed into its `ExperimentResult` (units as in results.schema).

Energy: `energy_total_j` is the meter's raw energy over the measured window (all bound GPUs);
`energy_adjusted_j = energy_total_j - baseline_power_w x duration_s` (CM-19).
`energy_per_output_token_j` and the prefill/decode split use raw energy, like ML.ENERGY and
optimum-benchmark, so they compare with peers; the adjusted total is reported beside them.
`energy_per_output_token_j` is taken over the steady-state window where one exists
(`measurement_methodology` steady_state, measure/steady_state.py), else over the whole window;
`energy_per_output_token_total_j` is always over the whole window, so both stand side by side.
`batch_size` is what ran at once: an engine's effective limit (vLLM `max_num_seqs`) or PyTorch's.
Prefill/decode (PREC-01): prefill = one pass of the dedicated prefill loop; decode = window - prefill.
`peak_memory_mib` (metrics.peak_memory_mib) is NVML's memory in use on the experiment's GPUs: the
same quantity whatever the backend. `reproducibility_notes` are the measuring meter's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from llem_ray.backends.protocol import GenerationOutput, ModelInfo
from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.user import carbon_intensity_g_per_kwh, datacenter_pue
from llem_ray.energy.accuracy import NO_METER_NOTES
from llem_ray.energy.baseline import BaselineReading
from llem_ray.energy.protocol import EnergyMeter, EnergyWindow, PowerSample
from llem_ray.measure.flops import estimate_flops
from llem_ray.measure.metrics import (
    device_stats,
    facility_figures,
    host_bound,
    measurement_warnings,
    peak_memory_mib,
    percentiles,
)
from llem_ray.measure.steady_state import WindowEnergy, request_spans, steady_state
from llem_ray.results.schema import (
    EnergyBreakdown,
    EnvironmentSnapshot,
    ExperimentResult,
    LatencyStats,
    PhaseMetrics,
    Placement,
    WarmupResult,
)
from llem_ray.results.timeseries_columns import Phase, phase_of


@dataclass
class Observations:
    """Everything `measure.experiment.run` saw; `prefill` is (s per pass, J per pass or None, output).

    `memory_at_end_mib` is NVML's memory in use on the experiment's GPUs as the measured window closed.
    """

    config: ExperimentConfig
    device: str
    started_at: datetime
    env: EnvironmentSnapshot
    info: ModelInfo
    output: GenerationOutput
    duration_s: float
    window: EnergyWindow | None
    meter: EnergyMeter | None
    baseline: BaselineReading | None
    prefill: tuple[float, float | None, GenerationOutput] | None
    warmup: WarmupResult | None
    samples: list[PowerSample]
    phases: list[Phase]
    memory_at_end_mib: float | None
    notes: list[str] = field(default_factory=list)
    placement: Placement | None = None
    steady: WindowEnergy | None = None
    """J/token by methodology when the scenario found its window itself (serving); None: `steady_state` finds it."""


def _per(value: float | None, count: float) -> float | None:
    return value / count if value is not None and count > 0 else None


def _phase_metrics(duration_s: float, energy_j: float | None, tokens: int) -> PhaseMetrics:
    return PhaseMetrics(
        duration_s=duration_s,
        energy_j=energy_j,
        tokens=tokens,
        energy_per_token_j=_per(energy_j, tokens),
        tokens_per_second=_per(float(tokens), duration_s),
    )


def _split(obs: Observations, total_j: float | None) -> tuple[PhaseMetrics | None, PhaseMetrics | None, list[str]]:
    if obs.prefill is None:
        return None, None, []
    prefill_s, prefill_j, prefill_out = obs.prefill
    decode_s = obs.duration_s - prefill_s
    decode_j = total_j - prefill_j if total_j is not None and prefill_j is not None else None
    notes = []
    if decode_s <= 0 or (decode_j is not None and decode_j < 0):
        notes.append("prefill pass measured longer or costlier than the whole window: decode split omitted")
        return _phase_metrics(prefill_s, prefill_j, prefill_out.input_tokens), None, notes
    return (
        _phase_metrics(prefill_s, prefill_j, prefill_out.input_tokens),
        _phase_metrics(decode_s, decode_j, obs.output.output_tokens),
        notes,
    )


def _baseline_breakdown(obs: Observations, total_j: float | None) -> tuple[EnergyBreakdown, float | None]:
    if obs.baseline is None:
        source = "disabled" if obs.meter is not None and not obs.config.baseline.enabled else "unavailable"
        return EnergyBreakdown(raw_j=total_j, baseline_source=source), None
    watts = obs.baseline.total_power_w
    adjusted = total_j - watts * obs.duration_s if total_j is not None else None
    return (
        EnergyBreakdown(
            raw_j=total_j,
            adjusted_j=adjusted,
            baseline_power_w=watts,
            baseline_source=obs.baseline.source,
            baseline_measured_at=obs.baseline.measured_at,
            baseline_duration_s=obs.baseline.duration_s,
        ),
        adjusted,
    )


def concurrent_batch(config: ExperimentConfig, info: ModelInfo, n_requests: int) -> int:
    """Requests the backend ran at once: the engine's own limit (capped by the requests) or the config's batch."""
    if info.max_concurrent_requests is None:
        return config.batch_size
    return max(1, min(info.max_concurrent_requests, n_requests or config.n))


def build_result(obs: Observations) -> ExperimentResult:
    """The `ExperimentResult` of `obs` (facility figures from LLEM_DATACENTER_PUE / LLEM_CARBON_INTENSITY)."""
    config, out = obs.config, obs.output
    total_j = obs.window.total_j if obs.window is not None else None
    breakdown, adjusted_j = _baseline_breakdown(obs, total_j)
    prefill, decode, split_notes = _split(obs, total_j)
    measured = [s for s in obs.samples if phase_of(s.t_s, obs.phases) == "measured"]
    excluded = [s for s in obs.samples if phase_of(s.t_s, obs.phases) in ("warmup", "thermal_floor")]
    stats = device_stats(measured)
    batch_size = concurrent_batch(config, obs.info, len(out.requests))
    steady = obs.steady or steady_state(
        request_spans(config.backend, out, batch_size, obs.duration_s),
        batch_size=batch_size,
        duration_s=obs.duration_s,
        output_tokens=out.output_tokens,
        energy_total_j=total_j,
        samples=obs.samples,
        window_start_s=next((start for name, start, _ in obs.phases if name == "measured"), 0.0),
        power_limits_w={gpu.uuid: gpu.power_limit_w for gpu in obs.env.gpus},
    )
    bound, bound_warning = (
        host_bound(stats, [gpu.power_limit_w for gpu in obs.env.gpus]) if obs.env.gpus else (None, None)
    )
    warnings = [
        *obs.notes,
        *([bound_warning] if bound_warning else []),
        *measurement_warnings(
            energy_measured=total_j is not None,
            window_s=obs.duration_s,
            stats=stats,
            thermal_floor_s=config.warmup.thermal_floor_s,
        ),
        *split_notes,
    ]
    facility_j, co2e_g = facility_figures(total_j, datacenter_pue(), carbon_intensity_g_per_kwh())
    return ExperimentResult(
        name=config.display_name(),
        measurement_config_hash=measurement_config_hash(config),
        config=config.model_dump(mode="json"),
        backend=config.backend,
        model=config.model,
        precision=config.precision,
        batch_size=batch_size,
        device=obs.device,
        started_at=obs.started_at,
        ended_at=datetime.now(timezone.utc),
        duration_s=obs.duration_s,
        n_requests=len(out.requests) or config.n,
        input_tokens=out.input_tokens,
        output_tokens=out.output_tokens,
        tokens_per_second=_per(float(out.output_tokens), obs.duration_s) or 0.0,
        energy_meter=obs.meter.name if obs.meter is not None else None,
        energy_meter_accuracy=obs.meter.accuracy if obs.meter is not None else None,
        energy_total_j=total_j,
        energy_adjusted_j=adjusted_j,
        energy_per_device_j=dict(obs.window.energy_j) if obs.window is not None else None,
        baseline_power_w=breakdown.baseline_power_w,
        measurement_methodology=steady.methodology,
        steady_state_window=steady.window_s,
        energy_per_output_token_j=steady.energy_per_output_token_j,
        energy_per_output_token_total_j=_per(total_j, out.output_tokens),
        energy_breakdown=breakdown,
        prefill=prefill,
        decode=decode,
        latency=LatencyStats(
            batch=percentiles(out.batch_latencies_s),
            request=percentiles([r.latency_s for r in out.requests]),
            ttft=percentiles([r.ttft_s for r in out.requests if r.ttft_s is not None]),
            itl=percentiles([itl for r in out.requests for itl in r.itl_s]),
        ),
        peak_memory_mib=peak_memory_mib(measured, [g.uuid for g in obs.env.gpus], obs.memory_at_end_mib),
        mean_gpu_utilization_pct=stats.mean_utilization_pct,
        mean_power_w=stats.mean_power_w,
        host_bound=bound,
        prefix_caching=obs.info.prefix_caching,
        max_temperature_c=stats.max_temperature_c,
        throttle_reasons=stats.throttle_reasons,
        flops=estimate_flops(obs.info.n_parameters, out.input_tokens, out.output_tokens, config.decoder.num_beams),
        warmup=obs.warmup,
        warmup_excluded_samples=len(excluded) if obs.meter is not None else None,
        energy_facility_j=facility_j,
        co2e_g=co2e_g,
        environment_snapshot=obs.env,
        placement=obs.placement or Placement(),
        measurement_warnings=list(dict.fromkeys([*warnings, *steady.warnings])),
        reproducibility_notes=obs.meter.reproducibility_notes if obs.meter is not None else NO_METER_NOTES,
    )
