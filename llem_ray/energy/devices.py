"""Which physical GPUs this process uses, by NVML UUID (NOTES-ray: bind by UUID, never by index).

CUDA numbers devices fastest-first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`; NVML numbers them by PCI
bus. `CUDA_VISIBLE_DEVICES` may hold indices, GPU UUIDs (or unique prefixes of them) or MIG ids. This
module turns whatever the process sees into the UUIDs of the physical GPUs, which is what an energy
counter measures (a MIG instance has no energy counter of its own: its parent GPU's is used).

Nothing here imports torch. Every function degrades to "no GPUs" with a reason when NVML is missing.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from types import ModuleType

from llem_ray.energy.accuracy import DeviceFacts
from llem_ray.energy.protocol import MeterUnavailable

_lock = threading.Lock()
_nvml: ModuleType | None = None
_nvml_error: str | None = None


def nvml() -> ModuleType:
    """The initialised `pynvml` module (initialised once per process).

    Raises MeterUnavailable saying why when nvidia-ml-py is not installed or the NVML library or
    driver is missing (every CPU-only host).
    """
    global _nvml, _nvml_error
    with _lock:
        if _nvml is not None:
            return _nvml
        if _nvml_error is not None:
            raise MeterUnavailable(_nvml_error)
        try:
            import pynvml

            pynvml.nvmlInit()
        except ImportError:
            _nvml_error = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            raise MeterUnavailable(_nvml_error) from None
        except Exception as exc:  # pynvml raises NVMLError subclasses (library not found, no driver)
            _nvml_error = f"NVML is not available on this host: {exc}"
            raise MeterUnavailable(_nvml_error) from None
        _nvml = pynvml
        return pynvml


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def device_facts(lib: ModuleType, handle: object) -> DeviceFacts:
    """Name and compute capability of the GPU `handle` ('unknown GPU' / None where NVML cannot say)."""
    try:
        name = _text(lib.nvmlDeviceGetName(handle))
    except Exception:  # NVMLError: a device that cannot report its name is still metered
        name = "unknown GPU"
    try:
        major, minor = lib.nvmlDeviceGetCudaComputeCapability(handle)
        return DeviceFacts(name, (int(major), int(minor)))
    except Exception:  # NVMLError, or an nvidia-ml-py without the call
        return DeviceFacts(name)


def memory_used_mib(uuids: list[str]) -> float | None:
    """Device memory in use on the GPUs `uuids` now, summed, MiB (NVML `nvmlDeviceGetMemoryInfo().used`).

    All processes' memory counts (CUDA contexts, caching allocators, engine pools). None when `uuids`
    is empty, NVML is missing, or a GPU cannot report memory.
    """
    if not uuids:
        return None
    try:
        lib = nvml()
        used = [lib.nvmlDeviceGetMemoryInfo(lib.nvmlDeviceGetHandleByUUID(u)).used for u in uuids]
    except Exception:  # MeterUnavailable (no NVML) or NVMLError (not supported, device gone)
        return None
    return sum(used) / 2**20


@dataclass(frozen=True)
class VisibleGPUs:
    """The physical GPUs of this process, in CUDA order.

    `uuids` are NVML GPU UUIDs ('GPU-…'), `pci_bus_ids` the matching PCI bus ids, `nvml_indices` NVML's
    (PCI-ordered) indices. Empty with `unavailable_reason` set when NVML cannot be used; `warnings`
    note anything that may bind the wrong device.
    """

    uuids: list[str] = field(default_factory=list)
    pci_bus_ids: list[str] = field(default_factory=list)
    nvml_indices: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unavailable_reason: str | None = None


def _all_devices(lib: ModuleType) -> list[tuple[int, str, str]]:
    """(nvml_index, uuid, pci_bus_id) of every GPU NVML sees."""
    out = []
    for index in range(lib.nvmlDeviceGetCount()):
        handle = lib.nvmlDeviceGetHandleByIndex(index)
        out.append((index, _text(lib.nvmlDeviceGetUUID(handle)), _text(lib.nvmlDeviceGetPciInfo(handle).busId)))
    return out


def _mig_parent_uuid(lib: ModuleType | None, mig_id: str) -> str | None:
    """Parent GPU UUID of a MIG device given as 'MIG-<uuid>' (needs NVML) or legacy 'MIG-GPU-<uuid>/gi/ci'."""
    if mig_id.startswith("MIG-GPU-"):
        return mig_id[len("MIG-") :].split("/", 1)[0]
    if lib is None:
        return None
    try:
        handle = lib.nvmlDeviceGetHandleByUUID(mig_id)
        return _text(lib.nvmlDeviceGetUUID(lib.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)))
    except Exception:
        return None


def parse_visible(entries: str, devices: list[tuple[int, str, str]], lib: ModuleType | None = None) -> VisibleGPUs:
    """Map a `CUDA_VISIBLE_DEVICES` value onto `devices` ((nvml_index, uuid, pci_bus_id), PCI order).

    Follows CUDA's rule: parsing stops at the first entry that names no device. Index entries
    assume `CUDA_DEVICE_ORDER=PCI_BUS_ID` (a warning says so when it is not set and several GPUs
    exist). Duplicates (two MIG slices of one GPU) are listed once.
    """
    by_uuid = {uuid: (idx, uuid, bus) for idx, uuid, bus in devices}
    chosen: list[tuple[int, str, str]] = []
    warnings: list[str] = []
    for raw in entries.split(","):
        entry = raw.strip()
        if not entry:
            break
        match: tuple[int, str, str] | None = None
        if entry.isdigit():
            match = devices[int(entry)] if int(entry) < len(devices) else None
            if match and len(devices) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
                warnings.append(
                    "CUDA_VISIBLE_DEVICES holds indices but CUDA_DEVICE_ORDER is not PCI_BUS_ID: "
                    "the metered GPU may differ from the one CUDA uses"
                )
        elif entry.startswith("MIG-"):
            parent = _mig_parent_uuid(lib, entry)
            match = by_uuid.get(parent) if parent else None
            if match:
                warnings.append(f"{entry} is a MIG slice: energy is that of its whole parent GPU {parent}")
        else:
            prefixed = [d for d in devices if d[1].startswith(entry) or d[1].startswith("GPU-" + entry)]
            match = prefixed[0] if len(prefixed) == 1 else None
        if match is None:
            break
        if match not in chosen:
            chosen.append(match)
    return VisibleGPUs(
        uuids=[c[1] for c in chosen],
        pci_bus_ids=[c[2] for c in chosen],
        nvml_indices=[c[0] for c in chosen],
        warnings=sorted(set(warnings)),
    )


def visible_gpus() -> VisibleGPUs:
    """The physical GPUs this process sees (per `CUDA_VISIBLE_DEVICES`), or none with a reason.

    An unset `CUDA_VISIBLE_DEVICES` means every GPU of the host; an empty one means none.
    """
    try:
        lib = nvml()
        devices = _all_devices(lib)
    except MeterUnavailable as exc:
        return VisibleGPUs(unavailable_reason=str(exc))
    except Exception as exc:  # NVMLError while enumerating
        return VisibleGPUs(unavailable_reason=f"NVML could not list GPUs: {exc}")
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return VisibleGPUs(
            uuids=[d[1] for d in devices], pci_bus_ids=[d[2] for d in devices], nvml_indices=[d[0] for d in devices]
        )
    found = parse_visible(env, devices, lib)
    if not found.uuids:
        reason = "CUDA_VISIBLE_DEVICES is empty" if not env.strip() else f"no GPU matches CUDA_VISIBLE_DEVICES={env!r}"
        return VisibleGPUs(warnings=found.warnings, unavailable_reason=reason)
    return found
