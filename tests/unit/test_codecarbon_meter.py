"""CodeCarbonMeter for real on this CPU machine: offline, no network, no files, windows that nest."""

from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("codecarbon", reason="the codecarbon extra is not installed")

from llem_ray.config.experiment import EnergyConfig  # noqa: E402
from llem_ray.energy import registry  # noqa: E402
from llem_ray.energy.codecarbon import CPU_DEVICE, CodeCarbonMeter  # noqa: E402
from llem_ray.energy.protocol import MeterUnavailable, WindowAlreadyOpen  # noqa: E402
from llem_ray.energy.select import select_meter  # noqa: E402


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Refuse every outbound connection (and record attempts); run in an empty working directory."""
    attempts: list[object] = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.chdir(tmp_path)
    yield attempts
    assert attempts == [], f"CodeCarbon tried the network: {attempts}"
    assert list(tmp_path.iterdir()) == [], "CodeCarbon wrote files"


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(10_000))


def test_cpu_mode_windows_nest_and_overlap(offline):
    meter = registry.create("codecarbon", [], EnergyConfig(backend="codecarbon"))
    assert isinstance(meter, CodeCarbonMeter) and meter.device_uuids == [CPU_DEVICE]
    assert meter.accuracy.startswith("CodeCarbon ") and "estimate of CPU + RAM" in meter.accuracy
    meter.start_sampling(20.0)
    meter.begin_window("outer")
    _busy(0.3)
    meter.begin_window("inner")
    _busy(0.3)
    inner = meter.end_window("inner")
    _busy(0.2)
    outer = meter.end_window("outer")
    samples = meter.stop_sampling()
    meter.close()
    meter.close()
    assert set(inner.energy_j) == {CPU_DEVICE} and inner.total_j > 0
    assert outer.total_j > inner.total_j and outer.duration_s > inner.duration_s >= 0.3
    assert 1.0 < outer.total_j / outer.duration_s < 2000.0  # a plausible host power, W
    assert len(samples) >= 5 and all(s.device_uuid == CPU_DEVICE and s.utilization_pct is not None for s in samples)
    with pytest.raises(KeyError):
        meter.end_window("never-begun")


def test_an_open_window_key_is_refused_not_replaced(offline):
    meter = registry.create("codecarbon", [], EnergyConfig(backend="codecarbon"))
    try:
        meter.begin_window("w")
        _busy(0.2)
        with pytest.raises(WindowAlreadyOpen, match="'w' is already open"):
            meter.begin_window("w")
        window = meter.end_window("w")
        assert window.duration_s >= 0.2, "the second begin_window restarted the open window"
        meter.begin_window("w")  # once ended, the key may be used again
        meter.end_window("w")
    finally:
        meter.close()


def test_auto_on_cpu_keeps_energy_null_and_says_why():
    meter, warnings = select_meter(EnergyConfig(backend="auto"), [])
    assert meter is None
    assert "zeus: no GPU is bound" in warnings[0] and "codecarbon: no GPU is bound" in warnings[0]


def test_gpu_uuid_without_nvml_is_unavailable():
    with pytest.raises(MeterUnavailable, match="NVML"):
        CodeCarbonMeter(["GPU-00000000-0000-0000-0000-000000000000"], EnergyConfig(backend="codecarbon"))


def test_experiment_records_codecarbon_and_its_accuracy(offline, fakes):
    from llem_ray.config.experiment import ExperimentConfig
    from llem_ray.measure.experiment import run

    config = ExperimentConfig(
        backend="fake",
        n=4,
        dataset="synthetic",
        device="cpu",
        energy={"backend": "codecarbon"},
        warmup={"n_warmup": 1, "thermal_floor_s": 0},
        baseline={"enabled": False},
        passthrough_kwargs={"fake_duration_s": 0.3},
    )
    result = run(config).result
    assert result.energy_meter == "codecarbon"
    assert result.energy_meter_accuracy is not None and "CodeCarbon" in result.energy_meter_accuracy
    assert result.energy_per_device_j is not None and result.energy_per_device_j[CPU_DEVICE] > 0
    notes = result.reproducibility_notes
    assert "NVML" not in notes and "GPU energy only" not in notes, "a CPU estimate claimed to be GPU metering"
    assert "CodeCarbon" in notes and "estimate of the host's CPU and RAM energy" in notes
