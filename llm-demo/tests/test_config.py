"""config/model.yaml loading, overrides and validation (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_demo.cli import app
from llm_demo.config import apply_overrides, load_config, parse_set_options
from llm_demo.errors import ConfigError
from llm_demo.paths import PACKAGE_ROOT, Workspace


def test_shipped_config_loads() -> None:
    cfg = load_config(PACKAGE_ROOT / "config" / "model.yaml")
    assert cfg.model.id and cfg.runtime == "python" and cfg.cache.retention_days == 30.0
    assert cfg.build.extra_build_args == () and cfg.extra == {}


def test_overrides_are_parsed_as_yaml_scalars() -> None:
    cfg = load_config(
        None,
        {
            "model.id": "a/b",
            "build.max_batch_size": "4",
            "build.decoupled": "false",
            "build.extra_build_args": "[--x, '1']",
        },
    )
    assert cfg.build.max_batch_size == 4 and cfg.build.decoupled is False and cfg.build.extra_build_args == ("--x", "1")
    assert parse_set_options(["a.b=c=d"]) == {"a.b": "c=d"}
    assert apply_overrides({"model": {"id": "x"}}, {"model.id": None}) == {"model": {"id": "x"}}


def test_config_hash_tracks_content() -> None:
    a = load_config(None, {"model.id": "a/b"})
    assert a.config_hash() == load_config(None, {"model.id": "a/b"}).config_hash()
    assert a.config_hash() != load_config(None, {"model.id": "a/b", "build.max_batch_size": 2}).config_hash()


def test_unknown_sections_are_kept_for_other_parts(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("model: {id: a/b}\nserve: {http_port: 9000}\n")
    assert load_config(path).extra == {"serve": {"http_port": 9000}}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({}, "model.id or model.local_dir is required"),
        ({"model.id": "a/b", "model.typo": 1}, "unknown key(s) in section 'model': typo"),
        ({"model.id": "a/b", "build.max_batch_size": "eight"}, "build.max_batch_size must be an integer"),
        ({"model.id": "a/b", "build.decoupled": "1"}, "build.decoupled must be true or false"),
        ({"model.id": "a/b", "build.runtime": "vllm"}, "build.runtime must be one of"),
        ({"model.id": "a/b", "precision.profile": "int4_wo"}, "needs TensorRT-LLM"),
        ({"model.id": "a/b", "build.tensor_parallelism": 2}, "python runtime serves on one device"),
        ({"model.id": "a/b", "build.max_input_len": 4096}, "max_input_len must not exceed"),
        ({"model.id": "a/b", "model.name": "bad name"}, "model.name"),
        ({"model.id": "a/b", "cache.retention_days": 0}, "retention_days must be > 0"),
        ({"model.id": "a/b", "model.allow_patterns": "*.json"}, "must be a list"),
        ({"model.id": "a/b", "credentials.source": "vault"}, "credentials.source"),
        (
            {"model.id": "a/b", "precision.kv_cache_dtype": "fp8"},
            "precision.kv_cache_dtype 'fp8' is not supported by the python runtime (supported: none, leave it null)",
        ),
        (
            {"model.id": "a/b", "build.runtime": "engine", "precision.kv_cache_dtype": "fp8"},
            "not supported by the engine runtime (supported: int8)",
        ),
        (
            {"model.id": "a/b", "build.runtime": "llmapi", "precision.kv_cache_dtype": "int8"},
            "not supported by the llmapi runtime (supported: fp8)",
        ),
    ],
)
def test_invalid_configuration(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in info.value.message and info.value.exit_code == 2


def test_engine_runtime_accepts_weight_only() -> None:
    cfg = load_config(
        None,
        {"model.id": "a/b", "build.runtime": "engine", "precision.profile": "int4_wo", "build.tensor_parallelism": 2},
    )
    assert cfg.precision.profile == "int4_wo"


def test_cli_reports_config_errors_with_exit_2(workspace: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    result = CliRunner().invoke(app, ["--root", str(workspace.root), "--config", str(bad), "check"])
    assert result.exit_code == 2 and "invalid YAML" in result.output
    result = CliRunner().invoke(app, ["--root", str(workspace.root), "--set", "nokey", "check"])
    assert result.exit_code == 2 and "section.key=value" in result.output
    result = CliRunner().invoke(
        app, ["--root", str(workspace.root), "--config", str(tmp_path / "missing.yaml"), "check"]
    )
    assert result.exit_code == 2 and "not found" in result.output
