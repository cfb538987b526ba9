"""The timeseries of one experiment as plain Python columns: what its process builds, without pyarrow.

See timeseries.py for the columns' meaning and the Arrow schema the results actor writes them with.
"""

from __future__ import annotations

from collections.abc import Sequence

from llem_ray.energy.protocol import PowerSample

COLUMN_NAMES = (
    "t_s",
    "elapsed_s",
    "device_uuid",
    "phase",
    "power_w",
    "temperature_c",
    "utilization_pct",
    "memory_used_mib",
    "sm_clock_mhz",
    "throttle_reasons",
    "energy_counter_j",
)
"""The timeseries' columns, in order (timeseries.TIMESERIES_SCHEMA types them)."""

Phase = tuple[str, float, float]
"""(name, start Unix time s, end Unix time s)."""


def phase_of(t_s: float, phases: Sequence[Phase]) -> str:
    """Name of the phase whose [start, end] holds `t_s`, else 'other'."""
    return next((name for name, start, end in phases if start <= t_s <= end), "other")


Columns = dict[str, list]
"""A timeseries as plain Python columns (COLUMN_NAMES, in that order)."""


def samples_to_columns(samples: Sequence[PowerSample], phases: Sequence[Phase], window_start_s: float) -> Columns:
    """The columns of `samples`, each tagged with its phase, as plain Python lists.

    Cheap to build and to pickle, and needs no pyarrow: importing it costs an experiment's fresh process
    0.1-0.4 s, and in pyarrow 25 its first array imports pandas (0.4-0.6 s on a 2-core machine); the
    results actor, which lives for the whole study, converts (timeseries.py `columns_to_table`).
    """
    columns: Columns = {name: [] for name in COLUMN_NAMES}
    for s in samples:
        columns["t_s"].append(s.t_s)
        columns["elapsed_s"].append(s.t_s - window_start_s)
        columns["device_uuid"].append(s.device_uuid)
        columns["phase"].append(phase_of(s.t_s, phases))
        columns["power_w"].append(s.power_w)
        columns["temperature_c"].append(s.temperature_c)
        columns["utilization_pct"].append(s.utilization_pct)
        columns["memory_used_mib"].append(s.memory_used_mib)
        columns["sm_clock_mhz"].append(s.sm_clock_mhz)
        columns["throttle_reasons"].append(",".join(s.throttle_reasons))
        columns["energy_counter_j"].append(s.energy_counter_j)
    return columns
