"""Broken state and hidden causes on a real local Ray (issue 18): a pre-flight failure inside the
experiment reaches the manifest and the terminal and is not retried; `--resume` rebuilds bad table
parts from result.json; a second driver is refused by the study lock; SIGTERM exits 143 and the study
resumes; a directory without a manifest resumes; a failing finish never hides the first cause."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from llem_ray.cluster.driver import StudyOptions, run
from llem_ray.cluster.plan import plan_items
from llem_ray.config.experiment import measurement_config_hash
from llem_ray.config.loader import load_study_config
from llem_ray.errors import EXIT_ERROR, EXIT_OK, EXIT_TERMINATED, StudyError
from llem_ray.results.manifest import MANIFEST_FILE, ManifestWriter, StudyManifest
from llem_ray.results.table import part_path
from tests.ray.helpers import (
    PLUGINS,
    assert_results_once,
    fake_experiment,
    fake_study,
    load_manifest,
    study_driver,
)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_2gpu():
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, runtime_env=PLUGINS, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _keys(study) -> set[str]:
    items = plan_items(study.experiments, study.execution.n_cycles, "interleaved", study.study_design_hash)
    return {i.key for i in items}


def test_preflight_failure_in_an_experiment_reaches_manifest_and_terminal_unretried(ray_2gpu, tmp_path, capsys):
    good = fake_experiment(500)
    no_gpu = fake_experiment(501).model_copy(update={"device": "cuda"})  # no NVML device is visible here
    study = fake_study([good, no_gpu], tmp_path, max_retries=2, circuit_breaker=10)
    result = run(study, StudyOptions(quiet=True))

    assert (result.summary.completed, result.summary.failed) == (1, 1)
    by_hash = {e.measurement_config_hash: e for e in load_manifest(result.output_dir).entries}
    entry = by_hash[measurement_config_hash(no_gpu)]
    assert entry.status == "failed" and entry.attempts == 1, "a pre-flight failure was retried"
    assert entry.error.startswith("PreFlightError: pre-flight failed (1 problem(s)): device 'cuda' requested but no")
    lines = [line for line in capsys.readouterr().err.splitlines() if " failed: " in line]
    assert lines == [f"llem: {no_gpu.display_name()} cycle 1 failed: {entry.error}"]


def test_resume_rebuilds_bad_parts_from_result_json_and_remeasures_a_lost_result(ray_2gpu, tmp_path, capsys):
    study = fake_study([fake_experiment(510 + i) for i in range(3)], tmp_path)
    first = run(study, StudyOptions(quiet=True))
    study_dir = Path(first.output_dir)
    before = pq.read_table(study_dir / "results.parquet").to_pylist()
    truncated, missing, lost = sorted(_keys(study))
    part_path(study_dir / "table", truncated).write_bytes(part_path(study_dir / "table", truncated).read_bytes()[:64])
    part_path(study_dir / "table", missing).unlink()
    part_path(study_dir / "table", lost).unlink()
    lost_entry = load_manifest(study_dir).by_key()[lost]
    (study_dir / lost_entry.result_path / "result.json").unlink()
    (study_dir / ".manifest.json.4242.tmp").write_text("")  # what a driver killed mid-write leaves
    capsys.readouterr()

    again = run(study, StudyOptions(quiet=True, resume_dir=study_dir))
    err = capsys.readouterr().err
    assert "rebuilt 2 table part(s) from their result.json" in err and "1 completed entries lost" in err
    assert again.summary.completed == 3 and again.summary.failed == 0
    assert_results_once(study_dir, _keys(study))
    after = {row["key"]: row for row in pq.read_table(study_dir / "results.parquet").to_pylist()}
    for row in before:
        if row["key"] != lost:
            assert after[row["key"]] == row, f"{row['key']}: the rebuilt row differs from the original"
    assert [r.attempt for r in load_manifest(study_dir).by_key()[lost].history] == [1, 2]
    assert not list(study_dir.glob(".*.tmp"))


def test_a_directory_without_manifest_is_resumed_there(ray_2gpu, tmp_path):
    study_dir = tmp_path / "t_20260101T000000Z"
    study_dir.mkdir()
    study = fake_study([fake_experiment(520)], tmp_path)
    result = run(study, StudyOptions(quiet=True, resume_dir=study_dir))
    assert Path(result.output_dir) == study_dir and result.summary.completed == 1
    assert_results_once(study_dir, _keys(study))


def test_the_first_cause_survives_a_finish_that_fails_too(ray_2gpu, tmp_path):
    study = fake_study([fake_experiment(530)], tmp_path)
    items = plan_items(study.experiments, 1, "interleaved", study.study_design_hash)
    (key,) = [i.key for i in items]
    study_dir = tmp_path / "t_20260101T000000Z"
    (study_dir / "table" / f"part-{key}.parquet").mkdir(parents=True)  # storing the row fails (EISDIR)
    manifest = StudyManifest(
        study_name=study.name, study_design_hash=study.study_design_hash, entries=[i.manifest_entry() for i in items]
    )
    ManifestWriter.create(study_dir / MANIFEST_FILE, manifest)  # a driver stopped after writing its manifest
    (study_dir / "results.parquet").mkdir()  # and so does consolidating the table at the end
    with pytest.raises(StudyError, match=rf"the results actor could not store {key}: IsADirectoryError") as info:
        run(study, StudyOptions(quiet=True, resume_dir=study_dir))
    (note,) = info.value.__notes__
    assert note.startswith("also, while finishing the stopped study: ") and "could not finish the study" in note
    assert load_manifest(study_dir).counts()["running"] == 0


STUDY = {
    "backend": "fake",
    "name": "locked",
    "model": "llem/tiny-llama",
    "dataset": "synthetic",
    "n": 1,
    "max_output_tokens": 2,
    "prefill_split": False,
    "warmup": {"n_warmup": 0, "thermal_floor_s": 0},
    "baseline": {"enabled": False},
    "passthrough_kwargs": {"fake_duration_s": 3.0},
    "sweep": {"random_seed": [1, 2, 3, 4]},
    "execution": {"n_cycles": 1, "config_gap_seconds": 0, "cycle_gap_seconds": 0, "timeout_s": 120},
}


def _running_study(root: Path, timeout_s: float = 120) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in root.glob("*/manifest.json"):
            try:
                if load_manifest(path.parent).counts()["running"] >= 1:
                    return path.parent
            except (ValueError, OSError):  # being replaced
                pass
        time.sleep(0.2)
    raise AssertionError("the study never started running")


def test_second_driver_is_refused_sigterm_exits_143_and_the_study_resumes(ray_2gpu, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY))
    first = study_driver(ray_2gpu, str(config), "--output", str(tmp_path / "out"))
    study_dir = _running_study(tmp_path / "out")
    running_before = {e.key: e.attempts for e in load_manifest(study_dir).entries if e.status == "running"}

    second = study_driver(ray_2gpu, str(config), "--resume", str(study_dir))
    _, err = second.communicate(timeout=60)
    assert second.returncode == EXIT_ERROR, err[-2000:]
    assert err.splitlines() == [err.splitlines()[0]] and f"in use by another driver (pid {first.pid} on " in err
    after = load_manifest(study_dir).by_key()
    assert all(after[k].attempts == n for k, n in running_before.items()), "the refused driver touched the manifest"

    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == EXIT_TERMINATED, err[-2000:]
    assert err.splitlines()[-1] == "llem: terminated (SIGTERM); continue with --resume <study directory>"
    assert load_manifest(study_dir).counts()["running"] == 0

    third = study_driver(ray_2gpu, str(config), "--resume", str(study_dir))
    _, err = third.communicate(timeout=240)
    assert third.returncode == EXIT_OK, err[-2000:]
    assert_results_once(study_dir, _keys(load_study_config(config)))
