"""CPU-only end to end: `python -m llem_ray.study` starts its own local Ray (no GPU anywhere) and
measures the built-in tiny random-weight Llama with the real PyTorch backend, then leaves no Ray
process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pyarrow.parquet as pq
import pytest
import yaml

from llem_ray.errors import EXIT_OK
from tests.ray.helpers import REPO_ROOT, load_manifest, processes_marked

pytestmark = pytest.mark.ray

STUDY = {
    "name": "cpu-e2e",
    "model": "llem/tiny-llama",
    "dataset": {"source": "synthetic", "input_len_tokens": 16},
    "precision": "fp32",
    "n": 2,
    "max_input_tokens": 16,
    "max_output_tokens": 4,
    "warmup": {"n_warmup": 1, "max_output_tokens": 2, "thermal_floor_s": 0},
    "baseline": {"enabled": False},
    "sweep": {"pytorch.batch_size": [1, 2]},
    "execution": {"n_cycles": 1, "config_gap_seconds": 0, "cycle_gap_seconds": 0, "timeout_s": 300},
}


def test_cpu_only_study_with_the_real_pytorch_backend(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY))
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("LLEM_PLUGINS", "RAY_ADDRESS")}
    env["LLEM_TEST_MARKER"] = marker
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llem_ray.study",
            str(config),
            "--address",
            "local",
            "--output",
            str(tmp_path),
            "--quiet",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    (study_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    table = pq.read_table(study_dir / "results.parquet").to_pylist()
    assert len(table) == 2 and {r["batch_size"] for r in table} == {1, 2}
    for row in table:
        assert row["device"] == "cpu" and row["backend"] == "pytorch"
        assert row["output_tokens"] == 2 * 4 and row["tokens_per_second"] > 0
        assert row["placement.node_id"] and row["placement.gpu_uuids"] == []
    assert all(e.status == "completed" and e.history[0].gpu_ids == [] for e in load_manifest(study_dir).entries)
    assert "tiny-llama_pytorch_fp32_bs2" in proc.stdout

    deadline = time.monotonic() + 30
    while processes_marked(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = processes_marked(marker)
    assert not leftovers, f"the driver left Ray processes behind: {[p.name() for p in leftovers]}"
