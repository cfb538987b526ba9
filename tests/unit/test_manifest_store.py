"""The manifest store (issue 13) without Ray: a change is one transaction that survives SIGKILL at any
instant, readers in other processes see committed states only, a manifest.json directory migrates,
creation is all or nothing, and the JSON export keeps a bounded rate."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llem_ray.results.manifest import (
    MANIFEST_FILE,
    AttemptRecord,
    ManifestEntry,
    ManifestWriter,
    StudyManifest,
    export_manifest,
    read_manifest,
    utc_now,
)
from llem_ray.results.manifest_export import ManifestExporter
from llem_ray.results.manifest_sql import STORE_FILE, create_store

REPO_ROOT = Path(__file__).resolve().parents[2]
N_ENTRIES = 10_000


def _entries(n: int) -> list[ManifestEntry]:
    return [
        ManifestEntry(
            key=f"{i:012x}-c1",
            order_index=i,
            name=f"exp{i}",
            measurement_config_hash=f"{i:012x}",
            cycle=1,
            backend="pytorch",
        )
        for i in range(n)
    ]


def _study(tmp_path: Path, n: int = N_ENTRIES) -> ManifestWriter:
    manifest = StudyManifest(study_name="s", study_design_hash="d" * 16, entries=_entries(n))
    return ManifestWriter.create(tmp_path / MANIFEST_FILE, manifest)


def _burst(study_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.burst_writer", "manifest", str(study_dir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def _kill_when_busy(proc: subprocess.Popen, lines: list[str], extra_s: float) -> None:
    """SIGKILL `proc` `extra_s` after its first durable step, keeping every line it printed."""
    first = proc.stdout.readline()
    assert first, "the writer printed nothing"
    lines.append(first.strip())
    time.sleep(extra_s)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    lines.extend(line.strip() for line in out.splitlines() if line.strip())


def test_changes_survive_sigkill_at_any_instant_of_a_burst_at_10000_entries(tmp_path):
    _study(tmp_path).close()
    rng = random.Random(13)
    lines: list[str] = []
    for _ in range(3):
        _kill_when_busy(_burst(tmp_path), lines, rng.uniform(0.05, 0.6))
    completed = {line.split()[1] for line in lines if line.startswith("completed")}
    running = {line.split()[1] for line in lines if line.startswith("running")} - completed
    manifest = read_manifest(tmp_path)
    status = {e.key: e.status for e in manifest.entries}
    assert len(status) == N_ENTRIES and sum(manifest.counts().values()) == N_ENTRIES
    assert all(status[k] == "completed" for k in completed), "a completion the writer reported was lost"
    assert all(status[k] in ("running", "completed") for k in running)
    unreported = {k for k, s in status.items() if s != "pending"} - completed - running
    assert len(unreported) <= 3, f"more changes than one in flight per kill: {len(unreported)}"
    assert len(completed) > 0 and manifest.counts()["pending"] > 0, "the kills did not land mid-burst"
    for entry in manifest.entries:
        if entry.status == "completed":
            assert entry.result_path == f"experiments/{entry.key}/run" and entry.history[0].status == "completed"
        else:
            assert entry.result_path is None
    writer = ManifestWriter.load(tmp_path / MANIFEST_FILE)
    released = writer.release_running("driver gone")
    assert set(released) == {k for k, s in status.items() if s == "running"}
    assert writer.keys_with("running") == []


def test_readers_in_another_process_see_committed_states_only(tmp_path):
    _study(tmp_path).close()
    proc = _burst(tmp_path)
    try:
        assert proc.stdout.readline(), "the writer printed nothing"
        seen = []
        for _ in range(15):
            manifest = read_manifest(tmp_path)  # validates every entry and attempt record
            counts = manifest.counts()
            assert sum(counts.values()) == N_ENTRIES and counts["running"] <= 1
            for entry in manifest.entries:
                if entry.status != "pending":
                    assert entry.history and entry.attempts == 1
            seen.append(counts["completed"])
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert seen == sorted(seen), f"a reader saw completions go backwards: {seen}"
    assert seen[-1] > seen[0], "the writer made no progress while being read"


def test_a_manifest_json_directory_is_migrated_with_its_state(tmp_path):
    entries = _entries(3)
    record = {"attempt": 1, "status": "failed", "dispatched_at": "2026-01-01T00:00:00Z", "error": "boom"}
    old = StudyManifest(
        study_name="old",
        study_design_hash="e" * 16,
        entries=[
            entries[0].model_copy(
                update={
                    "status": "completed",
                    "attempts": 1,
                    "result_path": "experiments/a",
                    "history": [AttemptRecord(attempt=1, status="completed", dispatched_at=utc_now())],
                }
            ),
            entries[1].model_copy(
                update={
                    "status": "failed",
                    "attempts": 1,
                    "error": "boom",
                    "history": [AttemptRecord.model_validate(record)],
                }
            ),
            entries[2],
        ],
    )
    text = json.dumps({**old.model_dump(mode="json"), "schema_version": "1.0"}, indent=1)  # as 1.0 wrote it
    (tmp_path / MANIFEST_FILE).write_text(text)

    writer = ManifestWriter.load(tmp_path / MANIFEST_FILE)
    assert (tmp_path / STORE_FILE).is_file() and (tmp_path / MANIFEST_FILE).read_text() == text
    assert read_manifest(tmp_path).entries == old.entries
    assert [(writer.entry(e.key).status, writer.entry(e.key).attempts) for e in entries] == [
        ("completed", 1),
        ("failed", 1),
        ("pending", 0),
    ]
    assert writer.attempts_not_completed() == {entries[1].key: 1, entries[2].key: 0}
    writer.mark_running(entries[2].key, AttemptRecord(attempt=1, dispatched_at=utc_now()))
    export_manifest(tmp_path)
    exported = StudyManifest.model_validate_json((tmp_path / MANIFEST_FILE).read_text())
    assert exported.entries == read_manifest(tmp_path).entries and exported.counts()["running"] == 1
    assert len(ManifestWriter.load(tmp_path / MANIFEST_FILE).keys_with("running")) == 1, "migrated twice"


def test_creating_a_store_is_all_or_nothing(tmp_path):
    meta = {
        "manifest_schema_version": "1.1",
        "study_name": "s",
        "study_design_hash": "h",
        "created_at": "x",
        "updated_at": "x",
    }
    rows = [("k-c1", 0, "n", "k", 1, "pytorch"), ("k-c1", 1, "n", "k", 1, "pytorch")]  # the same key twice
    with pytest.raises(sqlite3.IntegrityError):
        create_store(tmp_path / STORE_FILE, meta, rows)
    assert list(tmp_path.iterdir()) == [], "a failed creation left a file behind"
    create_store(tmp_path / STORE_FILE, meta, rows[:1])
    with pytest.raises(FileExistsError):
        create_store(tmp_path / STORE_FILE, meta, rows[:1])


def test_the_export_keeps_a_bounded_rate_and_flush_writes_the_last_state(tmp_path):
    writer = _study(tmp_path, n=200)
    exporter = ManifestExporter(tmp_path, min_interval_s=0.5)
    try:
        begun_s = time.monotonic()
        for key in writer.keys_with("pending"):
            writer.mark_running(key, AttemptRecord(attempt=1, dispatched_at=utc_now()))
            exporter.changed()
        elapsed_s = time.monotonic() - begun_s
        assert exporter.exports <= 2 + elapsed_s / 0.5, f"{exporter.exports} exports in {elapsed_s:.1f} s"
        exporter.flush()
    finally:
        exporter.close()
    exported = StudyManifest.model_validate_json((tmp_path / MANIFEST_FILE).read_text())
    assert exported.counts()["running"] == 200 and exported.entries == read_manifest(tmp_path).entries
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "an export left a temp file"


def test_queries_answer_from_the_store(tmp_path):
    writer = _study(tmp_path, n=5)
    keys = writer.keys_with("pending")
    writer.mark_completed(keys[3], "experiments/x", AttemptRecord(attempt=2, dispatched_at=utc_now()))
    writer.add_stages(keys[3], 2, {"slot_release": 0.25})
    assert writer.completed_among(keys) == {keys[3]} and writer.keys_with("completed") == [keys[3]]
    assert writer.entry(keys[3]).history[0].stages_s == {"slot_release": 0.25}
    assert keys[3] not in writer.attempts_not_completed() and writer.header().n_entries == 5
    assert [r[0] for r in writer.rows()] == keys and writer.add_planned([(keys[0], 0, "n", "h", 1, "pytorch")]) == []
    with pytest.raises(KeyError):
        writer.mark_running("nope-c1", AttemptRecord(attempt=1, dispatched_at=utc_now()))
