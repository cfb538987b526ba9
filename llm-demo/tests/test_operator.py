"""llm-demo as an operator runs it, against the real `tritonserver` on CPU: `serve_triton.sh` start,
canary, rollback and stop as subprocesses, and the CLI's serve / canary / --rollback / warm-up next
to a server that is already running."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_triton import SERVER_LIFETIME_S, free_port
from triton_models import FAILS_TO_LOAD, add_version, write_test_repository
from typer.testing import CliRunner

from llm_demo.approvals import approve, approved_versions
from llm_demo.canary import GOVERNANCE_LOG
from llm_demo.cli import app
from llm_demo.client import TritonTextClient
from llm_demo.errors import ExitCode
from llm_demo.paths import PACKAGE_ROOT, Workspace, read_json
from llm_demo.serve import SERVE_STATE, group_pids, port_in_use, stop_process_group

SCRIPT = PACKAGE_ROOT / "serve_triton.sh"


@pytest.fixture
def operator_ws(workspace: Workspace) -> Workspace:
    """The test repository (canary 1-3, plus a version 4 that cannot load) with its own free ports,
    short smoke-test SLAs and a server that stops by itself; stops whatever server is left."""
    write_test_repository(workspace.models_dir)
    add_version(workspace.models_dir, "canary", 4, FAILS_TO_LOAD)
    workspace.config_dir.mkdir()
    (workspace.config_dir / "serving.yaml").write_text(
        f"serve: {{http_port: {free_port()}, grpc_port: {free_port()}, metrics_port: {free_port()}, "
        f"exit_timeout_s: 2, max_lifetime_s: {SERVER_LIFETIME_S}}}\n"
        "canary: {smoke_tests: [{prompt: hello, expect: ok, max_tokens: 4}], sla: {ready_s: 60}}\n"
    )
    yield workspace
    record = read_json(workspace.state_dir / SERVE_STATE)
    if record and record["pgid"]:
        stop_process_group(record["pgid"], grace_s=5)


def serve_triton(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "LLM_DEMO_OPTS": f"--root {ws.root} --set model.name=canary",
        "PYTHON": sys.executable,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)


def governance(ws: Workspace) -> list[str]:
    path = ws.state_dir / GOVERNANCE_LOG
    return [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []


def served_text(ws: Workspace) -> str:
    """What an unversioned production request to `canary` gets back."""
    record = read_json(ws.state_dir / SERVE_STATE)
    return TritonTextClient(record["http_url"], record["grpc_url"]).generate("canary", "hi", 4).text


def pinned(ws: Workspace) -> list[str]:
    return re.findall(
        r"version_policy \{ specific \{ versions: \[ (\d+) \] \} \}",
        (ws.models_dir / "canary" / "config.pbtxt").read_text(),
    )


def loaded_versions(log_path: Path, model: str) -> set[int]:
    return {int(v) for v in re.findall(rf'"loading: {model}:(\d+)"', log_path.read_text())}


def test_serve_triton_sh_deploys_and_rolls_back(operator_ws):
    ws = operator_ws
    approve(ws, "canary", 1)
    started = serve_triton(ws, "start")
    assert started.returncode == 0, started.stderr
    record = read_json(ws.state_dir / SERVE_STATE)
    assert served_text(ws) == "v1 ok"

    promoted = serve_triton(ws, "canary", "2")
    assert promoted.returncode == 0, promoted.stderr
    assert "version 2 promoted (previous 1)" in promoted.stdout
    assert served_text(ws) == "v2 ok" and pinned(ws) == ["2"]

    cannot_load = serve_triton(ws, "canary", "4")
    assert cannot_load.returncode == ExitCode.SMOKE_TEST == 10, cannot_load.stderr
    assert "failed to load" in cannot_load.stderr and "rolled back to version 2" in cannot_load.stderr
    empty = serve_triton(ws, "canary", "3")
    assert empty.returncode == 10 and "version 3 failed: empty output" in empty.stderr
    assert served_text(ws) == "v2 ok" and approved_versions(ws, "canary") == [1, 2]

    rolled_back = serve_triton(ws, "rollback")
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert "canary: rolled back, now serving version 1" in rolled_back.stdout
    assert served_text(ws) == "v1 ok" and approved_versions(ws, "canary") == [1] and pinned(ws) == ["1"]
    assert governance(ws) == [
        "canary_deploy",
        "smoke_test",
        "promote",
        "canary_deploy",
        "smoke_test",
        "rollback",
        "canary_deploy",
        "smoke_test",
        "rollback",
        "manual_rollback",
    ]

    stopped = serve_triton(ws, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert group_pids(record["pgid"]) == [] and not (ws.state_dir / SERVE_STATE).exists()
    http_host, _, http_port = record["http_url"].rpartition(":")
    assert not port_in_use(http_host, int(http_port))


def test_serve_triton_sh_usage_errors_exit_2():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == ExitCode.USAGE == 2
    assert "serve_triton.sh rollback" in result.stderr and "serve_triton.sh canary <version>" in result.stderr
    no_version = subprocess.run(["bash", str(SCRIPT), "canary"], capture_output=True, text=True, timeout=30)
    assert no_version.returncode == 2 and no_version.stderr == "usage: serve_triton.sh canary <version>\n"


def cli(ws: Workspace, *args: str):
    return CliRunner().invoke(app, ["--root", str(ws.root), *args])


def test_serve_starts_with_the_approved_version_and_canary_checks_its_arguments(operator_ws):
    ws = operator_ws
    approve(ws, "canary", 2)  # version 3 (healthy load) and 4 (cannot load) lie above it on disk
    served = cli(ws, "--run-id", "run-serve", "serve")
    assert served.exit_code == 0, served.output  # a version that cannot load no longer stops serve
    record = read_json(ws.state_dir / SERVE_STATE)
    assert served_text(ws) == "v2 ok"
    assert loaded_versions(Path(record["log_path"]), "canary") == {2}  # 3 and 4 never loaded, not even briefly

    again = cli(
        ws,
        "--run-id",
        "run-again",
        "serve",
        "--http-port",
        str(free_port()),
        "--grpc-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
    )
    assert again.exit_code == ExitCode.LAUNCH == 7 and "is still running" in again.output
    assert read_json(ws.state_dir / SERVE_STATE) == record  # the running server's record is kept

    for args in ([], ["--version", "2", "--rollback"]):
        usage = cli(ws, "canary", *args)
        assert usage.exit_code == ExitCode.USAGE == 2 and "exactly one of --version N" in usage.output
    missing = cli(ws, "canary", "--model", "canary", "--version", "9")
    assert missing.exit_code == ExitCode.REPOSITORY == 6 and "version 9 does not exist" in missing.output
    lone = cli(ws, "canary", "--model", "canary", "--rollback")
    assert lone.exit_code == ExitCode.SMOKE_TEST and "nothing to roll back to (approved versions: [2])" in lone.output

    down = cli(ws, "--run-id", "run-down", "teardown")
    assert down.exit_code == 0, down.output
    assert group_pids(record["pgid"]) == []


def test_failed_warmup_leaves_the_operators_server_running(operator_ws):
    ws = operator_ws
    shutil.rmtree(ws.models_dir / "canary" / "4")  # nothing approved: serve loads each model's highest version
    served = cli(ws, "--run-id", "run-serve", "serve")
    assert served.exit_code == 0, served.output
    record = read_json(ws.state_dir / SERVE_STATE)
    warm = cli(ws, "--run-id", "run-warm", "--set", "credentials.required=true", "warmup")
    assert warm.exit_code == ExitCode.PREREQUISITES == 3, warm.output
    assert read_json(ws.state_dir / SERVE_STATE) == record and group_pids(record["pgid"])
    assert not (ws.logs_dir / "run-warm" / "cleanup.log").exists()  # it stopped nothing
    assert TritonTextClient(record["http_url"]).generate("echo", "still serving", 4).text == "still serving "
