"""The study table as one live Parquet dataset, compacted atomically (issue 13).

Layout (all under the study directory):

    table -> .table/v000003                 a relative symlink: the current version, what readers open
    .table/v000003/part-<key>.parquet       one row: a result stored since the last compaction
    .table/v000003/compact-t<tier>-v<n>-<i>.parquet   many rows, written by a compaction

Readers open `<study_dir>/table` as a Parquet dataset (pyarrow.dataset, DuckDB, pandas, polars) at any
time, the study running or not, and see every row of the version they list exactly once, never a row
twice. Files never change once they are visible: a part appears by atomic rename (results/table.py
`write_part`), and compaction never edits a version, it builds the next one (below). To read one
version whole, resolve the link first (`open_dataset`, or `os.path.realpath` / `readlink -f`): that
version stays whole for `keep_versions_s` after it is superseded. A reader that lists through the
link sees one version, but if a compaction switches versions during its listing or reads, it may
find a file gone (file-not-found: read again) or, as pyarrow skips files that vanish while it
lists, miss the rows of the parts just merged; it never sees a row twice.
1. when the current version holds `compact_parts` part files, the parts of completed entries are merged
   into one tier-0 file (sorted by run order); whenever `fanout` files of one tier exist they are merged
   into one file of the next tier (size-tiered, so each row is rewritten O(log n) times);
2. the new version's directory gets the merged files and hard links to every file left as it was,
   is fsynced and renamed from a hidden temporary name into place;
3. the `table` symlink is replaced atomically (`os.replace`) to point at it. A version older than the
   previous one is removed once it has been superseded for `keep_versions_s` (renamed to a hidden name
   first, so a reader that looks for it afterwards gets file-not-found, never a part of it).
A crash before step 3 leaves the previous version current (the unfinished directory is removed by
`StudyTable.open`); after it, the new one. Either holds every stored row once. So the table holds at
most `compact_parts - 1` one-row files plus a few compacted files per tier, however long the study.

A `table/` that is a plain directory (a study directory from before this layout, or one a test
built) becomes version 0 when the table is opened for writing. The study directory needs a POSIX
file system (symlinks, hard links, atomic rename); `fanout`, `compact_parts` and `keep_versions_s` are
parameters so tests can compact small tables.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from llem_ray.results.atomic import fsync_dir, write_atomic
from llem_ray.results.table import COMPACT_PATTERN, STUDY_TABLE_SCHEMA, part_key, table_files

if TYPE_CHECKING:
    import pyarrow.dataset as ds

TABLE_LINK = "table"
VERSIONS_DIR = ".table"
COMPACT_PARTS = 256
"""Part files a version may hold before its parts are compacted into one file."""
COMPACT_FANOUT = 8
"""Compacted files of one tier merged into one file of the next tier."""
KEEP_VERSIONS_S = 60.0
"""How long a superseded version (older than the previous one) stays for readers that resolved it, s."""

_VERSION = re.compile(r"^v(\d{6})$")


def open_dataset(study_dir: Path) -> ds.Dataset:
    """The study table of `study_dir` as a pyarrow dataset over one version (the link resolved first).
    Raises FileNotFoundError when the directory has no table. (`pyarrow.dataset` is imported here, not
    at module level: it imports pandas, half a second of the results actor's start.)"""
    import pyarrow.dataset as ds

    return ds.dataset(os.path.realpath(Path(study_dir) / TABLE_LINK), format="parquet", schema=STUDY_TABLE_SCHEMA)


class StudyTable:
    """The study table of one study directory, for its one writer (the results actor); see the module
    docstring. Times and sizes: `compact_parts` part files, `fanout` files per tier."""

    def __init__(
        self,
        study_dir: Path,
        compact_parts: int = COMPACT_PARTS,
        fanout: int = COMPACT_FANOUT,
        keep_versions_s: float = KEEP_VERSIONS_S,
    ):
        if compact_parts < 1 or fanout < 2 or keep_versions_s < 0:
            raise ValueError("compact_parts must be >= 1, fanout >= 2 and keep_versions_s >= 0")
        self.study_dir = Path(study_dir)
        self.path = self.study_dir / TABLE_LINK
        self.versions = self.study_dir / VERSIONS_DIR
        self.compact_parts = compact_parts
        self.fanout = fanout
        self.keep_versions_s = keep_versions_s
        self._superseded_s: dict[int, float] = {}
        self._open()

    def _open(self) -> None:
        """Make `table` a link to a version: create version 0, adopt a plain `table/` as version 0, or
        re-link the newest version when a crash left none linked; remove unfinished versions."""
        self.versions.mkdir(exist_ok=True)
        for leftover in self.versions.glob(".*"):  # unfinished versions, versions half removed
            shutil.rmtree(leftover, ignore_errors=True)
        now_s = time.monotonic()
        self._superseded_s = {n: now_s for n in self._numbers()}
        if self.path.is_symlink() and self.path.exists():
            return
        if self.path.is_dir() and not self.path.is_symlink():
            target = self.versions / self._name(self._next_number())
            os.rename(self.path, target)
        else:
            if self.path.is_symlink():  # dangling: its version was removed (never by this module)
                self.path.unlink()
            numbers = self._numbers()
            target = self.versions / self._name(numbers[-1] if numbers else 0)
            target.mkdir(exist_ok=True)
        self._link(target)

    @staticmethod
    def _name(number: int) -> str:
        return f"v{number:06d}"

    def _numbers(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.versions.iterdir() if (m := _VERSION.match(p.name)))

    def _next_number(self) -> int:
        numbers = self._numbers()
        return numbers[-1] + 1 if numbers else 0

    def current(self) -> Path:
        """The directory of the current version."""
        return self.path.resolve()

    def _link(self, target: Path) -> None:
        tmp = self.study_dir / f".{TABLE_LINK}.link.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, self.study_dir), tmp)
        os.replace(tmp, self.path)
        fsync_dir(self.study_dir)

    def parts(self) -> list[Path]:
        """The one-row part files of the current version."""
        return [p for p in table_files(self.current()) if part_key(p) is not None]

    def compact(self, completed: Callable[[list[str]], set[str]]) -> int:
        """Compact the current version if it holds `compact_parts` parts (module docstring); returns the
        rows merged from parts (0 if it did nothing). `completed(keys)` says which of the parts' keys are
        completed entries: only their parts are merged (a part of an entry not completed yet, left by a
        crash between its write and the manifest change, stays a part, to be replaced or removed).
        Unreadable parts stay too (repair on resume). Raises OSError when the new version cannot be
        written (the current one stays as it was)."""
        parts = self.parts()
        if len(parts) < self.compact_parts:
            return 0
        done = completed([part_key(p) for p in parts])
        merged: list[pa.Table] = []
        used: list[Path] = []
        for path in parts:
            if part_key(path) in done:
                try:
                    merged.append(pq.read_table(path, schema=STUDY_TABLE_SCHEMA))
                    used.append(path)
                except (OSError, ValueError):  # unreadable: left for repair
                    continue
        if not used:
            return 0
        self._build(used, merged)
        return len(used)

    def _build(self, used_parts: list[Path], part_tables: list[pa.Table]) -> None:
        """Write the next version: the merged parts as one tier-0 file, cascading merges of full tiers,
        hard links to every other file; then switch the link and remove versions before the previous."""
        number = self._next_number()
        kept = [p for p in table_files(self.current()) if p not in used_parts]
        on_disk: dict[int, list[Path]] = {}
        for path in kept:
            if (match := COMPACT_PATTERN.match(path.name)) is not None:
                on_disk.setdefault(int(match.group(1)), []).append(path)
        new: dict[int, list[pa.Table]] = {0: [pa.concat_tables(part_tables)]}
        tier = 0
        while len(on_disk.get(tier, [])) + len(new.get(tier, [])) >= self.fanout:
            merged = on_disk.pop(tier, [])
            kept = [p for p in kept if p not in merged]
            tables = [pq.read_table(p, schema=STUDY_TABLE_SCHEMA) for p in merged] + new.pop(tier, [])
            new.setdefault(tier + 1, []).append(pa.concat_tables(tables))
            tier += 1
        staging = self.versions / f".{self._name(number)}.tmp"
        staging.mkdir()
        for path in kept:
            os.link(path, staging / path.name)
        for tier, tables in new.items():
            for index, table in enumerate(tables):
                rows = table.sort_by([("order_index", "ascending")])
                name = f"compact-t{tier}-v{number:06d}-{index}.parquet"
                write_atomic(staging / name, lambda tmp, rows=rows: pq.write_table(rows, tmp))
        fsync_dir(staging)
        target = self.versions / self._name(number)
        os.rename(staging, target)
        fsync_dir(self.versions)
        self._link(target)
        now_s = time.monotonic()
        self._superseded_s[number - 1] = now_s
        for old in self._numbers():
            if old < number - 1 and now_s - self._superseded_s.setdefault(old, now_s) >= self.keep_versions_s:
                trash = self.versions / f".removed-{self._name(old)}"
                os.rename(self.versions / self._name(old), trash)
                shutil.rmtree(trash, ignore_errors=True)
                del self._superseded_s[old]
