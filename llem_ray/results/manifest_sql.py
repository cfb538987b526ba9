"""SQLite storage of a study manifest (issue 13): one row per entry and per attempt, WAL mode.

`<study_dir>/manifest.sqlite` holds three tables: `meta` (schema version, study name and design hash,
created/updated times), `entries` (one row per (experiment, cycle): status, attempts, error, result
path) and `attempts` (one row per attempt: its `AttemptRecord` as JSON). A change to one entry is one
transaction touching a few rows, so its cost does not grow with the study (a B-tree lookup, then one
fsync of the write-ahead log: `synchronous=FULL`).

Guarantees, all SQLite's own: a transaction is committed whole or not at all, also when the writer is
killed (SIGKILL) or the machine loses power mid-write; a reader in another process (`connect(...,
readonly=True)`) sees the last committed state and never a partial one, while the writer goes on (WAL:
readers and the writer do not block each other). SQLite's WAL needs every process that opens the file
on one host with working POSIX locks: keep study directories on a local disk or block volume, not NFS.

A store is created whole or not at all: it is built under a temporary name and renamed into place
(`create_store`), so a directory holds either no store or one with its schema and planned entries.
`export_text` renders one consistent snapshot as the JSON of `StudyManifest` (`manifest.json`), built
inside SQLite (its JSON functions run without Python's GIL). No pydantic here: manifest.py maps rows to
models.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from llem_ray.results.atomic import fsync_dir, temp_path

STORE_FILE = "manifest.sqlite"
STORE_SCHEMA_VERSION = "1"
BUSY_TIMEOUT_S = 30.0
"""How long a connection waits for another one's lock before raising sqlite3.OperationalError, s."""

ENTRY_COLUMNS = ("key", "order_index", "name", "measurement_config_hash", "cycle", "backend")
"""The planned part of an entry, in the order `PlannedRow` tuples hold it."""
PlannedRow = tuple[str, int, str, str, int, str]
"""(key, order_index, name, measurement_config_hash, cycle, backend) of one planned entry."""

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE entries (
    key TEXT PRIMARY KEY, order_index INTEGER NOT NULL, name TEXT NOT NULL,
    measurement_config_hash TEXT NOT NULL, cycle INTEGER NOT NULL, backend TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, error TEXT, result_path TEXT
) WITHOUT ROWID;
CREATE INDEX entries_by_status ON entries (status);
CREATE TABLE attempts (
    key TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (key, attempt)
) WITHOUT ROWID;
"""

_ENTRY_JSON = """
SELECT json_object(
    'key', e.key, 'order_index', e.order_index, 'name', e.name,
    'measurement_config_hash', e.measurement_config_hash, 'cycle', e.cycle, 'backend', e.backend,
    'status', e.status, 'attempts', e.attempts, 'error', e.error, 'result_path', e.result_path,
    'history', json(coalesce(
        (SELECT json_group_array(json(a.record))
         FROM (SELECT record FROM attempts WHERE key = e.key ORDER BY attempt) AS a),
        '[]'))) AS entry
FROM entries AS e
"""


def store_path(study_dir: Path) -> Path:
    """Where the manifest store of `study_dir` lives."""
    return Path(study_dir) / STORE_FILE


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the existing store `path` (never creates one: sqlite3.OperationalError if absent).

    Autocommit mode: writers group their statements with `transaction`. `readonly` connections can
    only read (other processes: tests, `llem report`, the JSON export).
    """
    uri = f"file:{quote(str(path))}?mode={'ro' if readonly else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    if not readonly:
        conn.execute("PRAGMA synchronous=FULL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction: committed when the block ends, rolled back if it raises. A read transaction
    (`write=False`) sees one consistent snapshot for all its statements."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_store(
    path: Path,
    meta: dict[str, str],
    rows: Iterable[PlannedRow],
    state: Iterable[tuple] = (),
    attempts: Iterable[tuple[str, int, str, str]] = (),
) -> None:
    """Create the store `path` whole: schema, `meta`, planned `rows`; `state` rows (status, attempts,
    error, result_path, key) and `attempts` rows (key, attempt, status, record JSON) carry an existing
    manifest over (migration). Built under a temporary name, fsynced, then renamed into place; on
    failure the temporary file is removed and the error raised. Raises FileExistsError if `path` exists.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists")
    tmp = temp_path(path)
    try:
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            with transaction(conn):
                header = {"store_schema_version": STORE_SCHEMA_VERSION, **meta}
                conn.executemany("INSERT INTO meta VALUES (?, ?)", header.items())
                conn.executemany(f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", rows)
                conn.executemany("UPDATE entries SET status=?, attempts=?, error=?, result_path=? WHERE key=?", state)
                conn.executemany("INSERT INTO attempts VALUES (?, ?, ?, ?)", attempts)
        finally:
            conn.close()  # checkpoints the WAL into the file and removes it
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        raise


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The `meta` table as a dict."""
    return dict(conn.execute("SELECT name, value FROM meta").fetchall())


def export_text(conn: sqlite3.Connection) -> str:
    """The manifest as `StudyManifest` JSON (one entry per line, in run order), from one snapshot.

    SQLite builds the entries' text in one statement, during which Python's GIL is released: an
    export running in a thread of the results actor does not hold up its changes.
    """
    with transaction(conn, write=False):
        meta = read_meta(conn)
        (entries,) = conn.execute(
            f"SELECT coalesce(group_concat(entry, ',' || char(10)), '') FROM ({_ENTRY_JSON} ORDER BY e.order_index)"
        ).fetchone()
    header = {k: meta[k] for k in ("study_name", "study_design_hash", "created_at", "updated_at")}
    head = json.dumps({"schema_version": meta["manifest_schema_version"], **header})[:-1]
    return head + ', "entries": [\n' + entries + "\n]}\n"


def entry_json(conn: sqlite3.Connection, key: str) -> str | None:
    """One entry, with its history, as `ManifestEntry` JSON; None if `key` is not in the store."""
    row = conn.execute(_ENTRY_JSON + " WHERE e.key = ?", (key,)).fetchone()
    return row[0] if row else None
