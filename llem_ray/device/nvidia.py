"""`NVMLDevices`: the GPU device layer over NVML (nvidia-ml-py, module `pynvml`).

The one module of llem_ray that calls pynvml (Zeus's `zeus/device/gpu/nvidia.py` plays this part
under its monitor). NVML is initialised once per process and never shut down (meters, the sampler
and the worker's process check share it). Handles are looked up by UUID, never by index, and
cached. Every NVMLError becomes `DeviceError` with NVML's message; see `common.GPUDevices` for units.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from llem_ray.device.common import DeviceError, DeviceUnavailable, GPUId, MemoryMiB

_lock = threading.Lock()
_opened: NVMLDevices | None = None
_open_error: str | None = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def open_nvml() -> NVMLDevices:
    """The process's NVML device layer, initialising NVML on the first call.

    Raises DeviceUnavailable saying why when nvidia-ml-py is not installed or the NVML library or
    driver is missing (every CPU-only host); the reason is kept and raised again on later calls.
    """
    global _opened, _open_error
    with _lock:
        if _opened is not None:
            return _opened
        if _open_error is not None:
            raise DeviceUnavailable(_open_error)
        try:
            import pynvml

            pynvml.nvmlInit()
        except ImportError:
            _open_error = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            raise DeviceUnavailable(_open_error) from None
        except Exception as exc:  # pynvml raises NVMLError subclasses (library not found, no driver)
            _open_error = f"NVML is not available on this host: {exc}"
            raise DeviceUnavailable(_open_error) from None
        _opened = NVMLDevices(pynvml)
        return _opened


class NVMLDevices:
    """`GPUDevices` over an initialised pynvml module `lib` (use `open_nvml`, which initialises it)."""

    name = "nvml"

    def __init__(self, lib: ModuleType):
        self._lib = lib
        self._handles: dict[str, Any] = {}
        self._reasons = (
            getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or lib.nvmlDeviceGetCurrentClocksThrottleReasons
        )

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._lib.NVMLError as exc:
            raise DeviceError(str(exc)) from exc

    def _handle(self, uuid: str) -> Any:
        handle = self._handles.get(uuid)
        if handle is None:
            handle = self._handles[uuid] = self._call(self._lib.nvmlDeviceGetHandleByUUID, uuid)
        return handle

    def _on(self, uuid: str, fn: Callable[..., Any], *args: Any) -> Any:
        return self._call(fn, self._handle(uuid), *args)

    def list_gpus(self) -> list[GPUId]:
        lib, out = self._lib, []
        for index in range(self.count()):
            handle = self._call(lib.nvmlDeviceGetHandleByIndex, index)
            uuid = _text(self._call(lib.nvmlDeviceGetUUID, handle))
            out.append(GPUId(index, uuid, _text(self._call(lib.nvmlDeviceGetPciInfo, handle).busId)))
        return out

    def count(self) -> int:
        return int(self._call(self._lib.nvmlDeviceGetCount))

    def index(self, uuid: str) -> int:
        return int(self._on(uuid, self._lib.nvmlDeviceGetIndex))

    def mig_parent_uuid(self, mig_uuid: str) -> str:
        parent = self._on(mig_uuid, self._lib.nvmlDeviceGetDeviceHandleFromMigDeviceHandle)
        return _text(self._call(self._lib.nvmlDeviceGetUUID, parent))

    def gpu_name(self, uuid: str) -> str:
        return _text(self._on(uuid, self._lib.nvmlDeviceGetName))

    def pci_bus_id(self, uuid: str) -> str:
        return _text(self._on(uuid, self._lib.nvmlDeviceGetPciInfo).busId)

    def compute_capability(self, uuid: str) -> tuple[int, int]:
        major, minor = self._on(uuid, self._lib.nvmlDeviceGetCudaComputeCapability)
        return int(major), int(minor)

    def energy_mj(self, uuid: str) -> int:
        return self._on(uuid, self._lib.nvmlDeviceGetTotalEnergyConsumption)

    def power_w(self, uuid: str) -> float:
        return self._on(uuid, self._lib.nvmlDeviceGetPowerUsage) / 1000.0

    def power_limit_w(self, uuid: str) -> float:
        return self._on(uuid, self._lib.nvmlDeviceGetPowerManagementLimit) / 1000.0

    def enforced_power_limit_w(self, uuid: str) -> float:
        return self._on(uuid, self._lib.nvmlDeviceGetEnforcedPowerLimit) / 1000.0

    def temperature_c(self, uuid: str) -> float:
        return self._on(uuid, self._lib.nvmlDeviceGetTemperature, self._lib.NVML_TEMPERATURE_GPU)

    def utilization_pct(self, uuid: str) -> float:
        return float(self._on(uuid, self._lib.nvmlDeviceGetUtilizationRates).gpu)

    def memory_mib(self, uuid: str) -> MemoryMiB:
        mem = self._on(uuid, self._lib.nvmlDeviceGetMemoryInfo)
        return MemoryMiB(mem.total / 2**20, mem.used / 2**20, mem.free / 2**20)

    def sm_clock_mhz(self, uuid: str) -> float:
        return float(self._on(uuid, self._lib.nvmlDeviceGetClockInfo, self._lib.NVML_CLOCK_SM))

    def clock_event_reasons(self, uuid: str) -> int:
        return int(self._on(uuid, self._reasons))

    def persistence_mode(self, uuid: str) -> bool:
        return bool(self._on(uuid, self._lib.nvmlDeviceGetPersistenceMode))

    def compute_pids(self, uuid: str) -> list[int]:
        return [p.pid for p in self._on(uuid, self._lib.nvmlDeviceGetComputeRunningProcesses)]

    def driver_version(self) -> str:
        return _text(self._call(self._lib.nvmlSystemGetDriverVersion))
