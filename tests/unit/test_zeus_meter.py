"""ZeusMeter on a CPU host: it must refuse with a clear reason (the real measurement is tests/gpu)."""

from __future__ import annotations

import importlib.util

import pytest

from llem_ray.config.experiment import EnergyConfig
from llem_ray.energy import registry
from llem_ray.energy.protocol import MeterUnavailable
from llem_ray.energy.select import ExplicitMeterUnavailable, select_meter
from llem_ray.energy.zeus import ZeusMeter, zeus_indices
from tests.fake_gpus import FakeGPU, FakeGPUs


def test_cpu_run_has_no_gpu_to_bind():
    with pytest.raises(MeterUnavailable, match="no GPU is bound to this experiment .*Zeus measures GPUs only"):
        ZeusMeter([], EnergyConfig())


def test_gpu_uuid_on_this_host_says_what_is_missing():
    reason = "NVML" if importlib.util.find_spec("zeus") else "zeus is not installed .*llem-ray\\[zeus\\]"
    with pytest.raises(MeterUnavailable, match=reason):
        registry.create("zeus", ["GPU-00000000-0000-0000-0000-000000000000"], EnergyConfig(backend="zeus"))


def test_explicit_zeus_on_cpu_is_a_preflight_failure_naming_the_reason():
    with pytest.raises(ExplicitMeterUnavailable, match="energy meter 'zeus' cannot run here: no GPU is bound"):
        select_meter(EnergyConfig(backend="zeus"), [])


def test_zeus_indices_follow_cuda_visible_devices():
    gpus = FakeGPUs([FakeGPU(uuid, f"0000000{i}:00.0") for i, uuid in enumerate(["GPU-a", "GPU-b", "GPU-c", "GPU-d"])])
    assert zeus_indices(["GPU-c", "GPU-a"], gpus, None) == [2, 0]  # unset: Zeus lists every GPU in NVML order
    assert zeus_indices(["GPU-a", "GPU-c"], gpus, "2,0") == [1, 0]  # Ray's actor: positions in the list
    with pytest.raises(MeterUnavailable, match="not in CUDA_VISIBLE_DEVICES"):
        zeus_indices(["GPU-b"], gpus, "2,0")
    with pytest.raises(MeterUnavailable, match="integer CUDA_VISIBLE_DEVICES.*nvml meter"):
        zeus_indices(["GPU-a"], gpus, "GPU-a,GPU-c")
    with pytest.raises(MeterUnavailable, match="GPU-zzz is unknown to NVML"):
        zeus_indices(["GPU-zzz"], gpus, None)
