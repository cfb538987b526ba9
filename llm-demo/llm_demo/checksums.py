"""Checksums and verification of acquired files: hashing, cache-entry checks, local and downloaded files.

* :func:`sha256_file` / :func:`git_blob_sha1`: per-file digests (the hub reports LFS SHA-256 or git
  blob ids); :func:`content_sha256`: one hash over a set of files (the "input model hash").
* :func:`check_entry`: why a cache entry is unusable (expired, missing file, size or SHA-256 changed).
* :func:`hash_local`: hash the files of a local directory that match the patterns, enforcing
  ``model.sha256`` pins.
* :func:`verify_download`: verify downloaded files against pins, LFS SHA-256 or git blob ids; a
  mismatch deletes the file and raises :class:`~llm_demo.errors.ChecksumError` (exit 4).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import CacheError, ChecksumError
from .hub import HubFile
from .paths import parse_iso

_CHUNK_BYTES = 1 << 20
_DOC = "docs/usage.md#model-acquisition"


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks; ``OSError`` if unreadable."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (what the hub reports as ``blob_id`` for non-LFS files)."""
    digest = hashlib.sha1()
    digest.update(b"blob %d\0" % Path(path).stat().st_size)
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(files: list[Mapping[str, Any]]) -> str:
    """One hash for a set of files: SHA-256 over sorted ``path:sha256`` lines (the "input model hash")."""
    lines = sorted(f"{f['path']}:{f['sha256']}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def matches_patterns(path: str, patterns: tuple[str, ...]) -> bool:
    """True when ``path`` (or its file name) matches one of the glob ``patterns``."""
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(Path(path).name, p) for p in patterns)


def check_entry(entry: Mapping[str, Any], now: datetime) -> str | None:
    """Why a cache entry is unusable (None: valid)."""
    if entry.get("status") != "valid":
        return entry.get("invalidated_reason") or "not valid"
    if now >= parse_iso(entry["expires_at"]):
        return (
            f"expired: created {entry['created_at']}, retention {entry['retention_days']} days, "
            f"expired {entry['expires_at']}"
        )
    root = Path(entry["path"])
    for f in entry["files"]:
        path = root / f["path"]
        if not path.is_file():
            return f"missing file {f['path']}"
        if path.stat().st_size != f["size_bytes"]:
            return f"checksum mismatch: {f['path']} size {path.stat().st_size} != recorded {f['size_bytes']}"
        actual = sha256_file(path)
        if actual != f["sha256"]:
            return f"checksum mismatch: {f['path']} sha256 {actual} != recorded {f['sha256']}"
    return None


def hash_local(root: Path, patterns: tuple[str, ...], pins: Mapping[str, str]) -> list[dict[str, Any]]:
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if not matches_patterns(rel, patterns) or rel.startswith("."):
            continue
        digest = sha256_file(path)
        if rel in pins and pins[rel] != digest:
            raise ChecksumError(
                f"checksum mismatch: {root / rel} sha256 {digest} != pinned {pins[rel]}",
                remediation="restore the file or update model.sha256 in config/model.yaml",
                doc=_DOC,
            )
        files.append(
            {
                "path": rel,
                "size_bytes": path.stat().st_size,
                "sha256": digest,
                "verified_against": "config" if rel in pins else "recorded",
            }
        )
    if not files:
        raise CacheError(f"no files matching {list(patterns)} in {root}", doc=_DOC)
    return files


def verify_download(dest: Path, wanted: list[HubFile], pins: Mapping[str, str]) -> list[dict[str, Any]]:
    files = []
    for hf in wanted:
        path = dest / hf.path
        if not path.is_file():
            raise CacheError(f"download incomplete: {hf.path} missing", doc=_DOC)
        size = path.stat().st_size
        digest = sha256_file(path)
        if hf.path in pins:
            expected, against, actual = pins[hf.path], "config", digest
        elif hf.lfs_sha256:
            expected, against, actual = hf.lfs_sha256, "lfs", digest
        elif hf.blob_id:
            expected, against, actual = hf.blob_id, "git-blob", git_blob_sha1(path)
        else:
            expected, against, actual = digest, "recorded", digest
        if actual != expected or (hf.size_bytes is not None and size != hf.size_bytes):
            path.unlink()
            raise ChecksumError(
                f"checksum mismatch: {hf.path} {against} {actual} != expected {expected} "
                f"(size {size}, expected {hf.size_bytes})",
                remediation=(
                    "the download is corrupt or the revision changed; run again to re-download, "
                    "check model.revision/model.sha256"
                ),
                doc=_DOC,
                details={"file": hf.path, "expected": expected, "actual": actual, "verified_against": against},
            )
        files.append({"path": hf.path, "size_bytes": size, "sha256": digest, "verified_against": against})
    return files
