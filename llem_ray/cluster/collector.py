"""`ResultsActor`: the one writer of a study directory, pinned to the driver's node.

Study directory layout (all paths absolute, resolved by the driver before anything is dispatched):

    <study_dir>/manifest.sqlite          the manifest's store: one transaction per change (results/manifest.py)
    <study_dir>/manifest.json            its export, at a bounded rate and at the end (manifest_export.py)
    <study_dir>/study.json               the resolved StudyConfig (provenance)
    <study_dir>/experiments/<key>/<name>_<timestamp>/result.json + timeseries.parquet
    <study_dir>/table/                   the study table, one live Parquet dataset: one-row parts,
                                         compacted atomically (results/study_table.py)
    <study_dir>/results.parquet          consolidated table of completed entries (at the end)
    <study_dir>/study_result.json        StudyResult (at the end)
    <study_dir>/.llem.lock               held by the driver working here (results/study_dir.py)

A result is stored in this order: its experiment directory, its table row, then the manifest change
that makes it completed, then (now and then) a compaction of the table. A kill between any two steps
leaves an entry that is not completed, whose files a resume replaces (`repair`): so a completed entry
always has its files, and none is stored twice.

Fault tolerance: the actor restarts forever (`max_restarts=-1`) and Ray replays its pending calls
(`max_task_retries=-1`), so every method is idempotent: a result already recorded is not written
again, a half-written experiment directory of the same key is replaced, a part file is rewritten
under the same name. On restart the constructor reopens the store.

It runs without GPUs and with `CUDA_VISIBLE_DEVICES=""`, so it can never create a CUDA context.
`stats()` says how long its changes took (benchmarks/cluster_scale.py prints it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from llem_ray.cluster.runtime_env import no_gpu_runtime_env
from llem_ray.results.atomic import remove_temp_files
from llem_ray.results.manifest import (
    MANIFEST_FILE,
    AttemptRecord,
    ManifestWriter,
    PlannedRow,
    StudyManifest,
    has_manifest,
    write_json_atomic,
)
from llem_ray.results.manifest_export import ManifestExporter
from llem_ray.results.persistence import RESULT_FILE, save_experiment
from llem_ray.results.repair import repair_parts
from llem_ray.results.schema import ExperimentResult
from llem_ray.results.study_table import VERSIONS_DIR, StudyTable
from llem_ray.results.table import consolidate, result_row, write_part
from llem_ray.results.timeseries import columns_to_table
from llem_ray.results.timeseries_columns import Columns

NAMESPACE = "llem"
EXPERIMENTS_DIR = "experiments"
RESULTS_TABLE = "results.parquet"
STUDY_CONFIG_FILE = "study.json"
STUDY_RESULT_FILE = "study_result.json"
LEFT_RUNNING_ERROR = "interrupted: the driver running it stopped without closing it (found running on resume)"
LOST_RESULT_ERROR = "result lost: {why}; measured again"
COLLECTOR_FILES_TIMEOUT_S = 300.0
"""Longest wait for the results actor to consolidate the table or write a file, s."""


def _timed(kind: str) -> Callable:
    """Count calls of a ResultsActor method and the seconds they took under `kind` (`stats()`)."""

    def wrap(method: Callable) -> Callable:
        @wraps(method)
        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            begun_s = time.monotonic()
            try:
                return method(self, *args, **kwargs)
            finally:
                calls, seconds = self._busy.get(kind, (0, 0.0))
                self._busy[kind] = (calls + 1, seconds + time.monotonic() - begun_s)

        return timed

    return wrap


@ray.remote
class ResultsActor:
    """Writes results, the study table and the manifest of one study directory (see module docstring)."""

    def __init__(self, study_dir: str, manifest: StudyManifest, study_config: dict[str, Any]):
        self.dir = Path(study_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._busy: dict[str, tuple[int, float]] = {}
        path = self.dir / MANIFEST_FILE
        resuming = has_manifest(self.dir)
        if resuming:
            self.writer = ManifestWriter.load(path)
            self.writer.add_missing(manifest.entries)
        else:
            self.writer = ManifestWriter.create(path, manifest)
        self.table = StudyTable(self.dir)
        self.exporter = ManifestExporter(self.dir)
        if resuming:
            self.exporter.changed()  # later: at 100,000 entries an export takes a second
        else:
            self.exporter.flush()  # a new study's manifest.json is there from the start
        write_json_atomic(self.dir / STUDY_CONFIG_FILE, json.dumps(study_config, indent=1, default=str))

    @_timed("change")
    def add_planned(self, rows: list[PlannedRow]) -> list[str]:
        """Add the planned entries the manifest does not hold yet (pending); returns their keys."""
        added = self.writer.add_planned(rows)
        self.exporter.changed()
        return added

    @_timed("change")
    def mark_running(self, key: str, record: AttemptRecord) -> None:
        """An attempt was dispatched (called again with the actor's node and GPUs once known)."""
        self.writer.mark_running(key, record)
        self.exporter.changed()

    @_timed("change")
    def mark_failed(self, key: str, error: str, record: AttemptRecord) -> None:
        self.writer.mark_failed(key, error, record)
        self.exporter.changed()

    @_timed("change")
    def add_stages(self, key: str, attempt: int, stages_s: dict[str, float]) -> None:
        """Stages measured after the attempt was recorded (the slot's release, s) join its record."""
        self.writer.add_stages(key, attempt, stages_s)
        self.exporter.changed()

    @_timed("change")
    def release_running(self, error: str = LEFT_RUNNING_ERROR) -> list[str]:
        """Entries left `running` go back to pending, their running attempts failed with `error`
        (ManifestWriter.release_running): on resume, before anything is dispatched, and from a
        stopping driver after it killed its actors. Returns their keys."""
        released = self.writer.release_running(error)
        self.exporter.changed()
        return released

    def repair(self) -> dict[str, Any]:
        """On resume, before anything is dispatched: remove temporary files a killed writer left,
        make the table hold one readable row per completed entry and nothing else (results/repair.py:
        rows rebuilt from result.json), and set entries whose result is gone back to pending. Returns
        rebuilt (keys), lost (keys), removed (table files) and temp_files (how many were removed)."""
        removed = [*remove_temp_files(self.dir), *remove_temp_files(self.table.current())]
        removed += remove_temp_files(self.dir / VERSIONS_DIR)
        repair = self._repair_parts(self.writer.keys_with("completed"))
        return {
            "rebuilt": repair.rebuilt,
            "lost": sorted(repair.lost),
            "removed": len(repair.removed),
            "temp_files": len(removed),
        }

    def _repair_parts(self, keys: list[str]):
        repair = repair_parts(self.dir, self.table.path, keys, self.writer.entry)
        for key, why in repair.lost.items():
            self.writer.reopen(key, LOST_RESULT_ERROR.format(why=why))
        self.exporter.changed()
        return repair

    @_timed("record")
    def record(self, key: str, result: ExperimentResult, timeseries: Columns, record: AttemptRecord) -> str:
        """Store a completed attempt: experiment directory, table row, then manifest (module docstring),
        then compact the table if it is due. Returns the result directory relative to the study
        directory. Idempotent: an entry already completed is left as it is."""
        begun_s = time.monotonic()
        entry = self.writer.entry(key)
        if entry.status == "completed" and entry.result_path:
            return entry.result_path
        parent = self.dir / EXPERIMENTS_DIR / key
        if parent.exists():
            shutil.rmtree(parent)
        result_dir = save_experiment(result, columns_to_table(timeseries), parent)
        relative = str(result_dir.relative_to(self.dir))
        write_part(self.table.path, result_row(result, key=key, order_index=entry.order_index, result_path=relative))
        stages = {**record.stages_s, "result_write": time.monotonic() - begun_s}
        self.writer.mark_completed(key, relative, record.model_copy(update={"stages_s": stages}))
        self.exporter.changed()
        self._compact()
        return relative

    @_timed("compaction")
    def _compact(self) -> None:
        self.table.compact(self.writer.completed_among)

    def resume_state(self) -> dict[str, int]:
        """Attempts started so far of every entry not completed, by key: what the driver runs."""
        return self.writer.attempts_not_completed()

    def stats(self) -> dict[str, Any]:
        """Calls and seconds per kind of work (change: one manifest change; record: a stored result,
        its files, manifest change and compaction; compaction), manifest exports (count, seconds), and
        the table's part files now."""
        return {
            "busy": {kind: {"calls": n, "seconds": s} for kind, (n, s) in self._busy.items()},
            "exports": {
                "calls": self.exporter.exports,
                "seconds": self.exporter.export_s,
                "last_error": self.exporter.last_error,
            },
            "parts": len(self.table.parts()),
        }

    def finish(self, keys: list[str]) -> dict[str, Any]:
        """Consolidate `results.parquet` from the completed entries among `keys` (idempotent) and write
        `manifest.json`. A bad or missing row is rebuilt from its result.json first; an entry whose
        result is gone goes back to pending (counted so).

        Returns results_table (path), result_files (absolute paths of result.json), counts (per
        status), total_energy_j (None without energy), table (the consolidated Arrow table) and
        configs (measurement_config_hash -> (name, items, items failed), in run order).
        """
        wanted = set(keys)
        planned = [r for r in self.writer.rows() if r[0] in wanted]
        completed = [r[0] for r in planned if r[4] == "completed"]
        try:
            table = consolidate(self.table.path, self.dir / RESULTS_TABLE, completed)
        except (OSError, ValueError):  # a row went bad under us: rebuild it (or reopen a lost entry), once
            self._repair_parts(completed)
            planned = [r for r in self.writer.rows() if r[0] in wanted]
            completed = [r[0] for r in planned if r[4] == "completed"]
            table = consolidate(self.table.path, self.dir / RESULTS_TABLE, completed)
        self.exporter.flush()
        energies = [e for e in table.column("energy_total_j").to_pylist() if e is not None]
        counts = {"pending": 0, "running": 0, "completed": 0, "failed": 0}
        configs: dict[str, tuple[str, int, int]] = {}
        for _, _, name, config_hash, status, _ in planned:
            counts[status] += 1
            known, total, failed = configs.get(config_hash, (name, 0, 0))
            configs[config_hash] = (known, total + 1, failed + (status == "failed"))
        return {
            "results_table": str(self.dir / RESULTS_TABLE),
            "result_files": [str(self.dir / r[5] / RESULT_FILE) for r in planned if r[4] == "completed"],
            "counts": counts,
            "total_energy_j": sum(energies) if energies else None,
            "table": table,
            "configs": configs,
        }

    def write_study_result(self, study_result: dict[str, Any]) -> None:
        """Write `study_result.json` (the StudyResult as JSON), atomically."""
        write_json_atomic(self.dir / STUDY_RESULT_FILE, json.dumps(study_result, indent=1, default=str))

    def info(self) -> dict[str, Any]:
        """pid, node, GPU visibility of this actor (tests and the GPU check assert it sees no GPU)."""
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_imported": "torch" in sys.modules,
        }


def start_collector(study_dir: Path, manifest: StudyManifest, study_config: dict[str, Any], name: str):
    """The study's ResultsActor, created (or found: `get_if_exists`) on this driver's node.

    `name` must be unique per study directory and driver job. Restarts forever, replays calls.
    """
    node_id = ray.get_runtime_context().get_node_id()
    return ResultsActor.options(
        name=name,
        namespace=NAMESPACE,
        get_if_exists=True,
        num_cpus=0,
        num_gpus=0,
        max_restarts=-1,
        max_task_retries=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        runtime_env=no_gpu_runtime_env(),
    ).remote(str(study_dir), manifest, study_config)
