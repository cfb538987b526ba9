"""A study directory's life outside the results actor (issue 18): creating it, locking it, resuming it.

- `new_study_dir`: `<output_dir>/<name>_<UTC timestamp>[_n]`, never an existing directory.
- `StudyLock`: an OS file lock (`fcntl.flock`) on `<study_dir>/.llem.lock` while a driver works
  there, so a second driver (a `--resume` started while the first still runs) is refused with a
  message that says who holds it. The kernel drops the lock when its process ends, however it ends
  (SIGKILL included), so a killed driver never leaves a stale lock. Advisory and local: on NFS it
  holds only where the server supports flock (NFSv4).
- `load_for_resume`: which study the directory's manifest belongs to (a `manifest.json` from before
  the manifest store is migrated into one here, under the lock); a directory with no manifest (its
  driver was killed before writing one) holds nothing else and is resumed as a new study in place.
- `completed_keys`: what a resume of the directory would skip, read without the lock (`--dry-run`).
No Ray here, and nothing here reads the manifest's storage format (ManifestWriter does).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from llem_ray.errors import StudyError
from llem_ray.results.manifest import (
    MANIFEST_FILE,
    ManifestHeader,
    ManifestWriter,
    has_manifest,
    read_manifest,
    utc_now,
)
from llem_ray.results.manifest_sql import store_path
from llem_ray.results.persistence import make_unique_dir, sanitise_name

LOCK_FILE = ".llem.lock"
MAX_NAME_ATTEMPTS = 1000
"""Study directory names tried (`_1`, `_2`, ...) before giving up."""


def new_study_dir(output_dir: Path, name: str) -> Path:
    """Create and return a fresh study directory under `output_dir` (created if missing).

    Raises StudyError when no free name is found, OSError when `output_dir` cannot be created.
    """
    base = f"{sanitise_name(name)}_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    directory = make_unique_dir(output_dir, base, MAX_NAME_ATTEMPTS)
    if directory is None:
        raise StudyError(f"no free study directory name for {base} in {output_dir}")
    return directory


class StudyLock:
    """Exclusive lock on a study directory for this process (see module docstring). A context manager."""

    def __init__(self, study_dir: Path):
        self.study_dir = Path(study_dir)
        self.path = self.study_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StudyLock:
        """Take the lock at once or raise StudyError naming its holder (pid, host, since, command);
        StudyError too when the directory does not exist."""
        if not self.study_dir.is_dir():
            raise StudyError(f"{self.study_dir} is not a study directory (it does not exist)")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StudyError(
                f"{self.study_dir} is in use by another driver ({holder}); wait for it to finish or stop it, "
                "then --resume"
            ) from None
        os.ftruncate(fd, 0)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": utc_now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.write(fd, json.dumps(me).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file drops it); the file stays, naming its last holder."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "holder unknown"
    return f"pid {info['pid']} on {info.get('host', '?')} since {info.get('since', '?')}: {info.get('command', '')}"


def load_for_resume(study_dir: Path, study_design_hash: str) -> ManifestHeader | None:
    """The header of the manifest of `study_dir` to resume, or None when the directory holds no manifest
    and nothing else (a driver killed before it wrote one): the study then starts afresh there. A
    directory with only a `manifest.json` (written before the manifest store) is migrated into a store.

    Call it holding the directory's StudyLock. Raises StudyError when the directory holds other files
    but no manifest, when the manifest cannot be read, or belongs to another study (design hash).
    """
    if not has_manifest(study_dir):
        others = sorted(p.name for p in study_dir.iterdir() if not p.name.startswith("."))
        if others:
            raise StudyError(
                f"{study_dir} is not a study directory (no {MANIFEST_FILE}; it holds {', '.join(others[:5])})"
            )
        return None
    path = store_path(study_dir) if store_path(study_dir).is_file() else study_dir / MANIFEST_FILE
    try:
        writer = ManifestWriter.load(study_dir / MANIFEST_FILE)
        try:
            header = writer.header()
        finally:
            writer.close()
    except Exception as exc:  # any unreadable manifest: say which file and why, never a traceback
        raise StudyError(f"{path} cannot be read: {' '.join(str(exc).split())[:300]}") from exc
    _check_same_study(study_dir, header.study_design_hash, study_design_hash)
    return header


def completed_keys(study_dir: Path, study_design_hash: str) -> set[str]:
    """Keys of the entries completed in `study_dir`: the runs a `--resume` of it skips (every other
    entry, running ones a killed driver left included, runs again). Reads one committed snapshot and
    changes nothing, so it needs no lock; empty when the directory holds no manifest.

    Raises StudyError when the manifest cannot be read or belongs to another study (design hash).
    """
    if not has_manifest(study_dir):
        return set()
    try:
        manifest = read_manifest(study_dir)
    except Exception as exc:  # any unreadable manifest: say which directory and why, never a traceback
        raise StudyError(f"{study_dir}'s manifest cannot be read: {' '.join(str(exc).split())[:300]}") from exc
    _check_same_study(study_dir, manifest.study_design_hash, study_design_hash)
    return {entry.key for entry in manifest.entries if entry.status == "completed"}


def _check_same_study(study_dir: Path, found_hash: str, expected_hash: str) -> None:
    """Raise StudyError when the manifest of `study_dir` belongs to another study design."""
    if found_hash != expected_hash:
        raise StudyError(
            f"{study_dir} holds study {found_hash}, but this config is study "
            f"{expected_hash}: resume with the same experiments"
        )
