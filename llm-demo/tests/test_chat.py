"""Chat client against a real Triton: context across turns, redaction, budget, rate limit."""

from __future__ import annotations

import json

import pytest
from conftest_triton import triton_options
from triton_models import write_test_repository
from typer.testing import CliRunner

from llm_demo.chat import ChatSession, ChatSettings, RateLimiter
from llm_demo.cli import app
from llm_demo.client import InferenceFailed, TritonTextClient
from llm_demo.redact import Redactor

SECRET = "hf_" + "Zq7" * 10  # looks like a Hugging Face token


@pytest.fixture(scope="module")
def server(module_workspace, start_triton):
    write_test_repository(module_workspace.models_dir)
    return start_triton(module_workspace, triton_options(module_workspace.models_dir))


def entries(session):
    return [json.loads(line) for line in session.path.read_text().splitlines()]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_context_is_kept_across_turns_and_secrets_are_redacted(module_workspace, server, transport):
    client = TritonTextClient.for_server(server, transport)
    session = ChatSession(
        module_workspace,
        client,
        ChatSettings(model="echo", max_tokens=64, system_prompt=""),
        redactor=Redactor(),
        model_id="test/echo",
        config_hash="abc123",
    )
    session.ask(f"my name is Ada and my token is {SECRET}")
    # `echo` streams back its prompt: the second reply shows the first turn was sent as context
    reply = session.ask("what is my name?")
    assert "Ada" in reply and "what is my name?" in reply
    session.close()

    log = entries(session)
    assert [e["type"] for e in log] == ["session", "turn", "turn", "summary"]
    meta = log[0]
    assert meta["model"] == "echo" and meta["model_id"] == "test/echo" and meta["config_hash"] == "abc123"
    assert meta["transport"] == transport and meta["started_at"]
    assert log[2]["turns_in_context"] == 1 and log[2]["streamed"] is True
    assert log[-1]["turns"] == 2 and log[-1]["reason"] == "user_exit"
    text = session.path.read_text()
    assert SECRET not in text and "[REDACTED]" in text
    assert session.path.parent == module_workspace.transcripts_dir


def test_memory_budget_drops_oldest_turns(module_workspace, server):
    client = TritonTextClient.for_server(server, "http")
    settings = ChatSettings(
        model="echo", max_tokens=4, memory_budget_tokens=20, system_prompt="", rate_limit_per_min=6000
    )
    session = ChatSession(module_workspace, client, settings)
    for word in ("alpha", "bravo", "charlie", "delta", "echo"):
        session.ask(f"remember the word {word} please")
    prompt, tokens, _ = session.build_prompt("next")
    assert tokens <= 20
    assert "alpha" not in prompt and "word echo" in prompt  # oldest gone, latest kept
    session.close("test_end")
    assert entries(session)[-1]["turns_dropped_from_memory"] >= 1


def test_failed_request_is_logged_and_session_survives(module_workspace, server):
    client = TritonTextClient.for_server(server, "http")
    session = ChatSession(module_workspace, client, ChatSettings(model="no-such-model"))
    with pytest.raises(InferenceFailed):
        session.ask("hello")
    session.close("error")
    assert [e["type"] for e in entries(session)] == ["session", "error", "summary"]


def test_rate_limiter_blocks_beyond_burst():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(per_min=60, burst=2, clock=lambda: now[0], sleep=sleep)
    assert limiter.acquire() == 0 and limiter.acquire() == 0
    assert limiter.acquire() == pytest.approx(1.0)  # one request per second once the burst is spent
    assert slept == [pytest.approx(1.0)]


def test_cli_transcript_names_the_model_dir_it_was_given(module_workspace, server, tmp_path):
    """With --model-dir the transcript's model id is that directory, not model.yaml's hub id."""
    model_dir = tmp_path / "local-model"
    before = set(module_workspace.transcripts_dir.glob("*.jsonl"))
    result = CliRunner().invoke(
        app,
        [
            "--root",
            str(module_workspace.root),
            "--model-dir",
            str(model_dir),
            "chat",
            "--model",
            "echo",
            "--transport",
            "http",
            "-m",
            "hello",
            "-m",
            "/exit",
        ],
    )
    assert result.exit_code == 0, result.output
    (path,) = set(module_workspace.transcripts_dir.glob("*.jsonl")) - before
    assert json.loads(path.read_text().splitlines()[0])["model_id"] == str(model_dir)
