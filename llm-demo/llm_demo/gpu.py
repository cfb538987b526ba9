"""GPU snapshots through NVML (the `nvidia-ml-py` package, module `pynvml`).

A snapshot is a plain dict, safe to write as JSON:

    {"label": "before-warmup", "taken_at": "<ISO-8601 UTC>", "nvml": true,
     "driver_version": "580.95", "devices": [{"index": 0, "name": "...",
       "utilization_gpu_pct": 3, "utilization_memory_pct": 1,
       "memory_used_bytes": ..., "memory_total_bytes": ...,
       "power_w": 71.2, "temperature_c": 34,
       "processes": [{"pid": 123, "used_memory_bytes": ...}]}]}

Units are in the key names. On a host without NVML (no driver, no GPU, no
`pynvml` module) the snapshot is `{"nvml": false, "reason": "..."}` with the
same label and timestamp: taking a snapshot never raises. A metric a device does
not support (power on some boards, for instance) is `null`.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _optional(call, *args) -> Any:
    """Return `call(*args)`, or None when NVML says the metric is unsupported."""
    import pynvml

    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def _device(pynvml, index: int) -> dict:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    util = _optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    power_mw = _optional(pynvml.nvmlDeviceGetPowerUsage, handle)
    temp_c = _optional(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
    procs = _optional(pynvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
    name = pynvml.nvmlDeviceGetName(handle)
    return {
        "index": index,
        "name": name.decode() if isinstance(name, bytes) else name,
        "utilization_gpu_pct": util.gpu if util is not None else None,
        "utilization_memory_pct": util.memory if util is not None else None,
        "memory_used_bytes": int(mem.used),
        "memory_total_bytes": int(mem.total),
        "power_w": round(power_mw / 1000.0, 3) if power_mw is not None else None,
        "temperature_c": temp_c,
        "processes": [{"pid": int(p.pid), "used_memory_bytes": int(p.usedGpuMemory or 0)} for p in procs],
    }


def snapshot(label: str) -> dict:
    """Take one snapshot of every GPU; see the module docstring for the shape."""
    base: dict[str, Any] = {"label": label, "taken_at": _now()}
    try:
        import pynvml
    except ImportError as exc:
        return {**base, "nvml": False, "reason": f"pynvml not importable: {exc}"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return {**base, "nvml": False, "reason": f"NVML unavailable on this host: {exc}"}
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        count = pynvml.nvmlDeviceGetCount()
        devices = [_device(pynvml, i) for i in range(count)]
    except Exception as exc:
        return {**base, "nvml": False, "reason": f"NVML query failed: {exc}"}
    finally:
        pynvml.nvmlShutdown()
    return {
        **base,
        "nvml": True,
        "driver_version": driver.decode() if isinstance(driver, bytes) else driver,
        "devices": devices,
    }


def memory_held_by(snap: dict, pids: set[int]) -> int:
    """GPU memory in bytes that processes `pids` hold in `snap` (0 without NVML)."""
    if not snap.get("nvml"):
        return 0
    return sum(p["used_memory_bytes"] for dev in snap["devices"] for p in dev["processes"] if p["pid"] in pids)


def wait_memory_released(label: str, pids: set[int], wait_s: float, interval_s: float = 0.25) -> tuple[dict, int]:
    """Snapshot until processes `pids` hold no GPU memory or `wait_s` seconds have passed; return the
    last snapshot and the bytes they still hold in it. The driver frees a CUDA context shortly after
    its process exits, not at the exit itself: seen on an H100, a Python backend stub killed with its
    server group still listed with 518 MiB in the first snapshot after. Never raises."""
    deadline = time.monotonic() + wait_s
    while True:
        snap = snapshot(label)
        held = memory_held_by(snap, pids)
        if not held or time.monotonic() >= deadline:
            return snap, held
        time.sleep(interval_s)


def summary_line(snap: dict) -> str:
    """One human-readable line per snapshot, for console output."""
    if not snap.get("nvml"):
        return f"[{snap['label']}] no NVML: {snap['reason']}"
    parts = []
    for dev in snap["devices"]:
        parts.append(
            f"gpu{dev['index']} {dev['name']}: util {dev['utilization_gpu_pct']}% "
            f"mem {dev['memory_used_bytes'] / 2**20:.0f}/{dev['memory_total_bytes'] / 2**20:.0f} MiB "
            f"power {dev['power_w']} W temp {dev['temperature_c']} C"
        )
    return f"[{snap['label']}] " + "; ".join(parts)
