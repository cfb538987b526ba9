"""The engine's storage at scale on a real local Ray (issue 13): the driver SIGKILLed during a burst of
checkpoint writes at 10,000 entries resumes to a complete table with no duplicate, while a reader
reads the live table with pyarrow.dataset; a study directory from before the manifest store resumes;
every attempt records its stages, failed ones included."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from llem_ray.cluster.collector import LEFT_RUNNING_ERROR
from llem_ray.cluster.driver import StudyOptions, run
from llem_ray.config.experiment import measurement_config_hash
from llem_ray.config.loader import load_study_config
from llem_ray.errors import EXIT_OK
from llem_ray.results.manifest import MANIFEST_FILE, StudyManifest
from llem_ray.results.manifest_sql import STORE_FILE, store_path
from llem_ray.results.study_table import VERSIONS_DIR, open_dataset
from llem_ray.results.table import STUDY_TABLE_SCHEMA
from tests.ray.helpers import (
    PLUGINS,
    assert_no_shared_gpu,
    assert_results_once,
    fabricate,
    fake_experiment,
    fake_study,
    load_manifest,
    planned,
    study_driver,
    sweep_study,
)

pytestmark = pytest.mark.ray

N_ENTRIES = 10_000
N_RUN = 24
N_PARTS = 240
"""Completed entries left as part files: with the run's own parts the table crosses the compaction
threshold (256) while the killed driver's results actor stores results."""


@pytest.fixture(scope="module")
def ray_4gpu_address():
    ray.init(address="local", num_cpus=8, num_gpus=4, include_dashboard=False, runtime_env=PLUGINS, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _kill_mid_burst(proc: subprocess.Popen, study_dir: Path, run_keys: set[str], timeout_s: float = 240) -> None:
    """SIGKILL the driver just after the store took a change, once some of `run_keys` completed and
    some still run: the moment its results actor is busiest writing checkpoints."""
    conn = sqlite3.connect(f"file:{store_path(study_dir)}?mode=ro", uri=True)
    version = conn.execute("PRAGMA data_version").fetchone()[0]
    deadline_s = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline_s:
            now = conn.execute("PRAGMA data_version").fetchone()[0]
            if now != version:
                version = now
                rows = conn.execute("SELECT key, status FROM entries WHERE status IN ('completed', 'running')")
                done = [k for k, s in rows if k in run_keys and s == "completed"]
                running = conn.execute("SELECT count(*) FROM entries WHERE status = 'running'").fetchone()[0]
                if len(done) >= 6 and running >= 1:
                    proc.send_signal(signal.SIGKILL)
                    proc.communicate(timeout=30)
                    return
            time.sleep(0.005)
    finally:
        conn.close()
    proc.kill()
    raise AssertionError("the study never reached a burst of writes with some results stored")


def _gpus_free(expected: float, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("GPU", 0) == expected:
            return True
        time.sleep(0.5)
    return False


class _Reader(threading.Thread):
    """Reads the live table with pyarrow.dataset, through the link and resolved, until stopped."""

    def __init__(self, study_dir: Path):
        super().__init__(daemon=True)
        self.study_dir, self.stop, self.problems, self.sizes = study_dir, threading.Event(), [], []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                resolved = open_dataset(self.study_dir).to_table(columns=["key"]).column("key").to_pylist()
                linked = ds.dataset(self.study_dir / "table", format="parquet", schema=STUDY_TABLE_SCHEMA)
                through_link = linked.to_table(columns=["key"]).column("key").to_pylist()
            except FileNotFoundError:  # a compaction switched versions under the link reader: read again
                continue
            for keys in (resolved, through_link):
                if len(keys) != len(set(keys)):
                    self.problems.append("a row twice")
            self.sizes.append(len(resolved))
            time.sleep(0.05)


def test_driver_killed_during_a_burst_at_10000_entries_resumes_to_a_complete_table(ray_4gpu_address, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(sweep_study(100, N_ENTRIES // 100, 0.3, tmp_path / "out")))
    study = load_study_config(config)
    items = planned(study)
    study_dir = tmp_path / "out" / "cluster-scale_20260101T000000Z"
    study_dir.mkdir(parents=True)
    fabricate(study_dir, study, items, N_RUN, n_parts=N_PARTS)
    run_keys = {i.key for i in items[-N_RUN:]}
    reader = _Reader(study_dir)
    reader.start()

    _kill_mid_burst(study_driver(ray_4gpu_address, str(config), "--resume", str(study_dir)), study_dir, run_keys)
    assert _gpus_free(4), "the killed driver's actors and placement groups still hold GPUs"
    killed = load_manifest(study_dir).by_key()
    left_running = {k for k in run_keys if killed[k].status == "running"}
    assert left_running and 6 <= sum(killed[k].status == "completed" for k in run_keys) < N_RUN

    second = study_driver(ray_4gpu_address, str(config), "--resume", str(study_dir))
    _, err = second.communicate(timeout=300)
    reader.stop.set()
    reader.join(timeout=60)
    assert second.returncode == EXIT_OK, err[-2000:]

    keys = {i.key for i in items}
    manifest = load_manifest(study_dir)
    assert manifest.counts() == {"pending": 0, "running": 0, "completed": N_ENTRIES, "failed": 0}
    final = pq.read_table(study_dir / "results.parquet").column("key").to_pylist()
    assert len(final) == N_ENTRIES and set(final) == keys, "results.parquet is not every entry exactly once"
    live = open_dataset(study_dir).to_table(columns=["key"]).column("key").to_pylist()
    assert sorted(live) == sorted(keys), "the live table is not every entry exactly once"
    assert sorted(p.name for p in (study_dir / "experiments").iterdir()) == sorted(run_keys)
    for key in run_keys:
        (result_dir,) = (study_dir / "experiments" / key).iterdir()
        assert (result_dir / "result.json").is_file(), f"{key}: no result"
    by_key = manifest.by_key()
    assert all(any(r.error == LEFT_RUNNING_ERROR for r in by_key[k].history) for k in left_running)
    assert not reader.problems, reader.problems[:3]
    assert len(reader.sizes) >= 3 and reader.sizes[0] < N_ENTRIES, "the table was never read mid-study"
    assert len(list((study_dir / VERSIONS_DIR).iterdir())) >= 2, "no compaction happened while the study ran"
    assert_no_shared_gpu(study_dir)


def _as_before_the_store(study_dir: Path, lose: list[str]) -> None:
    """Turn a finished study directory into what the engine wrote before issue 13: a manifest.json
    (schema 1.0, no stage timing) and a plain table/ of parts; the entries of `lose` not finished."""
    manifest = json.loads(json.dumps(load_manifest(study_dir).model_dump(mode="json")))
    manifest["schema_version"] = "1.0"
    for entry in manifest["entries"]:
        for record in entry["history"]:
            for field in ("stages_s", "window_started_at", "window_ended_at"):
                del record[field]
        if entry["key"] in lose:
            entry.update(status="running", result_path=None)
            entry["history"][-1].update(status="running", ended_at=None)
    for path in study_dir.glob(f"{STORE_FILE}*"):
        path.unlink()
    parts = {p.name: p.read_bytes() for p in (study_dir / "table").iterdir() if p.name.startswith("part-")}
    (study_dir / "table").unlink()
    shutil.rmtree(study_dir / VERSIONS_DIR)
    (study_dir / "results.parquet").unlink()
    (study_dir / "table").mkdir()
    for name, data in parts.items():
        if not any(key in name for key in lose):
            (study_dir / "table" / name).write_bytes(data)
    for key in lose:
        shutil.rmtree(study_dir / "experiments" / key)
    (study_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def test_a_study_directory_from_before_the_store_resumes(ray_4gpu_address, tmp_path):
    study = fake_study([fake_experiment(800 + i) for i in range(4)], tmp_path)
    first = run(study, StudyOptions(quiet=True))
    study_dir = Path(first.output_dir)
    keys = sorted(e.key for e in load_manifest(study_dir).entries)
    _as_before_the_store(study_dir, lose=keys[:2])

    again = run(study, StudyOptions(quiet=True, resume_dir=study_dir))
    assert again.summary.completed == 4 and again.summary.failed == 0
    assert store_path(study_dir).is_file() and (study_dir / "table").is_symlink()
    assert_results_once(study_dir, set(keys))
    exported = StudyManifest.model_validate_json((study_dir / MANIFEST_FILE).read_text())
    assert exported.entries == load_manifest(study_dir).entries, "manifest.json is not the store's last state"
    by_key = exported.by_key()
    assert [r.attempt for r in by_key[keys[0]].history] == [1, 2] and by_key[keys[0]].history[1].stages_s
    assert by_key[keys[3]].history[0].stages_s == {}, "a record migrated from 1.0 has no stage timing"


def test_every_attempt_records_its_stages_failed_ones_too(ray_4gpu_address, tmp_path):
    good, crash = fake_experiment(900), fake_experiment(901, fake_crash=True)
    no_gpu = fake_experiment(902).model_copy(update={"device": "cuda"})  # pre-flight fails in the actor
    study = fake_study([good, crash, no_gpu], tmp_path, max_retries=0, circuit_breaker=10)
    result = run(study, StudyOptions(quiet=True))
    by_hash = {e.measurement_config_hash: e for e in load_manifest(result.output_dir).entries}

    (ok,) = by_hash[measurement_config_hash(good)].history
    expected = [
        "actor_start",
        "actor_init",
        "nvml_init",
        "imports",
        "preflight",
        "load",
        "environment",
        "baseline",
        "warmup",
        "thermal_floor",
        "measure",
        "metrics",
        "unload",
        "result_transfer",
        "result_write",
        "slot_release",
    ]
    assert list(ok.stages_s) == expected and all(v >= 0 for v in ok.stages_s.values())
    assert ok.window_started_at < ok.window_ended_at
    assert abs((ok.window_ended_at - ok.window_started_at).total_seconds() - ok.stages_s["measure"]) < 0.01
    (died,) = by_hash[measurement_config_hash(crash)].history
    assert list(died.stages_s) == ["actor_start", "actor_init", "nvml_init"], "a crashed actor's own stages are lost"
    (refused,) = by_hash[measurement_config_hash(no_gpu)].history
    assert list(refused.stages_s) == ["actor_start", "actor_init", "nvml_init", "imports", "preflight", "slot_release"]
    assert refused.window_started_at is None and died.window_started_at is None
