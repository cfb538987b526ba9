"""The CLI lifecycle serve -> chat -> teardown, and teardown's verification (exit 12 when not clean)."""

from __future__ import annotations

import json
import socket

from conftest_triton import SERVER_LIFETIME_S, free_port
from triton_models import write_test_repository
from typer.testing import CliRunner

from llm_demo.cli import app
from llm_demo.errors import ExitCode
from llm_demo.paths import write_json_atomic
from llm_demo.serve import SERVE_STATE, group_pids, port_in_use, stop_process_group

runner = CliRunner()
SECRET = "sk-live-" + "9" * 24


def cli(root, *args):
    return runner.invoke(app, ["--root", str(root), *args], catch_exceptions=False)


def test_serve_chat_teardown_leaves_nothing(workspace, monkeypatch):
    write_test_repository(workspace.models_dir)
    workspace.config_dir.mkdir()
    (workspace.config_dir / "serving.yaml").write_text(f"serve: {{max_lifetime_s: {SERVER_LIFETIME_S}}}\n")
    ports = [free_port() for _ in range(3)]
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)  # injected credential: never in the logs
    served = cli(
        workspace.root,
        "--run-id",
        "run-a",
        "serve",
        "--http-port",
        str(ports[0]),
        "--grpc-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
    )
    record = json.loads((workspace.state_dir / SERVE_STATE).read_text())
    try:
        assert served.exit_code == 0, served.output
        assert all(port_in_use("127.0.0.1", p) for p in ports)
        chat = cli(
            workspace.root,
            "--run-id",
            "run-a",
            "--set",
            "model.name=echo",
            "chat",
            "--transport",
            "http",
            "-m",
            f"my api_key={SECRET}",
            "-m",
            "/exit",
            "-m",
            "never sent",
        )
        assert chat.exit_code == 0, chat.output
        assert SECRET not in chat.output
        transcript = next(workspace.transcripts_dir.glob("*.jsonl")).read_text()
        assert SECRET not in transcript and '"type": "summary"' in transcript and "never sent" not in transcript
        assert "hf_xxxx" not in (workspace.root / "logs" / "run-a" / "launch.jsonl").read_text()

        down = cli(workspace.root, "--run-id", "run-b", "teardown")
        assert down.exit_code == 0, down.output
    finally:
        stop_process_group(record["pgid"], grace_s=5)
    assert group_pids(record["pgid"]) == []
    assert not any(port_in_use("127.0.0.1", p) for p in ports)
    assert not (workspace.state_dir / SERVE_STATE).exists()
    log = (workspace.root / "logs" / "run-b" / "cleanup.log").read_text()
    assert "still alive: none" in log and "still bound: none" in log and "result: clean" in log
    assert "gpu: not checked" in log and str(workspace.models_dir / "echo") in log


def test_teardown_reports_a_port_still_bound(workspace):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        write_json_atomic(
            workspace.state_file(SERVE_STATE),
            {
                "pid": 2**22 + 1,
                "pgid": 2**22 + 1,
                "run_id": "old",
                "log_path": "x",
                "http_url": f"127.0.0.1:{port}",
                "grpc_url": f"127.0.0.1:{free_port()}",
                "metrics_url": f"http://127.0.0.1:{free_port()}/metrics",
                "tls_root_cert": None,
                "started_at": "",
            },
        )
        result = runner.invoke(
            app, ["--root", str(workspace.root), "--run-id", "run-c", "teardown", "--port-wait-s", "0.5"]
        )
    assert result.exit_code == ExitCode.TEARDOWN == 12
    assert f"('127.0.0.1', {port})" in result.output
    assert "INCOMPLETE" in (workspace.root / "logs" / "run-c" / "cleanup.log").read_text()


def test_teardown_rotates_old_run_logs(workspace):
    for run in ("20200101T000000Z-aaaaaa", "20200102T000000Z-bbbbbb"):
        (workspace.logs_dir / run).mkdir(parents=True)
    serving = workspace.config_dir / "serving.yaml"
    serving.parent.mkdir(parents=True)
    serving.write_text("retention: {keep_runs: 1, max_age_days: 14}\n")
    result = cli(workspace.root, "--run-id", "run-d", "teardown")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in workspace.logs_dir.iterdir()) == ["run-d"]
    retention = json.loads((workspace.state_dir / "retention.json").read_text())
    assert sorted(retention["removed"]) == ["20200101T000000Z-aaaaaa", "20200102T000000Z-bbbbbb"]
