"""Error hierarchy of llem_ray (CLI-13) and the exit codes the CLI maps them to (CLI-12).

Exit codes: 0 success, 1 runtime error (`BackendError`, `PreFlightError`, `ExperimentError`,
`StudyError`), 2 usage or configuration error (`ConfigError`), 130 interrupted by SIGINT.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


class LLEMError(Exception):
    """Base of every error llem_ray raises on purpose; `exit_code` is what the CLI exits with."""

    exit_code: int = EXIT_ERROR


class ConfigError(LLEMError):
    """Invalid configuration: bad YAML, unknown field, invalid value. Message names file and field."""

    exit_code = EXIT_CONFIG


class BackendError(LLEMError):
    """An inference backend failed to load, generate or shut down."""


class PreFlightError(LLEMError):
    """One or more pre-flight checks failed (CM-30): every failure is listed at once in `failures`."""

    def __init__(self, failures: list[str]):
        self.failures = list(failures)
        lines = "\n".join(f"  - {f}" for f in self.failures)
        super().__init__(f"pre-flight failed ({len(self.failures)} problem(s)):\n{lines}")


class ExperimentError(LLEMError):
    """An experiment could not complete (timeout, crash, invalid measurement)."""


class StudyError(LLEMError):
    """A study could not run or complete (cluster unavailable, circuit breaker tripped, bad resume dir)."""
