"""Model acquisition with checksums, retention and offline cache hits: ``state/cache-manifest.json``.

``acquire(workspace, cfg, run_id, redactor, hub=None, offline=None, refresh=False, now=None)``
returns an :class:`Acquired` (model entry, tokenizer entry) after this sequence, per artifact (the
model; the tokenizer too when ``model.tokenizer`` names another repo or directory):

1. Look up the cache entry for the artifact's key (source, id or directory, revision, file patterns).
2. If it exists: invalidate it when it is older than ``cache.retention_days`` ("expired") or when a file
   is missing or its size/SHA-256 differs from the recorded value ("checksum mismatch") — the reason is
   stored in the entry and logged. A valid entry is a **cache hit**: logged as ``cache_hit`` and
   returned without any remote call, online or not (``refresh=True`` forces a new download).
3. Otherwise, offline (``offline=True``, or ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set): raise
   :class:`~llm_demo.errors.CacheError` (exit 4): a refreshed download is required before the build.
4. Online: list the files at the revision (commit, sizes, LFS SHA-256, git blob ids), download those
   matching ``model.allow_patterns`` into ``.cache/hub/<org>--<name>/<commit>/``, verify every file
   (LFS SHA-256 where the hub has it, else the git blob id; ``model.sha256`` pins override both),
   record path/size/SHA-256/verification source, ``created_at`` and ``expires_at``. A mismatch deletes
   the file, invalidates the entry and raises :class:`~llm_demo.errors.ChecksumError` (exit 4).

A local directory (``model.local_dir``) is hashed instead of downloaded; its recorded hashes are
re-checked on the next run (a changed directory is re-recorded with a ``local_source_changed`` event,
unless ``model.sha256`` pins a value, which is then enforced). Times are UTC; sizes in bytes. Events
go to ``logs/<run>/download.jsonl``; the credential is never logged (the redactor learns it first).
Hashing and verification live in :mod:`llm_demo.checksums`, hub access in :mod:`llm_demo.hub`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import credentials
from .checksums import check_entry, content_sha256, hash_local, matches_patterns, verify_download
from .config import DemoConfig
from .errors import CacheError, ChecksumError
from .events import EventLog
from .hub import Hub, HuggingFaceHub, is_offline
from .paths import Workspace, iso, parse_iso, read_json, utc_now, write_json_atomic
from .redact import Redactor

MANIFEST = "cache-manifest.json"
TOKENIZER_PATTERNS = ("tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt", "*.model", "added_tokens.json")
_DOC = "docs/usage.md#model-acquisition"


@dataclass(frozen=True)
class Acquired:
    """Cache entries (manifest dicts) of the model and its tokenizer (the same entry if shared)."""

    model: dict[str, Any]
    tokenizer: dict[str, Any]


class _Cache:
    """The manifest file plus its events; every change is written atomically at once."""

    def __init__(self, workspace: Workspace, events: EventLog) -> None:
        self.path = workspace.state_file(MANIFEST)
        self.data = read_json(self.path, default=None) or {"schema_version": 1, "entries": {}}
        self.events = events

    def save(self) -> None:
        write_json_atomic(self.path, self.events.redactor.redact_obj(self.data))

    def invalidate(self, key: str, reason: str, now: datetime) -> None:
        entry = self.data["entries"][key]
        entry.update(status="invalidated", invalidated_reason=reason, invalidated_at=iso(now))
        self.save()
        self.events.emit("cache_invalidated", key=key, reason=reason)


def _record(
    key: str,
    kind: str,
    source: str,
    ref: str,
    revision: str | None,
    commit: str | None,
    root: Path,
    files: list[dict[str, Any]],
    patterns: tuple[str, ...],
    retention_days: float,
    now: datetime,
) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind,
        "source": source,
        "ref": ref,
        "revision": revision,
        "commit": commit,
        "path": str(root),
        "allow_patterns": list(patterns),
        "files": files,
        "total_size_bytes": sum(f["size_bytes"] for f in files),
        "content_sha256": content_sha256(files),
        "created_at": iso(now),
        "expires_at": iso(now + timedelta(days=retention_days)),
        "retention_days": retention_days,
        "status": "valid",
        "invalidated_reason": None,
    }


def _acquire_one(
    cache: _Cache,
    cfg: DemoConfig,
    workspace: Workspace,
    kind: str,
    ref: str,
    revision: str | None,
    patterns: tuple[str, ...],
    hub: Hub | None,
    token: str | None,
    offline: bool,
    refresh: bool,
    now: datetime,
) -> dict[str, Any]:
    local = Path(ref).expanduser()
    source = "local" if local.is_dir() else "hub"
    key = f"{kind}:{source}:{local.resolve() if source == 'local' else ref}@{revision or '-'}"
    events, pins = cache.events, cfg.model.sha256
    entry = cache.data["entries"].get(key)
    if entry is not None:
        reason = check_entry(entry, now)
        if reason is None and not refresh:
            events.emit(
                "cache_hit",
                key=key,
                path=entry["path"],
                files=len(entry["files"]),
                expires_at=entry["expires_at"],
                offline=offline,
            )
            return entry
        if reason is not None and entry.get("status") == "valid":
            cache.invalidate(key, reason, now)
    retention = cfg.cache.retention_days
    if source == "local":
        files = hash_local(local.resolve(), patterns, pins)
        if entry is not None and entry.get("content_sha256") != content_sha256(files):
            events.emit("local_source_changed", key=key, path=str(local))
        record = _record(
            key, kind, "local", str(local.resolve()), None, None, local.resolve(), files, patterns, retention, now
        )
        events.emit(
            "local_recorded", key=key, path=str(local), files=len(files), total_size_bytes=record["total_size_bytes"]
        )
    else:
        if offline:
            why = (entry or {}).get("invalidated_reason") or ("refresh requested" if refresh else "not cached")
            raise CacheError(
                f"{kind} {ref}@{revision}: {why}; offline, so no refreshed download is possible",
                remediation="go online (unset HF_HUB_OFFLINE) to re-download before the build, or use model.local_dir",
                doc=_DOC,
                details={"key": key, "reason": why},
            )
        hub = hub or HuggingFaceHub()
        events.emit("download_start", key=key, repo_id=ref, revision=revision)
        try:
            commit, listing = hub.list_files(ref, revision or "main", token)
            wanted = [f for f in listing if matches_patterns(f.path, patterns)]
            if not wanted:
                raise CacheError(f"{ref}@{revision}: no file matches {list(patterns)}", doc=_DOC)
            dest = workspace.cache_dir / "hub" / ref.replace("/", "--") / commit
            if dest.exists():  # never trust leftovers of an invalidated entry
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            hub.download(ref, commit, [f.path for f in wanted], dest, token)
        except CacheError:
            raise
        except Exception as exc:  # noqa: BLE001 - network/auth errors of the hub client
            raise CacheError(
                f"download of {ref}@{revision} failed: {type(exc).__name__}: {exc}",
                remediation=(
                    "check network access, model.id/revision and the credential (docs/prerequisites.md#credentials)"
                ),
                doc=_DOC,
            ) from None
        try:
            files = verify_download(dest, wanted, pins)
        except ChecksumError as exc:
            cache.data["entries"][key] = {
                **_record(key, kind, "hub", ref, revision, commit, dest, [], patterns, retention, now),
                "status": "invalidated",
                "invalidated_reason": exc.message,
                "invalidated_at": iso(now),
            }
            cache.save()
            events.emit("checksum_mismatch", key=key, **exc.details)
            raise
        record = _record(key, kind, "hub", ref, revision, commit, dest, files, patterns, retention, now)
        events.emit(
            "download_done", key=key, commit=commit, files=len(files), total_size_bytes=record["total_size_bytes"]
        )
    cache.data["entries"][key] = record
    cache.save()
    return record


def acquire(
    workspace: Workspace,
    cfg: DemoConfig,
    run_id: str,
    redactor: Redactor,
    hub: Hub | None = None,
    offline: bool | None = None,
    refresh: bool = False,
    now: datetime | None = None,
) -> Acquired:
    """Make the model (and tokenizer) available and verified; see the module docstring."""
    now = now or utc_now()
    cred = credentials.resolve(cfg)
    redactor.add_literal(cred.token)
    events = EventLog(workspace, run_id, "download", redactor)
    offline = is_offline() if offline is None else offline
    cache = _Cache(workspace, events)
    m = cfg.model
    ref = cfg.model_ref
    events.emit("start", ref=ref, revision=m.revision, offline=offline, credential=cred.describe())
    model = _acquire_one(
        cache,
        cfg,
        workspace,
        "model",
        ref,
        None if m.local_dir else m.revision,
        m.allow_patterns,
        hub,
        cred.token,
        offline,
        refresh,
        now,
    )
    tok_ref = m.tokenizer
    if tok_ref and tok_ref != ref:
        tok_rev = None if Path(tok_ref).expanduser().is_dir() else (m.tokenizer_revision or m.revision)
        tokenizer = _acquire_one(
            cache,
            cfg,
            workspace,
            "tokenizer",
            tok_ref,
            tok_rev,
            TOKENIZER_PATTERNS,
            hub,
            cred.token,
            offline,
            refresh,
            now,
        )
    else:
        tokenizer = model
    events.emit("end", model=model["key"], tokenizer=tokenizer["key"])
    return Acquired(model=model, tokenizer=tokenizer)


def purge(workspace: Workspace, now: datetime | None = None) -> list[str]:
    """Retention policy: delete the downloads of expired or invalidated hub entries (local sources are
    never touched, nor a directory a valid entry still uses); mark them ``purged``; return the paths."""
    now = now or utc_now()
    path = workspace.state_dir / MANIFEST
    data = read_json(path, default=None) or {"entries": {}}
    entries = data["entries"].values()
    in_use = {e["path"] for e in entries if e.get("status") == "valid" and now < parse_iso(e["expires_at"])}
    removed = []
    for entry in entries:
        if entry.get("source") != "hub" or entry.get("status") == "purged" or entry["path"] in in_use:
            continue
        root = Path(entry["path"])
        if root.is_dir() and workspace.cache_dir.resolve() in root.resolve().parents:
            shutil.rmtree(root)
            removed.append(str(root))
        entry.update(status="purged", purged_at=iso(now))
    if removed or any(e.get("status") == "purged" for e in entries):
        write_json_atomic(path, data)
    return removed
