"""Energy layer on a host without NVML (this machine): device parsing, meter choice, baseline cache."""

import pytest

from llem_ray.config.experiment import EnergyConfig
from llem_ray.energy import registry
from llem_ray.energy.accuracy import NO_METER_NOTES, DeviceFacts, generation, gpu_accuracy, gpu_notes
from llem_ray.energy.baseline import BaselineCache
from llem_ray.energy.devices import parse_visible, visible_gpus
from llem_ray.energy.nvml import NVMLMeter, decode_clock_event_reasons
from llem_ray.energy.protocol import MeterUnavailable
from llem_ray.energy.select import ExplicitMeterUnavailable, select_meter
from tests.fakes import FAKE_POWER_W, FakeMeter

DEVICES = [
    (0, "GPU-aaaa1111-0000", "00000000:18:00.0"),
    (1, "GPU-bbbb2222-0000", "00000000:3B:00.0"),
    (2, "GPU-cccc3333-0000", "00000000:86:00.0"),
]


def test_indices_map_to_pci_ordered_uuids(monkeypatch):
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    found = parse_visible("2,0", DEVICES)
    assert found.uuids == ["GPU-cccc3333-0000", "GPU-aaaa1111-0000"]
    assert found.pci_bus_ids == ["00000000:86:00.0", "00000000:18:00.0"] and found.nvml_indices == [2, 0]
    assert found.warnings == []


def test_indices_without_pci_order_warn(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    assert "PCI_BUS_ID" in parse_visible("1", DEVICES).warnings[0]


def test_uuids_prefixes_and_legacy_mig_ids():
    found = parse_visible("GPU-bbbb2222-0000, cccc3333,MIG-GPU-aaaa1111-0000/1/0", DEVICES)
    assert found.uuids == ["GPU-bbbb2222-0000", "GPU-cccc3333-0000", "GPU-aaaa1111-0000"]
    assert any("MIG" in w for w in found.warnings)


def test_parsing_stops_at_the_first_unknown_entry_like_cuda():
    assert parse_visible("0,7,1", DEVICES).uuids == ["GPU-aaaa1111-0000"]
    assert parse_visible("GPU-", DEVICES).uuids == []  # ambiguous prefix names nothing
    assert parse_visible("", DEVICES).uuids == []


def test_clock_event_reasons_decode_by_bit():
    assert decode_clock_event_reasons(0x4 | 0x40 | 0x1) == ("sw_power_cap", "hw_thermal_slowdown")
    assert decode_clock_event_reasons(0) == ()


def test_this_host_has_no_nvml_and_says_why():
    gpus = visible_gpus()
    assert gpus.uuids == [] and gpus.unavailable_reason
    with pytest.raises(MeterUnavailable):
        NVMLMeter(["GPU-aaaa1111-0000"], EnergyConfig())
    with pytest.raises(MeterUnavailable, match="no GPU"):
        NVMLMeter([], EnergyConfig())


def test_auto_without_any_meter_runs_without_energy_and_explains():
    meter, warnings = select_meter(EnergyConfig(), [])
    assert meter is None
    assert "nvml" in warnings[0] and "energy not measured" in warnings[0]


def test_explicit_meter_that_cannot_run_is_an_error():
    with pytest.raises(ExplicitMeterUnavailable, match="nvml"):
        select_meter(EnergyConfig(backend="nvml"), ["GPU-x"])


def test_none_disables_energy():
    assert select_meter(EnergyConfig(backend="none"), ["GPU-x"]) == (
        None,
        ["energy not measured: energy.backend is 'none'"],
    )


def test_auto_prefers_an_injected_meter(fakes):
    meter, warnings = select_meter(EnergyConfig(), ["GPU-1"])
    assert isinstance(meter, FakeMeter) and meter.device_uuids == ["GPU-1"] and warnings == []


def test_auto_skips_unavailable_meters_in_priority_order():
    calls = []

    def unavailable(uuids, config):
        calls.append("zeus")
        raise MeterUnavailable("not here")

    registry.register("zeus", unavailable)
    try:
        meter, warnings = select_meter(EnergyConfig(), [])
    finally:
        registry.unregister("zeus")
    assert meter is None and calls == ["zeus"] and "zeus: not here" in warnings[0]


class _Clock:
    def __init__(self):
        self.now_s = 1000.0
        self.slept_s = []

    def __call__(self):
        return self.now_s

    def sleep(self, seconds):
        self.slept_s.append(seconds)


def test_baseline_is_measured_then_cached_per_uuid_until_ttl():
    clock = _Clock()
    cache = BaselineCache(clock=clock, sleep=clock.sleep)
    meter = FakeMeter(["GPU-1", "GPU-2"])
    first = cache.get(meter, duration_s=30.0, ttl_s=60.0)
    assert first.source == "measured" and clock.slept_s == [30.0]
    assert set(first.power_w) == {"GPU-1", "GPU-2"}
    clock.now_s += 59
    again = cache.get(meter, 30.0, 60.0)
    assert again.source == "cached" and again.power_w == first.power_w and clock.slept_s == [30.0]
    clock.now_s += 2
    assert cache.get(meter, 30.0, 60.0).source == "measured"
    assert cache.get(FakeMeter(["GPU-1", "GPU-3"]), 30.0, 60.0).source == "measured"  # GPU-3 unknown


def test_baseline_power_is_energy_over_time():
    reading = BaselineCache().get(FakeMeter(["GPU-1"]), duration_s=0.05, ttl_s=0)
    assert reading.power_w["GPU-1"] == pytest.approx(FAKE_POWER_W)
    assert reading.total_power_w == pytest.approx(FAKE_POWER_W) and reading.duration_s >= 0.05


H100 = DeviceFacts("NVIDIA H100 80GB HBM3", (9, 0))
A100 = DeviceFacts("NVIDIA A100-SXM4-40GB", (8, 0))
RTX4090 = DeviceFacts("NVIDIA GeForce RTX 4090", (8, 9))
V100 = DeviceFacts("Tesla V100-SXM2-16GB", (7, 0))


def test_accuracy_is_written_for_the_gpu_that_was_measured():
    hopper = gpu_accuracy([H100], "counter")
    assert "H100" in hopper and "Hopper" in hopper and "+/-5 %" in hopper and "energy counter" in hopper
    assert "+/-5 %" in gpu_accuracy([A100], "polled power")
    ada_polled = gpu_accuracy([RTX4090], "polled power")
    assert "1 s moving average" in ada_polled and "+/-5" not in ada_polled and "power readings x time" in ada_polled
    for other in (RTX4090, V100, DeviceFacts("unknown GPU")):
        text = gpu_accuracy([other], "counter")
        assert "+/-5" not in text and "no accuracy figure" in text
    assert "unknown generation" in gpu_accuracy([DeviceFacts("unknown GPU")], "counter")
    assert gpu_accuracy([H100, H100], "counter").count("H100") == 1  # two alike GPUs are named once


def test_notes_say_how_the_joules_were_got_and_how_to_compare():
    notes = gpu_notes("Energy is the counter difference.", [RTX4090], "counter")
    assert notes.startswith("Energy is the counter difference. Accuracy: NVML energy counter")
    assert "RTX 4090" in notes and "CPU and DRAM are not included" in notes and "same GPU model" in notes
    assert "NVML" not in NO_METER_NOTES and "not measured" in NO_METER_NOTES


def test_generations_from_compute_capability():
    assert [generation(cc) for cc in ((7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0))] == [
        "Volta",
        "Turing",
        "Ampere",
        "Ampere",
        "Ada Lovelace",
        "Hopper",
        "Blackwell",
        "Blackwell",
    ]
    assert generation(None) == generation((5, 2)) == "unknown generation"
