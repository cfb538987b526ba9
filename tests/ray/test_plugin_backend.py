"""Adding a backend is one module plus one registration (issue 15): the plugin `tests.echo_backend`
registers engine 'echo' with its own `echo:` section, loaded the way every plugin is (`LLEM_PLUGINS`),
and `llem run --dry-run` and a real local-Ray study take it like a built-in."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from llem_ray.errors import EXIT_CONFIG, EXIT_OK
from llem_ray.results.persistence import RESULT_FILE, from_json
from tests.ray.helpers import REPO_ROOT, load_manifest

pytestmark = pytest.mark.ray

EXPERIMENT = {
    "backend": "echo",
    "model": "llem/tiny-llama",
    "dataset": {"source": "synthetic", "input_len_tokens": 8},
    "n": 4,
    "max_input_tokens": 8,
    "max_output_tokens": 4,
    "warmup": {"n_warmup": 1, "max_output_tokens": 2, "thermal_floor_s": 0},
    "baseline": {"enabled": False},
    "echo": {"step_ms": 2.0, "max_concurrent": 2},
}


def _env(plugins: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLEM_PLUGINS", "RAY_ADDRESS")}
    return {**env, "LLEM_PLUGINS": plugins} if plugins else env


def _llem(args: list[str], plugins: str | None, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llem_ray", *args],
        cwd=REPO_ROOT,
        env=_env(plugins),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_llem_run_dry_run_validates_a_plugin_backend_and_its_section(tmp_path):
    good, bad = tmp_path / "echo.yaml", tmp_path / "echo_bad.yaml"
    good.write_text(yaml.safe_dump(EXPERIMENT))
    bad.write_text(yaml.safe_dump({**EXPERIMENT, "echo": {"step_ms": -1.0}}))

    planned = _llem(["run", str(good), "--dry-run"], "tests.echo_backend", 120)
    assert planned.returncode == EXIT_OK, planned.stderr[-3000:]
    assert "tiny-llama_echo_bf16_bs2" in planned.stdout, "batch size is echo.max_concurrent capped by n"

    refused = _llem(["run", str(bad), "--dry-run"], "tests.echo_backend", 120)
    assert refused.returncode == EXIT_CONFIG
    assert "echo_bad.yaml" in refused.stderr and "echo.step_ms" in refused.stderr

    unplugged = _llem(["run", str(good), "--dry-run"], None, 120)
    assert unplugged.returncode == EXIT_CONFIG
    assert "backend: unknown backend 'echo' (registered: pytorch, vllm, tensorrt)" in unplugged.stderr


def test_a_local_ray_study_measures_the_plugin_backend(tmp_path):
    study = {
        "name": "echo-study",
        **{k: v for k, v in EXPERIMENT.items() if k != "echo"},
        "echo": {"step_ms": 2.0},
        "sweep": {"echo.max_concurrent": [1, 2]},
        "execution": {"n_cycles": 1, "config_gap_seconds": 0, "cycle_gap_seconds": 0, "timeout_s": 300},
    }
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
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
        env=_env("tests.echo_backend"),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    (study_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = pq.read_table(study_dir / "results.parquet").to_pylist()
    assert sorted((r["backend"], r["batch_size"]) for r in rows) == [("echo", 1), ("echo", 2)]
    assert all(r["output_tokens"] == 4 * 4 and r["tokens_per_second"] > 0 for r in rows)
    manifest = load_manifest(study_dir)
    assert [e.status for e in manifest.entries] == ["completed", "completed"]
    (result_file,) = [p for p in study_dir.rglob(RESULT_FILE) if "bs1" in str(p)]
    result = from_json(result_file)
    assert result.config["echo"] == {"step_ms": 2.0, "max_concurrent": 1}
    # one request at a time, 4 tokens of 2 ms each: the workload cannot have taken less than 4 x 8 ms
    assert result.duration_s >= 4 * 4 * 0.002
