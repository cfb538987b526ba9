"""Canary rollout on a real Triton: promote on passing smoke tests, roll back on failing ones."""

from __future__ import annotations

import json
import re

import pytest
from conftest_triton import triton_options
from triton_models import FAILS_TO_LOAD, add_version, write_test_repository

from llm_demo import canary
from llm_demo.approvals import approve, approved_versions
from llm_demo.client import TritonTextClient
from llm_demo.errors import ExitCode, RepositoryError, SmokeTestError
from llm_demo.events import read_events


@pytest.fixture(scope="module")
def served(module_workspace, start_triton):
    ws = module_workspace
    write_test_repository(ws.models_dir)
    assert approve(ws, "canary", 1).is_symlink()  # pins version 1 in models/canary/config.pbtxt
    handle = start_triton(ws, triton_options(ws.models_dir))
    return ws, TritonTextClient.for_server(handle, "http"), handle


def loaded_versions(log_path, model):
    """Versions of `model` that Triton started loading, from its log (`loading: <model>:<v>`)."""
    return {int(v) for v in re.findall(rf'"loading: {model}:(\d+)"', log_path.read_text())}


def governance(ws):
    return [json.loads(line) for line in (ws.state_dir / canary.GOVERNANCE_LOG).read_text().splitlines()]


def test_pinning_serves_only_the_approved_version(served):
    ws, client, handle = served
    # versions 2 and 3 (empty replies) lie above approved v1 on disk: unversioned requests reach v1,
    # and the server never loaded another version, not even briefly
    assert client.generate("canary", "hi", 4).text == "v1 ok"
    assert not canary.version_ready(client.http_url, "canary", 3)
    assert loaded_versions(handle.log_path, "canary") == {1}


def test_canary_promotes_on_pass_then_rolls_back_on_failure(served):
    ws, client, _ = served
    result = canary.run_canary(ws, "run-canary", client, "canary", 2, [canary.SmokeTest("hello", expect="ok")])
    assert result.promoted and result.previous == 1
    assert (ws.production_dir / "canary" / "2").resolve() == (ws.models_dir / "canary" / "2").resolve()
    assert client.generate("canary", "hi", 4).text == "v2 ok"
    assert not canary.version_ready(client.http_url, "canary", 1)

    with pytest.raises(SmokeTestError) as info:
        canary.run_canary(ws, "run-canary", client, "canary", 3, [canary.SmokeTest("hello")])
    assert info.value.exit_code == ExitCode.SMOKE_TEST
    assert "rolled back to version 2" in info.value.message
    assert approved_versions(ws, "canary") == [1, 2]  # v3 never approved
    assert client.generate("canary", "hi", 4).text == "v2 ok"
    assert not canary.version_ready(client.http_url, "canary", 3)

    events = [e["event"] for e in governance(ws)]
    assert events == ["canary_deploy", "smoke_test", "promote", "canary_deploy", "smoke_test", "rollback"]
    rollback = governance(ws)[-1]
    assert rollback["restored"] == 2 and rollback["failed"][0]["reason"] == "empty output"
    assert [e["event"] for e in read_events(ws.run_dir("run-canary") / "canary.jsonl")] == events


def test_smoke_test_enforces_latency_sla(served):
    _, client, _ = served
    checks = canary.smoke_test(client, "slow", 1, [canary.SmokeTest("x")], canary.Sla(request_s=0.05))
    assert not checks[0]["passed"] and "SLA" in checks[0]["reason"]


def test_canary_that_fails_to_load_is_rolled_back_and_recorded(served):
    ws, client, _ = served
    add_version(ws.models_dir, "canary", 4, FAILS_TO_LOAD)
    previous = approved_versions(ws, "canary")[-1]
    before = len(governance(ws))
    with pytest.raises(SmokeTestError) as info:
        canary.run_canary(ws, "run-load-fail", client, "canary", 4, [canary.SmokeTest("hello")])
    assert info.value.exit_code == ExitCode.SMOKE_TEST == 10
    assert f"rolled back to version {previous}" in info.value.message and "failed to load" in info.value.message
    events = governance(ws)[before:]
    assert [e["event"] for e in events] == ["canary_deploy", "smoke_test", "rollback"]
    assert "this version cannot load" in events[1]["reason"] and events[2]["restored"] == previous
    assert approved_versions(ws, "canary")[-1] == previous and not canary.version_ready(client.http_url, "canary", 4)
    assert client.generate("canary", "hi", 4).text == f"v{previous} ok"


def test_canary_of_an_invalid_or_missing_version_deploys_nothing(served):
    ws, client, _ = served
    before = len(governance(ws))
    with pytest.raises(RepositoryError, match="version 9 does not exist"):
        canary.run_canary(ws, "run-invalid", client, "canary", 9, [canary.SmokeTest("hello")])
    snapshot = ws.models_dir / "canary" / "3" / "config.pbtxt"
    saved = snapshot.read_text()
    snapshot.unlink()
    try:
        with pytest.raises(RepositoryError) as info:
            canary.run_canary(ws, "run-invalid", client, "canary", 3, [canary.SmokeTest("hello")])
    finally:
        snapshot.write_text(saved)
    assert info.value.exit_code == ExitCode.REPOSITORY == 6
    problems = [e for e in read_events(ws.run_dir("run-invalid") / "repository.jsonl") if e["event"] == "problem"]
    assert [p["message"] for p in problems] == ["version directory lacks its config.pbtxt snapshot"]
    assert len(governance(ws)) == before  # nothing was deployed
