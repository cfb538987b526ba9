"""Backends come from the registry (issue 15): a registered spec is a valid `backend:` with its own
section, validated like a built-in, and every module that needs to know about backends reads the spec."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from llem_ray.backends import registry as backend_registry
from llem_ray.backends.coverage import coverage
from llem_ray.cluster import runtime_env
from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.study import StudyConfig
from llem_ray.config.sweep import expand_study
from llem_ray.energy import registry as meter_registry
from llem_ray.errors import BackendError
from llem_ray.registry import Registry
from tests.fakes import FAKE_SPEC, FakeConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin():
    """FAKE_SPEC as backend 'plug', continuously batching and needing its own environment."""
    spec = dataclasses.replace(FAKE_SPEC, name="plug", static_batching=False, must_isolate=True)
    backend_registry.register(spec)
    return spec


def test_importing_and_validating_config_imports_no_engine():
    code = (
        "import sys\n"
        "from llem_ray.config.experiment import ExperimentConfig\n"
        "from llem_ray.config import introspection, sweep\n"
        "from llem_ray import environment_report\n"
        "ExperimentConfig(backend='vllm', vllm={'max_num_seqs': 4})\n"
        "introspection.render_markdown()\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'tensorrt_llm') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_a_registered_backend_validates_its_own_section_like_a_built_in(plugin):
    config = ExperimentConfig(backend="plug", n=10, plug={"batch_size": 4})
    assert isinstance(config.section, FakeConfig) and config.batch_size == 4, "continuous: min(n, limit)"
    assert config.model_dump()["plug"] == {"batch_size": 4}
    assert ExperimentConfig.model_validate(config.model_dump()) == config
    with pytest.raises(ValidationError) as bad:
        ExperimentConfig(backend="plug", plug={"batch_size": 0})
    assert [e["loc"] for e in bad.value.errors()] == [("plug", "batch_size")]
    with pytest.raises(ValidationError, match="section 'plug' is set but backend is 'pytorch'"):
        ExperimentConfig(plug={"batch_size": 2})
    with pytest.raises(ValidationError) as typo:
        ExperimentConfig(backend="plug", plugg={"batch_size": 2})
    assert [(e["loc"], e["type"]) for e in typo.value.errors()] == [(("plugg",), "extra_forbidden")]


def test_a_built_in_experiment_keeps_its_hash_whatever_is_registered(plugin):
    before = measurement_config_hash(ExperimentConfig())
    backend_registry.unregister("plug")
    assert measurement_config_hash(ExperimentConfig()) == before
    assert "plug" not in ExperimentConfig().model_dump()


def test_an_unregistered_backend_is_refused_naming_the_registered_ones():
    with pytest.raises(ValidationError, match=r"unknown backend 'plug' \(registered: pytorch, vllm, tensorrt\)"):
        ExperimentConfig(backend="plug")
    with pytest.raises(BackendError, match="unknown backend 'plug'"):
        backend_registry.create("plug")


def test_sweeps_and_runtime_envs_take_the_registered_backend(plugin):
    study = expand_study({"sweep": {"backend": ["pytorch", "plug"], "plug.batch_size": [1, 2]}})
    assert sorted((e.backend, e.batch_size) for e in study.experiments) == [("plug", 1), ("plug", 2), ("pytorch", 1)]
    mixed = StudyConfig(experiments=[ExperimentConfig(backend="plug"), ExperimentConfig(backend="vllm")])
    (problem,) = runtime_env.static_problems(mixed)
    assert "plug and vllm" in problem, "a plugin that must isolate clashes with vLLM like a built-in"
    with pytest.raises(ValidationError, match="unknown backend 'onnx'"):
        StudyConfig(experiments=[ExperimentConfig()], runtime_envs={"onnx": {}})


def test_coverage_is_offered_only_where_the_spec_names_the_engine(plugin):
    with pytest.raises(KeyError, match=r"known: vllm, tensorrt"):
        coverage("plug")


def test_one_registry_class_serves_backends_and_meters():
    assert type(backend_registry.BACKENDS) is type(meter_registry.METERS) is Registry
    items: Registry[str] = Registry({"json": "json:dumps"})
    assert items.get("json")([1]) == "[1]", "a built-in is imported on first use"
    items.register("json", "mine")
    assert items.get("json") == "mine" and items.builtin("json")([]) == "[]"
    items.unregister("json")
    assert items.get("json")([]) == "[]" and items.names() == ["json"]
    with pytest.raises(KeyError):
        items.get("yaml")
    with pytest.raises(ImportError):
        Registry({"gone": "no_such_module_here:x"}).get("gone")
