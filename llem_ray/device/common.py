"""The GPU device layer's interface: what llem_ray asks of a GPU, addressed by UUID.

Modelled on Zeus's device layer (`zeus/device/gpu/common.py`): meters, pre-flight, the environment
snapshot, the worker's process check, `llem config` and the backends read GPUs only through a
`GPUDevices`, never through pynvml. The NVML implementation is `llem_ray.device.nvidia`; tests
inject their own with `llem_ray.device.use`.

Units are in the names: `_mj` millijoules, `_w` watts, `_mib` MiB (2**20 bytes), `_mhz`, `_c` °C,
`_pct` percent. Every per-GPU call raises `DeviceError` when the GPU cannot answer (unknown UUID,
not supported by this GPU or driver, device lost); `str()` of the error is the driver's own message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class DeviceUnavailable(Exception):
    """No GPU device layer on this host (nvidia-ml-py missing, no driver). `str()` says why."""


class DeviceError(Exception):
    """One GPU call failed (unknown UUID, not supported, device lost). `str()` is the driver's message."""


@dataclass(frozen=True)
class GPUId:
    """Where a physical GPU sits: NVML's (PCI-ordered) index, its UUID ('GPU-…') and PCI bus id."""

    index: int
    uuid: str
    pci_bus_id: str


@dataclass(frozen=True)
class MemoryMiB:
    """Device memory of one GPU, MiB: total, used (by every process) and free."""

    total_mib: float
    used_mib: float
    free_mib: float


@runtime_checkable
class GPUDevices(Protocol):
    """The GPUs of this host, addressed by UUID (see module docstring for units and `DeviceError`)."""

    name: str
    """What drives the GPUs ('nvml' for the real layer): used in messages."""

    def list_gpus(self) -> list[GPUId]:
        """Every physical GPU of the host, in NVML (PCI) order."""
        ...

    def count(self) -> int:
        """How many physical GPUs the host has."""
        ...

    def index(self, uuid: str) -> int:
        """NVML's (PCI-ordered) index of GPU `uuid`."""
        ...

    def mig_parent_uuid(self, mig_uuid: str) -> str:
        """UUID of the physical GPU that the MIG instance 'MIG-<uuid>' is a slice of."""
        ...

    def gpu_name(self, uuid: str) -> str:
        """Marketing name of GPU `uuid` ('NVIDIA H100 80GB HBM3')."""
        ...

    def pci_bus_id(self, uuid: str) -> str:
        """PCI bus id of GPU `uuid`."""
        ...

    def compute_capability(self, uuid: str) -> tuple[int, int]:
        """CUDA compute capability (major, minor) of GPU `uuid`."""
        ...

    def energy_mj(self, uuid: str) -> int:
        """Energy counter of GPU `uuid`, mJ since the driver loaded (Volta and newer only)."""
        ...

    def power_w(self, uuid: str) -> float:
        """Board power draw of GPU `uuid` now, W (a 1 s moving average on most Ampere and newer GPUs)."""
        ...

    def power_limit_w(self, uuid: str) -> float:
        """Power management limit of GPU `uuid` (what the administrator set), W."""
        ...

    def enforced_power_limit_w(self, uuid: str) -> float:
        """Power limit GPU `uuid` enforces now (the lowest of every limit that applies), W."""
        ...

    def temperature_c(self, uuid: str) -> float:
        """Core temperature of GPU `uuid`, °C."""
        ...

    def utilization_pct(self, uuid: str) -> float:
        """Share of the last sample period in which a kernel ran on GPU `uuid`, %."""
        ...

    def memory_mib(self, uuid: str) -> MemoryMiB:
        """Total, used and free device memory of GPU `uuid`, MiB."""
        ...

    def sm_clock_mhz(self, uuid: str) -> float:
        """SM clock of GPU `uuid` now, MHz."""
        ...

    def clock_event_reasons(self, uuid: str) -> int:
        """Bitmask of the active clock-event (throttle) reasons of GPU `uuid` (nvml.h bit values)."""
        ...

    def persistence_mode(self, uuid: str) -> bool:
        """Whether persistence mode is on for GPU `uuid`."""
        ...

    def compute_pids(self, uuid: str) -> list[int]:
        """Process ids computing on GPU `uuid` now (never creates a CUDA context)."""
        ...

    def driver_version(self) -> str:
        """Version of the GPU driver ('550.54.15')."""
        ...
