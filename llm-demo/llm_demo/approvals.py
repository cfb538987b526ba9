"""Approved model versions: the `production/<model>/<v>` links and the version pin in config.pbtxt.

A version is approved when `production/<model>/<v>` is a symlink to `models/<model>/<v>` (only approved
versions are linked for production); the canary step creates and removes these links.

The newest approved version is also pinned in the repository itself: `models/<model>/config.pbtxt`
ends with the two lines

    # llm-demo: newest approved version (production/<model>/); canary promote and rollback rewrite this
    version_policy { specific { versions: [ 2 ] } }

so every Triton that loads the repository (`llm-demo serve`, the warm-up, docker compose, a
tritonserver started by hand) loads and serves that version only, from its first request on: an
unapproved version on disk is never loaded, and a version that cannot load does not stop the server
from starting. A model with no approved version keeps Triton's default policy (its highest version).

Failure modes (RepositoryError, exit 6): the model's config.pbtxt is missing, does not parse, or
declares a `version_policy` of its own (llm-demo would silently override it); approving a version
whose directory does not exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import RepositoryError
from .paths import Workspace, write_text_atomic

PIN_COMMENT = "# llm-demo: newest approved version (production/<model>/); canary promote and rollback rewrite this"
_PIN_LINES = re.compile(rf"^{re.escape(PIN_COMMENT)}\n^version_policy .*\n?", re.M)
_DOC = "docs/usage.md#canary"


def approved_versions(workspace: Workspace, model: str) -> list[int]:
    """Versions linked under `production/<model>/`, ascending."""
    folder = workspace.production_dir / model
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_symlink())


def _parses_with_own_policy(config: Path, text: str) -> bool:
    """True when `text` (the config without llm-demo's pin) sets a version_policy itself."""
    from .repo_validate import parse_config

    try:
        return parse_config(text).HasField("version_policy")
    except Exception as exc:  # noqa: BLE001 - protobuf raises ParseError and friends
        raise RepositoryError(
            f"{config} does not parse, so its served version cannot be pinned: {exc}",
            remediation="fix it or regenerate it with `llm-demo repo generate`",
            doc=_DOC,
        ) from None


def write_pin(workspace: Workspace, model: str) -> int | None:
    """Rewrite the pin of `models/<model>/config.pbtxt` to the newest approved version (module
    docstring); remove it when nothing is approved. Returns the pinned version or None."""
    config = workspace.models_dir / model / "config.pbtxt"
    try:
        original = config.read_text(encoding="utf-8")
    except OSError as exc:
        raise RepositoryError(f"cannot pin the served version of {model}: {exc}", doc=_DOC) from None
    text = _PIN_LINES.sub("", original)
    approved = approved_versions(workspace, model)
    if not approved and text == original:
        return None  # nothing approved, nothing pinned: the config stays as written
    if _parses_with_own_policy(config, text):
        raise RepositoryError(
            f"{config} declares its own version_policy; llm-demo decides the served version from production/",
            remediation="remove version_policy from config.pbtxt (approve versions with `llm-demo canary`)",
            doc=_DOC,
        )
    if approved:
        pin = f"version_policy {{ specific {{ versions: [ {approved[-1]} ] }} }}"
        text = text.rstrip("\n") + f"\n{PIN_COMMENT}\n{pin}\n"
    if text != original:
        write_text_atomic(config, text)
    return approved[-1] if approved else None


def approve(workspace: Workspace, model: str, version: int) -> Path:
    """Link `production/<model>/<version>` -> `models/<model>/<version>`, re-pin; return the link."""
    target = workspace.models_dir / model / str(version)
    if not target.is_dir():
        raise RepositoryError(f"cannot approve {model} version {version}: {target} does not exist", doc=_DOC)
    link = workspace.production_dir / model / str(version)
    link.parent.mkdir(parents=True, exist_ok=True)
    config = workspace.models_dir / model / "config.pbtxt"
    if config.is_file() and not (link.parent / "config.pbtxt").exists():
        os.symlink(config, link.parent / "config.pbtxt")
    if not link.is_symlink():
        os.symlink(target, link, target_is_directory=True)
    write_pin(workspace, model)
    return link


def withdraw(workspace: Workspace, model: str, version: int) -> None:
    """Remove the approval link of `version` (if any) and re-pin to the newest remaining approval."""
    (workspace.production_dir / model / str(version)).unlink(missing_ok=True)
    write_pin(workspace, model)
