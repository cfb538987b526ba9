"""Checks of config strings that need no filesystem or network (issue 18): names that reach the
terminal, output directories, webhook URLs. The config models call them as validators, so a bad
value is a configuration error (exit 2) that names its field, before anything runs.
"""

from __future__ import annotations

import os
import unicodedata
from urllib.parse import urlsplit

from llem_ray.errors import ConfigError

SYSTEM_DIRS: tuple[str, ...] = ("/proc", "/sys", "/dev")
"""Kernel file systems: nothing may be written under them."""


def control_characters(text: str) -> list[str]:
    """The control and format characters in `text` (NUL, ESC, bidi overrides...), as escapes."""
    return sorted({repr(c)[1:-1] for c in text if unicodedata.category(c) in ("Cc", "Cf")})


def printable(value: str) -> str:
    """`value` unchanged; ValueError when it holds characters that would drive a terminal."""
    bad = control_characters(value)
    if bad:
        raise ValueError(f"must not contain control characters (found {', '.join(bad)})")
    return value


def system_dir(path: str) -> str | None:
    """The kernel file system `path` lies under (its absolute, normalised form), else None."""
    absolute = os.path.normpath(os.path.abspath(os.path.expanduser(path)))
    return next((d for d in SYSTEM_DIRS if absolute == d or absolute.startswith(d + "/")), None)


def output_dir(value: str) -> str:
    """`value` unchanged; ValueError when it is empty, holds control characters or lies under /proc, /sys or /dev."""
    if not value.strip():
        raise ValueError("must not be empty")
    printable(value)
    under = system_dir(value)
    if under:
        raise ValueError(f"must not lie under {under} (a kernel file system)")
    return value


def output_flag(value: str, flag: str) -> str:
    """`output_dir` for a command-line flag: ConfigError naming `flag` instead of ValueError."""
    try:
        return output_dir(value)
    except ValueError as exc:
        raise ConfigError(f"{flag} {value[:200]!r}: {exc}") from None


def webhook_problem(url: str) -> str | None:
    """Why `url` cannot take a webhook POST (only http:// and https:// URLs with a host can), else None."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or control_characters(url):
        return "must be an http:// or https:// URL with a host"
    return None
