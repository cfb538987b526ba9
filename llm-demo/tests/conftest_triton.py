"""Fixtures that run the real `tritonserver` (nvidia-pytriton wheel) on 127.0.0.1, CPU only.

* `free_port()`: an unused TCP port on 127.0.0.1 (bind port 0, read it back, release it), never one
  it returned before in this process (the kernel may hand a released port out again at once, so
  three calls for one server's listeners could collide).
* `triton_options(repo)`: ServeOptions on three free loopback ports, short exit timeout, and a
  maximum lifetime (`SERVER_LIFETIME_S`) after which the server stops on its own.
* `module_workspace` (module): a Workspace in a temporary directory, shared by one test module.
* `start_triton` (module): `start_triton(workspace, options, **launch_kwargs) -> ServerHandle`;
  every server it started is stopped (whole process group) when the module ends, and the
  finaliser asserts that none of their processes is left.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from llm_demo.paths import Workspace
from llm_demo.serve import ServerHandle, group_pids, launch, stop_process_group
from llm_demo.triton import ServeOptions

#: Every test server stops by itself after this long, even if the test run is killed.
SERVER_LIFETIME_S = 600


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def triton_options(repo: Path, **overrides) -> ServeOptions:
    opts = ServeOptions(
        model_repository=repo,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        exit_timeout_s=2,
        max_lifetime_s=SERVER_LIFETIME_S,
    )
    for key, value in overrides.items():
        setattr(opts, key, value)
    return opts


@pytest.fixture(scope="module")
def module_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("ws-triton"))


@pytest.fixture(scope="module")
def start_triton():
    started: list[ServerHandle] = []

    def start(workspace: Workspace, options: ServeOptions, run_id: str = "test-run", **kwargs) -> ServerHandle:
        kwargs.setdefault("timeout_s", 120.0)
        handle = launch(workspace, run_id, options, **kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        stop_process_group(handle.pgid, handle.proc, grace_s=10.0)
    leftovers = {h.pgid: group_pids(h.pgid) for h in started if group_pids(h.pgid)}
    assert not leftovers, f"Triton processes left behind: {leftovers}"
