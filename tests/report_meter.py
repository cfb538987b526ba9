"""A plugin (`LLEM_PLUGINS=tests.report_meter`) that registers only an energy meter, 'wave'.

On a CPU host no real meter runs, so a study has no energy and its report no energy plots. 'wave'
lets the real engine and the real PyTorch backend produce energy anyway: each bound device draws
WAVE_BASE_W + WAVE_AMPLITUDE_W·sin(2π·t / WAVE_PERIOD_S) W (t: Unix time, s), so timelines have
a shape; a window's energy is the exact integral of that power; samples come at the requested
rate (temperature 45-55 °C, the wave a quarter period later). The backend registry is left untouched.
"""

from __future__ import annotations

import math
import time

from llem_ray.energy import registry
from llem_ray.energy.protocol import EnergyWindow, PowerSample

WAVE_BASE_W = 120.0
WAVE_AMPLITUDE_W = 40.0
WAVE_PERIOD_S = 2.0
WAVE_DEVICE_UUID = "GPU-wave-0"


def wave_power_w(t_s: float) -> float:
    """Power of one device at Unix time `t_s`, W."""
    return WAVE_BASE_W + WAVE_AMPLITUDE_W * math.sin(2 * math.pi * t_s / WAVE_PERIOD_S)


def wave_energy_j(a_s: float, b_s: float) -> float:
    """∫ wave_power_w over [a_s, b_s], J."""
    k = 2 * math.pi / WAVE_PERIOD_S
    return WAVE_BASE_W * (b_s - a_s) - WAVE_AMPLITUDE_W / k * (math.cos(k * b_s) - math.cos(k * a_s))


class WaveMeter:
    """Energy meter with the sinusoidal power of the module docstring."""

    name = "wave"
    accuracy = "synthetic: exact integral of a sinusoidal power"
    reproducibility_notes = "Energy is a test double's: the exact integral of a sinusoidal power."

    def __init__(self, device_uuids: list[str], config=None):
        self.device_uuids = list(device_uuids) or [WAVE_DEVICE_UUID]
        self._windows: dict[str, float] = {}
        self._sampling: tuple[float, float] | None = None

    def begin_window(self, key: str) -> None:
        self._windows[key] = time.time()

    def end_window(self, key: str) -> EnergyWindow:
        start_s, end_s = self._windows.pop(key), time.time()
        return EnergyWindow(key, end_s - start_s, {u: wave_energy_j(start_s, end_s) for u in self.device_uuids})

    def start_sampling(self, hz: float) -> None:
        self._sampling = (time.time(), hz)

    def stop_sampling(self) -> list[PowerSample]:
        if self._sampling is None:
            return []
        start_s, hz = self._sampling
        self._sampling = None
        times = [start_s + i / hz for i in range(int((time.time() - start_s) * hz) + 1)]
        return [
            PowerSample(
                t,
                u,
                wave_power_w(t),
                50.0 + (wave_power_w(t - WAVE_PERIOD_S / 4) - WAVE_BASE_W) / 8,
                90.0,
                512.0,
                1500.0,
            )
            for t in times
            for u in self.device_uuids
        ]

    def close(self) -> None:
        self._windows.clear()


registry.register("wave", WaveMeter)
