"""Kill the driver (`python -m llem_ray.study`, a subprocess joining this module's Ray through
RAY_ADDRESS, as under `ray job submit`) with SIGKILL, then SIGINT, and resume: the final table holds
every (experiment, cycle) exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import ray
import yaml

from llem_ray.cluster.collector import LEFT_RUNNING_ERROR
from llem_ray.cluster.plan import plan_items
from llem_ray.config.loader import load_study_config
from llem_ray.errors import EXIT_INTERRUPTED, EXIT_OK
from tests.ray.helpers import PLUGINS, assert_no_shared_gpu, assert_results_once, load_manifest, study_driver

pytestmark = pytest.mark.ray

STUDY = {
    "backend": "fake",
    "name": "resumable",
    "model": "llem/tiny-llama",
    "dataset": "synthetic",
    "n": 1,
    "max_output_tokens": 2,
    "prefill_split": False,
    "warmup": {"n_warmup": 0, "thermal_floor_s": 0},
    "baseline": {"enabled": False},
    "passthrough_kwargs": {"fake_duration_s": 1.5},
    "sweep": {"random_seed": [1, 2, 3, 4]},
    "execution": {"n_cycles": 2, "config_gap_seconds": 0, "cycle_gap_seconds": 0, "timeout_s": 120},
}


@pytest.fixture(scope="module")
def ray_2gpu():
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, runtime_env=PLUGINS, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _wait_for(study_root: Path, predicate, timeout_s: float = 120) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in study_root.glob("*/manifest.json"):
            try:
                manifest = load_manifest(path.parent)
            except (ValueError, OSError):  # being replaced
                continue
            if predicate(manifest.counts()):
                return path.parent
        time.sleep(0.2)
    raise AssertionError("the study never reached the expected state")


def _gpus_free(expected: float, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("GPU", 0) == expected:
            return True
        time.sleep(0.5)
    return False


def test_sigkill_then_sigint_then_resume_yields_the_full_table_once(ray_2gpu, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "out"

    first = study_driver(ray_2gpu, str(config), "--output", str(out))
    study_dir = _wait_for(out, lambda c: c["completed"] >= 2 and c["running"] >= 1)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert load_manifest(study_dir).counts()["completed"] < 8
    assert _gpus_free(2), "the killed driver's actors and placement groups still hold GPUs"

    left_running = {e.key for e in load_manifest(study_dir).entries if e.status == "running"}
    second = study_driver(ray_2gpu, str(config), "--resume", str(study_dir))
    done_before = load_manifest(study_dir).counts()["completed"]
    _wait_for(out, lambda c: c["completed"] > done_before and c["running"] >= 1)
    second.send_signal(signal.SIGINT)
    _, err = second.communicate(timeout=60)
    assert second.returncode == EXIT_INTERRUPTED, err[-2000:]
    counts = load_manifest(study_dir).counts()
    assert counts["running"] == 0 and counts["completed"] < 8, counts

    third = study_driver(ray_2gpu, str(config), "--resume", str(study_dir))
    stdout, err = third.communicate(timeout=240)
    assert third.returncode == EXIT_OK, err[-2000:]
    assert "tiny-llama_fake_bf16_bs1" in stdout
    study = load_study_config(config)
    keys = {i.key for i in plan_items(study.experiments, 2, "interleaved", study.study_design_hash)}
    assert_results_once(study_dir, keys)
    closed = {
        e.key
        for e in load_manifest(study_dir).entries
        if any(r.error == LEFT_RUNNING_ERROR and r.ended_at for r in e.history)
    }
    assert left_running <= closed, (left_running, closed)
    assert_no_shared_gpu(study_dir)
    interrupted = [e for e in load_manifest(study_dir).entries if len(e.history) > 1]
    assert interrupted, "no entry was interrupted and run again"
