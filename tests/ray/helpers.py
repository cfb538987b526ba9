"""Builders of fake studies and checks of the engine's invariants on a finished study directory."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.study import ExecutionConfig, StudyConfig
from llem_ray.results.manifest import MANIFEST_FILE, AttemptRecord, StudyManifest
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


def load_manifest(study_dir: str | Path) -> StudyManifest:
    return StudyManifest.model_validate_json((Path(study_dir) / MANIFEST_FILE).read_text())


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


def assert_results_once(study_dir: str | Path, expected_keys: set[str]) -> None:
    """Every expected key has exactly one result directory, one part file and one table row."""
    study_dir = Path(study_dir)
    table = pq.read_table(study_dir / "results.parquet")
    keys = table.column("key").to_pylist()
    assert sorted(keys) == sorted(expected_keys), f"table keys {sorted(keys)} != {sorted(expected_keys)}"
    parts = sorted(p.name for p in (study_dir / "table").iterdir() if not p.name.startswith("."))
    assert parts == sorted(f"part-{k}.parquet" for k in expected_keys)
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
