"""The study table as one live Parquet dataset (issue 13), without Ray: compaction keeps few files and
every row once, readers see each row exactly once while it compacts, a SIGKILL at any instant of a
compaction loses and duplicates nothing, a plain table/ directory is adopted, and repair handles bad
compacted files, orphaned parts and duplicates."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from llem_ray.results.manifest import ManifestEntry
from llem_ray.results.persistence import save_experiment
from llem_ray.results.repair import repair_parts
from llem_ray.results.study_table import VERSIONS_DIR, StudyTable
from llem_ray.results.table import STUDY_TABLE_SCHEMA, part_path, result_row, scan, table_files, write_part
from tests.result_factory import make_result, make_timeseries
from tests.unit.burst_writer import row

REPO_ROOT = Path(__file__).resolve().parents[2]


def _keys(path: Path) -> list[str]:
    """The keys of the dataset at `path`, read as any reader would (the schema given: it may be empty)."""
    dataset = ds.dataset(path, format="parquet", schema=STUDY_TABLE_SCHEMA)
    return dataset.to_table(columns=["key"]).column("key").to_pylist()


def test_compaction_keeps_few_files_and_every_row_once(tmp_path):
    table = StudyTable(tmp_path, compact_parts=4, fanout=2, keep_versions_s=0)
    keys = [f"{i:04d}-c1" for i in range(60)]
    for i, key in enumerate(keys):
        write_part(table.path, row(key, i))
        table.compact(lambda some: set(some))
        files = table_files(table.current())
        assert len([f for f in files if f.name.startswith("part-")]) < 4
        assert len(files) <= 3 + 2 * 6, f"{len(files)} files after {i + 1} rows"
        assert sorted(_keys(table.path)) == keys[: i + 1]
    assert len([p for p in (tmp_path / VERSIONS_DIR).iterdir()]) <= 2, "old versions were not removed"
    assert os.readlink(tmp_path / "table").startswith(VERSIONS_DIR), "the link must stay relative"
    merged = [f for f in table_files(table.current()) if f.name.startswith("compact-")]
    assert max(int(f.name.split("-")[1][1:]) for f in merged) >= 3, "tiers never cascaded"


def test_parts_of_entries_not_completed_are_never_compacted(tmp_path):
    table = StudyTable(tmp_path, compact_parts=3, fanout=8)
    for i in range(6):
        write_part(table.path, row(f"{i:04d}-c1", i))
    assert table.compact(lambda some: {k for k in some if k != "0002-c1"}) == 5
    assert [p.name for p in table.parts()] == ["part-0002-c1.parquet"]
    assert sorted(_keys(table.path)) == [f"{i:04d}-c1" for i in range(6)]


def test_a_reader_sees_every_row_once_while_the_writer_compacts(tmp_path):
    """A reader that resolves `table` first reads one version whole: every stored row exactly once, and it
    never fails. One that lists through the link never sees a row twice; if a compaction switches
    versions while it lists or reads, it may find a file gone (it reads again) or, as pyarrow skips
    files that vanish while it lists, miss the rows of the parts just merged (study_table.py)."""
    table = StudyTable(tmp_path, compact_parts=5, fanout=2, keep_versions_s=5)
    durable: list[str] = []
    problems: list[str] = []
    retried = [0]
    stop = threading.Event()

    def read(resolve: bool) -> None:
        reads = 0
        while not stop.is_set() or reads < 3:
            before = set(durable)
            try:
                keys = _keys(Path(os.path.realpath(tmp_path / "table")) if resolve else tmp_path / "table")
            except FileNotFoundError as exc:
                if resolve:
                    problems.append(f"a resolved version lost a file: {exc}")
                    return
                retried[0] += 1
                continue
            except Exception as exc:  # any other failure to read is a failure of the test
                problems.append(f"read failed: {type(exc).__name__}: {exc}")
                return
            reads += 1
            if len(keys) != len(set(keys)):
                problems.append(f"read {reads} (resolved {resolve}): a row twice")
            if resolve and not before <= set(keys):
                problems.append(f"read {reads} (resolved {resolve}): {len(before - set(keys))} stored rows missing")

    readers = [threading.Thread(target=read, args=(resolve,)) for resolve in (True, False)]
    for reader in readers:
        reader.start()
    try:
        for i in range(200):
            key = f"{i:04d}-c1"
            write_part(table.path, row(key, i))
            durable.append(key)
            table.compact(lambda some: set(some))
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=120)
    assert not problems, problems[:5]


def test_sigkill_during_compactions_loses_and_duplicates_no_row(tmp_path):
    rng = random.Random(13)
    for trial in range(3):
        study = tmp_path / f"s{trial}"
        study.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.unit.burst_writer", "table", str(study), "100000"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        seen = [proc.stdout.readline()]
        assert seen[0], "the writer printed nothing"
        kill_after_rows = rng.randint(9, 60)  # past the first compaction (8 parts), at a random point after it
        while len(seen) < kill_after_rows:
            line = proc.stdout.readline()
            assert line, "the writer stopped before it was killed"
            seen.append(line)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        stored = [line.split()[1] for line in [*seen, *out.splitlines()] if line.startswith("row")]
        assert len(stored) > 8, "killed before any compaction"
        StudyTable(study, compact_parts=8, fanout=3)  # what the results actor does when it (re)opens
        keys = _keys(study / "table")
        assert len(keys) == len(set(keys)), f"trial {trial}: a row twice"
        assert set(stored) <= set(keys) and len(keys) <= len(stored) + 2, f"trial {trial}: rows lost or invented"
        assert not list((study / VERSIONS_DIR).glob(".v*")), "an unfinished version survived reopening"


def test_a_plain_table_directory_becomes_version_0(tmp_path):
    for i in range(3):
        write_part(tmp_path / "table", row(f"{i:04d}-c1", i))
    table = StudyTable(tmp_path, compact_parts=2)
    assert (tmp_path / "table").is_symlink() and table.current().name == "v000000"
    assert sorted(_keys(table.path)) == ["0000-c1", "0001-c1", "0002-c1"]
    table.compact(lambda some: set(some))
    assert table.current().name == "v000001" and not table.parts()


def test_repair_rebuilds_a_bad_compacted_file_and_removes_orphans_and_duplicates(tmp_path):
    table = StudyTable(tmp_path, compact_parts=2, fanout=8)
    entries = {}
    for cycle in (1, 2, 3, 4):
        key = f"cfg0-c{cycle}"
        result = make_result(cycle=cycle)
        result_dir = save_experiment(result, make_timeseries(), tmp_path / "experiments" / key)
        relative = str(result_dir.relative_to(tmp_path))
        write_part(table.path, result_row(result, key=key, order_index=cycle - 1, result_path=relative))
        entries[key] = ManifestEntry(
            key=key,
            order_index=cycle - 1,
            name="n",
            measurement_config_hash="cfg0",
            cycle=cycle,
            backend="pytorch",
            status="completed",
            result_path=relative,
        )
        if cycle == 2:
            original = pq.read_table(part_path(table.path, "cfg0-c2"))
        table.compact(lambda some: set(some))
    first, second = table_files(table.current())  # (c1, c2) and (c3, c4)
    write_part(table.path, row("cfg0-c4", 3))  # a part duplicating a compacted row
    write_part(table.path, row("orphan-c1", 9))  # a part of an entry that never completed
    first.write_bytes(first.read_bytes()[:200])  # a compacted file cut short

    repair = repair_parts(tmp_path, table.path, list(entries), entries.__getitem__)
    assert repair.rebuilt == ["cfg0-c1", "cfg0-c2"] and repair.lost == {}
    assert sorted(p.name for p in repair.removed) == sorted(
        [first.name, "part-cfg0-c4.parquet", "part-orphan-c1.parquet"]
    )
    assert sorted(_keys(table.path)) == sorted(entries) and not scan(table.path).bad
    assert pq.read_table(part_path(table.path, "cfg0-c2")).equals(original), "the rebuilt row differs"
