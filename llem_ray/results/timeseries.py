"""The timeseries sidecar (CM-16, MEAS-04): one row per sampler reading per device, explicit schema.

Columns: `t_s` (Unix time, s), `elapsed_s` (s since the measured window began; negative before
it), `device_uuid`, `phase` (warmup, thermal_floor, measured, prefill, or other between phases),
`power_w` (W), `temperature_c` (°C), `utilization_pct` (%), `memory_used_mib` (MiB),
`sm_clock_mhz` (MHz), `throttle_reasons` (comma-separated clock-event reasons, '' when none),
`energy_counter_j` (the device's cumulative energy counter, J from an origin of its own: take
differences; null for meters without one).
An experiment's process builds them as plain columns (timeseries_columns.py, no pyarrow); the results
actor and `llem run` turn them into this schema's table.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from llem_ray.energy.protocol import PowerSample
from llem_ray.results.timeseries_columns import Columns, Phase, samples_to_columns

TIMESERIES_SCHEMA = pa.schema(
    [
        pa.field("t_s", pa.float64(), nullable=False),
        pa.field("elapsed_s", pa.float64(), nullable=False),
        pa.field("device_uuid", pa.string(), nullable=False),
        pa.field("phase", pa.string(), nullable=False),
        pa.field("power_w", pa.float64()),
        pa.field("temperature_c", pa.float64()),
        pa.field("utilization_pct", pa.float64()),
        pa.field("memory_used_mib", pa.float64()),
        pa.field("sm_clock_mhz", pa.float64()),
        pa.field("throttle_reasons", pa.string(), nullable=False),
        pa.field("energy_counter_j", pa.float64()),
    ]
)
"""The Arrow types of timeseries_columns.COLUMN_NAMES, in that order."""


def columns_to_table(columns: Columns) -> pa.Table:
    """The Arrow table (TIMESERIES_SCHEMA) of `columns`. Raises pyarrow errors for columns of the wrong type."""
    return pa.Table.from_pydict(columns, schema=TIMESERIES_SCHEMA)


def samples_to_table(samples: Sequence[PowerSample], phases: Sequence[Phase], window_start_s: float) -> pa.Table:
    """Arrow table (TIMESERIES_SCHEMA) of `samples`, each tagged with its phase."""
    return columns_to_table(samples_to_columns(samples, phases, window_start_s))
