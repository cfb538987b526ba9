"""Credential source for model downloads (``credentials`` section of config/model.yaml).

``source: env`` reads ``env_var`` (default ``HF_TOKEN``); ``source: file`` reads the first line of
``file``; ``source: none`` means anonymous access. The token value is returned to the caller only:
it is never logged, printed or written; callers register it with their Redactor (``add_literal``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import DemoConfig


@dataclass(frozen=True)
class Credential:
    """Where the credential came from, whether it was found, and (private) the token itself."""

    source: str
    location: str | None
    token: str | None

    @property
    def present(self) -> bool:
        return bool(self.token)

    def describe(self) -> dict[str, object]:
        """JSON-safe description, without the token."""
        return {"source": self.source, "location": self.location, "present": self.present}


def resolve(cfg: DemoConfig, environ: Mapping[str, str] | None = None) -> Credential:
    """Look the credential up; never raises for a missing one (``present`` is False)."""
    env = os.environ if environ is None else environ
    c = cfg.credentials
    if c.source == "env":
        return Credential("env", c.env_var, (env.get(c.env_var) or "").strip() or None)
    if c.source == "file":
        path = Path(c.file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return Credential("file", str(path), None)
        return Credential("file", str(path), (lines[0].strip() if lines else "") or None)
    return Credential("none", None, None)
