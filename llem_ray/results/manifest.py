"""The study manifest (RES-14, STU-08/09, CAMP-03): the checkpoint that makes a study resumable.

One `ManifestEntry` per (experiment, cycle), identified by `entry_key(measurement_config_hash,
cycle)` (STU-11): its status (pending, running, completed, failed), the number of attempts, the
last error, the path of its result directory, and one `AttemptRecord` per attempt (where it ran,
when, on which GPUs, seconds per stage).

Storage (issue 13): `ManifestWriter` keeps the manifest in `<study_dir>/manifest.sqlite`
(results/manifest_sql.py: SQLite, WAL, one fsynced transaction per change, whatever the study's size).
A kill at any instant leaves the last committed change; a reader (`read_manifest`) sees one committed
state, never a torn one. `manifest.json` is an export of one snapshot, written by `export()` (the
results actor does so at a bounded rate while the study runs and at its end: manifest_export.py);
readers that need the live state use `read_manifest`. A study directory written before the store
existed (only `manifest.json`) is migrated into a store when it is first loaded; its manifest.json stays.

No Ray here: the results actor owns a `ManifestWriter`; tests use it directly.

Example:
    >>> writer = ManifestWriter.create(Path("study/manifest.json"), StudyManifest(...))
    >>> writer.mark_running(key, AttemptRecord(attempt=1, dispatched_at=now))
    >>> writer.mark_completed(key, "experiments/abc-c1/run_20260101T000000", record)
    >>> read_manifest(Path("study")).counts()
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llem_ray.results import manifest_sql as sql
from llem_ray.results.atomic import write_bytes_atomic
from llem_ray.results.manifest_sql import PlannedRow, store_path, transaction

MANIFEST_SCHEMA_VERSION = "1.1"
"""1.1: attempts record seconds per stage and their measured window (issue 13)."""
MANIFEST_FILE = "manifest.json"

EntryStatus = Literal["pending", "running", "completed", "failed"]


def entry_key(measurement_config_hash: str, cycle: int) -> str:
    """Identity of one (experiment, cycle): `<measurement_config_hash>-c<cycle>` (cycle from 1)."""
    return f"{measurement_config_hash}-c{cycle}"


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttemptRecord(_Model):
    """One attempt of one (experiment, cycle): where and when it ran and how it ended."""

    attempt: int = Field(..., ge=1, description="1 for the first attempt, +1 per retry.")
    status: Literal["running", "completed", "failed"] = "running"
    dispatched_at: datetime = Field(..., description="When the driver asked for an actor (UTC).")
    started_at: datetime | None = Field(None, description="When the actor began the experiment (UTC).")
    ended_at: datetime | None = Field(None, description="When the result arrived or the actor was gone (UTC).")
    node_id: str | None = None
    hostname: str | None = None
    gpu_ids: list[str] = Field(default_factory=list, description="Ray accelerator ids on the node.")
    gpu_uuids: list[str] = Field(default_factory=list, description="NVML UUIDs (empty without NVML).")
    actor_pid: int | None = None
    gpu_pids_seen: list[int] = Field(
        default_factory=list, description="Compute processes seen on the GPUs during the measured window."
    )
    error: str | None = None
    stages_s: dict[str, float] = Field(
        default_factory=dict, description="Seconds per stage, in the order they ran (cluster/stages.py)."
    )
    window_started_at: datetime | None = Field(None, description="Start of the measured window (UTC).")
    window_ended_at: datetime | None = Field(None, description="End of the measured window (UTC).")


class ManifestEntry(_Model):
    """The state of one (experiment, cycle)."""

    key: str
    order_index: int = Field(..., ge=0, description="Position in the study's run order.")
    name: str
    measurement_config_hash: str
    cycle: int = Field(..., ge=1)
    backend: str
    status: EntryStatus = "pending"
    attempts: int = Field(0, ge=0, description="Attempts started so far.")
    error: str | None = Field(None, description="Error of the last failed attempt.")
    result_path: str | None = Field(None, description="Result directory, relative to the study directory.")
    history: list[AttemptRecord] = Field(default_factory=list)


class StudyManifest(_Model):
    """In-progress checkpoint of a study (distinct from the final `StudyResult`, RES-14): a snapshot."""

    schema_version: str = MANIFEST_SCHEMA_VERSION
    study_name: str
    study_design_hash: str
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    entries: list[ManifestEntry] = Field(default_factory=list)

    def by_key(self) -> dict[str, ManifestEntry]:
        """Entries keyed by `entry_key`."""
        return {e.key: e for e in self.entries}

    def keys_with(self, *statuses: EntryStatus) -> list[str]:
        """Keys of entries in any of `statuses`, in run order."""
        return [e.key for e in sorted(self.entries, key=lambda e: e.order_index) if e.status in statuses]

    def counts(self) -> dict[str, int]:
        """Number of entries per status (every status present, zero included)."""
        out = {"pending": 0, "running": 0, "completed": 0, "failed": 0}
        for e in self.entries:
            out[e.status] += 1
        return out


def write_json_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (results/atomic.py: no temp file outlives a failed write)."""
    write_bytes_atomic(path, text.encode("utf-8"))


@dataclass(frozen=True)
class ManifestHeader:
    """Which study a manifest belongs to, and how many entries it plans."""

    study_name: str
    study_design_hash: str
    n_entries: int


def has_manifest(study_dir: Path) -> bool:
    """True if `study_dir` holds a manifest: a store, or a `manifest.json` from before the store."""
    return store_path(study_dir).is_file() or (Path(study_dir) / MANIFEST_FILE).is_file()


def read_manifest(study_dir: Path) -> StudyManifest:
    """The manifest of `study_dir` as one committed snapshot: from its store (while a study runs too),
    else from `manifest.json` (a directory from before the store). O(entries): for readers, not writers.

    Raises FileNotFoundError without either, sqlite3.Error or pydantic ValidationError when unreadable.
    """
    store = store_path(study_dir)
    if not store.is_file():
        return StudyManifest.model_validate_json((Path(study_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    conn = sql.connect(store, readonly=True)
    try:
        return StudyManifest.model_validate_json(sql.export_text(conn))
    finally:
        conn.close()


def export_manifest(study_dir: Path) -> None:
    """Write `<study_dir>/manifest.json` (atomic) from one snapshot of its store, on a connection of its
    own (any thread may call it). Raises sqlite3.Error or OSError."""
    conn = sql.connect(store_path(study_dir), readonly=True)
    try:
        text = sql.export_text(conn)
    finally:
        conn.close()
    write_json_atomic(Path(study_dir) / MANIFEST_FILE, text)


def _planned(entry: ManifestEntry) -> PlannedRow:
    return (entry.key, entry.order_index, entry.name, entry.measurement_config_hash, entry.cycle, entry.backend)


def _create(store: Path, manifest: StudyManifest) -> None:
    """Create `store` holding `manifest` whole (its entries' state and history too: a migration)."""
    meta = {
        "manifest_schema_version": MANIFEST_SCHEMA_VERSION,
        "study_name": manifest.study_name,
        "study_design_hash": manifest.study_design_hash,
        "created_at": manifest.created_at.isoformat(),
        "updated_at": utc_now().isoformat(),
    }
    entries = manifest.entries
    state = [
        (e.status, e.attempts, e.error, e.result_path, e.key) for e in entries if e.status != "pending" or e.attempts
    ]
    attempts = [(e.key, r.attempt, r.status, r.model_dump_json()) for e in entries for r in e.history]
    sql.create_store(store, meta, [_planned(e) for e in entries], state, attempts)


class ManifestWriter:
    """Owns the manifest store of one study directory (the only writer; see module docstring).

    `path` is the manifest's `manifest.json` (its export); the store lives beside it. Every `mark_*`
    is one transaction and idempotent (marking the same attempt twice gives the same manifest), which
    lets a restarted results actor replay calls safely. Unknown keys raise KeyError; storage errors
    raise sqlite3.Error (the change is then not made).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.store = store_path(self.path.parent)
        self._conn = sql.connect(self.store)

    @classmethod
    def create(cls, path: Path, manifest: StudyManifest) -> ManifestWriter:
        """A writer for a new manifest holding `manifest`. Raises FileExistsError if a store exists."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _create(store_path(Path(path).parent), manifest)
        return cls(path)

    @classmethod
    def load(cls, path: Path) -> ManifestWriter:
        """A writer for an existing manifest: its store, or its `manifest.json` migrated into a new
        store. Raises FileNotFoundError without either, pydantic ValidationError for a bad manifest.json."""
        path = Path(path)
        store = store_path(path.parent)
        if not store.is_file():
            _create(store, StudyManifest.model_validate_json(path.read_text(encoding="utf-8")))
        return cls(path)

    def close(self) -> None:
        self._conn.close()

    # ---- reading --------------------------------------------------------------------------------
    def header(self) -> ManifestHeader:
        meta = sql.read_meta(self._conn)
        (n,) = self._conn.execute("SELECT count(*) FROM entries").fetchone()
        return ManifestHeader(meta["study_name"], meta["study_design_hash"], n)

    @property
    def manifest(self) -> StudyManifest:
        """The whole manifest as one snapshot (O(entries): for tests and readers)."""
        return StudyManifest.model_validate_json(sql.export_text(self._conn))

    def entry(self, key: str) -> ManifestEntry:
        """The entry for `key`, with its history (KeyError if unknown)."""
        text = sql.entry_json(self._conn, key)
        if text is None:
            raise KeyError(key)
        return ManifestEntry.model_validate_json(text)

    def keys_with(self, *statuses: EntryStatus) -> list[str]:
        """Keys of entries in any of `statuses`, in run order."""
        marks = ", ".join("?" * len(statuses))
        query = f"SELECT key FROM entries WHERE status IN ({marks}) ORDER BY order_index"
        rows = self._conn.execute(query, statuses)
        return [key for (key,) in rows]

    def attempts_not_completed(self) -> dict[str, int]:
        """Attempts started so far of every entry not completed, by key."""
        rows = self._conn.execute("SELECT key, attempts FROM entries WHERE status != 'completed'")
        return dict(rows.fetchall())

    def completed_among(self, keys: list[str]) -> set[str]:
        """Those of `keys` whose entry is completed."""
        done: set[str] = set()
        for start in range(0, len(keys), 500):  # SQLite limits the parameters of one statement
            chunk = keys[start : start + 500]
            query = f"SELECT key FROM entries WHERE status = 'completed' AND key IN ({', '.join('?' * len(chunk))})"
            done.update(key for (key,) in self._conn.execute(query, chunk))
        return done

    def rows(self) -> list[tuple[str, int, str, str, EntryStatus, str | None]]:
        """(key, order_index, name, measurement_config_hash, status, result_path) of every entry, in run order."""
        query = "SELECT key, order_index, name, measurement_config_hash, status, result_path FROM entries"
        return self._conn.execute(query + " ORDER BY order_index").fetchall()

    # ---- changing -------------------------------------------------------------------------------
    def _status(self, key: str) -> EntryStatus:
        row = self._conn.execute("SELECT status FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return row[0]

    def _touch(self) -> None:
        self._conn.execute("UPDATE meta SET value = ? WHERE name = 'updated_at'", (utc_now().isoformat(),))

    def _put_attempt(self, key: str, record: AttemptRecord) -> None:
        values = (key, record.attempt, record.status, record.model_dump_json())
        self._conn.execute("INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?)", values)
        self._conn.execute("UPDATE entries SET attempts = max(attempts, ?) WHERE key = ?", (record.attempt, key))

    def _set(self, key: str, status: EntryStatus, error: str | None, **result_path: str | None) -> None:
        column = ", result_path = :result_path" if result_path else ""
        values = {"key": key, "status": status, "error": error, **result_path}
        self._conn.execute(f"UPDATE entries SET status = :status, error = :error{column} WHERE key = :key", values)
        self._touch()

    def add_missing(self, entries: list[ManifestEntry]) -> list[str]:
        """Add entries whose key is not present yet (a resume with more cycles); returns their keys."""
        return self.add_planned([_planned(e) for e in entries])

    def add_planned(self, rows: Iterable[PlannedRow]) -> list[str]:
        """Add planned entries (pending) whose key is not present yet; returns their keys, in order."""
        rows = list(rows)
        if not rows:  # the results actor's start on resume: no need to read 100,000 keys
            return []
        known = {key for (key,) in self._conn.execute("SELECT key FROM entries")}
        new = [row for row in rows if row[0] not in known]
        if new:
            with transaction(self._conn):
                columns = ", ".join(sql.ENTRY_COLUMNS)
                self._conn.executemany(f"INSERT OR IGNORE INTO entries ({columns}) VALUES (?, ?, ?, ?, ?, ?)", new)
                self._touch()
        return [row[0] for row in new]

    def _close_running(self, key: str, error: str | None) -> None:
        query = "SELECT record FROM attempts WHERE key = ? AND status = 'running'"
        for (text,) in self._conn.execute(query, (key,)).fetchall():
            record = AttemptRecord.model_validate_json(text)
            ended_at = record.ended_at or utc_now()
            self._put_attempt(key, record.model_copy(update={"status": "failed", "error": error, "ended_at": ended_at}))

    def reopen(self, key: str, error: str) -> None:
        """A completed entry whose result files are gone goes back to pending (it is measured again);
        its history is kept, the last attempt's error says why."""
        with transaction(self._conn):
            self._status(key)
            self._set(key, "pending", error, result_path=None)

    def release_running(self, error: str) -> list[str]:
        """Every entry still `running` goes back to pending and its running attempt becomes failed
        with `error`, ended now (or at its recorded end): the latest moment it can have run, and
        earlier than any new attempt. Called on resume (a driver stopped without saying so: SIGKILL,
        lost head node; its actors died with it) and by a stopping driver once its actors are killed.
        Returns their keys (one transaction)."""
        with transaction(self._conn):
            query = "SELECT key FROM entries WHERE status = 'running' ORDER BY order_index"
            keys = [k for (k,) in self._conn.execute(query)]
            for key in keys:
                self._close_running(key, error)
                self._set(key, "pending", error)
        return keys

    def mark_running(self, key: str, record: AttemptRecord) -> None:
        """Attempt `record.attempt` has been dispatched (a completed entry is left as it is)."""
        with transaction(self._conn):
            if self._status(key) != "completed":
                self._put_attempt(key, record.model_copy(update={"status": "running"}))
                self._set(key, "running", None)

    def mark_completed(self, key: str, result_path: str, record: AttemptRecord) -> None:
        """The attempt produced a result stored at `result_path` (relative to the study directory)."""
        with transaction(self._conn):
            self._status(key)
            self._put_attempt(key, record.model_copy(update={"status": "completed", "error": None}))
            self._set(key, "completed", None, result_path=result_path)

    def mark_failed(self, key: str, error: str, record: AttemptRecord) -> None:
        """The attempt failed with `error`; the driver decides whether another attempt follows."""
        with transaction(self._conn):
            if self._status(key) != "completed":
                self._put_attempt(key, record.model_copy(update={"status": "failed", "error": error}))
                self._set(key, "failed", error)

    def add_stages(self, key: str, attempt: int, stages_s: dict[str, float]) -> None:
        """Merge `stages_s` (seconds per stage) into attempt `attempt` of `key` (ignored if unknown)."""
        with transaction(self._conn):
            self._status(key)
            query = "SELECT record FROM attempts WHERE key = ? AND attempt = ?"
            row = self._conn.execute(query, (key, attempt)).fetchone()
            if row is not None:
                record = AttemptRecord.model_validate_json(row[0])
                self._put_attempt(key, record.model_copy(update={"stages_s": {**record.stages_s, **stages_s}}))
                self._touch()
