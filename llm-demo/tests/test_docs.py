"""The documentation names only commands that exist, and the Docker Compose route it offers parses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
import yaml

from llm_demo.cli import app
from llm_demo.paths import PACKAGE_ROOT

DOCS = [PACKAGE_ROOT / "README.md", *sorted((PACKAGE_ROOT / "docs").glob("*.md"))]
COMMANDS = typer.main.get_command(app)


def is_command(words: list[str]) -> bool:
    """True when `words` (e.g. ["repo", "validate"]) name a command of the CLI."""
    group = COMMANDS
    for word in words:
        if not hasattr(group, "commands") or word not in group.commands:
            return False
        group = group.commands[word]
    return not hasattr(group, "commands")


def _command_words(argv: list[str]) -> list[str]:
    """The command words of an `llm-demo ...` line, after its global options."""
    words, i = [], 0
    takes_value = {p.opts[0] for p in COMMANDS.params if not p.is_flag} | {"--set"}
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in takes_value else 1
    for word in argv[i:]:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        words.append(word)
        if is_command(words):
            return words
    return words


def test_exit_code_table_names_only_real_commands():
    table = (PACKAGE_ROOT / "docs" / "exit-codes.md").read_text()
    raisers = set()
    for row in re.findall(r"^\| \d+ \| `\w+` \| ([^|]+) \|", table, re.M):
        raisers |= set(re.findall(r"`([a-z][a-z -]*)`", row))
    assert raisers and {"repo validate", "canary", "serve"} <= raisers
    assert [name for name in sorted(raisers) if not is_command(name.split())] == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_command_lines_exist(doc):
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
        lines += [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("llm-demo ")]
    unknown = [" ".join(argv) for argv in lines if not is_command(_command_words(argv[1:]))]
    assert unknown == []


COMPOSE = PACKAGE_ROOT / "docker-compose.yml"


def test_compose_file_serves_like_llm_demo_serve():
    service = yaml.safe_load(COMPOSE.read_text())["services"]["triton"]
    command = service["command"]
    # explicit model control (canary and rollback reload models), readiness only when loaded
    assert "--model-control-mode=explicit" in command and "--strict-readiness=true" in command
    assert "--load-model=*" in command  # each model's pinned approved version (approvals.py)
    assert all(port.startswith("${LLM_DEMO_BIND:-127.0.0.1}:") for port in service["ports"])


def test_compose_up_validates_the_repository_the_container_serves(tmp_path):
    """serve_triton.sh compose-up checks <its directory>/models before it calls docker at all (a
    recording `docker` on PATH stands in for the engine, which a CPU test host lacks)."""
    here = tmp_path / "llm-demo"
    here.mkdir()
    shutil.copy2(PACKAGE_ROOT / "serve_triton.sh", here)
    (here / "models" / "broken").mkdir(parents=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "docker-called"}\n')
    (bindir / "docker").chmod(0o755)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bindir), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "PYTHON": sys.executable,
        "LLM_DEMO_OPTS": f"--root {tmp_path / 'ws'}",
    }
    run = subprocess.run(
        ["bash", str(here / "serve_triton.sh"), "compose-up"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 6 and "broken: config.pbtxt missing" in run.stderr
    assert not (tmp_path / "docker-called").exists()


def _compose_available() -> str | None:
    """Why `docker compose config` cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker CLI on this host"
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"docker has no compose plugin here ({' '.join((probe.stderr or probe.stdout).split())[:120]})"
    return None


@pytest.mark.skipif(
    _compose_available() is not None, reason=f"docker compose config cannot run: {_compose_available()}"
)
def test_docker_compose_config_accepts_the_file(tmp_path):
    env = {**os.environ, "TRITON_TAG": "26.07", "PWD": str(PACKAGE_ROOT)}
    out = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--format", "json"],
        cwd=PACKAGE_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    triton = json.loads(out.stdout)["services"]["triton"]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
    assert f"--model-repository={PACKAGE_ROOT}/models" in triton["command"]
    assert {p["host_ip"] for p in triton["ports"]} == {"127.0.0.1"}
