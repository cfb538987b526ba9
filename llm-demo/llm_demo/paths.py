"""Workspace layout, run ids and atomic JSON files.

All outputs of the tool live under one root, by default the ``llm-demo/`` directory that contains this
package; ``--root`` or the environment variable ``LLM_DEMO_ROOT`` move it (tests use temporary
directories)::

    <root>/config/       shipped configuration (model.yaml, prerequisites.yaml)
    <root>/docs/         documentation referenced by remediation messages
    <root>/state/        manifests (prereq-, cache-, engine-manifest.json, <run>-manifest.json)
    <root>/logs/<run>/   per-run logs: <stage>.jsonl, build.log, triton.log, summary.json, cleanup.log
    <root>/models/       Triton model repository: models/<name>/<version>/...
    <root>/production/   production repository: symlinks to approved versions only
    <root>/transcripts/  chat transcripts
    <root>/.cache/       downloaded models, built engines

Configuration files are looked up in ``<root>/config`` first, then in the shipped ``config/``
directory, so a fresh temporary root still has defaults.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: The llm-demo directory that ships this package, its config and docs.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
ROOT_ENV_VAR = "LLM_DEMO_ROOT"


def utc_now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def iso(ts: datetime) -> str:
    """Format a timezone-aware datetime as ISO-8601 UTC with a ``Z`` suffix, second precision."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Parse a timestamp written by :func:`iso`; raises ``ValueError`` on other formats."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def new_run_id(now: datetime | None = None) -> str:
    """Return a sortable run id: UTC timestamp plus 6 random hex characters, e.g. ``20261123T113000Z-3fa9c1``."""
    ts = (now or utc_now()).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{ts}-{secrets.token_hex(3)}"


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: a temp file in the same dir, fsynced, then ``os.replace``.

    Readers never see a half-written file; the temp file is removed when the write fails. Parent
    directories are created. A file that exists keeps its permission bits (a new one is private to
    the user, 0600). Raises ``OSError`` when the directory cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (``write_text_atomic``).

    Raises ``TypeError`` when ``data`` is not JSON-serialisable (the target is then left untouched).
    """
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file; return ``default`` when it does not exist. Raises ``ValueError`` on bad JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


@dataclass(frozen=True)
class Workspace:
    """The directory tree all llm-demo state lives in (see module docstring)."""

    root: Path

    @classmethod
    def from_root(cls, root: Path | str | None = None) -> Workspace:
        """Resolve the root: explicit argument, else ``$LLM_DEMO_ROOT``, else the llm-demo directory."""
        chosen = root or os.environ.get(ROOT_ENV_VAR) or PACKAGE_ROOT
        return cls(Path(chosen).expanduser().resolve())

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def models_dir(self) -> Path:
        """The Triton model repository (``--model-repository``) holding every generated version."""
        return self.root / "models"

    @property
    def production_dir(self) -> Path:
        """Production model repository: approved versions only, as symlinks into ``models_dir``."""
        return self.root / "production"

    @property
    def transcripts_dir(self) -> Path:
        return self.root / "transcripts"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    def run_dir(self, run_id: str) -> Path:
        """Return ``logs/<run_id>/``, created if missing."""
        path = self.logs_dir / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def state_file(self, name: str) -> Path:
        """Return ``state/<name>`` (parent created)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.state_dir / name

    def config_file(self, name: str) -> Path:
        """Return ``<root>/config/<name>`` if it exists, else the shipped ``config/<name>``."""
        local = self.config_dir / name
        return local if local.exists() else PACKAGE_ROOT / "config" / name

    def doc_path(self, ref: str) -> str:
        """Turn a doc reference like ``docs/prerequisites.md#gpu`` into an absolute path string for printing."""
        file, _, anchor = ref.partition("#")
        path = str(PACKAGE_ROOT / file)
        return f"{path}#{anchor}" if anchor else path
