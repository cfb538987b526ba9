"""The study manifest (RES-14, STU-08/09, CAMP-03): the checkpoint that makes a study resumable.

One `ManifestEntry` per (experiment, cycle), identified by `entry_key(measurement_config_hash,
cycle)` (STU-11): its status (pending, running, completed, failed), the number of attempts, the
last error, the path of its result directory, and one `AttemptRecord` per attempt (where it ran,
when, on which GPUs). `ManifestWriter` rewrites `manifest.json` atomically (temp file, fsync,
`os.replace`) after every change, so a reader, or a resumed study after a crash at any instant,
sees either the previous or the next complete manifest, never a torn one.

No Ray here: the results actor owns a `ManifestWriter`; tests use it directly.

Example:
    >>> writer = ManifestWriter.create(Path("study/manifest.json"), StudyManifest(...))
    >>> writer.mark_running(key, AttemptRecord(attempt=1, dispatched_at=now))
    >>> writer.mark_completed(key, "experiments/abc-c1/run_20260101T000000", record)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llem_ray.results.atomic import write_bytes_atomic

MANIFEST_SCHEMA_VERSION = "1.0"
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
    """In-progress checkpoint of a study (distinct from the final `StudyResult`, RES-14)."""

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


class ManifestWriter:
    """Owns one `manifest.json`: every `mark_*` updates the model and rewrites the file atomically.

    All `mark_*` methods are idempotent (marking the same attempt twice gives the same manifest),
    which lets a restarted results actor replay calls safely. Unknown keys raise KeyError.
    """

    def __init__(self, path: Path, manifest: StudyManifest):
        self.path = Path(path)
        self.manifest = manifest
        self._entries = manifest.by_key()

    @classmethod
    def create(cls, path: Path, manifest: StudyManifest) -> ManifestWriter:
        """A writer for a new manifest; writes it at once."""
        writer = cls(path, manifest)
        writer.write()
        return writer

    @classmethod
    def load(cls, path: Path) -> ManifestWriter:
        """A writer for an existing `manifest.json`. Raises FileNotFoundError or pydantic ValidationError."""
        text = Path(path).read_text(encoding="utf-8")
        return cls(path, StudyManifest.model_validate_json(text))

    def add_missing(self, entries: list[ManifestEntry]) -> list[str]:
        """Add entries whose key is not present yet (a resume with more cycles); returns their keys."""
        added = [e.key for e in entries if e.key not in self._entries]
        for entry in entries:
            if entry.key in added:
                self.manifest.entries.append(entry)
                self._entries[entry.key] = entry
        if added:
            self.write()
        return added

    def entry(self, key: str) -> ManifestEntry:
        """The entry for `key` (KeyError if unknown)."""
        return self._entries[key]

    def _put_attempt(self, entry: ManifestEntry, record: AttemptRecord) -> None:
        entry.history = [r for r in entry.history if r.attempt != record.attempt] + [record]
        entry.history.sort(key=lambda r: r.attempt)
        entry.attempts = max(entry.attempts, record.attempt)

    def mark_pending(self, key: str, error: str | None = None) -> None:
        """Back to pending (an interrupted attempt); its running record, if any, becomes failed."""
        entry = self._entries[key]
        if entry.status == "completed":
            return
        for record in entry.history:
            if record.status == "running":
                record.status, record.error, record.ended_at = "failed", error, record.ended_at or utc_now()
        entry.status, entry.error = "pending", error
        self.write()

    def reopen(self, key: str, error: str) -> None:
        """A completed entry whose result files are gone goes back to pending (it is measured again);
        its history is kept, the last attempt's error says why."""
        entry = self._entries[key]
        entry.status, entry.error, entry.result_path = "pending", error, None
        self.write()

    def release_running(self, error: str) -> list[str]:
        """On resume: entries still `running` were left by a driver that stopped without saying so
        (SIGKILL, lost head node). Their actors died with that driver, so each goes back to pending
        and its running attempt becomes failed with `error`, ended now: the latest moment it can
        have run, and earlier than any new attempt. Returns their keys."""
        keys = [e.key for e in self.manifest.entries if e.status == "running"]
        for key in keys:
            self.mark_pending(key, error)
        return keys

    def mark_running(self, key: str, record: AttemptRecord) -> None:
        """Attempt `record.attempt` has been dispatched (a completed entry is left as it is)."""
        entry = self._entries[key]
        if entry.status == "completed":
            return
        self._put_attempt(entry, record.model_copy(update={"status": "running"}))
        entry.status = "running"
        self.write()

    def mark_completed(self, key: str, result_path: str, record: AttemptRecord) -> None:
        """The attempt produced a result stored at `result_path` (relative to the study directory)."""
        entry = self._entries[key]
        self._put_attempt(entry, record.model_copy(update={"status": "completed", "error": None}))
        entry.status, entry.error, entry.result_path = "completed", None, result_path
        self.write()

    def mark_failed(self, key: str, error: str, record: AttemptRecord) -> None:
        """The attempt failed with `error`; the driver decides whether another attempt follows."""
        entry = self._entries[key]
        if entry.status == "completed":
            return
        self._put_attempt(entry, record.model_copy(update={"status": "failed", "error": error}))
        entry.status, entry.error = "failed", error
        self.write()

    def add_stages(self, key: str, attempt: int, stages_s: dict[str, float]) -> None:
        """Merge `stages_s` (seconds per stage) into attempt `attempt` of `key` (ignored if unknown)."""
        for record in self._entries[key].history:
            if record.attempt == attempt:
                record.stages_s = {**record.stages_s, **stages_s}
                self.write()

    def write(self) -> None:
        """Rewrite `manifest.json` atomically with the current state."""
        self.manifest.updated_at = utc_now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, json.dumps(self.manifest.model_dump(mode="json"), indent=1))
