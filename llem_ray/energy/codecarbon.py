"""`CodeCarbonMeter` (CM-13): energy from CodeCarbon's `OfflineEmissionsTracker`, with no network access.

GPU mode (GPUs bound): one tracker per GPU (CodeCarbon sums the GPUs it tracks, so one per GPU
keeps energy per UUID), each given that GPU's NVML index. CodeCarbon reads GPU energy from NVML
(the energy counter on Volta and newer). CPU and RAM energy are left out, so results stay
comparable with the Zeus and NVML meters, which measure GPUs only.

CPU mode (no GPU bound): one tracker; a window's energy is CodeCarbon's CPU + RAM estimate, under
the pseudo device "cpu". Only when `energy.backend: codecarbon` is chosen explicitly: under `auto`
a CPU run keeps null energy rather than an estimate (the factory raises MeterUnavailable).

Windows over CodeCarbon's task API: CodeCarbon measures one task at a time, so the meter runs a
chain of back-to-back tasks while any window is open and adds each task's energy to a running
total (J); a window's energy is the total at its end minus the total at its start. Windows may
therefore nest and overlap; with none open, no task and no CodeCarbon thread runs. Each window
boundary costs one CodeCarbon measurement (NVML / RAPL reads, milliseconds). Hardware detection
(seconds) happens once, in the factory, outside any window.

Settings: `save_to_file=False` (nothing written), CodeCarbon logging at ERROR, `allow_multiple_runs`.
Country (only for CO2, which this meter does not report): `$CODECARBON_COUNTRY_ISO_CODE` (CodeCarbon's
own setting), else the `country_iso_code` argument, else DEFAULT_COUNTRY_ISO_CODE.

Sampler: the NVML device-state sampler in GPU mode (none on GPUs without an energy counter); in CPU
mode a thread recording host CPU utilisation (%) and used memory (MiB), with power None.

`accuracy` and `reproducibility_notes` say which of these it was: GPU energy from the counter or
from polled power (named GPUs and generations, energy/accuracy.py), or a CPU + RAM estimate. A
window key that is already open is refused (`WindowAlreadyOpen`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import warnings
from typing import TYPE_CHECKING, Any

from llem_ray.device import DeviceError
from llem_ray.energy.accuracy import gpu_accuracy, gpu_notes
from llem_ray.energy.devices import device_facts, gpu_layer
from llem_ray.energy.nvml import NVMLMeter
from llem_ray.energy.protocol import EnergyWindow, MeterUnavailable, PowerSample, refuse_open
from llem_ray.energy.sampler import Sampler

if TYPE_CHECKING:
    from llem_ray.config.experiment import EnergyConfig

DEFAULT_COUNTRY_ISO_CODE = "USA"
CPU_DEVICE = "cpu"
"""Pseudo device UUID of the CPU + RAM estimate in CPU mode."""
J_PER_KWH = 3.6e6
_TASK = "llem-segment"


def _host_sampler() -> Sampler:
    """Sampler of host CPU utilisation (%) and used memory (MiB) as PowerSamples of device "cpu"."""
    import psutil

    def read() -> list[PowerSample]:
        return [
            PowerSample(
                t_s=time.time(),
                device_uuid=CPU_DEVICE,
                power_w=None,
                utilization_pct=psutil.cpu_percent(None),
                memory_used_mib=psutil.virtual_memory().used / 2**20,
            )
        ]

    # priming: the first cpu_percent call only starts the measurement interval
    return Sampler(read, "llem-host-sampler", prime=lambda: psutil.cpu_percent(None))


class CodeCarbonMeter:
    """Energy meter over CodeCarbon for `device_uuids`, or for the host CPU + RAM (see module docstring)."""

    name = "codecarbon"
    resolution_s = 0.1
    """Finest window CodeCarbon resolves in GPU mode (NVML counter period), s."""

    def __init__(
        self, device_uuids: list[str], config: EnergyConfig | None = None, *, country_iso_code: str | None = None
    ):
        if importlib.util.find_spec("codecarbon") is None:
            raise MeterUnavailable("codecarbon is not installed (pip install 'llem-ray[codecarbon]')")
        if not device_uuids and (config is None or config.backend != "codecarbon"):
            raise MeterUnavailable(
                "no GPU is bound (running on CPU); CodeCarbon estimates CPU and RAM energy "
                "only when energy.backend is 'codecarbon'"
            )
        self._sampler: NVMLMeter | Sampler | None
        from codecarbon import __version__ as version

        if device_uuids:
            gpus = gpu_layer()
            try:
                gpu_ids = {u: gpus.index(u) for u in device_uuids}
            except DeviceError as exc:
                raise MeterUnavailable(f"a bound GPU is unknown to NVML ({exc})") from None
            try:
                self._sampler = NVMLMeter(list(device_uuids), config)
                source = "counter"
            except MeterUnavailable:  # no energy counter (pre-Volta): CodeCarbon integrates power instead
                self._sampler = None
                source = "polled power"
            self.device_uuids = list(device_uuids)
            trackers = {u: self._tracker([index], country_iso_code) for u, index in gpu_ids.items()}
            devices = [device_facts(gpus, u) for u in gpu_ids]
            self.accuracy = f"CodeCarbon {version}: {gpu_accuracy(devices, source)}"
            self.reproducibility_notes = gpu_notes(
                f"Energy is CodeCarbon {version}'s GPU energy of each window, per GPU, "
                + (
                    "from NVML's energy counter."
                    if source == "counter"
                    else "from NVML power readings x the time between CodeCarbon's measurements (the GPU has no "
                    "energy counter)."
                ),
                devices,
                source,
            )
        else:
            self._sampler = _host_sampler()
            self.device_uuids = [CPU_DEVICE]
            trackers = {CPU_DEVICE: self._tracker(None, country_iso_code)}
            self.accuracy = (
                f"CodeCarbon {version} estimate of CPU + RAM energy: RAPL counters when readable, else CPU TDP x "
                "load; RAM from installed memory size; order of magnitude only"
            )
            self.reproducibility_notes = (
                f"Energy is CodeCarbon {version}'s estimate of the host's CPU and RAM energy over each window "
                "(RAPL counters when readable, else CPU TDP x load; RAM from the installed memory size), under "
                "the pseudo device 'cpu'. It is an order-of-magnitude estimate, not a measurement, and not "
                "comparable with GPU energy. No GPU was used. Compare only results estimated on the same host."
            )
        self._trackers: dict[str, Any] = trackers
        for tracker in trackers.values():  # hardware detection now, not inside the first window
            tracker.start_task(_TASK)
            tracker.stop_task(_TASK)
        self._total_j = dict.fromkeys(self.device_uuids, 0.0)
        self._windows: dict[str, tuple[float, dict[str, float]]] = {}
        self._task_open = False

    @staticmethod
    def _tracker(gpu_ids: list[int] | None, country_iso_code: str | None) -> Any:
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        kwargs: dict[str, Any] = {
            "project_name": "llem",
            "save_to_file": False,
            "log_level": "error",
            "allow_multiple_runs": True,
            "gpu_ids": gpu_ids,
        }
        if not os.environ.get("CODECARBON_COUNTRY_ISO_CODE"):
            kwargs["country_iso_code"] = country_iso_code or DEFAULT_COUNTRY_ISO_CODE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # save_to_file: deprecated in 3.3, only spelling in 3.0
            return OfflineEmissionsTracker(**kwargs)

    def _energy_j(self, data: Any, device: str) -> float:
        if data is None:
            return 0.0
        kwh = data.gpu_energy if device != CPU_DEVICE else data.cpu_energy + data.ram_energy
        return float(kwh) * J_PER_KWH

    def _advance(self, keep_open: bool) -> None:
        """Close the running task (adding its energy to the totals) and, if `keep_open`, start the next."""
        for device, tracker in self._trackers.items():
            if self._task_open:
                self._total_j[device] += self._energy_j(tracker.stop_task(_TASK), device)
            if keep_open:
                tracker.start_task(_TASK)
        self._task_open = keep_open

    def begin_window(self, key: str) -> None:
        """Start window `key`: one CodeCarbon measurement now (milliseconds).

        Raises WindowAlreadyOpen if a window `key` is open.
        """
        refuse_open(key, self._windows)
        self._advance(keep_open=True)
        self._windows[key] = (time.perf_counter(), dict(self._total_j))

    def end_window(self, key: str) -> EnergyWindow:
        """Energy (J) per device and wall time (s) of window `key`. KeyError if it was never begun."""
        start_s, start_j = self._windows.pop(key)
        self._advance(keep_open=bool(self._windows))
        duration_s = time.perf_counter() - start_s
        return EnergyWindow(key, duration_s, {d: self._total_j[d] - start_j[d] for d in self.device_uuids})

    def start_sampling(self, hz: float) -> None:
        """Start the sampler (see module docstring) at `hz` readings per second per device."""
        if self._sampler is not None:
            self._sampler.start_sampling(hz)

    def stop_sampling(self) -> list[PowerSample]:
        """Stop the sampler; its samples, oldest first ([] without a sampler)."""
        return self._sampler.stop_sampling() if self._sampler is not None else []

    def close(self) -> None:
        """Stop sampling and end any running CodeCarbon task; safe to call twice."""
        if self._sampler is not None:
            self._sampler.close()
        self._windows.clear()
        self._advance(keep_open=False)
