"""`llm-demo serve` preflight and launch: port collision, missing TLS files, readiness timeout, gRPC TLS."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from conftest_triton import free_port, triton_options
from triton_models import write_test_repository
from typer.testing import CliRunner

from llm_demo.cli import app
from llm_demo.client import TritonTextClient
from llm_demo.errors import ExitCode, LaunchError
from llm_demo.events import read_events
from llm_demo.paths import Workspace
from llm_demo.serve import SERVE_STATE, group_pids, launch, port_in_use
from llm_demo.triton import STUB_SITE_ENV, TlsOptions, prepare_stub_python

runner = CliRunner()


def serve_cli(root, *args):
    return runner.invoke(
        app, ["--root", str(root), "--run-id", "run-serve", "serve", "--model-repository", str(root / "models"), *args]
    )


def launch_events(root):
    return [e["event"] for e in read_events(root / "logs" / "run-serve" / "launch.jsonl")]


def test_port_collision_aborts_before_starting(workspace):
    write_test_repository(workspace.models_dir)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = serve_cli(
            workspace.root,
            "--http-port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        )
    assert result.exit_code == ExitCode.LAUNCH == 7
    assert f"127.0.0.1:{port} is already bound" in result.output
    assert "remediation:" in result.output and "--http-port" in result.output
    assert launch_events(workspace.root) == ["preflight_failed"]
    assert not (workspace.state_dir / SERVE_STATE).exists()  # nothing was started
    error = json.loads((workspace.root / "logs" / "run-serve" / "error.json").read_text())
    assert error["details"]["port"] == port


def test_same_port_twice_is_a_conflict(workspace):
    write_test_repository(workspace.models_dir)
    port = free_port()
    result = serve_cli(
        workspace.root, "--http-port", str(port), "--grpc-port", str(port), "--metrics-port", str(free_port())
    )
    assert result.exit_code == 7 and "both configured on port" in result.output


def test_missing_tls_files_abort_with_exit_8(workspace):
    write_test_repository(workspace.models_dir)
    cert = workspace.root / "server.crt"
    cert.write_text("not checked: the key is missing first")
    result = serve_cli(
        workspace.root,
        "--grpc-tls-cert",
        str(cert),
        "--grpc-tls-key",
        str(workspace.root / "absent.key"),
        "--http-port",
        str(free_port()),
    )
    assert result.exit_code == ExitCode.TLS_FILES == 8
    assert f"these files are missing: {workspace.root / 'absent.key'}\n" in result.output  # the cert exists
    assert launch_events(workspace.root) == ["preflight_failed"]


def test_invalid_repository_is_not_served(workspace):
    write_test_repository(workspace.models_dir)
    config = workspace.models_dir / "echo" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 0\n", ""))
    result = serve_cli(
        workspace.root,
        "--http-port",
        str(free_port()),
        "--grpc-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
    )
    assert result.exit_code == ExitCode.REPOSITORY == 6, result.output
    assert "echo: max_batch_size is not set" in result.output
    assert not (workspace.root / "logs" / "run-serve" / "launch.jsonl").exists()  # nothing was started
    assert not (workspace.state_dir / SERVE_STATE).exists()


SLOW_LOAD = """
import time
class TritonPythonModel:
    def initialize(self, args):
        time.sleep(120)
    def execute(self, requests):
        return []
"""


def test_readiness_timeout_stops_every_process(tmp_path):
    ws = Workspace(tmp_path)
    model = ws.models_dir / "stuck"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(SLOW_LOAD)
    (model / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "x", data_type: TYPE_INT32, dims: [1] }]\n'
        'output [{ name: "y", data_type: TYPE_INT32, dims: [1] }]\n'
    )
    opts = triton_options(ws.models_dir)
    with pytest.raises(LaunchError) as info:
        launch(ws, "run-timeout", opts, timeout_s=4)
    assert "not ready after 4 s" in info.value.message
    assert group_pids(info.value.details["pgid"]) == []  # tritonserver and its Python stub are gone
    assert not (ws.state_dir / SERVE_STATE).exists()  # no record of a server that is not there
    assert not any(port_in_use("127.0.0.1", p) for p in (opts.http_port, opts.grpc_port, opts.metrics_port))
    assert read_events(ws.run_dir("run-timeout") / "launch.jsonl")[-1]["event"] == "launch_failed"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed to make a test certificate")
def test_grpc_tls_serves_and_verifies(tmp_path, start_triton):
    ws = Workspace(tmp_path)
    write_test_repository(ws.models_dir)
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    handle = start_triton(ws, triton_options(ws.models_dir, tls=TlsOptions(cert=cert, key=key)))
    assert handle.tls_root_cert == str(cert)
    assert TritonTextClient.for_server(handle, "grpc").generate("echo", "over tls", 4).text == "over tls "


def test_attach_records_an_external_server(tmp_path, start_triton):
    """`serve --attach` (docker compose path) starts nothing; teardown without the compose file
    cannot free the ports and says so with exit 12."""
    external = Workspace(tmp_path / "external")
    write_test_repository(external.models_dir)
    opts = triton_options(external.models_dir)
    start_triton(external, opts)
    root = tmp_path / "attached"
    result = runner.invoke(
        app,
        [
            "--root",
            str(root),
            "serve",
            "--attach",
            "--http-port",
            str(opts.http_port),
            "--grpc-port",
            str(opts.grpc_port),
            "--metrics-port",
            str(opts.metrics_port),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((root / "state" / SERVE_STATE).read_text())
    assert record["pgid"] == 0 and record["http_url"] == f"127.0.0.1:{opts.http_port}"
    down = runner.invoke(app, ["--root", str(root), "teardown", "--port-wait-s", "0.2"])
    assert down.exit_code == ExitCode.TEARDOWN and "ports still bound" in down.output


def test_stub_python_needs_an_existing_stub_site(tmp_path) -> None:
    with pytest.raises(LaunchError) as err:
        prepare_stub_python(tmp_path / "missing", tmp_path / "stub-python")
    assert err.value.exit_code == ExitCode.LAUNCH and STUB_SITE_ENV in err.value.message


def test_launch_runs_the_stub_in_its_own_venv(tmp_path, start_triton, monkeypatch) -> None:
    """With LLM_DEMO_STUB_SITE set, launch makes the stub's venv under the workspace cache and the
    Python backend stub takes its interpreter from there (first on its PATH); BYTES still round-trip."""
    ws = Workspace(tmp_path)
    write_test_repository(ws.models_dir)
    (tmp_path / "stub-site").mkdir()
    monkeypatch.setenv(STUB_SITE_ENV, str(tmp_path / "stub-site"))
    handle = start_triton(ws, triton_options(ws.models_dir))
    assert (
        TritonTextClient.for_server(handle, "grpc").generate("echo", "through the stub venv", 4).text
        == "through the stub venv "
    )
    stubs = [
        pid
        for pid in group_pids(handle.pgid)
        if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    environ = dict(
        item.split(b"=", 1) for item in Path(f"/proc/{stubs[0]}/environ").read_bytes().split(b"\0") if b"=" in item
    )
    assert environ[b"PATH"].decode().split(":")[0] == str(ws.cache_dir / "triton-stub-python" / "bin")
    pth = (ws.cache_dir / "triton-stub-python").glob("lib/python3*/site-packages/llm_demo_stub_site.pth")
    assert next(pth).read_text().splitlines()[0] == str((tmp_path / "stub-site").resolve())
