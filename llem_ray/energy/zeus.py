"""`ZeusMeter` (CM-12): GPU energy from Zeus's `ZeusMonitor` windows, bound to the experiment's GPUs.

Energy of a window is what `ZeusMonitor.end_window` reports per GPU (J): on Volta and newer, the
difference of NVML's energy counter (mJ since driver load, ~100 ms updates) between the window's
start and end, the same source as the nvml meter. Windows are opened with `sync_execution=False`:
the measurement protocol synchronises the devices itself (CM-15), and Zeus's own synchronisation
would import torch in processes that never use it.

Binding: Zeus addresses GPUs by index in its own list, which is NVML's (PCI-ordered) indices as
listed in `CUDA_VISIBLE_DEVICES` (all GPUs when it is unset). `zeus_indices` maps each experiment
UUID to that index. Zeus rejects `CUDA_VISIBLE_DEVICES` holding UUIDs or MIG ids, so does this
meter (`MeterUnavailable`; the nvml meter handles those).

The timeseries sampler is the NVML device-state sampler of the nvml meter (power, temperature,
utilisation, memory, SM clock, clock-event reasons); it opens no energy windows, so Zeus alone
measures energy (one meter per GPU, CM-14).

The factory raises `MeterUnavailable`, saying why, when no GPU is bound (CPU runs), zeus is not
installed, NVML is missing, a GPU has no energy counter, or a UUID is not visible to Zeus.
Importing Zeus takes seconds (it pulls scikit-learn) and happens only when a GPU is bound.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

from llem_ray.device import DeviceError, GPUDevices
from llem_ray.energy.accuracy import gpu_accuracy, gpu_notes
from llem_ray.energy.devices import gpu_layer
from llem_ray.energy.nvml import NVMLMeter
from llem_ray.energy.protocol import EnergyWindow, MeterUnavailable, PowerSample, refuse_open

if TYPE_CHECKING:
    from llem_ray.config.experiment import EnergyConfig

_KEY_PREFIX = "llem:"


def zeus_indices(device_uuids: list[str], gpus: GPUDevices, cuda_visible_devices: str | None) -> list[int]:
    """Zeus's GPU index of each UUID (see module docstring); `gpus` is the device layer.

    Raises MeterUnavailable when `cuda_visible_devices` holds anything but integers, or a UUID is
    unknown to NVML or not among the visible GPUs.
    """
    if cuda_visible_devices is None:
        visible = list(range(gpus.count()))
    else:
        entries = [e.strip() for e in cuda_visible_devices.split(",")]
        if not all(e.isdigit() for e in entries):
            raise MeterUnavailable(
                f"Zeus needs integer CUDA_VISIBLE_DEVICES (got {cuda_visible_devices!r}); "
                "the nvml meter handles UUID and MIG entries"
            )
        visible = [int(e) for e in entries]
    indices = []
    for uuid in device_uuids:
        try:
            nvml_index = gpus.index(uuid)
        except DeviceError as exc:
            raise MeterUnavailable(f"GPU {uuid} is unknown to NVML ({exc})") from None
        if nvml_index not in visible:
            raise MeterUnavailable(f"GPU {uuid} (NVML index {nvml_index}) is not in CUDA_VISIBLE_DEVICES")
        indices.append(visible.index(nvml_index))
    return indices


class ZeusMeter:
    """Energy meter over Zeus for the GPUs `device_uuids` (see module docstring for units and binding)."""

    name = "zeus"
    resolution_s = NVMLMeter.resolution_s
    """Update period of the energy counter Zeus reads, s."""

    def __init__(self, device_uuids: list[str], config: EnergyConfig | None = None):
        if not device_uuids:
            raise MeterUnavailable("no GPU is bound to this experiment (running on CPU): Zeus measures GPUs only")
        if importlib.util.find_spec("zeus") is None:
            raise MeterUnavailable("zeus is not installed (pip install 'llem-ray[zeus]')")
        gpus = gpu_layer()
        self.device_uuids = list(device_uuids)
        self._indices = zeus_indices(self.device_uuids, gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
        self._sampler = NVMLMeter(self.device_uuids, config)
        try:
            import zeus
            from zeus.monitor import ZeusMonitor

            self._monitor = ZeusMonitor(gpu_indices=self._indices, cpu_indices=[])
        except Exception as exc:  # ZeusGPUInitError and friends, or a broken install
            self._sampler.close()
            raise MeterUnavailable(f"Zeus could not start: {type(exc).__name__}: {exc}") from None
        devices = self._sampler.devices
        self.accuracy = f"Zeus {zeus.__version__} ZeusMonitor windows; {gpu_accuracy(devices, 'counter')}"
        self.reproducibility_notes = gpu_notes(
            f"Energy is what Zeus {zeus.__version__} (ZeusMonitor.end_window) reported for each window and GPU, "
            "read from NVML's energy counter (mJ since driver load) at the window's start and end.",
            devices,
            "counter",
        )
        self._open: set[str] = set()

    def begin_window(self, key: str) -> None:
        """Start Zeus window `key` on every bound GPU (no device synchronisation).

        Raises WindowAlreadyOpen if a window `key` is open (Zeus itself refuses one too).
        """
        refuse_open(key, self._open)
        self._monitor.begin_window(_KEY_PREFIX + key, sync_execution=False)
        self._open.add(key)

    def end_window(self, key: str) -> EnergyWindow:
        """Energy (J) per GPU UUID and wall time (s) of window `key`. KeyError if it was never begun."""
        if key not in self._open:
            raise KeyError(key)
        self._open.discard(key)
        measurement = self._monitor.end_window(_KEY_PREFIX + key, sync_execution=False)
        energy_j = {u: float(measurement.gpu_energy[i]) for u, i in zip(self.device_uuids, self._indices)}
        return EnergyWindow(key, float(measurement.time), energy_j)

    def start_sampling(self, hz: float) -> None:
        """Start the NVML device-state sampler at `hz` readings per second per GPU."""
        self._sampler.start_sampling(hz)

    def stop_sampling(self) -> list[PowerSample]:
        """Stop the sampler; its samples, oldest first ([] if it was not running)."""
        return self._sampler.stop_sampling()

    def close(self) -> None:
        """Stop sampling and forget open windows; safe to call twice."""
        self._sampler.close()
        self._open.clear()
