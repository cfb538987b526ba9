"""`ray job submit --working-dir . -- python -m llem_ray.study study.yaml` against a `ray start --head`
on 127.0.0.1, with Ray 2.60's token authentication, as docs/cluster.md describes it.

The head runs in its own session with its own RAY_TMPDIR and free ports, so it cannot be mistaken
for any other Ray on this machine; every process it started is found by a marker in its environment
and ended by pid at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from llem_ray.energy.amd_guard import SHIM_DIR
from tests.ray.helpers import REPO_ROOT, processes_marked
from tests.ray.test_resume import STUDY

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head():
    """A `ray start --head --block` with 2 logical GPUs; yields (dashboard URL, environment)."""
    marker, tmp = uuid.uuid4().hex, tempfile.mkdtemp(prefix="llemjob", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LLEM_PLUGINS")}
    env.update(
        LLEM_TEST_MARKER=marker,
        RAY_TMPDIR=tmp,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(SHIM_DIR),
    )
    dashboard = _free_port()
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(_free_port()),
            "--dashboard-port",
            str(dashboard),
            "--ray-client-server-port",
            str(_free_port()),
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--num-cpus",
            "4",
            "--num-gpus",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401 without a token: the API is up
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("ray start --head did not serve its dashboard within 120 s")
        yield url, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        for proc in processes_marked(marker):
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_job_submit_runs_a_study_with_the_auth_token(ray_head, tmp_path):
    url, env = ray_head
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(
            {**STUDY, "sweep": {"random_seed": [11, 12]}, "execution": {**STUDY["execution"], "n_cycles": 1}}
        )
    )
    out = tmp_path / "out"
    token = subprocess.run([str(BIN / "ray"), "get-auth-token"], env=env, capture_output=True, text=True, timeout=60)
    assert token.returncode == 0 and token.stdout.strip()
    client_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token.stdout.strip().splitlines()[-1]}
    submit = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            url,
            "--working-dir",
            str(REPO_ROOT),
            "--runtime-env-json",
            '{"env_vars": {"LLEM_PLUGINS": "tests.fakes"}}',
            "--",
            sys.executable,
            "-m",
            "llem_ray.study",
            str(config),
            "--output",
            str(out),
            "--quiet",
        ],
        env=client_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]
    assert "succeeded" in submit.stdout + submit.stderr
    (study_dir,) = list(out.iterdir())
    assert pq.read_table(study_dir / "results.parquet").num_rows == 2
