"""Failure classes of llm-demo and their process exit codes.

Every failure the tool anticipates raises a subclass of :class:`LlmDemoError`. The CLI turns it into a
redacted message on stderr, optional remediation text, a pointer to the documentation section, and
``sys.exit(exit_code)``. The codes are a stable interface for automation and are documented in
``docs/exit-codes.md``; never renumber them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes, one per failure class (see docs/exit-codes.md)."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    PREREQUISITES = 3
    CACHE = 4
    BUILD = 5
    REPOSITORY = 6
    LAUNCH = 7
    TLS_FILES = 8
    GOLDEN_DEVIATION = 9
    SMOKE_TEST = 10
    CAPACITY_ALERT = 11
    TEARDOWN = 12


class LlmDemoError(Exception):
    """Base of every anticipated failure.

    Args:
        message: what went wrong, one line; may contain secrets, the CLI redacts it before printing.
        remediation: what the operator should do next.
        doc: documentation reference, e.g. ``"docs/prerequisites.md#nvidia-driver"`` (relative to
            the llm-demo directory).
        details: structured context written to logs/manifests (redacted before writing).
    """

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(
        self,
        message: str,
        *,
        remediation: str | None = None,
        doc: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.remediation = remediation
        self.doc = doc
        self.details = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description (not yet redacted)."""
        return {
            "error": type(self).__name__,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "remediation": self.remediation,
            "doc": self.doc,
            "details": self.details,
        }


class ConfigError(LlmDemoError):
    """Invalid command-line usage or configuration file (exit 2)."""

    exit_code = ExitCode.USAGE


class PrerequisiteError(LlmDemoError):
    """A host prerequisite (GPU, driver, toolkit, disk, credential...) is not met (exit 3)."""

    exit_code = ExitCode.PREREQUISITES


class CacheError(LlmDemoError):
    """Model acquisition failed: checksum mismatch, expired/corrupt cache while offline, download error (exit 4)."""

    exit_code = ExitCode.CACHE


class ChecksumError(CacheError):
    """A downloaded or cached file does not match its expected SHA-256 (exit 4)."""


class BuildError(LlmDemoError):
    """Engine build / model preparation failed; a diagnostics file is linked from the manifest (exit 5)."""

    exit_code = ExitCode.BUILD


class RepositoryError(LlmDemoError):
    """The Triton model repository is missing structure or required config fields (exit 6)."""

    exit_code = ExitCode.REPOSITORY


class LaunchError(LlmDemoError):
    """Triton failed to start or become ready in time (exit 7)."""

    exit_code = ExitCode.LAUNCH


class PortConflictError(LaunchError):
    """A required port is already bound (exit 7)."""


class TlsFilesMissingError(LlmDemoError):
    """A configured TLS certificate/key file does not exist (exit 8)."""

    exit_code = ExitCode.TLS_FILES


class GoldenDeviationError(LlmDemoError):
    """Warm-up output deviates from the golden sample beyond the threshold (exit 9)."""

    exit_code = ExitCode.GOLDEN_DEVIATION


class SmokeTestError(LlmDemoError):
    """A smoke test or canary check failed (exit 10)."""

    exit_code = ExitCode.SMOKE_TEST


class CapacityAlertError(LlmDemoError):
    """The capacity watcher raised an alert (exit 11)."""

    exit_code = ExitCode.CAPACITY_ALERT


class TeardownIncompleteError(LlmDemoError):
    """Teardown left processes, bound ports or GPU memory behind (exit 12)."""

    exit_code = ExitCode.TEARDOWN
