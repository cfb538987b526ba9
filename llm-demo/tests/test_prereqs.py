"""Prerequisite checks on described hosts: pass, and fail with exit 3 + remediation + redaction."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llm_demo import host_probe, prereqs
from llm_demo.cli import app
from llm_demo.config import load_config
from llm_demo.paths import PACKAGE_ROOT, Workspace, read_json

TOKEN = "hf_PlantedSecretToken1234567890abcd"

H100_IN_CONTAINER = {
    "python_version": "3.12.3",
    "in_container": True,
    "gpus": [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_total_bytes": 85_520_809_984}
    ],
    "driver_version": "590.48.01",
    "cuda_driver_version": "13.1",
    "cuda_runtime_version": "13.0",
    "cudnn_version": "9.10.2",
    "packages": {"tensorrt_llm": "1.2.1", "tensorrt": "10.14.1", "tritonclient": "2.73.0"},
    "executables": {
        "trtllm-build": "/usr/local/bin/trtllm-build",
        "convert_checkpoint": "/app/convert_checkpoint.py",
        "docker": None,
        "nvidia-ctk": None,
    },
    "nvidia_ctk_version": None,
    "triton": {"binary": "/opt/tritonserver/bin/tritonserver", "backends": ["python", "tensorrtllm"]},
    "disk_free_bytes": 500 * 1024**3,
}


def _facts(tmp_path: Path, **changes: object) -> Path:
    facts = json.loads(json.dumps(H100_IN_CONTAINER))
    facts.update(changes)
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump(facts))
    return path


def _invoke(workspace: Workspace, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["--root", str(workspace.root), "--run-id", "r1", *args], env=env)


def test_compliant_engine_host_passes(workspace: Workspace, tmp_path: Path) -> None:
    result = _invoke(workspace, "--runtime", "engine", "check", "--host-facts", str(_facts(tmp_path)))
    assert result.exit_code == 0, result.output
    manifest = read_json(workspace.state_dir / "prereq-manifest.json")
    assert manifest["ok"] is True and manifest["runtime"] == "engine"
    assert manifest["validated_versions"]["packages"]["tensorrt_llm"] == "1.2.1"
    versions = manifest["validated_versions"]
    assert (versions["cuda_driver"], versions["cuda_runtime"], versions["cudnn"]) == ("13.1", "13.0", "9.10.2")
    assert manifest["support_matrix_row"]["min_driver"] == "590.44"
    assert manifest["hardware"]["gpus"][0]["compute_capability"] == "9.0"
    ids = {c["id"] for c in manifest["checks"]}
    assert {
        "gpu",
        "vram",
        "driver",
        "cuda",
        "package:tensorrt_llm",
        "executable:trtllm-build",
        "triton",
        "disk",
        "credential",
    } <= ids
    assert "container_toolkit" not in ids  # inside the container
    assert (workspace.state_dir / "tooling-manifest.json").exists()
    events = (workspace.root / "logs" / "r1" / "prereq.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["event"] == "end" and json.loads(events[-1])["ok"] is True


@pytest.mark.parametrize(
    "changes, failing, section",
    [
        ({"driver_version": None, "cuda_driver_version": None}, "driver", "nvidia-driver"),
        ({"driver_version": "580.95"}, "driver", "nvidia-driver"),
        ({"in_container": False}, "container_toolkit", "nvidia-container-toolkit"),
        (
            {
                "gpus": [
                    {"index": 0, "name": "Tesla V100", "compute_capability": "7.0", "memory_total_bytes": 34 * 1024**3}
                ]
            },
            "gpu",
            "gpu-architecture",
        ),
        (
            {"packages": {"tensorrt_llm": "1.3.0", "tensorrt": "10.14.1", "tritonclient": "2.73.0"}},
            "package:tensorrt_llm",
            "tensorrt-llm-and-tensorrt",
        ),
        (
            {"executables": {"trtllm-build": None, "convert_checkpoint": "/x.py"}},
            "executable:trtllm-build",
            "build-tools",
        ),
        ({"disk_free_bytes": 10 * 1024**3}, "disk", "disk-space"),
    ],
)
def test_missing_prerequisite_fails_with_exit_3(
    workspace: Workspace, tmp_path: Path, changes: dict, failing: str, section: str
) -> None:
    result = _invoke(workspace, "--runtime", "engine", "check", "--host-facts", str(_facts(tmp_path, **changes)))
    assert result.exit_code == 3, result.output
    assert f"prerequisites.md#{section}" in result.output
    manifest = read_json(workspace.state_dir / "prereq-manifest.json")
    failed = [c for c in manifest["checks"] if c["status"] == "fail"]
    assert manifest["ok"] is False and failing in {c["id"] for c in failed}
    assert all(c["remediation"] for c in failed)
    error = read_json(workspace.root / "logs" / "r1" / "error.json")
    assert error["exit_code"] == 3


def test_missing_credential_fails_and_present_one_is_never_printed(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    facts = str(_facts(tmp_path))
    result = _invoke(
        workspace, "--runtime", "engine", "--set", "credentials.required=true", "check", "--host-facts", facts
    )
    assert result.exit_code == 3
    assert "credential" in result.output and "prerequisites.md#credentials" in result.output

    # token present, another check fails: nothing written or printed may contain the token
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("LLM_DEMO_NOTE", f"see api_key={TOKEN}")
    result = _invoke(
        workspace,
        "--runtime",
        "engine",
        "--set",
        "credentials.required=true",
        "--set",
        "model.name=m",
        "check",
        "--host-facts",
        str(_facts(tmp_path, driver_version=None)),
    )
    assert result.exit_code == 3
    assert TOKEN not in result.output
    written = [p.read_text() for p in workspace.root.rglob("*") if p.is_file()]
    assert written and not any(TOKEN in text for text in written)
    manifest = read_json(workspace.state_dir / "prereq-manifest.json")
    assert manifest["credential"] == {"source": "env", "location": "HF_TOKEN", "present": True}


def test_token_in_failure_message_is_redacted(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    facts = _facts(tmp_path, triton={"binary": f"/opt/{TOKEN}/tritonserver", "backends": []})
    result = _invoke(workspace, "--runtime", "engine", "check", "--host-facts", str(facts))
    assert result.exit_code == 3
    assert TOKEN not in result.output and "[REDACTED]" in result.output
    assert TOKEN not in (workspace.state_dir / "prereq-manifest.json").read_text()


def test_python_runtime_passes_on_cpu_host(workspace: Workspace, tmp_path: Path) -> None:
    facts = _facts(
        tmp_path,
        gpus=[],
        driver_version=None,
        cuda_driver_version=None,
        in_container=False,
        packages={"torch": "2.13.0+cpu", "transformers": "5.0.0", "tritonclient": "2.73.0"},
        triton={"binary": "/venv/tritonserver", "backends": ["python"]},
        disk_free_bytes=20 * 1024**3,
    )
    result = _invoke(workspace, "check", "--host-facts", str(facts))
    assert result.exit_code == 0, result.output
    statuses = {c["id"]: c["status"] for c in read_json(workspace.state_dir / "prereq-manifest.json")["checks"]}
    assert statuses["gpu"] == "pass" and statuses["credential"] == "warn" and "driver" not in statuses


def test_real_probe_runs_without_raising(workspace: Workspace) -> None:
    cfg = load_config(PACKAGE_ROOT / "config" / "model.yaml")
    facts = host_probe.probe_host(cfg, workspace)
    assert facts["python_version"].count(".") == 2
    assert isinstance(facts["gpus"], list) and facts["disk_free_bytes"] > 0
    assert "cuda_runtime_version" in facts and "cudnn_version" in facts  # None where the library is absent


def _anchors(markdown: str) -> set[str]:
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_referenced_doc_section_exists(workspace: Workspace) -> None:
    doc = (PACKAGE_ROOT / "docs" / "prerequisites.md").read_text()
    anchors = _anchors(doc)
    req = prereqs.load_requirements(workspace)
    referenced = set(re.findall(r"\(#([a-z0-9-]+)\)", doc))
    empty_host: dict = {"in_container": False}
    for runtime in ("engine", "llmapi", "python"):
        cfg = load_config(PACKAGE_ROOT / "config" / "model.yaml", {"build.runtime": runtime})
        for facts in (H100_IN_CONTAINER, empty_host):
            referenced |= {r.doc.split("#")[1] for r in prereqs.run_checks(cfg, req, facts, {})}
    assert {"nvidia-driver", "credentials", "nvidia-container-toolkit", "cuda", "disk-space"} <= referenced
    assert referenced <= anchors, referenced - anchors
