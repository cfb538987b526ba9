"""The timeseries sidecar (CM-16, MEAS-04): one row per sampler reading per device, explicit schema.

Columns: `t_s` (Unix time, s), `elapsed_s` (s since the measured window began; negative before
it), `device_uuid`, `phase` (warmup, thermal_floor, measured, prefill, or other between phases),
`power_w` (W), `temperature_c` (°C), `utilization_pct` (%), `memory_used_mb` (MiB),
`sm_clock_mhz` (MHz), `throttle_reasons` (comma-separated clock-event reasons, '' when none).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from llem_ray.energy.protocol import PowerSample

TIMESERIES_SCHEMA = pa.schema(
    [
        pa.field("t_s", pa.float64(), nullable=False),
        pa.field("elapsed_s", pa.float64(), nullable=False),
        pa.field("device_uuid", pa.string(), nullable=False),
        pa.field("phase", pa.string(), nullable=False),
        pa.field("power_w", pa.float64()),
        pa.field("temperature_c", pa.float64()),
        pa.field("utilization_pct", pa.float64()),
        pa.field("memory_used_mb", pa.float64()),
        pa.field("sm_clock_mhz", pa.float64()),
        pa.field("throttle_reasons", pa.string(), nullable=False),
    ]
)

Phase = tuple[str, float, float]
"""(name, start Unix time s, end Unix time s)."""


def phase_of(t_s: float, phases: Sequence[Phase]) -> str:
    """Name of the phase whose [start, end] holds `t_s`, else 'other'."""
    return next((name for name, start, end in phases if start <= t_s <= end), "other")


Columns = dict[str, list]
"""A timeseries as plain Python columns (TIMESERIES_SCHEMA's names and order)."""


def samples_to_columns(samples: Sequence[PowerSample], phases: Sequence[Phase], window_start_s: float) -> Columns:
    """The columns of `samples`, each tagged with its phase, as plain Python lists.

    Cheap to build and to pickle, and needs no pyarrow: in pyarrow 25 the first array built in a process
    imports pandas (0.4-0.6 s on a 2-core machine), which an experiment's fresh process would pay after
    its window; the results actor, which lives for the whole study, converts (`columns_to_table`).
    """
    columns: Columns = {f.name: [] for f in TIMESERIES_SCHEMA}
    for s in samples:
        columns["t_s"].append(s.t_s)
        columns["elapsed_s"].append(s.t_s - window_start_s)
        columns["device_uuid"].append(s.device_uuid)
        columns["phase"].append(phase_of(s.t_s, phases))
        columns["power_w"].append(s.power_w)
        columns["temperature_c"].append(s.temperature_c)
        columns["utilization_pct"].append(s.utilization_pct)
        columns["memory_used_mb"].append(s.memory_used_mb)
        columns["sm_clock_mhz"].append(s.sm_clock_mhz)
        columns["throttle_reasons"].append(",".join(s.throttle_reasons))
    return columns


def columns_to_table(columns: Columns) -> pa.Table:
    """The Arrow table (TIMESERIES_SCHEMA) of `columns`. Raises pyarrow errors for columns of the wrong type."""
    return pa.Table.from_pydict(columns, schema=TIMESERIES_SCHEMA)


def samples_to_table(samples: Sequence[PowerSample], phases: Sequence[Phase], window_start_s: float) -> pa.Table:
    """Arrow table (TIMESERIES_SCHEMA) of `samples`, each tagged with its phase."""
    return columns_to_table(samples_to_columns(samples, phases, window_start_s))
