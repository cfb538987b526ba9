"""The Ray the driver starts must not change how child processes behave in the driver or in actors.

Regression: with Ray's child reaper enabled (`RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper`)
Ray 2.60 ignores SIGCHLD in the driver and workers, and `subprocess` then reports exit code 0 for a
child that exited 3 — for the rest of the process. The driver no longer enables it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.ray.helpers import REPO_ROOT

pytestmark = pytest.mark.ray

SCRIPT = """
import subprocess, sys
import ray
from llem_ray.cluster.driver import StudyOptions, _connect

_connect(StudyOptions(address="local", quiet=True))
driver_rc = subprocess.run([sys.executable, "-c", "raise SystemExit(3)"]).returncode

@ray.remote(num_cpus=0)
def child_exit_code():
    import subprocess, sys
    return subprocess.run([sys.executable, "-c", "raise SystemExit(3)"]).returncode

print("exit codes", driver_rc, ray.get(child_exit_code.remote(), timeout=120))
ray.shutdown()
"""


def test_child_exit_codes_survive_in_driver_and_workers():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "LLEM_PLUGINS", "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper")
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exit codes 3 3" in proc.stdout
