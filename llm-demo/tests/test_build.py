"""Engine build: external tools replaced by scripts on PATH; manifest fields, diagnostics, reuse;
and the prepare pipeline's stop-before-unsafe-stage behaviour."""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llm_demo import acquire, build, versions
from llm_demo.cli import app
from llm_demo.config import load_config
from llm_demo.errors import BuildError
from llm_demo.events import read_events
from llm_demo.paths import Workspace, read_json
from llm_demo.redact import Redactor

SECRET = "hf_BuildLogSecret00000000000000000000"

PREREQ = {
    "hardware": {
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100 80GB HBM3",
                "compute_capability": "9.0",
                "memory_total_bytes": 85_520_809_984,
            }
        ],
        "in_container": True,
    },
    "validated_versions": {
        "packages": {"tensorrt": "10.14.1", "tensorrt_llm": "1.2.1"},
        "cuda_driver": "13.2",
        "cuda_runtime": "13.1",
        "cudnn": "9.10.2",
        "driver": "590.48",
    },
}

CONVERT = """
import argparse, json, os, pathlib, sys
p = argparse.ArgumentParser()
for a in ("--model_dir", "--output_dir", "--dtype", "--tp_size", "--pp_size", "--weight_only_precision"):
    p.add_argument(a)
p.add_argument("--use_weight_only", action="store_true")
p.add_argument("--int8_kv_cache", action="store_true")
args = p.parse_args()
out = pathlib.Path(args.output_dir); out.mkdir(parents=True, exist_ok=True)
flags = {"dtype": args.dtype, "tp": args.tp_size, "int8_kv_cache": args.int8_kv_cache}
(out / "config.json").write_text(json.dumps(flags))
(out / "rank0.safetensors").write_bytes(b"weights")
print("converted", args.model_dir, "dtype", args.dtype, "token", os.environ.get("HF_TOKEN", ""))
counter = pathlib.Path(os.environ["FAKE_TOOL_COUNTER"]); counter.write_text(str(int(counter.read_text() or 0) + 1) if counter.exists() else "1")
"""

TRTLLM_BUILD_OK = """
import argparse, json, pathlib, sys
p = argparse.ArgumentParser()
p.add_argument("--checkpoint_dir"); p.add_argument("--output_dir")
args, rest = p.parse_known_args()
out = pathlib.Path(args.output_dir); out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps({"pretrained_config": {"mapping": {"tp_size": 1}}, "build_config": {"flags": rest}}))
(out / "rank0.engine").write_bytes(b"engine-bytes")
for i in range(3):
    print(f"[TRT] building layer {i}", flush=True)
"""

TRTLLM_BUILD_OOM = """
import sys
print("[TRT] [E] 2: [virtualMemoryBuffer.cpp::resizePhysical] CUDA out of memory", flush=True)
sys.exit(3)
"""

TRTLLM_BUILD_NOTHING = "print('done, allegedly')\n"
TRTLLM_BUILD_HANG = "import time\nprint('working', flush=True)\ntime.sleep(60)\n"


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put fake convert_checkpoint.py / trtllm-build on PATH; returns a setter for trtllm-build's body."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _script(bindir / "convert_checkpoint.py", CONVERT)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TOOL_COUNTER", str(tmp_path / "convert-count"))

    def set_build(body: str) -> None:
        _script(bindir / "trtllm-build", body)

    set_build(TRTLLM_BUILD_OK)
    return set_build


def _acquired(workspace: Workspace, cfg):
    return acquire.acquire(workspace, cfg, "r1", Redactor(), offline=True)


def _engine_cfg(tiny_model_dir: Path, **more: object):
    return load_config(
        None, {"model.local_dir": str(tiny_model_dir), "model.name": "tiny", "build.runtime": "engine", **more}
    )


def test_engine_build_records_manifest(
    workspace: Workspace, tiny_model_dir: Path, tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    cfg = _engine_cfg(
        tiny_model_dir,
        **{"precision.profile": "int8_wo", "build.extra_build_args": ["--use_paged_context_fmha", "enable"]},
    )
    got = _acquired(workspace, cfg)
    manifest = build.build(workspace, cfg, "r1", Redactor(), got, prereq=PREREQ)
    saved = read_json(workspace.state_dir / "engine-manifest.json")
    assert saved["status"] == "succeeded" and saved == json.loads(json.dumps(manifest, default=str))
    assert saved["input_model"]["sha256"] == got.model["content_sha256"]
    assert saved["quantization"] == {
        "profile": "int8_wo",
        "dtype": "float16",
        "weight_only": "int8",
        "kv_cache_dtype": None,
    }
    assert saved["tokenizer"]["sha256"] == got.tokenizer["content_sha256"]
    assert saved["build_flags"]["max_batch_size"] == 8 and saved["build_flags"]["extra_build_args"] == [
        "--use_paged_context_fmha",
        "enable",
    ]
    # the CUDA runtime and cuDNN the build links, and separately the newest CUDA the driver supports
    assert saved["versions"]["tensorrt_llm"] == "1.2.1" and saved["versions"]["cuda_runtime"] == "13.1"
    assert saved["versions"]["cuda_driver"] == "13.2" and saved["versions"]["cudnn"] == "9.10.2"
    assert saved["gpu"]["compute_capability"] == "9.0" and saved["deployment_target"] == "local-triton"
    assert set(saved["container_image"]) >= {"image", "digest", "digest_source"}
    assert {f["path"] for f in saved["engine_files"]} == {"config.json", "rank0.engine"}
    assert len(saved["engine_sha256"]) == 64 and saved["diagnostics"] is None
    assert any("--weight_only_precision int8" in c for c in saved["commands"])
    engine_dir = Path(saved["engine_dir"])
    assert read_json(engine_dir / "engine-manifest.json")["engine_sha256"] == saved["engine_sha256"]
    log = (workspace.root / "logs" / "r1" / "build.log").read_text()
    assert "[TRT] building layer 2" in log and "converted" in log and SECRET not in log


def test_int8_kv_cache_reaches_convert_checkpoint(workspace: Workspace, tiny_model_dir: Path, tools) -> None:
    cfg = _engine_cfg(tiny_model_dir, **{"precision.kv_cache_dtype": "int8"})
    saved = build.build(workspace, cfg, "r1", Redactor(), _acquired(workspace, cfg), prereq=PREREQ)
    assert saved["quantization"]["kv_cache_dtype"] == "int8"
    assert saved["commands"][0].endswith("--int8_kv_cache")
    checkpoint = Path(saved["engine_dir"]).parent / "checkpoint" / "config.json"
    assert json.loads(checkpoint.read_text())["int8_kv_cache"] is True  # the tool received the flag


def test_cuda_and_cudnn_versions_come_from_their_libraries() -> None:
    assert versions.cuda_version_text(13010) == "13.1" and versions.cuda_version_text(12040) == "12.4"
    assert versions.cudnn_version_text(91002) == "9.10.2" and versions.cudnn_version_text(8907) == "8.9.7"
    found = {name: ctypes.util.find_library(name) for name in ("cudart", "cudnn")}
    for name, probe in (("cudart", versions.cuda_runtime_version), ("cudnn", versions.cudnn_version)):
        if found[name]:  # a host with the library: its own answer, in the decoded form
            assert re.fullmatch(r"\d+\.\d+(\.\d+)?", probe() or ""), (name, probe())
        else:
            assert probe() is None


def test_engine_is_reused_when_inputs_match(workspace: Workspace, tiny_model_dir: Path, tools, tmp_path: Path) -> None:
    cfg = _engine_cfg(tiny_model_dir)
    got = _acquired(workspace, cfg)
    first = build.build(workspace, cfg, "r1", Redactor(), got, prereq=PREREQ)
    second = build.build(workspace, cfg, "r2", Redactor(), got, prereq=PREREQ)
    assert second["engine_sha256"] == first["engine_sha256"] and second["reused_from_run"] == "r1"
    assert (tmp_path / "convert-count").read_text() == "1"
    other_gpu = json.loads(json.dumps(PREREQ))
    other_gpu["hardware"]["gpus"][0]["compute_capability"] = "8.9"
    third = build.build(workspace, cfg, "r3", Redactor(), got, prereq=other_gpu)
    assert third["engine_dir"] != first["engine_dir"] and (tmp_path / "convert-count").read_text() == "2"


@pytest.mark.parametrize(
    "body, extra, message, hint",
    [
        (TRTLLM_BUILD_OOM, {}, "trtllm-build exited with 3", "GPU memory exhausted"),
        (TRTLLM_BUILD_NOTHING, {}, "lacks ['config.json', 'rank0.engine']", None),
        (TRTLLM_BUILD_HANG, {"build.timeout_s": 1}, "timed out after 1.0 s", None),
    ],
)
def test_build_failure_writes_linked_diagnostics(
    workspace: Workspace, tiny_model_dir: Path, tools, body: str, extra: dict, message: str, hint: str | None
) -> None:
    tools(body)
    cfg = _engine_cfg(tiny_model_dir, **extra)
    with pytest.raises(BuildError) as info:
        build.build(workspace, cfg, "r1", Redactor(), _acquired(workspace, cfg), prereq=PREREQ)
    assert info.value.exit_code == 5 and message in info.value.message
    manifest = read_json(workspace.state_dir / "engine-manifest.json")
    assert manifest["status"] == "failed" and manifest["diagnostics"] == str(
        workspace.root / "logs" / "r1" / "build-diagnostics.json"
    )
    diag = read_json(manifest["diagnostics"])
    assert diag["message"] == info.value.message and diag["build_log"].endswith("build.log")
    if hint:
        assert any(hint in h for h in diag["hints"]) and "CUDA out of memory" in "\n".join(diag["log_tail"])
        assert hint in info.value.remediation
    assert read_events(workspace.root / "logs" / "r1" / "build.jsonl")[-1]["event"] == "build_failed"


def test_missing_build_tool_is_diagnosed(workspace: Workspace, tiny_model_dir: Path, tools) -> None:
    cfg = _engine_cfg(tiny_model_dir, **{"build.trtllm_build": "/nonexistent/trtllm-build"})
    with pytest.raises(BuildError, match="exited with 127"):
        build.build(workspace, cfg, "r1", Redactor(), _acquired(workspace, cfg), prereq=PREREQ)
    diag = read_json(workspace.root / "logs" / "r1" / "build-diagnostics.json")
    assert "cannot start /nonexistent/trtllm-build" in diag["log_tail"][0]
    assert any("path does not exist" in h for h in diag["hints"])


def test_llmapi_prepares_options(workspace: Workspace, tiny_model_dir: Path) -> None:
    cfg = load_config(
        None, {"model.local_dir": str(tiny_model_dir), "build.runtime": "llmapi", "build.tensor_parallelism": 2}
    )
    manifest = build.build(workspace, cfg, "r1", Redactor(), _acquired(workspace, cfg), prereq=PREREQ)
    options = yaml.safe_load((Path(manifest["engine_dir"]) / "llm_api_config.yaml").read_text())
    assert (
        options["model"] == str(tiny_model_dir.resolve())
        and options["tensor_parallel_size"] == 2
        and options["backend"] == "pytorch"
    )
    assert [f["path"] for f in manifest["engine_files"]] == ["llm_api_config.yaml"]


def test_llmapi_passes_the_kv_cache_dtype(workspace: Workspace, tiny_model_dir: Path) -> None:
    cfg = load_config(
        None, {"model.local_dir": str(tiny_model_dir), "build.runtime": "llmapi", "precision.kv_cache_dtype": "fp8"}
    )
    manifest = build.build(workspace, cfg, "r1", Redactor(), _acquired(workspace, cfg), prereq=PREREQ)
    options = yaml.safe_load((Path(manifest["engine_dir"]) / "llm_api_config.yaml").read_text())
    assert options["kv_cache_config"] == {"free_gpu_memory_fraction": 0.85, "dtype": "fp8"}


def test_python_runtime_check(workspace: Workspace, tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(None, {"model.local_dir": str(tiny_model_dir)})
    manifest = build.build(workspace, cfg, "r1", Redactor(), _acquired(workspace, cfg), prereq={})
    assert manifest["status"] == "succeeded" and manifest["gpu"] is None
    assert "model.safetensors" in {f["path"] for f in manifest["engine_files"]}

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "tokenizer.json").write_text("{}")
    cfg = load_config(None, {"model.local_dir": str(broken)})
    with pytest.raises(BuildError, match="no model_type"):
        build.build(workspace, cfg, "r2", Redactor(), _acquired(workspace, cfg), prereq={})
    assert read_json(workspace.state_dir / "engine-manifest.json")["status"] == "failed"


def _invoke(workspace: Workspace, *args: str):
    return CliRunner().invoke(app, ["--root", str(workspace.root), "--run-id", "p1", *args])


def _cpu_facts(tmp_path: Path, **changes: object) -> Path:
    facts = {
        "python_version": "3.11.7",
        "gpus": [],
        "packages": {"torch": "2.13.0", "transformers": "5.0.0", "tritonclient": "2.73.0"},
        "triton": {"binary": "/x/tritonserver", "backends": ["python"]},
        "disk_free_bytes": 50 * 1024**3,
    }
    facts.update(changes)
    path = tmp_path / "facts.yaml"
    path.write_text(yaml.safe_dump(facts))
    return path


def test_prepare_python_runtime_end_to_end(
    workspace: Workspace, tiny_model_dir: Path, tmp_path: Path, no_network: list
) -> None:
    result = _invoke(
        workspace,
        "--model-dir",
        str(tiny_model_dir),
        "--set",
        "model.name=tiny",
        "prepare",
        "--host-facts",
        str(_cpu_facts(tmp_path)),
    )
    assert result.exit_code == 0, result.output
    for name in ("prereq-manifest.json", "cache-manifest.json", "engine-manifest.json", "tooling-manifest.json"):
        assert (workspace.state_dir / name).is_file(), name
    assert (workspace.models_dir / "tiny" / "1" / "model.py").is_file()
    logs = workspace.root / "logs" / "p1"
    assert {p.name for p in logs.iterdir()} >= {
        "prereq.jsonl",
        "download.jsonl",
        "build.jsonl",
        "build.log",
        "repository.jsonl",
    }
    assert no_network == []


def test_prepare_aborts_before_download_when_prerequisites_fail(workspace: Workspace, tmp_path: Path) -> None:
    result = _invoke(
        workspace,
        "--model-id",
        "org/gated",
        "--set",
        "credentials.required=true",
        "prepare",
        "--host-facts",
        str(_cpu_facts(tmp_path)),
    )
    assert result.exit_code == 3
    assert not (workspace.state_dir / "cache-manifest.json").exists() and not workspace.cache_dir.exists()
    assert not (workspace.root / "logs" / "p1" / "download.jsonl").exists()


def test_prepare_stops_before_build_on_checksum_mismatch(
    workspace: Workspace, tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = _invoke(
        workspace,
        "--model-dir",
        str(tiny_model_dir),
        "--set",
        "model.sha256={config.json: " + "0" * 64 + "}",
        "prepare",
        "--host-facts",
        str(_cpu_facts(tmp_path)),
    )
    assert result.exit_code == 4, result.output
    assert not (workspace.state_dir / "engine-manifest.json").exists()
    assert not (workspace.root / "logs" / "p1" / "build.log").exists()
