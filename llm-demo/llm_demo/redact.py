"""Secret redaction for everything llm-demo prints or writes.

A :class:`Redactor` replaces

* matches of regular expressions (defaults: Hugging Face tokens ``hf_...``, ``Bearer ...`` headers,
  ``api_key=...``/``token: ...``/``password=...`` assignments, AWS access key ids and secret keys,
  NGC keys, passwords in URLs ``scheme://user:password@host``), and
* the literal values of known secret environment variables (``HF_TOKEN``, ``NGC_API_KEY``, ...),
  whatever they look like,

with ``[REDACTED]``. Patterns with a named group ``secret`` only replace that group, so the context
(``api_key=``) stays readable. Extra patterns and variable names come from the ``redaction`` section of
``config/model.yaml`` (``patterns: [...]``, ``secret_env_vars: [...]``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"

DEFAULT_PATTERNS: tuple[str, ...] = (
    r"\bhf_[A-Za-z0-9]{20,}\b",
    r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
    r"(?i)\b(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|secret|password|passwd|pwd)"
    r"\b[\"']?\s*[:=]\s*[\"']?(?P<secret>[^\s\"',;&]{4,})",
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    r"(?i)aws_secret_access_key[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9/+=]{40})",
    r"\bnvapi-[A-Za-z0-9_-]{20,}\b",
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s/:@]+:(?P<secret>[^\s/@]+)@",
)

DEFAULT_SECRET_ENV_VARS: tuple[str, ...] = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_TOKEN",
    "NGC_API_KEY",
    "NGC_CLI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "OPENAI_API_KEY",
    "TRITON_AUTH_TOKEN",
    "LLM_DEMO_WEBHOOK_TOKEN",
)

#: Literal values shorter than this are not redacted (they would mangle ordinary text).
MIN_LITERAL_LEN = 6


class Redactor:
    """Replace secrets in strings and nested JSON-like values.

    Args:
        patterns: regular expressions added to :data:`DEFAULT_PATTERNS` (``re.error`` on a bad one).
        secret_env_vars: environment variable names added to :data:`DEFAULT_SECRET_ENV_VARS`; their
            current values are redacted literally.
        literals: further secret values to redact (e.g. a token read from a file).
        environ: environment to read (defaults to ``os.environ``; read once, at construction).
    """

    def __init__(
        self,
        patterns: Iterable[str] = (),
        secret_env_vars: Iterable[str] = (),
        literals: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.patterns = [re.compile(p) for p in (*DEFAULT_PATTERNS, *patterns)]
        self.secret_env_vars = tuple(dict.fromkeys((*DEFAULT_SECRET_ENV_VARS, *secret_env_vars)))
        values = [env.get(name, "") for name in self.secret_env_vars]
        self._literals: set[str] = set()
        for value in (*values, *literals):
            self.add_literal(value)

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None, literals: Iterable[str] = ()
    ) -> Redactor:
        """Build from a ``redaction`` config section: ``{patterns: [...], secret_env_vars: [...]}``."""
        section = section or {}
        return cls(
            patterns=section.get("patterns") or (),
            secret_env_vars=section.get("secret_env_vars") or (),
            literals=literals,
            environ=environ,
        )

    @property
    def literals(self) -> frozenset[str]:
        """The literal secret values redacted so far."""
        return frozenset(self._literals)

    def add_literal(self, value: str | None) -> None:
        """Redact ``value`` literally from now on (ignored when shorter than :data:`MIN_LITERAL_LEN`)."""
        if value and len(value.strip()) >= MIN_LITERAL_LEN:
            self._literals.add(value.strip())

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret replaced by :data:`MASK`."""
        if not text:
            return text
        for literal in sorted(self._literals, key=len, reverse=True):
            text = text.replace(literal, MASK)
        for pattern in self.patterns:
            text = pattern.sub(self._replacement, text)
        return text

    @staticmethod
    def _replacement(match: re.Match[str]) -> str:
        groups = match.re.groupindex
        if "secret" not in groups or match.group("secret") is None:
            return MASK
        start, end = match.span("secret")
        whole_start = match.start()
        full = match.group(0)
        return full[: start - whole_start] + MASK + full[end - whole_start :]

    def redact_obj(self, value: Any) -> Any:
        """Redact strings inside dicts/lists/tuples recursively (keys included); other values pass through."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self.redact_obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_obj(v) for v in value]
        return value
