"""Model repository generation for the three runtimes and the validator's failure findings."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llm_demo import repository
from llm_demo.approvals import approve, withdraw
from llm_demo.cli import app
from llm_demo.config import load_config
from llm_demo.errors import RepositoryError
from llm_demo.events import EventLog, read_events
from llm_demo.paths import Workspace, read_json
from llm_demo.repo_validate import parse_config, validate, validate_or_raise

# Minimal stand-ins for tensorrtllm_backend's all_models templates (same placeholder convention).
_TRTLLM_TEMPLATES = {
    "ensemble": """name: "ensemble"
platform: "ensemble"
max_batch_size: ${triton_max_batch_size}
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }, { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "preprocessing" model_version: -1 input_map { key: "QUERY" value: "text_input" } output_map { key: "INPUT_ID" value: "_INPUT_ID" } },
    { model_name: "tensorrt_llm" model_version: -1 input_map { key: "input_ids" value: "_INPUT_ID" } output_map { key: "output_ids" value: "_TOKENS" } },
    { model_name: "postprocessing" model_version: -1 input_map { key: "TOKENS_BATCH" value: "_TOKENS" } output_map { key: "OUTPUT" value: "text_output" } }
  ]
}
""",
    "preprocessing": """name: "preprocessing"
backend: "python"
max_batch_size: ${triton_max_batch_size}
parameters { key: "tokenizer_dir" value: { string_value: "${tokenizer_dir}" } }
instance_group [ { count: ${preprocessing_instance_count} kind: KIND_CPU } ]
""",
    "postprocessing": """name: "postprocessing"
backend: "python"
max_batch_size: ${triton_max_batch_size}
parameters { key: "tokenizer_dir" value: { string_value: "${tokenizer_dir}" } }
instance_group [ { count: ${postprocessing_instance_count} kind: KIND_CPU } ]
""",
    "tensorrt_llm": """name: "tensorrt_llm"
backend: "${triton_backend}"
max_batch_size: ${triton_max_batch_size}
model_transaction_policy { decoupled: ${decoupled_mode} }
parameters { key: "gpt_model_path" value: { string_value: "${engine_dir}" } }
parameters { key: "gpt_model_type" value: { string_value: "${batching_strategy}" } }
parameters { key: "max_beam_width" value: { string_value: "${max_beam_width}" } }
parameters { key: "kv_cache_free_gpu_mem_fraction" value: { string_value: "${kv_cache_free_gpu_mem_fraction}" } }
parameters { key: "lora_cache_optimal_adapter_size" value: { string_value: "${lora_cache_optimal_adapter_size}" } }
""",
}

_LLMAPI_TEMPLATE = """name: "tensorrt_llm"
backend: "python"
max_batch_size: ${triton_max_batch_size}
model_transaction_policy { decoupled: ${decoupled_mode} }
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] } ]
"""


@pytest.fixture
def python_cfg(tiny_model_dir: Path):
    return load_config(None, {"model.local_dir": str(tiny_model_dir), "model.name": "tiny"})


def _templates(root: Path) -> Path:
    base = root / "inflight_batcher_llm"
    for name, text in _TRTLLM_TEMPLATES.items():
        (base / name / "1").mkdir(parents=True)
        (base / name / "config.pbtxt").write_text(text)
        if name in ("preprocessing", "postprocessing"):
            (base / name / "1" / "model.py").write_text("# tensorrtllm_backend model stand-in\n")
    return base


def _engine_dir(root: Path, tp: int = 1) -> Path:
    engine = root / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(
        json.dumps({"pretrained_config": {"mapping": {"tp_size": tp, "world_size": tp}}, "build_config": {}})
    )
    (engine / "rank0.engine").write_bytes(b"\0" * 16)
    return engine


def test_python_runtime_layout_and_validation(workspace: Workspace, python_cfg, tiny_model_dir: Path) -> None:
    repo = repository.generate(workspace, python_cfg, version=3)
    assert repo == workspace.models_dir
    vdir = repo / "tiny" / "3"
    assert (vdir / "model.py").read_text() == (repository.TEMPLATE_DIR / "python_llm" / "model.py").read_text()
    assert (vdir / "hf_model").resolve() == tiny_model_dir.resolve()
    assert (vdir / "config.pbtxt").read_text() == (repo / "tiny" / "config.pbtxt").read_text()
    text = (repo / "tiny" / "config.pbtxt").read_text()
    assert "decoupled: true" in text and "max_batch_size: 8" in text and 'name: "tiny"' in text
    meta = read_json(vdir / "version.json")
    assert meta["runtime"] == "python" and meta["version"] == 3 and meta["config_hash"] == python_cfg.config_hash()
    assert validate(repo) == []


def test_approval_pin_survives_regeneration_and_refuses_a_foreign_policy(workspace: Workspace, python_cfg) -> None:
    for version in (1, 2):
        repository.generate(workspace, python_cfg, version=version)
    config = workspace.models_dir / "tiny" / "config.pbtxt"
    assert "version_policy" not in config.read_text()  # nothing approved: Triton's default, the highest
    approve(workspace, "tiny", 1)
    repository.generate(workspace, python_cfg, version=2)  # rewrites config.pbtxt
    assert config.read_text().endswith("version_policy { specific { versions: [ 1 ] } }\n")
    assert parse_config(config.read_text()).version_policy.specific.versions == [1]
    assert validate(workspace.models_dir) == []
    approve(workspace, "tiny", 2)
    withdraw(workspace, "tiny", 2)
    assert config.read_text().count("version_policy") == 1 and "versions: [ 1 ]" in config.read_text()
    shutil.rmtree(workspace.models_dir / "tiny" / "1")
    problems = {p.message for p in validate(workspace.models_dir)}
    assert "version_policy serves version 1, which has no directory" in problems

    config.write_text(config.read_text().split("# llm-demo:")[0] + "version_policy { latest { num_versions: 2 } }\n")
    with pytest.raises(RepositoryError, match="declares its own version_policy"):
        approve(workspace, "tiny", 2)


def test_generate_without_sources_fails(workspace: Workspace) -> None:
    cfg = load_config(None, {"model.id": "org/model"})
    with pytest.raises(RepositoryError, match="no built model"):
        repository.generate(workspace, cfg)


@pytest.mark.parametrize(
    "mutate, finding",
    [
        (lambda t: re.sub(r"max_batch_size: \d+\n", "", t), "max_batch_size is not set"),
        (lambda t: re.sub(r"model_transaction_policy \{[^}]*\}\n", "", t), "decoupled mode"),
        (lambda t: re.sub(r'parameters \{ key: "tensor_parallelism"[^\n]*\n', "", t), "tensor_parallelism"),
        (lambda t: t.replace('name: "text_output"', 'name: "OUTPUT"'), "text_output"),
        (lambda t: t.replace('name: "tiny"', 'name: "other"'), "differs from the directory"),
        (lambda t: t.replace("max_batch_size", "max_batch_sizes"), "does not parse"),
    ],
)
def test_validator_reports_missing_fields(workspace: Workspace, python_cfg, mutate, finding: str) -> None:
    repo = repository.generate(workspace, python_cfg)
    cfg_path = repo / "tiny" / "config.pbtxt"
    cfg_path.write_text(mutate(cfg_path.read_text()))
    problems = validate(repo, "tiny")
    assert any(finding in p.message for p in problems), problems


def test_validator_reports_structure(workspace: Workspace, python_cfg) -> None:
    repo = repository.generate(workspace, python_cfg)
    (repo / "tiny" / "1" / "hf_model").unlink()
    (repo / "tiny" / "1" / "config.pbtxt").unlink()
    (repo / "empty").mkdir()
    messages = [p.message for p in validate(repo)]
    assert any("model_dir" in m for m in messages)
    assert any("config.pbtxt snapshot" in m for m in messages)
    assert any(m == "config.pbtxt missing" for m in messages)
    assert validate(workspace.root / "nope")[0].message == "repository directory does not exist"


def test_validate_or_raise_logs_and_exits_6(workspace: Workspace, python_cfg) -> None:
    repo = repository.generate(workspace, python_cfg)
    shutil.rmtree(repo / "tiny" / "1")
    events = EventLog(workspace, "r1", "repository")
    with pytest.raises(RepositoryError) as info:
        validate_or_raise(repo, "tiny", events)
    assert info.value.exit_code == 6 and "no numeric version directory" in info.value.remediation
    logged = read_events(events.path)
    assert logged[-1]["event"] == "validated" and logged[-1]["ok"] is False
    result = CliRunner().invoke(app, ["--root", str(workspace.root), "repo", "validate"])
    assert result.exit_code == 6 and "no numeric version directory" in result.output


def test_engine_runtime_fills_tensorrtllm_templates(workspace: Workspace, tmp_path: Path, tiny_model_dir: Path) -> None:
    templates = _templates(tmp_path)
    engine = _engine_dir(tmp_path)
    cfg = load_config(
        None,
        {
            "model.id": "org/m",
            "model.name": "llm",
            "build.runtime": "engine",
            "build.tensorrtllm_backend_models": str(templates),
        },
    )
    repo = repository.generate(
        workspace, cfg, engine_dir=engine, model_dir=tiny_model_dir, tokenizer_dir=tiny_model_dir
    )
    assert sorted(p.name for p in repo.iterdir()) == ["llm", "postprocessing", "preprocessing", "tensorrt_llm"]
    trt = (repo / "tensorrt_llm" / "config.pbtxt").read_text()
    assert (
        f'string_value: "{engine}"' in trt and "decoupled: true" in trt and "${lora_cache_optimal_adapter_size}" in trt
    )
    assert 'name: "llm"' in (repo / "llm" / "config.pbtxt").read_text()
    assert (repo / "preprocessing" / "1" / "model.py").is_file()
    assert validate(repo, "llm") == []

    (engine / "rank0.engine").unlink()
    assert any("rank0.engine" in p.message for p in validate(repo, "llm"))


def test_engine_runtime_needs_templates(workspace: Workspace, tmp_path: Path) -> None:
    cfg = load_config(None, {"model.id": "org/m", "build.runtime": "engine"})
    with pytest.raises(RepositoryError, match="tensorrtllm_backend_models"):
        repository.generate(workspace, cfg, engine_dir=_engine_dir(tmp_path))


def test_unfilled_placeholder_is_a_problem(workspace: Workspace, tmp_path: Path) -> None:
    templates = _templates(tmp_path)
    text = (templates / "tensorrt_llm" / "config.pbtxt").read_text()
    (templates / "tensorrt_llm" / "config.pbtxt").write_text(text.replace("${max_beam_width}", "${beam_width_typo}"))
    cfg = load_config(
        None,
        {
            "model.id": "org/m",
            "model.name": "llm",
            "build.runtime": "engine",
            "build.tensorrtllm_backend_models": str(templates),
        },
    )
    repo = repository.generate(workspace, cfg, engine_dir=_engine_dir(tmp_path), tokenizer_dir=tmp_path)
    messages = [p.message for p in validate(repo)]
    assert any("max_beam_width" in m for m in messages)


def test_llmapi_runtime_writes_model_yaml(workspace: Workspace, tmp_path: Path, tiny_model_dir: Path) -> None:
    tpl = tmp_path / "llmapi" / "tensorrt_llm"
    (tpl / "1").mkdir(parents=True)
    (tpl / "config.pbtxt").write_text(_LLMAPI_TEMPLATE)
    (tpl / "1" / "model.py").write_text("# llmapi model stand-in\n")
    engine = tmp_path / "llmapi-prepared"
    engine.mkdir()
    (engine / "llm_api_config.yaml").write_text(
        yaml.safe_dump({"model": str(tiny_model_dir), "backend": "pytorch", "tensor_parallel_size": 1})
    )
    cfg = load_config(
        None,
        {
            "model.id": "org/m",
            "model.name": "chat",
            "build.runtime": "llmapi",
            "build.tensorrtllm_backend_models": str(tmp_path / "llmapi"),
        },
    )
    repo = repository.generate(workspace, cfg, model_dir=tiny_model_dir, engine_dir=engine)
    options = yaml.safe_load((repo / "chat" / "1" / "model.yaml").read_text())
    assert options["model"] == str(tiny_model_dir) and options["triton_config"] == {
        "max_batch_size": 8,
        "decoupled": True,
    }
    assert validate(repo) == []

    del options["tensor_parallel_size"]
    (repo / "chat" / "1" / "model.yaml").write_text(yaml.safe_dump(options))
    assert [p.message for p in validate(repo)] == ["model.yaml lacks 'tensor_parallel_size'"]


def test_python_stub_env_prepends_libdir() -> None:
    import sysconfig

    env = repository.python_stub_env({"LD_LIBRARY_PATH": "/x"})
    libdir = sysconfig.get_config_var("LIBDIR")
    if (Path(libdir) / (sysconfig.get_config_var("INSTSONAME") or "none")).is_file():
        assert env["LD_LIBRARY_PATH"] == f"{libdir}:/x"
    else:
        assert env["LD_LIBRARY_PATH"] == "/x"
