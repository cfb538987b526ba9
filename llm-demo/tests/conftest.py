"""Shared fixtures for the llm-demo tests.

* ``tiny_model_dir`` (session): a random-weight Llama model + byte-level BPE tokenizer made locally.
* ``workspace``: a :class:`~llm_demo.paths.Workspace` in a temporary directory, with ``LLM_DEMO_ROOT``
  pointing at it and the secret env vars of the real environment removed.
* ``no_network``: any socket connection to a host other than 127.0.0.1/::1/unix sockets raises
  :class:`NetworkAttempt`, and ``HF_HUB_OFFLINE=1`` is set.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from llm_demo.paths import Workspace
from llm_demo.redact import DEFAULT_SECRET_ENV_VARS


class NetworkAttempt(AssertionError):
    """Raised when code under test tries to reach a non-loopback address."""


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llm_demo.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.setenv("LLM_DEMO_ROOT", str(root))
    monkeypatch.delenv("LLM_DEMO_RUN_ID", raising=False)
    for name in DEFAULT_SECRET_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return Workspace.from_root(root)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make every non-loopback connection attempt fail loudly; returns the list of attempted addresses."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def _allowed(address: object) -> bool:
        if isinstance(address, (str, bytes)):  # AF_UNIX path
            return True
        host = address[0] if isinstance(address, tuple) else None
        return host in _LOOPBACK

    def guard_connect(self: socket.socket, address: object) -> None:
        if not _allowed(address):
            attempts.append(address)
            raise NetworkAttempt(f"network connection attempted: {address!r}")
        return real_connect(self, address)

    def guard_connect_ex(self: socket.socket, address: object) -> int:
        if not _allowed(address):
            attempts.append(address)
            raise NetworkAttempt(f"network connection attempted: {address!r}")
        return real_connect_ex(self, address)

    def guard_getaddrinfo(host: object, *args: object, **kwargs: object):
        if host not in _LOOPBACK and host is not None:
            attempts.append(host)
            raise NetworkAttempt(f"DNS lookup attempted: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guard_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guard_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guard_getaddrinfo)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return attempts


# Part 2 (Triton) fixtures live in their own plugin module.
pytest_plugins = ["conftest_triton"]
