"""Which physical GPUs this process uses, by NVML UUID (bound by UUID, never by index).

CUDA numbers devices fastest-first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`; NVML numbers them by PCI
bus. `CUDA_VISIBLE_DEVICES` may hold indices, GPU UUIDs (or unique prefixes of them) or MIG ids. This
module turns whatever the process sees into the UUIDs of the physical GPUs, which is what an energy
counter measures (a MIG instance has no energy counter of its own: its parent GPU's is used).

GPUs are read through the device layer (`llem_ray.device`). Nothing here imports torch. Every
function degrades to "no GPUs" with a reason when there is no device layer (NVML missing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from llem_ray import device
from llem_ray.device import DeviceError, DeviceUnavailable, GPUDevices
from llem_ray.energy.accuracy import DeviceFacts
from llem_ray.energy.protocol import MeterUnavailable


def gpu_layer() -> GPUDevices:
    """The process's GPU device layer (`llem_ray.device.current`), for a meter.

    Raises MeterUnavailable saying why when there is none (nvidia-ml-py not installed, no NVML
    library or driver: every CPU-only host).
    """
    try:
        return device.current()
    except DeviceUnavailable as exc:
        raise MeterUnavailable(str(exc)) from None


def device_facts(gpus: GPUDevices, uuid: str) -> DeviceFacts:
    """Name and compute capability of GPU `uuid` ('unknown GPU' / None where the driver cannot say)."""
    try:
        name = gpus.gpu_name(uuid)
    except Exception:  # DeviceError: a device that cannot report its name is still metered
        name = "unknown GPU"
    try:
        return DeviceFacts(name, gpus.compute_capability(uuid))
    except Exception:  # DeviceError, or an nvidia-ml-py without the call
        return DeviceFacts(name)


def memory_used_mib(uuids: list[str]) -> float | None:
    """Device memory in use on the GPUs `uuids` now, summed, MiB (`GPUDevices.memory_mib().used_mib`).

    All processes' memory counts (CUDA contexts, caching allocators, engine pools). None when `uuids`
    is empty, there is no device layer, or a GPU cannot report memory.
    """
    if not uuids:
        return None
    try:
        gpus = device.current()
        return sum(gpus.memory_mib(u).used_mib for u in uuids)
    except (DeviceUnavailable, DeviceError):
        return None


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


def _all_devices(gpus: GPUDevices) -> list[tuple[int, str, str]]:
    """(nvml_index, uuid, pci_bus_id) of every GPU the device layer sees."""
    return [(g.index, g.uuid, g.pci_bus_id) for g in gpus.list_gpus()]


def _mig_parent_uuid(gpus: GPUDevices | None, mig_id: str) -> str | None:
    """Parent GPU UUID of a MIG device given as 'MIG-<uuid>' (needs NVML) or legacy 'MIG-GPU-<uuid>/gi/ci'."""
    if mig_id.startswith("MIG-GPU-"):
        return mig_id[len("MIG-") :].split("/", 1)[0]
    if gpus is None:
        return None
    try:
        return gpus.mig_parent_uuid(mig_id)
    except Exception:  # DeviceError (not a MIG device, unknown), or a layer without MIG support
        return None


def parse_visible(entries: str, devices: list[tuple[int, str, str]], gpus: GPUDevices | None = None) -> VisibleGPUs:
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
            parent = _mig_parent_uuid(gpus, entry)
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
        gpus = device.current()
        devices = _all_devices(gpus)
    except DeviceUnavailable as exc:
        return VisibleGPUs(unavailable_reason=str(exc))
    except Exception as exc:  # DeviceError while enumerating
        return VisibleGPUs(unavailable_reason=f"NVML could not list GPUs: {exc}")
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return VisibleGPUs(
            uuids=[d[1] for d in devices], pci_bus_ids=[d[2] for d in devices], nvml_indices=[d[0] for d in devices]
        )
    found = parse_visible(env, devices, gpus)
    if not found.uuids:
        reason = "CUDA_VISIBLE_DEVICES is empty" if not env.strip() else f"no GPU matches CUDA_VISIBLE_DEVICES={env!r}"
        return VisibleGPUs(warnings=found.warnings, unavailable_reason=reason)
    return found
