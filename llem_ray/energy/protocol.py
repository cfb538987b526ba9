"""The `EnergyMeter` protocol: windows of energy plus a timeseries sampler, bound to GPU UUIDs.

Modelled on Zeus's monitor: `begin_window(key)` / `end_window(key)` return the energy of each bound
device over the window, read from a hardware counter where one exists. A sampler thread records
power and device state for the timeseries sidecar. A meter is bound to exactly the GPUs of one
experiment (by UUID), never to "all GPUs of the host".
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class MeterUnavailable(Exception):
    """The meter cannot run here (no NVML, package missing, device not found). `str()` says why."""


class WindowAlreadyOpen(ValueError):
    """`begin_window(key)` while a window `key` is open: refused (as Zeus does), never replaced."""

    def __init__(self, key: str):
        super().__init__(f"energy window {key!r} is already open: end it before opening it again")


def refuse_open(key: str, open_keys: Container[str]) -> None:
    """Raise WindowAlreadyOpen if `key` is in `open_keys` (the meter's open windows)."""
    if key in open_keys:
        raise WindowAlreadyOpen(key)


@dataclass(frozen=True)
class EnergyWindow:
    """Energy of one window: wall time (s) and joules per bound device UUID."""

    key: str
    duration_s: float
    energy_j: dict[str, float]

    @property
    def total_j(self) -> float:
        """Sum over devices, J."""
        return sum(self.energy_j.values())


@dataclass(frozen=True)
class PowerSample:
    """One sampler reading of one device. `t_s` is Unix time, s; None where the device cannot report.

    `power_w` is what the device reports as its power, W: on NVIDIA Ampere (non-GA100) and newer a
    1 s average, so it trails the load by about half a second (seen on an H200: 0.5-0.9 s).
    `energy_counter_j` is the device's cumulative energy counter at `t_s`, J since an origin of the
    device's own (NVML: driver load); differences of it give energy between readings without that
    lag. None for meters without a counter.
    """

    t_s: float
    device_uuid: str
    power_w: float | None
    temperature_c: float | None = None
    utilization_pct: float | None = None
    memory_used_mib: float | None = None
    sm_clock_mhz: float | None = None
    throttle_reasons: tuple[str, ...] = field(default_factory=tuple)
    energy_counter_j: float | None = None


@runtime_checkable
class EnergyMeter(Protocol):
    """A meter bound to `device_uuids`. Methods raise `MeterUnavailable` only from the factory.

    `accuracy` (one line) and `reproducibility_notes` (what was measured, how, and how to compare
    results) describe this meter on these devices (energy/accuracy.py), not meters in general.
    """

    name: str
    accuracy: str
    reproducibility_notes: str
    device_uuids: list[str]

    def begin_window(self, key: str) -> None:
        """Start a named window (windows with different keys may nest or overlap).

        Raises WindowAlreadyOpen if a window `key` is open.
        """
        ...

    def end_window(self, key: str) -> EnergyWindow:
        """End the window `key` and return its energy. KeyError if it was never begun."""
        ...

    def start_sampling(self, hz: float) -> None:
        """Start the background sampler at `hz` readings per second per device."""
        ...

    def stop_sampling(self) -> list[PowerSample]:
        """Stop the sampler and return every sample since `start_sampling`, oldest first."""
        ...

    def close(self) -> None:
        """Release the meter's resources; safe to call twice."""
        ...
