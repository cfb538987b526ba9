"""The README's quick start, run as written in a fresh copy of the repository, with no hub access.

The copy holds the files git tracks (and untracked ones it does not ignore), as a clone would. The
only changes to it are environmental: the shipped `config/serving.yaml` gets free loopback ports
(8000-8002 may be taken on a shared test host) and a server lifetime (every server a test starts
stops by itself). `pip install` is not run: it needs a package index, and this interpreter already has
the `serve` extra; the `llm-demo` console script then imports the copy's package through PYTHONPATH.
A hub that is asked anything fails: HF_ENDPOINT points at a closed loopback port.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_triton import SERVER_LIFETIME_S, free_port

from llm_demo.paths import PACKAGE_ROOT, read_json
from llm_demo.redact import DEFAULT_SECRET_ENV_VARS
from llm_demo.serve import SERVE_STATE, group_pids, stop_process_group

README = PACKAGE_ROOT / "README.md"


def quick_start_commands() -> list[str]:
    """The lines of the first bash block under the README's `## Quick start` heading."""
    section = README.read_text(encoding="utf-8").split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def fresh_copy(dest: Path) -> Path:
    repo = PACKAGE_ROOT.parent
    listed = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so no clone to copy: {listed.stderr.strip()}")
    for rel in filter(None, listed.stdout.split("\0")):
        src = repo / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_readme_quick_start_runs_offline_as_written(tmp_path):
    console = shutil.which("llm-demo", path=str(Path(sys.executable).parent))
    if console is None:
        pytest.skip("the llm-demo console script is not installed next to this Python (pip install -e llm-demo)")
    commands = quick_start_commands()
    assert commands[0] == "pip install -e 'llm-demo[serve]'" and "llm-demo tiny-model ~/llm-demo-tiny" in commands
    clone = fresh_copy(tmp_path / "clone")
    serving = clone / "llm-demo" / "config" / "serving.yaml"
    text = serving.read_text()
    for key in ("http_port", "grpc_port", "metrics_port"):
        text = re.sub(rf"^(  {key}): \d+", rf"\1: {free_port()}", text, count=1, flags=re.M)
    serving.write_text(re.sub(r"^(  max_lifetime_s): null", rf"\1: {SERVER_LIFETIME_S}", text, count=1, flags=re.M))
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in DEFAULT_SECRET_ENV_VARS and not k.startswith(("LLM_DEMO_", "HF_"))
    }
    env.update(
        HOME=str(home),
        HF_ENDPOINT="http://127.0.0.1:9",
        PYTHONPATH=str(clone / "llm-demo"),
        PATH=os.pathsep.join([str(Path(console).parent), env.get("PATH", "")]),
    )
    script = "\n".join(["set -euo pipefail", *commands[1:]])
    state = clone / "llm-demo" / "state"
    try:
        run = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=540)
    finally:
        record = read_json(state / SERVE_STATE)
        if record and record["pgid"]:
            stop_process_group(record["pgid"], grace_s=5)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (home / "llm-demo-tiny" / "model.safetensors").is_file()
    assert "warm-up ok" in run.stdout and len(read_json(state / "golden" / "tinyllama.json")["samples"]) == 3
    assert any(p.name.endswith("-manifest.json") and p.name[:8].isdigit() for p in state.iterdir())
    transcript = next((clone / "llm-demo" / "transcripts").glob("*.jsonl")).read_text()
    assert '"type": "turn"' in transcript and "hello world" in transcript
    assert "teardown clean" in run.stdout and not (state / SERVE_STATE).exists()
    assert record is None or group_pids(record["pgid"]) == []


def test_tiny_model_refuses_a_directory_that_holds_files(tmp_path):
    from typer.testing import CliRunner

    from llm_demo.cli import app

    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["--root", str(tmp_path / "ws"), "tiny-model", str(target)])
    assert result.exit_code == 2 and f"{target} already exists and is not an empty directory" in result.output
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "ws"]  # no temporary directory left
