"""NVML snapshots: field units from a stand-in NVML, and the honest answer on a host without NVML."""

from __future__ import annotations

import sys
import types

from llm_demo import gpu


def fake_pynvml(power_supported: bool = True) -> types.ModuleType:
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def power(_handle):
        if not power_supported:
            raise NVMLError("Not Supported")
        return 71_250  # milliwatts

    nv.NVMLError = NVMLError
    nv.NVML_TEMPERATURE_GPU = 0
    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlSystemGetDriverVersion = lambda: "580.95.05"
    nv.nvmlDeviceGetCount = lambda: 1
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=37, memory=12)
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=2 * 2**30, total=80 * 2**30)
    nv.nvmlDeviceGetPowerUsage = power
    nv.nvmlDeviceGetTemperature = lambda h, sensor: 41
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=4242, usedGpuMemory=512 * 2**20)]
    return nv


def test_snapshot_fields_and_units(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    snap = gpu.snapshot("before")
    dev = snap["devices"][0]
    assert snap["nvml"] is True and snap["driver_version"] == "580.95.05"
    assert dev["name"] == "NVIDIA H100 80GB HBM3"
    assert (dev["utilization_gpu_pct"], dev["memory_used_bytes"], dev["power_w"], dev["temperature_c"]) == (
        37,
        2 * 2**30,
        71.25,
        41,
    )
    assert gpu.memory_held_by(snap, {4242}) == 512 * 2**20 and gpu.memory_held_by(snap, {1}) == 0
    assert "util 37%" in gpu.summary_line(snap) and "2048/81920 MiB" in gpu.summary_line(snap)


def test_memory_held_after_exit_is_waited_for_then_reported(monkeypatch):
    """The driver lists an exited process for a moment: the wait returns once its memory is gone,
    and reports what is still held when the deadline passes first."""
    nv = fake_pynvml()
    listed = iter([[types.SimpleNamespace(pid=4242, usedGpuMemory=518 * 2**20)]] * 2 + [[]] * 10)
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: next(listed)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    snap, held = gpu.wait_memory_released("after", {4242}, wait_s=10, interval_s=0.01)
    assert held == 0 and snap["devices"][0]["processes"] == []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    snap, held = gpu.wait_memory_released("after", {4242}, wait_s=0.05, interval_s=0.01)
    assert held == 512 * 2**20 and snap["label"] == "after"


def test_unsupported_metric_is_null(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(power_supported=False))
    assert gpu.snapshot("x")["devices"][0]["power_w"] is None


def test_host_without_nvml_says_so(monkeypatch):
    nv = fake_pynvml()

    def no_library():
        raise nv.NVMLError("NVML Shared Library Not Found")

    nv.nvmlInit = no_library
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    snap = gpu.snapshot("after")
    assert snap == {
        "label": "after",
        "taken_at": snap["taken_at"],
        "nvml": False,
        "reason": "NVML unavailable on this host: NVML Shared Library Not Found",
    }
    assert gpu.memory_held_by(snap, {1}) == 0 and "no NVML" in gpu.summary_line(snap)


def test_real_snapshot_never_raises():
    snap = gpu.snapshot("real")
    assert snap["label"] == "real" and isinstance(snap["nvml"], bool)
