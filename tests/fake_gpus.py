"""`FakeGPUs`: a deterministic GPU device layer (`llem_ray.device.GPUDevices`) for CPU tests.

Inject with `llem_ray.device.use(FakeGPUs([...]))` (the unit tests' `fake_gpus` fixture does, and
restores NVML after). Every quantity is a field of a `FakeGPU` that a test sets or advances
(`energy_mj` is the counter a meter reads, mJ); a call named in `FakeGPU.unsupported` raises
`DeviceError("Not Supported")` as NVML does on a GPU without it, and an unknown UUID raises
`DeviceError("Not Found")`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llem_ray.device import DeviceError, GPUId, MemoryMiB


@dataclass
class FakeGPU:
    """One fake physical GPU: each field is what the `GPUDevices` call of the same name returns."""

    uuid: str
    pci_bus_id: str
    gpu_name: str = "NVIDIA H100 80GB HBM3"
    compute_capability: tuple[int, int] = (9, 0)
    energy_mj: int = 1_000_000
    power_w: float = 300.0
    power_limit_w: float = 700.0
    enforced_power_limit_w: float = 650.0
    temperature_c: float = 61.0
    utilization_pct: float = 97.0
    memory_mib: MemoryMiB = MemoryMiB(total_mib=81_559.0, used_mib=1_024.0, free_mib=80_535.0)
    sm_clock_mhz: float = 1_980.0
    clock_event_reasons: int = 0
    persistence_mode: bool = True
    compute_pids: list[int] = field(default_factory=list)
    mig_slices: list[str] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)


def _reading(call: str) -> Callable[[FakeGPUs, str], Any]:
    """The `GPUDevices` call `call`: the FakeGPU field of the same name."""

    def read(self: FakeGPUs, uuid: str) -> Any:
        return getattr(self._gpu(uuid, call), call)

    read.__name__ = call
    return read


class FakeGPUs:
    """A host with `gpus` (listed in the given order as NVML indices 0, 1, …) and driver `driver`."""

    name = "fake"

    def __init__(self, gpus: list[FakeGPU], driver: str = "550.54.15"):
        self.gpus = list(gpus)
        self.driver = driver

    def _gpu(self, uuid: str, call: str) -> FakeGPU:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                if call in gpu.unsupported:
                    raise DeviceError("Not Supported")
                return gpu
        raise DeviceError("Not Found")

    def list_gpus(self) -> list[GPUId]:
        return [GPUId(i, g.uuid, g.pci_bus_id) for i, g in enumerate(self.gpus)]

    def count(self) -> int:
        return len(self.gpus)

    def index(self, uuid: str) -> int:
        return self.gpus.index(self._gpu(uuid, "index"))

    def mig_parent_uuid(self, mig_uuid: str) -> str:
        for gpu in self.gpus:
            if mig_uuid in gpu.mig_slices:
                return gpu.uuid
        raise DeviceError("Not Found")

    def compute_pids(self, uuid: str) -> list[int]:
        return list(self._gpu(uuid, "compute_pids").compute_pids)

    def driver_version(self) -> str:
        return self.driver

    gpu_name = _reading("gpu_name")
    pci_bus_id = _reading("pci_bus_id")
    compute_capability = _reading("compute_capability")
    energy_mj = _reading("energy_mj")
    power_w = _reading("power_w")
    power_limit_w = _reading("power_limit_w")
    enforced_power_limit_w = _reading("enforced_power_limit_w")
    temperature_c = _reading("temperature_c")
    utilization_pct = _reading("utilization_pct")
    memory_mib = _reading("memory_mib")
    sm_clock_mhz = _reading("sm_clock_mhz")
    clock_event_reasons = _reading("clock_event_reasons")
    persistence_mode = _reading("persistence_mode")
