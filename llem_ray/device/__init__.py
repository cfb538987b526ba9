"""The GPU device layer (one place that talks to the GPU driver), and which one this process uses.

`current()` is the layer every caller uses: the one injected with `use` (a test double, a plugin
for another vendor), else NVML (`llem_ray.device.nvidia`). The interface and its units are in
`llem_ray.device.common`.
"""

from __future__ import annotations

from llem_ray.device.common import DeviceError, DeviceUnavailable, GPUDevices, GPUId, MemoryMiB

__all__ = ["DeviceError", "DeviceUnavailable", "GPUDevices", "GPUId", "MemoryMiB", "current", "use"]

_injected: GPUDevices | None = None


def use(layer: GPUDevices | None) -> None:
    """Make `layer` the device layer of this process; None brings NVML back."""
    global _injected
    _injected = layer


def current() -> GPUDevices:
    """The device layer of this process (see module docstring).

    Raises DeviceUnavailable saying why when none is injected and NVML cannot be used.
    """
    if _injected is not None:
        return _injected
    from llem_ray.device.nvidia import open_nvml

    return open_nvml()
