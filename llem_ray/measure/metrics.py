"""Metrics of the measured window (CM-25..28): latency percentiles, device statistics, peak GPU memory,
warnings.

All latencies come in seconds and leave in milliseconds (`Percentiles.*_ms`). Warning thresholds:
windows under 10 s are noisy and biased low, fewer than 10 samples say
little about device state, throttling and a > 10 °C temperature drift make runs incomparable.
(Persistence mode is warned about by pre-flight.) Facility figures (CFG-25) scale energy by the
data-centre PUE and convert it to CO2e with the grid's carbon intensity.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from llem_ray.energy.nvml import THROTTLING_REASONS
from llem_ray.energy.protocol import PowerSample
from llem_ray.results.schema import Percentiles

MIN_WINDOW_S = 10.0
MIN_SAMPLES = 10
MAX_TEMPERATURE_DRIFT_C = 10.0
MIN_THERMAL_FLOOR_S = 30.0
HOST_BOUND_POWER_FRACTION = 0.35
"""Mean power under this share of the power limit flags a window host-bound whatever the utilisation."""
HOST_BOUND_POWER_FRACTION_BUSY = 0.6
"""Mean power under this share flags it too when utilisation is below HOST_BOUND_UTILIZATION_PCT."""
HOST_BOUND_UTILIZATION_PCT = 80.0
"""NVML utilisation (share of time a kernel ran) below which the GPU visibly waits for the host, %."""


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile `q` in [0, 1] of already sorted, non-empty values."""
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def percentiles(values_s: Sequence[float]) -> Percentiles | None:
    """Count, mean, p50, p95, p99 of `values_s` (seconds) in milliseconds; None if empty."""
    if not values_s:
        return None
    ms = sorted(v * 1000.0 for v in values_s)
    return Percentiles(
        count=len(ms),
        mean_ms=statistics.fmean(ms),
        p50_ms=quantile(ms, 0.50),
        p95_ms=quantile(ms, 0.95),
        p99_ms=quantile(ms, 0.99),
    )


@dataclass
class DeviceStats:
    """Summary of sampler readings over one window (None where no sample reported the quantity).

    `mean_power_w` sums the per-device mean power over devices; `temperature_drift_c` is the
    largest (max - min) temperature of any single device.
    """

    n_samples: int = 0
    mean_power_w: float | None = None
    mean_utilization_pct: float | None = None
    max_temperature_c: float | None = None
    temperature_drift_c: float | None = None
    throttle_reasons: list[str] = field(default_factory=list)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def device_stats(samples: Sequence[PowerSample]) -> DeviceStats:
    """Statistics of `samples` (all of one window, any number of devices)."""
    if not samples:
        return DeviceStats()
    by_device: dict[str, list[PowerSample]] = {}
    for s in samples:
        by_device.setdefault(s.device_uuid, []).append(s)
    means = [_mean([s.power_w for s in group]) for group in by_device.values()]
    temps = {u: [s.temperature_c for s in g if s.temperature_c is not None] for u, g in by_device.items()}
    all_temps = [t for ts in temps.values() for t in ts]
    reasons = {r for s in samples for r in s.throttle_reasons if r in THROTTLING_REASONS}
    return DeviceStats(
        n_samples=max(len(g) for g in by_device.values()),
        mean_power_w=sum(m for m in means if m is not None) if any(m is not None for m in means) else None,
        mean_utilization_pct=_mean([s.utilization_pct for s in samples]),
        max_temperature_c=max(all_temps) if all_temps else None,
        temperature_drift_c=max((max(ts) - min(ts) for ts in temps.values() if ts), default=None),
        throttle_reasons=sorted(reasons),
    )


def peak_memory_mib(samples: Sequence[PowerSample], gpu_uuids: Sequence[str], at_end_mib: float | None) -> float | None:
    """Highest GPU memory in use on `gpu_uuids` (NVML, summed over them), MiB, or None if never read.

    Over the sampler readings in `samples` (one window's; a reading counts when every GPU of it
    reported memory, readings of one instant share `t_s`) and `at_end_mib`, a reading as the window
    closed. The same quantity for every backend: NVML counts every process's memory on the device
    (CUDA contexts, torch's caching allocator, the engines' pre-allocated KV-cache pools). Samples
    of other devices (CodeCarbon's host pseudo device) are ignored.
    """
    wanted = set(gpu_uuids)
    by_instant: dict[float, dict[str, float]] = {}
    for s in samples:
        if s.device_uuid in wanted and s.memory_used_mib is not None:
            by_instant.setdefault(s.t_s, {})[s.device_uuid] = s.memory_used_mib
    totals = [sum(reading.values()) for reading in by_instant.values() if len(reading) == len(wanted)]
    if at_end_mib is not None:
        totals.append(at_end_mib)
    return max(totals) if totals else None


def measurement_warnings(
    *, energy_measured: bool, window_s: float, stats: DeviceStats, thermal_floor_s: float
) -> list[str]:
    """Warnings about the validity of an energy measurement (empty when nothing is suspicious).

    Only meaningful with energy measured: without a meter the caller reports why instead.
    """
    if not energy_measured:
        return []
    out = []
    if window_s < MIN_WINDOW_S:
        out.append(f"measured window {window_s:.2f} s < {MIN_WINDOW_S:.0f} s: energy is noisy and biased low")
    if stats.n_samples < MIN_SAMPLES:
        out.append(f"only {stats.n_samples} power samples per device in the window (< {MIN_SAMPLES})")
    if stats.throttle_reasons:
        out.append(f"GPU clocks were throttled during the window: {', '.join(stats.throttle_reasons)}")
    if stats.temperature_drift_c is not None and stats.temperature_drift_c > MAX_TEMPERATURE_DRIFT_C:
        out.append(f"GPU temperature drifted {stats.temperature_drift_c:.1f} °C during the window (> 10 °C)")
    if thermal_floor_s < MIN_THERMAL_FLOOR_S:
        out.append(
            f"thermal floor {thermal_floor_s:g} s < {MIN_THERMAL_FLOOR_S:.0f} s: GPU may not be at steady temperature"
        )
    return out


def host_bound(stats: DeviceStats, power_limits_w: Sequence[float | None]) -> tuple[bool | None, str | None]:
    """(host-bound?, warning) of a window from its device statistics and the bound GPUs' power limits, W.

    An eager engine on a small model keeps the GPU waiting for the host's kernel launches: it then
    draws a fraction of its limit and its J/token follows the host's speed, not the model's. Host-bound
    when mean power (summed over devices) is under HOST_BOUND_POWER_FRACTION of the summed limits,
    or under HOST_BOUND_POWER_FRACTION_BUSY while the GPU is busy less than
    HOST_BOUND_UTILIZATION_PCT of the time. Seen on an H200 (700 W), docs/validation.md: eager HF
    generate, 1.2 B, batch 16: 156 W, 25 % busy (host-bound); compiled static-cache decode, batch
    32: 350 W, 70-73 % (host-bound, the GPU idles a quarter of the time); vLLM, 1.2 B, 64
    sequences: 322 W, 53 % (host-bound); vLLM, 8 B, 32-256 sequences: 571-651 W, 95-97 % (not).
    (None, None) when power or any limit is unknown.
    """
    if stats.mean_power_w is None or not power_limits_w or any(not w for w in power_limits_w):
        return None, None
    limit_w = sum(w for w in power_limits_w if w)
    fraction = stats.mean_power_w / limit_w
    util = stats.mean_utilization_pct
    bound = fraction < HOST_BOUND_POWER_FRACTION or (
        fraction < HOST_BOUND_POWER_FRACTION_BUSY and util is not None and util < HOST_BOUND_UTILIZATION_PCT
    )
    if not bound:
        return False, None
    util_text = f", busy {util:.0f} % of the time" if util is not None else ""
    return True, (
        f"host-bound: the GPU drew {stats.mean_power_w:.0f} W of its {limit_w:.0f} W limit ({fraction:.0%}{util_text}) "
        "during the window; J/token follows the host's speed (kernel launches, Python), not the model's: "
        "compare such runs only with care, and prefer a GPU-bound configuration (CUDA graphs, larger batch)"
    )


def facility_figures(
    energy_j: float | None, pue: float | None, carbon_intensity_g_per_kwh: float | None
) -> tuple[float | None, float | None]:
    """(energy x PUE in J, CO2e in g) of `energy_j`; each None when its input is None.

    CO2e uses the facility energy when a PUE is given, else the device energy: g = kWh x g/kWh.
    """
    if energy_j is None:
        return None, None
    facility_j = energy_j * pue if pue is not None else None
    co2e_g = None
    if carbon_intensity_g_per_kwh is not None:
        co2e_g = (facility_j if facility_j is not None else energy_j) / 3.6e6 * carbon_intensity_g_per_kwh
    return facility_j, co2e_g
