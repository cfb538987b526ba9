"""Golden warm-up end to end: A's `python` runtime serving the tiny random model on the real Triton."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket

import pytest
from conftest_triton import SERVER_LIFETIME_S, free_port, triton_options
from triton_models import write_port_squatter
from typer.testing import CliRunner

from llm_demo.cli import app
from llm_demo.client import TritonTextClient
from llm_demo.config import load_config
from llm_demo.errors import ExitCode, GoldenDeviationError
from llm_demo.events import read_events
from llm_demo.golden import similarity
from llm_demo.repository import generate
from llm_demo.warmup import WarmupPlan, gpu_captured, memory_delta_mib, percentile, run_warmup

PROMPTS = ["hello world", "the answer is"]


@pytest.fixture(scope="module")
def served(module_workspace, start_triton, tiny_model_dir):
    cfg = load_config(None, {"model.local_dir": str(tiny_model_dir), "model.name": "tiny", "precision.profile": "fp32"})
    repo = generate(module_workspace, cfg, "python")
    return module_workspace, start_triton(module_workspace, triton_options(repo))


def plan(ws, **kw):
    return WarmupPlan(
        model="tiny", prompts=PROMPTS, max_tokens=6, repeats=2, golden_path=ws.state_dir / "golden" / "tiny.json", **kw
    )


def test_warmup_records_then_matches_golden(served):
    ws, server = served
    summary = run_warmup(ws, "run-record", TritonTextClient.for_server(server, "grpc"), plan(ws, record_golden=True))
    inference = summary["inference"]
    # no NVML on this host: the GPU snapshots say why, and success.gpu does not claim them
    assert summary["success"] == {"gpu": False, "inference": True, "golden": True}
    assert inference["requests"] == 4 and inference["failures"] == 0 and inference["streamed"] is True
    for key in ("ttft_s", "latency_s"):
        assert 0 < inference[key]["p50"] <= inference[key]["p95"] < 60
    assert inference["ttft_s"]["p50"] <= inference["latency_s"]["p50"]
    assert inference["output_tokens"] > 0 and inference["tokens_per_s"]["p50"] > 0
    assert summary["gpu"]["before"]["nvml"] is False and "NVML" in summary["gpu"]["before"]["reason"]
    requests = [e for e in read_events(ws.run_dir("run-record") / "inference.jsonl") if e["event"] == "request"]
    assert len(requests) == 4 and all(r["output"] for r in requests)
    golden = json.loads((ws.state_dir / "golden" / "tiny.json").read_text())
    assert [s["prompt"] for s in golden["samples"]] == PROMPTS

    # greedy decoding on the same weights, over the other transport, reproduces the goldens
    again = run_warmup(ws, "run-compare", TritonTextClient.for_server(server, "http"), plan(ws))
    assert again["success"]["golden"] is True and again["golden"]["deviations"] == 0
    assert set(again["golden"]["similarities"].values()) == {1.0}


def test_golden_deviation_is_flagged_and_saved(served):
    ws, server = served
    path = ws.state_dir / "golden" / "tiny.json"
    golden = json.loads(path.read_text())
    golden["samples"][0]["output"] = "a completely different reference answer"
    path.write_text(json.dumps(golden))
    with pytest.raises(GoldenDeviationError) as info:
        run_warmup(ws, "run-deviate", TritonTextClient.for_server(server, "grpc"), plan(ws))
    assert info.value.exit_code == ExitCode.GOLDEN_DEVIATION
    assert "--record-golden" in info.value.remediation
    divergence = json.loads((ws.run_dir("run-deviate") / "golden-divergence.json").read_text())
    assert [d["prompt"] for d in divergence["divergent"]] == [PROMPTS[0]]
    assert divergence["divergent"][0]["expected"] == "a completely different reference answer"
    assert divergence["divergent"][0]["actual"] and divergence["guidance"]
    summary = json.loads((ws.run_dir("run-deviate") / "summary.json").read_text())
    assert summary["success"]["golden"] is False and summary["success"]["inference"] is True


def test_gpu_flag_needs_every_snapshot_from_nvml():
    nvml, absent = {"nvml": True, "devices": []}, {"nvml": False, "reason": "NVML unavailable on this host"}
    assert gpu_captured({"before": nvml, "after": nvml})
    assert not gpu_captured({"before": nvml, "after": absent}) and not gpu_captured({})


def test_memory_delta_between_snapshots():
    def snap(used):
        return {"nvml": True, "devices": [{"memory_used_bytes": used}]}

    assert memory_delta_mib(snap(2**30), snap(2**30 + 3 * 2**20)) == [3.0]
    assert memory_delta_mib({"nvml": False}, snap(0)) is None


def test_percentile_and_similarity_units():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([], 50) is None
    assert similarity("abc", "abc") == 1.0 and similarity("abc", "xyz") == 0.0


def test_cli_warmup_full_flow_then_deviation(workspace, tiny_model_dir):
    """prepare (prerequisites, acquisition, build, repository) -> serve -> warm-up -> teardown -> manifest, twice."""
    from llm_demo.serve import SERVE_STATE

    (workspace.config_dir).mkdir()
    (workspace.config_dir / "serving.yaml").write_text(
        f"serve: {{http_port: {free_port()}, grpc_port: {free_port()}, metrics_port: {free_port()}, "
        f"max_lifetime_s: {SERVER_LIFETIME_S}}}\n"
        "warmup: {prompts: ['hello world'], max_tokens: 6, repeats: 2}\n"
    )
    base = [
        "--root",
        str(workspace.root),
        "--model-dir",
        str(tiny_model_dir),
        "--set",
        "model.name=tiny",
        "--precision",
        "fp32",
    ]
    first = CliRunner().invoke(app, [*base, "--run-id", "run-1", "warmup", "--record-golden"])
    assert first.exit_code == 0, first.output
    assert "TTFT p50" in first.output and "no NVML" in first.output
    manifest = json.loads((workspace.state_dir / "run-1-manifest.json").read_text())
    assert manifest["success"] == {"gpu": False, "inference": True, "golden": True}  # no NVML here
    assert set(manifest["durations_s"]) == {"prepare", "launch", "inference", "teardown"}
    assert {"prereq-manifest.json", "cache-manifest.json", "engine-manifest.json"} <= set(manifest["manifests"])
    assert manifest["gpu_snapshots"]["after"]["nvml"] is False
    assert any(p.endswith("triton.log") for p in manifest["logs"])
    assert "result: clean" in (workspace.logs_dir / "run-1" / "cleanup.log").read_text()
    gpu = json.loads((workspace.logs_dir / "run-1" / "summary.json").read_text())["gpu"]
    assert set(gpu) == {"before_launch", "before", "after", "after_teardown"}
    assert "GPU memory after teardown vs before launch (MiB per GPU): no NVML" in first.output

    golden = workspace.state_dir / "golden" / "tiny.json"
    data = json.loads(golden.read_text())
    data["samples"][0]["output"] = "zzzz"
    golden.write_text(json.dumps(data))
    second = CliRunner().invoke(app, [*base, "--run-id", "run-2", "warmup"])
    assert second.exit_code == ExitCode.GOLDEN_DEVIATION, second.output
    assert "golden-divergence.json" in second.output
    assert "result: clean" in (workspace.logs_dir / "run-2" / "cleanup.log").read_text()  # torn down anyway
    assert not (workspace.state_dir / SERVE_STATE).exists()
    assert json.loads((workspace.state_dir / "run-2-manifest.json").read_text())["success"]["golden"] is False


def _serving_yaml(workspace, extra=""):
    """Three free loopback ports (and a server that stops by itself) in the workspace's serving.yaml."""
    ports = [free_port() for _ in range(3)]
    workspace.config_dir.mkdir(exist_ok=True)
    (workspace.config_dir / "serving.yaml").write_text(
        f"serve: {{http_port: {ports[0]}, grpc_port: {ports[1]}, metrics_port: {ports[2]}, exit_timeout_s: 2, "
        f"max_lifetime_s: {SERVER_LIFETIME_S}}}\n{extra}"
    )
    return ports


def test_warmup_port_collision_names_the_settings_warmup_reads(workspace, tiny_model_dir):
    ports = _serving_yaml(workspace)
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports[0]))
        held.listen()
        result = CliRunner().invoke(
            app, ["--root", str(workspace.root), "--model-dir", str(tiny_model_dir), "--run-id", "run-port", "warmup"]
        )
    assert result.exit_code == ExitCode.LAUNCH == 7, result.output
    assert "serve.http_port in config/serving.yaml" in result.output  # warmup has no --http-port flag
    assert not (workspace.logs_dir / "run-port" / "cleanup.log").exists()  # it started nothing, stopped nothing
    assert (workspace.state_dir / "run-port-manifest.json").is_file()


def test_warmup_keeps_its_exit_code_when_its_teardown_fails(workspace, tiny_model_dir, tmp_path):
    """A golden deviation (9) followed by a teardown that finds a port still bound (12): exit 9, and
    the teardown failure is reported, not lost."""
    golden = tmp_path / "golden.json"
    golden.write_text(
        json.dumps(
            {
                "model": "tiny",
                "samples": [{"prompt": "hello world", "max_tokens": 6, "output": "nothing like what the model says"}],
            }
        )
    )
    ports = _serving_yaml(
        workspace, f"warmup: {{prompts: ['hello world'], max_tokens: 6, repeats: 1, golden_file: '{golden}'}}\n"
    )
    pidfile = tmp_path / "squatter.pid"
    write_port_squatter(workspace.models_dir, ports[0], hold_s=25.0, pidfile=pidfile)
    try:
        result = CliRunner().invoke(
            app,
            [
                "--root",
                str(workspace.root),
                "--model-dir",
                str(tiny_model_dir),
                "--set",
                "model.name=tiny",
                "--run-id",
                "run-both",
                "warmup",
            ],
        )
    finally:
        if pidfile.exists():  # the squatter ends by itself after hold_s; end it now
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
    assert result.exit_code == ExitCode.GOLDEN_DEVIATION == 9, result.output
    assert "after the warm-up failed, this failed as well: TeardownIncompleteError" in result.output
    error = json.loads((workspace.logs_dir / "run-both" / "error.json").read_text())
    assert error["exit_code"] == 9 and "ports still bound" in error["details"]["after_failure"][0]
    assert "result: INCOMPLETE" in (workspace.logs_dir / "run-both" / "cleanup.log").read_text()
    assert (workspace.state_dir / "run-both-manifest.json").is_file()
