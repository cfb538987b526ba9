"""Run manifest `state/<run>-manifest.json` and log retention.

`write_run_manifest` gathers what a run used and produced: host and Python,
tooling versions, config (redacted) and its hash, the part-1 manifests'
hashes (prereq/cache/engine), GPU snapshots, stage durations in seconds, log
paths and the retention policy in force.

`rotate_logs` applies the retention policy to `logs/`: run directories beyond
the newest `keep_runs`, or older than `max_age_days` (by modification time),
are deleted, except those in `protect`. Run ids sort by time (paths.new_run_id),
so "newest" is by name. What was removed is returned and recorded in
`state/retention.json`. Failure mode: a directory that cannot be removed is
reported under `errors`, never raised.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .paths import Workspace, iso, read_json, utc_now, write_json_atomic
from .versions import tooling_versions

PART1_MANIFESTS = ("prereq-manifest.json", "cache-manifest.json", "engine-manifest.json", "tooling-manifest.json")


@dataclass
class RetentionPolicy:
    """How many run log directories to keep, and for how long (days)."""

    keep_runs: int = 20
    max_age_days: float = 14.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rotate_logs(workspace: Workspace, policy: RetentionPolicy, protect: set[str] = frozenset()) -> dict:
    """Delete run log directories outside `policy`; return {"removed": [...], "kept": n, "errors": [...]}."""
    runs = (
        sorted((p for p in workspace.logs_dir.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
        if workspace.logs_dir.is_dir()
        else []
    )
    cutoff = time.time() - policy.max_age_days * 86400.0
    removed, errors, kept = [], [], 0
    for index, run_dir in enumerate(runs):
        if run_dir.name in protect or (index < policy.keep_runs and run_dir.stat().st_mtime >= cutoff):
            kept += 1
            continue
        try:
            shutil.rmtree(run_dir)
            removed.append(run_dir.name)
        except OSError as exc:
            errors.append(f"{run_dir}: {exc}")
    record = {"at": iso(utc_now()), "policy": asdict(policy), "removed": removed, "kept": kept, "errors": errors}
    write_json_atomic(workspace.state_file("retention.json"), record)
    return record


def write_run_manifest(
    workspace: Workspace,
    run_id: str,
    *,
    config: dict | None,
    config_hash: str | None,
    durations_s: dict[str, float],
    policy: RetentionPolicy,
    extra: dict | None = None,
) -> Path:
    """Write `state/<run>-manifest.json` (see module docstring) and return its path."""
    run_dir = workspace.run_dir(run_id)
    summary = read_json(run_dir / "summary.json", default={}) or {}
    manifests = {}
    for name in PART1_MANIFESTS:
        path = workspace.state_dir / name
        if path.is_file():
            manifests[name] = {"path": str(path), "sha256": _sha256(path)}
    data = {
        "run": run_id,
        "written_at": iso(utc_now()),
        "environment": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "python_executable": sys.executable,
            "versions": tooling_versions(),
        },
        "config": config,
        "config_hash": config_hash,
        "manifests": manifests,
        "gpu_snapshots": summary.get("gpu"),
        "success": summary.get("success", {}),
        "durations_s": durations_s,
        "logs": sorted(str(p) for p in run_dir.iterdir() if p.is_file()),
        "retention": asdict(policy),
        **(extra or {}),
    }
    return write_json_atomic(workspace.state_file(f"{run_id}-manifest.json"), data)
