"""Environment snapshot on this (GPU-less, containerised) host, and the terminal summary."""

import importlib.metadata

import pytest

from llem_ray.measure import environment
from llem_ray.measure.environment import detect_container, pip_freeze, snapshot
from llem_ray.results.summary import format_result


def test_snapshot_on_a_host_without_nvml():
    snap = snapshot([], import_torch=False)
    assert snap.tool_version == "2.0.0" and snap.python_version.count(".") == 2
    assert snap.driver_version is None and snap.gpus == []
    assert snap.torch_version == importlib.metadata.version("torch")
    assert (snap.cuda_version is None) == (snap.cuda_version_source is None)


def test_cuda_version_comes_from_version_txt_before_nvcc(tmp_path, monkeypatch):
    (tmp_path / "version.txt").write_text("CUDA Version 12.4.1\n")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert environment.cuda_version(import_torch=False) == ("12.4.1", "version.txt")


def test_container_detection_prefers_kubernetes(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    assert detect_container() == "kubernetes"


def test_pip_freeze_lists_installed_distributions():
    frozen = pip_freeze()
    assert any(line.lower().startswith("pydantic==") for line in frozen) and list(frozen) == sorted(
        frozen, key=str.lower
    )


@pytest.fixture
def result(fakes):
    from llem_ray.config.experiment import ExperimentConfig
    from llem_ray.measure.experiment import run

    config = ExperimentConfig(
        dataset="synthetic",
        n=2,
        max_output_tokens=4,
        warmup={"n_warmup": 0, "thermal_floor_s": 0},
        baseline={"duration_s": 0.02, "cache_ttl_s": 0},
    )
    return run(config).result


def test_summary_shows_energy_per_token_throughput_and_warnings(result):
    text = format_result(result)
    assert result.name in text and "J per output token" in text and "tok/s" in text
    assert "baseline-adjusted" in text and "warning: measured window" in text


def test_summary_without_energy_says_so(result):
    text = format_result(result.model_copy(update={"energy_total_j": None, "measurement_warnings": []}))
    assert "energy        not measured" in text and "warning" not in text
