"""`NVMLMeter`: GPU energy from NVML's energy counter, plus a device-state sampler thread.

Energy of a window is the difference of `nvmlDeviceGetTotalEnergyConsumption` (mJ since driver
load, Volta and newer) read at `begin_window` and `end_window`, per bound GPU. The counter updates
every ~100 ms: windows shorter than that can read 0 J. The sampler records, per device and at
`sample_hz`, the energy counter (J), board power (W), temperature (°C), GPU utilisation (%), used
memory (MiB), SM clock (MHz) and active clock-event (throttle) reasons; a reading a device does not
support is None. The sampled counter lets a window chosen afterwards (a steady state) take its energy
from the counter too (measure/steady_state.py).

GPUs are read through the device layer (`llem_ray.device`, NVML unless another is injected), by
UUID, never by index, so a Ray actor meters exactly its GPUs.
The factory raises `MeterUnavailable` when NVML is missing, no GPU is bound, a UUID is unknown, or
a GPU has no energy counter (pre-Volta). `accuracy` and `reproducibility_notes` are written for the
bound GPUs' names and generations (energy/accuracy.py). A window key that is already open is
refused (`WindowAlreadyOpen`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from llem_ray.device import DeviceError
from llem_ray.energy.accuracy import gpu_accuracy, gpu_notes
from llem_ray.energy.devices import device_facts, gpu_layer
from llem_ray.energy.protocol import EnergyWindow, MeterUnavailable, PowerSample, refuse_open
from llem_ray.energy.sampler import Sampler

if TYPE_CHECKING:
    from llem_ray.config.experiment import EnergyConfig

T = TypeVar("T")

# Clock-event reason bits (nvml.h, nvmlClocksEventReason*); GpuIdle is not a slowdown and is omitted.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
THROTTLING_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)
"""Reasons that mean the GPU ran slower than it would have: flagged in `measurement_warnings`."""


def decode_clock_event_reasons(mask: int) -> tuple[str, ...]:
    """Names of the reasons set in an NVML clock-event bitmask, in bit order."""
    return tuple(name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit)


class NVMLMeter:
    """Energy meter over NVML for the GPUs `device_uuids` (see module docstring for units).

    `devices` holds each bound GPU's name and compute capability, which the accuracy statement and
    the reproducibility notes are written for.
    """

    name = "nvml"
    resolution_s = 0.1
    """Update period of the energy counter, s (seen on H100; the prefill loop spans 20 of them)."""

    def __init__(self, device_uuids: list[str], config: EnergyConfig | None = None):
        if not device_uuids:
            raise MeterUnavailable("no GPU is bound to this experiment (running on CPU)")
        self._gpus = gpu_layer()
        self.device_uuids = list(device_uuids)
        self._bound = list(dict.fromkeys(self.device_uuids))
        for uuid in self._bound:
            try:
                self._gpus.energy_mj(uuid)
            except DeviceError as exc:
                raise MeterUnavailable(f"GPU {uuid}: no NVML energy counter ({exc})") from None
        self.devices = [device_facts(self._gpus, u) for u in self._bound]
        self.accuracy = gpu_accuracy(self.devices, "counter")
        self.reproducibility_notes = gpu_notes(
            "Energy is the difference of each GPU's NVML energy counter (nvmlDeviceGetTotalEnergyConsumption, "
            "mJ since driver load) between the window's start and end, summed over the experiment's GPUs.",
            self.devices,
            "counter",
        )
        self._windows: dict[str, tuple[float, dict[str, int]]] = {}
        self._sampler = Sampler(self.sample_once, "llem-nvml-sampler")

    def _counters_mj(self) -> dict[str, int]:
        return {u: self._gpus.energy_mj(u) for u in self._bound}

    def begin_window(self, key: str) -> None:
        """Read every bound GPU's energy counter now (mJ) and remember it under `key`.

        Raises WindowAlreadyOpen if a window `key` is open.
        """
        refuse_open(key, self._windows)
        self._windows[key] = (time.perf_counter(), self._counters_mj())

    def end_window(self, key: str) -> EnergyWindow:
        """Energy (J) per GPU since `begin_window(key)`. KeyError if `key` was never begun."""
        start_s, start_mj = self._windows.pop(key)
        end_mj = self._counters_mj()
        duration_s = time.perf_counter() - start_s
        return EnergyWindow(key, duration_s, {u: (end_mj[u] - start_mj[u]) / 1000.0 for u in self.device_uuids})

    @staticmethod
    def _read(getter: Callable[[str], T], uuid: str) -> T | None:
        try:
            return getter(uuid)
        except DeviceError:
            return None

    def sample_once(self) -> list[PowerSample]:
        """One reading of every bound GPU (None for any quantity the device cannot report)."""
        gpus, read = self._gpus, self._read
        now = time.time()
        out = []
        for uuid in self._bound:
            counter_mj = read(gpus.energy_mj, uuid)
            mem = read(gpus.memory_mib, uuid)
            out.append(
                PowerSample(
                    t_s=now,
                    device_uuid=uuid,
                    power_w=read(gpus.power_w, uuid),
                    temperature_c=read(gpus.temperature_c, uuid),
                    utilization_pct=read(gpus.utilization_pct, uuid),
                    memory_used_mib=None if mem is None else mem.used_mib,
                    sm_clock_mhz=read(gpus.sm_clock_mhz, uuid),
                    throttle_reasons=decode_clock_event_reasons(read(gpus.clock_event_reasons, uuid) or 0),
                    energy_counter_j=None if counter_mj is None else counter_mj / 1000.0,
                )
            )
        return out

    def start_sampling(self, hz: float) -> None:
        """Start the sampler thread at `hz` readings per second per GPU (daemon thread).

        RuntimeError if it is already running.
        """
        self._sampler.start_sampling(hz)

    def stop_sampling(self) -> list[PowerSample]:
        """Stop the sampler and return its samples, oldest first ([] if it was not running)."""
        return self._sampler.stop_sampling()

    def close(self) -> None:
        """Stop sampling; NVML stays initialised for the process (other meters may share it)."""
        self._sampler.close()
