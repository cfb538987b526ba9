"""The GPU device layer: NVML behind `NVMLDevices`, and every user of it driven by `FakeGPUs`.

Meters, pre-flight, the environment snapshot, the worker's process check, `llem config` and the
TensorRT backend read GPUs only through `llem_ray.device`; the `fake_gpus` fixture injects a fake
host with `device.use`, so these tests run on a CPU host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from llem_ray import device
from llem_ray.backends.tensorrt.backend import compute_capability
from llem_ray.cluster.worker import GPUProcessWatcher, foreign_process_warning
from llem_ray.config.experiment import EnergyConfig, ExperimentConfig
from llem_ray.device.nvidia import NVMLDevices
from llem_ray.energy.devices import VisibleGPUs, memory_used_mib, visible_gpus
from llem_ray.energy.nvml import NVMLMeter
from llem_ray.energy.protocol import MeterUnavailable
from llem_ray.environment_report import gpu_rows
from llem_ray.errors import PreFlightError
from llem_ray.measure.environment import gpu_infos, snapshot
from llem_ray.measure.preflight import preflight

A, B = "GPU-aaaa1111-0000", "GPU-bbbb2222-0000"


def test_without_nvml_the_layer_says_why():
    with pytest.raises(device.DeviceUnavailable, match="nvidia-ml-py|NVML is not available"):
        device.current()
    assert gpu_infos([A]) == [] and memory_used_mib([A]) is None
    rows, why = gpu_rows()
    assert rows == [] and ("NVML" in why or "nvidia-ml-py" in why)


def test_nvml_meter_reads_the_counter_and_samples_through_the_layer(fake_gpus):
    meter = NVMLMeter([A, B], EnergyConfig())
    meter.begin_window("w")
    fake_gpus.gpus[0].energy_mj += 12_500
    fake_gpus.gpus[1].energy_mj += 2_000
    window = meter.end_window("w")
    assert window.energy_j == {A: 12.5, B: 2.0}
    assert "H100" in meter.accuracy
    fake_gpus.gpus[1].unsupported = {"power_w", "sm_clock_mhz"}
    fake_gpus.gpus[1].clock_event_reasons = 0x4 | 0x40
    first, second = meter.sample_once()
    assert (first.device_uuid, first.power_w, first.memory_used_mib, first.sm_clock_mhz) == (A, 300.0, 1024.0, 1980.0)
    assert first.throttle_reasons == () and first.energy_counter_j == pytest.approx(1_012.5)  # mJ -> J
    assert second.power_w is None and second.sm_clock_mhz is None
    assert second.throttle_reasons == ("sw_power_cap", "hw_thermal_slowdown")
    meter.close()


def test_nvml_meter_refuses_unknown_gpus_and_gpus_without_a_counter(fake_gpus):
    with pytest.raises(MeterUnavailable, match=r"GPU GPU-zzz: no NVML energy counter \(Not Found\)"):
        NVMLMeter(["GPU-zzz"], EnergyConfig())
    fake_gpus.gpus[0].unsupported = {"energy_mj"}
    with pytest.raises(MeterUnavailable, match=rf"GPU {A}: no NVML energy counter \(Not Supported\)"):
        NVMLMeter([A], EnergyConfig())


def test_visible_gpus_follow_cuda_visible_devices(fake_gpus, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus().uuids == [A, B]
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert visible_gpus().uuids == [B] and visible_gpus().pci_bus_ids == ["00000000:3B:00.0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-bbbb-slice-1")
    found = visible_gpus()
    assert found.uuids == [B] and "MIG slice" in found.warnings[0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus().unavailable_reason == "CUDA_VISIBLE_DEVICES is empty"


def test_memory_in_use_is_summed_over_the_gpus(fake_gpus):
    assert memory_used_mib([A, B]) == 2048.0
    assert memory_used_mib([A, "GPU-zzz"]) is None


def test_snapshot_reads_driver_limits_and_memory(fake_gpus):
    fake_gpus.gpus[1].unsupported = {"enforced_power_limit_w"}
    fake_gpus.gpus[1].persistence_mode = False
    env = snapshot([A, B, "GPU-zzz"])
    assert env.driver_version == "550.54.15"
    first, second = env.gpus  # the unknown GPU is left out
    assert (first.index, first.uuid, first.vram_total_mib, first.power_limit_w) == (0, A, 81_559.0, 650.0)
    assert first.persistence_mode is True and first.name == "NVIDIA H100 80GB HBM3"
    assert second.power_limit_w is None and second.persistence_mode is False


def _preflight(config: ExperimentConfig, uuids: list[str]):
    return preflight(config, "cuda", VisibleGPUs(uuids=uuids))


def test_preflight_warns_of_persistence_and_other_processes(fakes, fake_gpus):
    fake_gpus.gpus[0].persistence_mode = False
    fake_gpus.gpus[1].compute_pids = [os.getpid(), 4242, 4343]
    cleared = _preflight(ExperimentConfig(dataset="synthetic", n=2), [A, B])
    assert any(w.startswith(f"persistence mode is off on {A}") for w in cleared.warnings)
    assert f"2 other process(es) compute on {B} (pids 4242, 4343)" in "\n".join(cleared.warnings)
    assert not any("persistence" in w and B in w for w in cleared.warnings)
    cleared.meter.close()


def test_preflight_fails_when_the_model_needs_more_than_the_free_memory(fakes, fake_gpus):
    tiny = device.MemoryMiB(total_mib=81_559.0, used_mib=81_550.0, free_mib=9.0)
    fake_gpus.gpus[0].memory_mib = tiny
    with pytest.raises(PreFlightError) as info:
        _preflight(ExperimentConfig(dataset="synthetic", n=2, model="llem/llama-3.1-8b"), [A])
    assert any("exceeds the free 9 MiB" in f for f in info.value.failures)


def test_process_watcher_collects_pids_and_ignores_unknown_gpus(fake_gpus):
    fake_gpus.gpus[0].compute_pids = [11, 12]
    fake_gpus.gpus[1].compute_pids = [12, 13]
    watcher = GPUProcessWatcher([A, B])
    watcher.poll()
    assert watcher.pids == {11, 12, 13}
    fake_gpus.gpus[1].unsupported = {"compute_pids"}
    fake_gpus.gpus[0].compute_pids = [14]
    watcher.poll()
    assert watcher.pids == {11, 12, 13, 14}
    assert os.getpid() in watcher.own_pids
    logical = GPUProcessWatcher(["GPU-logical-0"])  # a Ray test cluster's logical GPU: nothing to watch
    logical.poll()
    assert logical.pids == set()


def test_llem_config_rows_and_tensorrt_capability(fake_gpus, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    rows, why = gpu_rows()
    assert why is None
    assert rows[0] == ["0", "NVIDIA H100 80GB HBM3", A, "85.5", "700"]
    assert compute_capability() == "sm90"
    fake_gpus.gpus[1].compute_capability = (8, 0)
    assert compute_capability() == "sm80+sm90"


class _NVMLError(Exception):
    pass


def _fake_pynvml(calls: list[str]) -> SimpleNamespace:
    def by_uuid(uuid):
        calls.append(uuid)
        if uuid != "GPU-x":
            raise _NVMLError("Not Found")
        return "handle-x"

    return SimpleNamespace(
        NVMLError=_NVMLError,
        NVML_TEMPERATURE_GPU=0,
        NVML_CLOCK_SM=1,
        nvmlDeviceGetHandleByUUID=by_uuid,
        nvmlDeviceGetPowerUsage=lambda h: 312_345,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 650_000,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=2**30, used=2**29, free=2**29),
        nvmlDeviceGetName=lambda h: b"NVIDIA A100-SXM4-40GB",
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: 0x4,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [SimpleNamespace(pid=7)],
    )


def test_nvml_devices_convert_units_and_errors():
    calls: list[str] = []
    gpus = NVMLDevices(_fake_pynvml(calls))
    assert gpus.power_w("GPU-x") == 312.345 and gpus.enforced_power_limit_w("GPU-x") == 650.0
    assert gpus.memory_mib("GPU-x") == device.MemoryMiB(1024.0, 512.0, 512.0)
    assert gpus.gpu_name("GPU-x") == "NVIDIA A100-SXM4-40GB"  # bytes from old nvidia-ml-py decoded
    assert gpus.clock_event_reasons("GPU-x") == 0x4  # older nvidia-ml-py: the throttle-reasons call
    assert gpus.compute_pids("GPU-x") == [7]
    assert calls == ["GPU-x"]  # the handle is looked up once, by UUID
    with pytest.raises(device.DeviceError, match="^Not Found$"):
        gpus.power_w("GPU-y")


def test_an_engine_child_seen_on_the_gpu_stays_the_actors_after_it_exits(fake_gpus):
    """vLLM's EngineCore computes on the GPU in a child process that has exited when the experiment
    returns: the watcher must have counted it as the actor's own while it ran (no foreign-process warning)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fake_gpus.gpus[0].compute_pids = [child.pid]
        watcher = GPUProcessWatcher([A])
        watcher.poll()
    finally:
        child.kill()
        child.wait()
    assert watcher.pids == {child.pid}
    assert child.pid in watcher.own_pids
    assert foreign_process_warning(watcher.pids, watcher.own_pids | {os.getpid()}) is None
    assert "PID namespace" in foreign_process_warning(watcher.pids, {os.getpid()})
