"""Builders of fake studies and checks of the engine's invariants on a finished study directory."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from llem_ray.cluster.plan import WorkItem, plan_items, plan_rows, unique_experiments
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.study import ExecutionConfig, StudyConfig
from llem_ray.results.manifest import MANIFEST_SCHEMA_VERSION, AttemptRecord, StudyManifest, read_manifest, utc_now
from llem_ray.results.manifest_sql import create_store, store_path
from llem_ray.results.study_table import StudyTable
from llem_ray.results.table import STUDY_TABLE_SCHEMA, scan, write_part
from tests import fakes  # noqa: F401  (registers backend 'fake' here too: the driver validates `backend: fake`)

PLUGINS = {"env_vars": {"LLEM_PLUGINS": "tests.fakes"}}
"""Job runtime_env that registers the fake backend ('fake') and meter in every worker."""

REPO_ROOT = Path(__file__).resolve().parents[2]


def fake_experiment(seed: int, duration_s: float = 0.2, **passthrough: Any) -> ExperimentConfig:
    """A fast fake experiment: no warm-up, no baseline, no prefill loop; distinct per `seed`."""
    return ExperimentConfig(
        backend="fake",
        model="llem/tiny-llama",
        dataset="synthetic",
        n=1,
        max_output_tokens=2,
        random_seed=seed,
        prefill_split=False,
        warmup={"n_warmup": 0, "thermal_floor_s": 0},
        baseline={"enabled": False},
        passthrough_kwargs={"fake_duration_s": duration_s, **passthrough},
    )


def fake_study(experiments: list[ExperimentConfig], output_dir: Path, **execution: Any) -> StudyConfig:
    """A study of `experiments` with no gaps unless given, writing under `output_dir`."""
    settings = {"n_cycles": 1, "config_gap_seconds": 0, "cycle_gap_seconds": 0, "timeout_s": 120, **execution}
    return StudyConfig(
        name="t", experiments=experiments, execution=ExecutionConfig(**settings), output_dir=str(output_dir)
    )


def sweep_study(experiments: int, cycles: int, duration_s: float, output_dir: Path) -> dict:
    """A study of `experiments` fake configurations x `cycles` cycles, windows of `duration_s`."""
    return {
        "name": "cluster-scale",
        "model": "llem/tiny-llama",
        "backend": "fake",
        "dataset": "synthetic",
        "n": 1,
        "max_output_tokens": 1,
        "prefill_split": False,
        "warmup": {"n_warmup": 0, "thermal_floor_s": 0},
        "baseline": {"enabled": False},
        "passthrough_kwargs": {"fake_duration_s": duration_s},
        "sweep": {"random_seed": list(range(experiments))},
        "execution": {
            "n_cycles": cycles,
            "config_gap_seconds": 0,
            "cycle_gap_seconds": 0,
            "cycle_order": "interleaved",
            "timeout_s": duration_s * 4 + 300,
        },
        "output_dir": str(output_dir),
    }


def planned(study: StudyConfig) -> list[WorkItem]:
    """The items the driver plans for `study` (no CLI overrides)."""
    experiments, _ = unique_experiments(list(study.experiments))
    return plan_items(experiments, study.execution.n_cycles, study.execution.cycle_order, study.study_design_hash)


def synthetic_rows(items: list[WorkItem]) -> pa.Table:
    """Table rows for `items` as a finished fake experiment would have them (result files not written)."""
    columns: dict[str, list] = {f.name: [None] * len(items) for f in STUDY_TABLE_SCHEMA}
    columns.update(
        key=[i.key for i in items],
        order_index=[i.order_index for i in items],
        cycle=[i.cycle for i in items],
        attempt=[1] * len(items),
        name=[i.config.display_name() for i in items[:1]] * len(items),
        measurement_config_hash=[i.config_hash for i in items],
        backend=["pytorch"] * len(items),
        energy_total_j=[100.0] * len(items),
        result_path=[f"experiments/{i.key}/fabricated" for i in items],
    )
    for name in ("throttle_reasons", "gpu_uuids", "pci_bus_ids", "measurement_warnings"):
        columns[name] = [[] for _ in items]
    return pa.Table.from_pydict(columns, schema=STUDY_TABLE_SCHEMA)


def fabricate(study_dir: Path, study: StudyConfig, items: list[WorkItem], n_run: int, n_parts: int = 0) -> None:
    """Leave `study_dir` as a driver stopped with all but the last `n_run` items completed leaves it:
    the manifest store, and the completed rows in one compacted table file, the last `n_parts` of them
    as part files (their result files are not written)."""
    done = items[: len(items) - n_run]
    meta = {
        "manifest_schema_version": MANIFEST_SCHEMA_VERSION,
        "study_name": study.name,
        "study_design_hash": study.study_design_hash,
        "created_at": utc_now().isoformat(),
        "updated_at": utc_now().isoformat(),
    }
    state = [("completed", 1, None, f"experiments/{i.key}/fabricated", i.key) for i in done]
    create_store(store_path(study_dir), meta, plan_rows(items), state)
    table = StudyTable(study_dir)
    split = len(done) - n_parts
    pq.write_table(synthetic_rows(done[:split]), table.current() / "compact-t3-v000000-0.parquet")
    for row in synthetic_rows(done[split:]).to_pylist():
        write_part(table.path, row)


def load_manifest(study_dir: str | Path) -> StudyManifest:
    """The live manifest (one committed snapshot of the store; `manifest.json` is only its export)."""
    return read_manifest(Path(study_dir))


def attempts(study_dir: str | Path) -> list[tuple[str, AttemptRecord]]:
    """(key, record) of every attempt in the manifest."""
    return [(e.key, r) for e in load_manifest(study_dir).entries for r in e.history]


def assert_no_shared_gpu(study_dir: str | Path) -> int:
    """No two attempts that overlap in time ran on the same (node, GPU); returns attempts checked.

    An attempt runs from its actor's start to the moment the driver saw its result or its death.
    Attempts that never started (no node recorded) are skipped. On a GPU-less cluster the unit is
    the node's CPU slot, which is not exclusive, so call this only on clusters with GPUs.
    """
    ran = [(k, r) for k, r in attempts(study_dir) if r.node_id and r.started_at and r.ended_at]
    for (ka, a), (kb, b) in itertools.combinations(ran, 2):
        shared = a.node_id == b.node_id and set(a.gpu_ids) & set(b.gpu_ids)
        overlap = a.started_at < b.ended_at and b.started_at < a.ended_at
        assert not (shared and overlap), f"{ka}#{a.attempt} and {kb}#{b.attempt} shared GPU {shared} at the same time"
    assert all(r.gpu_ids for _, r in ran), "an attempt on a GPU cluster recorded no GPU"
    return len(ran)


def assert_table_once(study_dir: str | Path, expected_keys: set[str]) -> None:
    """The live study table (`table/`, read as a dataset) holds one row per expected key and nothing else,
    in readable files only; so does the consolidated results.parquet."""
    study_dir = Path(study_dir)
    keys = pq.read_table(study_dir / "results.parquet").column("key").to_pylist()
    assert sorted(keys) == sorted(expected_keys), f"table keys {sorted(keys)} != {sorted(expected_keys)}"
    live = ds.dataset(study_dir / "table", format="parquet").to_table(columns=["key"]).column("key").to_pylist()
    assert sorted(live) == sorted(expected_keys), "the live dataset does not hold each key exactly once"
    found = scan(study_dir / "table")
    assert not found.bad, f"unreadable table files: {found.bad}"


def assert_results_once(study_dir: str | Path, expected_keys: set[str]) -> None:
    """Every expected key has exactly one result directory and one table row (live and consolidated)."""
    study_dir = Path(study_dir)
    assert_table_once(study_dir, expected_keys)
    assert sorted(p.name for p in (study_dir / "experiments").iterdir()) == sorted(expected_keys)
    for key in expected_keys:
        dirs = list((study_dir / "experiments" / key).iterdir())
        assert len(dirs) == 1, f"{key}: {len(dirs)} result directories"
        result = json.loads((dirs[0] / "result.json").read_text())
        assert f"{result['measurement_config_hash']}-c{result['placement']['cycle']}" == key
        assert (dirs[0] / "timeseries.parquet").is_file()
    assert all(e.status == "completed" for e in load_manifest(study_dir).entries if e.key in expected_keys)


def processes_marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment has LLEM_TEST_MARKER=marker (what a test started, children included)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("LLEM_TEST_MARKER") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def study_driver(address: str, *args: str) -> subprocess.Popen:
    """`python -m llem_ray.study ARGS --quiet` against the Ray at `address`, with the fake doubles, in a
    session of its own (so a test can signal it alone); stdout and stderr are piped (text)."""
    env = {**os.environ, "RAY_ADDRESS": address, "LLEM_PLUGINS": "tests.fakes"}
    return subprocess.Popen(
        [sys.executable, "-m", "llem_ray.study", *args, "--quiet"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
