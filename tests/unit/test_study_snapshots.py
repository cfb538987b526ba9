"""benchmarks/study_snapshots.py: the archive of a live study directory is whole and resumable."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

from llem_ray.cluster.plan import plan_items
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.results.manifest import AttemptRecord, ManifestWriter, StudyManifest, read_manifest, utc_now

_SPEC = importlib.util.spec_from_file_location(
    "study_snapshots", Path(__file__).resolve().parents[2] / "benchmarks" / "study_snapshots.py"
)
snapshots = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(snapshots)


def _study(study_dir: Path) -> tuple[ManifestWriter, list[str]]:
    items = plan_items([ExperimentConfig(random_seed=i, dataset="synthetic") for i in range(2)], 1, "interleaved", "h")
    manifest = StudyManifest(study_name="s", study_design_hash="h", entries=[i.manifest_entry() for i in items])
    study_dir.mkdir(parents=True)
    return ManifestWriter.create(study_dir / "manifest.json", manifest), [i.key for i in items]


def _complete(writer: ManifestWriter, key: str, study_dir: Path) -> None:
    (study_dir / "experiments" / key).mkdir(parents=True)
    (study_dir / "experiments" / key / "result.json").write_text("{}")
    writer.mark_completed(key, f"experiments/{key}", AttemptRecord(attempt=1, dispatched_at=utc_now()))


def test_the_archive_holds_the_live_store_whole_and_is_rewritten_as_runs_end(tmp_path):
    root, into = tmp_path / "out", tmp_path / "into"
    into.mkdir()
    study_dir = root / "s-20261202"
    writer, (a, b) = _study(study_dir)  # the writer stays open: its changes sit in the WAL
    _complete(writer, a, study_dir)
    (study_dir / ".llem.lock").write_text("held")
    (study_dir / ".part.123.tmp").write_text("half")

    assert snapshots.main([str(root), str(tmp_path / "not-started"), "--into", str(into), "--for-s", "0"]) == 3
    archive = into / "out-s-20261202.tgz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "back", filter="data")
    back = tmp_path / "back" / "s-20261202"
    assert read_manifest(back).counts() == {"pending": 1, "running": 0, "completed": 1, "failed": 0}
    assert (back / "experiments" / a / "result.json").is_file()
    assert not [n for n in names if n.endswith((".llem.lock", ".tmp", "-wal", "-shm"))], names
    assert sorted(p.name for p in into.iterdir()) == [archive.name], "a temporary archive was left"

    _complete(writer, b, study_dir)
    assert snapshots.main([str(root), "--into", str(into), "--for-s", "5", "--every-s", "0.1"]) == 0
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "again", filter="data")
    assert read_manifest(tmp_path / "again" / "s-20261202").counts()["completed"] == 2
    writer.close()
