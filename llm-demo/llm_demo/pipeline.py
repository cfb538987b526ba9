"""Part 1 of the warm-up in one call: prerequisites -> acquisition -> build -> model repository.

``prepare(workspace, cfg, run_id, redactor, *, facts=None, hub=None, offline=None, refresh=False,
version=1) -> Prepared`` stops at the first failing stage with its exit code (3 prerequisites,
4 cache/checksum, 5 build, 6 repository) and never starts a later stage: nothing is downloaded when a
prerequisite fails, nothing is built from an invalid cache. ``Prepared.repository`` is the directory to
serve (``tritonserver --model-repository``) and ``Prepared.model_name``/``version`` what to load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import acquire as acquire_mod
from . import build as build_mod
from . import prereqs, repo_validate, repository
from .config import DemoConfig
from .events import EventLog
from .hub import Hub
from .paths import Workspace
from .redact import Redactor


@dataclass(frozen=True)
class Prepared:
    prereq_manifest: dict[str, Any]
    acquired: acquire_mod.Acquired
    engine_manifest: dict[str, Any]
    repository: Path
    model_name: str
    version: int


def prepare(
    workspace: Workspace,
    cfg: DemoConfig,
    run_id: str,
    redactor: Redactor,
    *,
    facts: Mapping[str, Any] | None = None,
    hub: Hub | None = None,
    offline: bool | None = None,
    refresh: bool = False,
    version: int = 1,
) -> Prepared:
    """Run the four part-1 stages in order (see module docstring)."""
    prereq = prereqs.check_prerequisites(workspace, cfg, run_id, redactor, facts=facts)
    acquired = acquire_mod.acquire(workspace, cfg, run_id, redactor, hub=hub, offline=offline, refresh=refresh)
    engine = build_mod.build(workspace, cfg, run_id, redactor, acquired, prereq=prereq)
    repo = repository.generate(workspace, cfg, version=version)
    repo_validate.validate_or_raise(repo, cfg.model.name, EventLog(workspace, run_id, "repository", redactor))
    return Prepared(prereq, acquired, engine, repo, cfg.model.name, version)
