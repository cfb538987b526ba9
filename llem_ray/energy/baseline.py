"""Idle-power baseline per GPU (CM-17..20), cached per GPU UUID with a TTL.

The baseline is measured with the experiment's own meter, in the process that runs the experiment
(a baseline measured from the host reads several W lower than one measured in the worker): open an
energy window, wait `duration_s` doing nothing, divide energy by time.
`energy_adjusted_j = energy_total_j - baseline_power_w * duration_s` (CM-19).

A `BaselineCache` lives as long as its owner: the process (in-process runs) or a Ray worker that
keeps one per study. Readings are keyed by (meter name, GPU UUID).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from llem_ray.energy.protocol import EnergyMeter


@dataclass(frozen=True)
class BaselineReading:
    """Idle power per GPU UUID (W), when and for how long it was measured (s), and whether it was cached."""

    power_w: dict[str, float]
    measured_at: datetime
    duration_s: float
    source: Literal["measured", "cached"]

    @property
    def total_power_w(self) -> float:
        """Sum of the idle power of every bound GPU, W."""
        return sum(self.power_w.values())


@dataclass(frozen=True)
class _Entry:
    power_w: float
    measured_at: datetime
    duration_s: float
    monotonic_s: float


class BaselineCache:
    """Idle-power readings by (meter, GPU UUID), reused for `ttl_s` seconds.

    `clock` (monotonic seconds) and `sleep` are injectable so tests need not wait.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        self._entries: dict[tuple[str, str], _Entry] = {}

    def get(self, meter: EnergyMeter, duration_s: float, ttl_s: float) -> BaselineReading:
        """Baseline of every GPU of `meter`: cached if all are younger than `ttl_s`, else measured now.

        Measuring blocks for `duration_s` seconds. A GPU whose counter did not advance reads 0 W.
        """
        now = self._clock()
        cached = [self._entries.get((meter.name, u)) for u in meter.device_uuids]
        if ttl_s > 0 and all(e is not None and now - e.monotonic_s <= ttl_s for e in cached):
            entries = [e for e in cached if e is not None]
            return BaselineReading(
                power_w={u: e.power_w for u, e in zip(meter.device_uuids, entries)},
                measured_at=min(e.measured_at for e in entries),
                duration_s=min(e.duration_s for e in entries),
                source="cached",
            )
        measured_at = datetime.now(timezone.utc)
        meter.begin_window("llem-baseline")
        self._sleep(duration_s)
        window = meter.end_window("llem-baseline")
        elapsed_s = window.duration_s if window.duration_s > 0 else duration_s
        power_w = {u: window.energy_j.get(u, 0.0) / elapsed_s for u in meter.device_uuids}
        for uuid, watts in power_w.items():
            self._entries[(meter.name, uuid)] = _Entry(watts, measured_at, elapsed_s, self._clock())
        return BaselineReading(power_w, measured_at, elapsed_s, "measured")


PROCESS_CACHE = BaselineCache()
"""The cache in-process runs share (CM-20: session-level TTL, the session being the process)."""
