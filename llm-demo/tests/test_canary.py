"""Canary rollout on a real Triton: promote on passing smoke tests, roll back on failing ones."""

from __future__ import annotations

import json

import pytest
from conftest_triton import triton_options
from triton_models import write_test_repository

from llm_demo import canary
from llm_demo.client import TritonTextClient
from llm_demo.errors import ExitCode, SmokeTestError
from llm_demo.events import read_events


@pytest.fixture(scope="module")
def served(module_workspace, start_triton):
    ws = module_workspace
    write_test_repository(ws.models_dir)
    canary.approve(ws, "canary", 1)
    handle = start_triton(ws, triton_options(ws.models_dir))
    client = TritonTextClient.for_server(handle, "http")
    assert canary.pin_approved_versions(ws, client, ["canary"]) == {"canary": [1]}
    return ws, client


def governance(ws):
    return [json.loads(line) for line in (ws.state_dir / canary.GOVERNANCE_LOG).read_text().splitlines()]


def test_pinning_serves_only_the_approved_version(served):
    ws, client = served
    # version 3 (broken) is the highest on disk; unversioned requests must still reach approved v1
    assert client.generate("canary", "hi", 4).text == "v1 ok"
    assert not canary.version_ready(client.http_url, "canary", 3)


def test_canary_promotes_on_pass_then_rolls_back_on_failure(served):
    ws, client = served
    result = canary.run_canary(ws, "run-canary", client, "canary", 2, [canary.SmokeTest("hello", expect="ok")])
    assert result.promoted and result.previous == 1
    assert (ws.production_dir / "canary" / "2").resolve() == (ws.models_dir / "canary" / "2").resolve()
    assert client.generate("canary", "hi", 4).text == "v2 ok"
    assert not canary.version_ready(client.http_url, "canary", 1)

    with pytest.raises(SmokeTestError) as info:
        canary.run_canary(ws, "run-canary", client, "canary", 3, [canary.SmokeTest("hello")])
    assert info.value.exit_code == ExitCode.SMOKE_TEST
    assert "rolled back to version 2" in info.value.message
    assert canary.approved_versions(ws, "canary") == [1, 2]  # v3 never approved
    assert client.generate("canary", "hi", 4).text == "v2 ok"
    assert not canary.version_ready(client.http_url, "canary", 3)

    events = [e["event"] for e in governance(ws)]
    assert events == ["canary_deploy", "smoke_test", "promote", "canary_deploy", "smoke_test", "rollback"]
    rollback = governance(ws)[-1]
    assert rollback["restored"] == 2 and rollback["failed"][0]["reason"] == "empty output"
    assert [e["event"] for e in read_events(ws.run_dir("run-canary") / "canary.jsonl")] == events


def test_smoke_test_enforces_latency_sla(served):
    _, client = served
    checks = canary.smoke_test(client, "slow", 1, [canary.SmokeTest("x")], canary.Sla(request_s=0.05))
    assert not checks[0]["passed"] and "SLA" in checks[0]["reason"]
