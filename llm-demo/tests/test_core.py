"""Workspace, atomic JSON, redaction, event log, error mapping of the CLI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_demo import errors
from llm_demo.events import EventLog, read_events
from llm_demo.paths import PACKAGE_ROOT, Workspace, iso, new_run_id, parse_iso, read_json, utc_now, write_json_atomic
from llm_demo.redact import MASK, Redactor


def test_run_id_is_sortable_and_unique() -> None:
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", i) for i in ids)


def test_iso_roundtrip() -> None:
    now = utc_now().replace(microsecond=0)
    assert parse_iso(iso(now)) == now


def test_workspace_root_from_env(workspace: Workspace, tmp_path: Path) -> None:
    assert Workspace.from_root().root == workspace.root
    assert Workspace.from_root(tmp_path / "other").root == (tmp_path / "other").resolve()
    assert workspace.run_dir("r1") == workspace.root / "logs" / "r1"
    assert workspace.run_dir("r1").is_dir()


def test_config_file_falls_back_to_shipped(workspace: Workspace) -> None:
    assert workspace.config_file("model.yaml") == PACKAGE_ROOT / "config" / "model.yaml"
    (workspace.config_dir).mkdir()
    (workspace.config_dir / "model.yaml").write_text("x: 1\n")
    assert workspace.config_file("model.yaml") == workspace.config_dir / "model.yaml"


def test_write_json_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "d" / "m.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]
    with pytest.raises(TypeError):
        write_json_atomic(target, {1j: 1})  # non-string key
    assert read_json(target) == {"a": 2}
    assert read_json(tmp_path / "missing.json", default={}) == {}


@pytest.mark.parametrize(
    "text, secret",
    [
        ("token hf_abcdefghijklmnopqrstuvwxyz123456 used", "hf_abcdefghijklmnopqrstuvwxyz123456"),
        ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("api_key=s3cr3tvalue&x=1", "s3cr3tvalue"),
        ('{"password": "hunter22"}', "hunter22"),
        ("key AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("https://user:pa55word@example.com/x", "pa55word"),
        ("ngc nvapi-AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nvapi-AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ],
)
def test_default_patterns(text: str, secret: str) -> None:
    out = Redactor(environ={}).redact(text)
    assert secret not in out
    assert MASK in out


def test_context_kept_and_plain_text_untouched() -> None:
    r = Redactor(environ={})
    assert r.redact("api_key=abcdef123") == f"api_key={MASK}"
    assert r.redact("https://user:pw1234@host/p") == f"https://user:{MASK}@host/p"
    plain = "the model answered 42 tokens in 10 ms"
    assert r.redact(plain) == plain


def test_env_literals_and_custom_patterns() -> None:
    r = Redactor.from_config(
        {"patterns": [r"sk-[a-z]{6}"], "secret_env_vars": ["MY_SECRET"]},
        environ={"MY_SECRET": "plainlooking", "HF_TOKEN": "xyz-notpattern"},
    )
    out = r.redact("a plainlooking b xyz-notpattern c sk-abcdef d")
    assert "plainlooking" not in out and "xyz-notpattern" not in out and "sk-abcdef" not in out
    nested = r.redact_obj({"k": ["plainlooking", 3, {"plainlooking": None}]})
    assert json.dumps(nested).count(MASK) == 2
    r.add_literal("token-from-a-file")
    carried = Redactor.from_config({}, environ={}, literals=r.literals)
    assert carried.redact("x token-from-a-file y") == f"x {MASK} y"


def test_event_log_appends_redacted_lines(workspace: Workspace) -> None:
    log = EventLog(workspace, "run1", "download", Redactor(environ={"HF_TOKEN": "hf_secretsecretsecretsecret00"}))
    log.emit("start", model_id="org/m")
    log.emit("auth", header="Bearer hf_secretsecretsecretsecret00")
    events = read_events(workspace.root / "logs" / "run1" / "download.jsonl")
    assert [e["event"] for e in events] == ["start", "auth"]
    assert all(e["stage"] == "download" and e["run"] == "run1" and e["ts"].endswith("Z") for e in events)
    assert "hf_secret" not in (workspace.root / "logs" / "run1" / "download.jsonl").read_text()


def test_exit_codes_unique_and_documented() -> None:
    codes = [c.value for c in errors.ExitCode]
    assert len(codes) == len(set(codes))
    doc = (PACKAGE_ROOT / "docs" / "exit-codes.md").read_text()
    for code in errors.ExitCode:
        assert re.search(rf"^\|\s*{code.value}\s*\|\s*`{code.name}`", doc, re.M), code
    assert errors.TlsFilesMissingError("x").exit_code == 8
    assert errors.ChecksumError("x").exit_code == errors.ExitCode.CACHE


def test_cli_version() -> None:
    from llm_demo.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and "llm-demo" in result.output


def test_package_imports_nothing_from_other_packages() -> None:
    for path in (PACKAGE_ROOT / "llm_demo").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+llem_ray\b", text, re.M), path
    assert os.path.basename(PACKAGE_ROOT) == "llm-demo"
