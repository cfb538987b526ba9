"""NVML on a real GPU: UUID binding, counter vs sampled power, and whole experiments."""

import os
import statistics
import subprocess
import sys
import time

import pytest
import torch

from llem_ray.config.experiment import ExperimentConfig
from llem_ray.energy.baseline import BaselineCache
from llem_ray.energy.devices import visible_gpus
from llem_ray.energy.nvml import NVMLMeter
from llem_ray.measure.experiment import run
from tests.gpu.load import matmul_load


def _cuda_uuid(index: int = 0) -> str:
    return "GPU-" + str(torch.cuda.get_device_properties(index).uuid)


def test_uuid_binding_matches_torch_device():
    assert visible_gpus().uuids == [_cuda_uuid(i) for i in range(torch.cuda.device_count())]


def test_uuid_in_cuda_visible_devices_binds_that_gpu(record):
    target = visible_gpus().uuids[-1]
    code = "from llem_ray.energy.devices import visible_gpus; print(visible_gpus().uuids)"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": target}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([target])
    env["CUDA_VISIBLE_DEVICES"] = str(visible_gpus().nvml_indices[-1])
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([target])
    record("uuid_binding", uuid=target, n_gpus=torch.cuda.device_count())


def test_meter_window_and_sampler_on_real_load(record):
    meter = NVMLMeter([_cuda_uuid(0)])
    meter.start_sampling(20.0)
    meter.begin_window("w")
    matmul_load(2.0)
    window = meter.end_window("w")
    samples = meter.stop_sampling()
    meter.close()
    watts = window.total_j / window.duration_s
    assert 30 < watts < 2000
    assert len(samples) >= 30 and all(s.power_w and s.temperature_c for s in samples)
    assert max(s.utilization_pct for s in samples) > 50 and all(s.sm_clock_mhz for s in samples)
    record(
        "meter_window",
        energy_j=window.total_j,
        duration_s=window.duration_s,
        mean_power_w=watts,
        samples=len(samples),
        reasons=sorted({r for s in samples for r in s.throttle_reasons}),
    )


def test_counter_matches_integrated_sampled_power_within_2_percent(record):
    meter = NVMLMeter([_cuda_uuid(0)])
    matmul_load(2.0)  # reach a steady power draw before the window
    meter.start_sampling(20.0)
    time.sleep(0.3)
    start_wall = time.time()
    meter.begin_window("w")
    matmul_load(12.0)
    window = meter.end_window("w")
    end_wall = time.time()
    time.sleep(0.3)
    samples = sorted(meter.stop_sampling(), key=lambda s: s.t_s)
    meter.close()
    inside = [s for s in samples if start_wall <= s.t_s <= end_wall]
    integral_j = sum((b.t_s - a.t_s) * (a.power_w + b.power_w) / 2 for a, b in zip(inside, inside[1:]))
    integral_j *= (end_wall - start_wall) / (inside[-1].t_s - inside[0].t_s)  # scale to the full window
    ratio = integral_j / window.total_j
    record(
        "counter_vs_sampled",
        counter_j=window.total_j,
        sampled_j=integral_j,
        ratio=ratio,
        window_s=window.duration_s,
        samples=len(inside),
    )
    assert window.duration_s >= 10
    assert abs(ratio - 1) <= 0.02


def test_experiment_on_gpu_measures_energy(record):
    config = ExperimentConfig(
        dataset="synthetic",
        n=16,
        max_output_tokens=32,
        warmup={"n_warmup": 2, "thermal_floor_s": 0},
        baseline={"duration_s": 5},
        energy={"backend": "nvml"},
        pytorch={"batch_size": 8},
    )
    r = run(config).result
    assert r.device == "cuda" and r.energy_meter == "nvml" and r.energy_total_j > 0
    assert r.energy_per_device_j and list(r.energy_per_device_j) == [_cuda_uuid(0)]
    assert r.baseline_power_w > 10 and r.prefill.energy_j is not None and r.peak_memory_mib > 0
    assert r.environment_snapshot.driver_version and r.environment_snapshot.gpus[0].uuid == _cuda_uuid(0)
    assert r.environment_snapshot.cuda_version_source == "torch"
    record(
        "experiment_tiny",
        energy_j=r.energy_total_j,
        adjusted_j=r.energy_adjusted_j,
        baseline_w=r.baseline_power_w,
        j_per_token=r.energy_per_output_token_j,
        warnings=r.measurement_warnings,
    )


@pytest.mark.parametrize("batch_size", [8, 32])
def test_j_per_token_cv_over_five_repeats(record, batch_size):
    cache = BaselineCache()
    config = ExperimentConfig(
        model="llem/llama-3.2-1b",
        dataset={"source": "synthetic", "input_len_tokens": 128},
        n=batch_size * 10,
        max_input_tokens=128,
        max_output_tokens=128,
        warmup={"n_warmup": 3, "thermal_floor_s": 5},
        baseline={"duration_s": 10},
        energy={"backend": "nvml"},
        pytorch={"batch_size": batch_size},
    )
    results = [run(config, baseline_cache=cache).result for _ in range(5)]
    per_token = [r.energy_per_output_token_j for r in results]
    cv = statistics.stdev(per_token) / statistics.fmean(per_token)
    record(
        "j_per_token_cv",
        batch_size=batch_size,
        j_per_token=per_token,
        cv=cv,
        tok_s=[r.tokens_per_second for r in results],
        window_s=[r.duration_s for r in results],
        prefill_j_per_token=[r.prefill.energy_per_token_j for r in results],
        decode_j_per_token=[r.decode.energy_per_token_j for r in results],
        warnings=results[-1].measurement_warnings,
    )
    assert all(r.duration_s >= 10 for r in results)
    assert cv <= 0.01
